"""Outbox entries as the ledger reads them: a grant (field `g`, from claim.lua), a later
transition of one (field `e`, from transition.lua) or a card event as recorded (field `t`, from
record_events.lua), each with the row it becomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

# What record_events.lua decided for a card event (card_events.outcome).
CARD_EVENT_OUTCOMES = frozenset({"counted", "reversal", "held", "cancelled", "uncounted"})


@dataclass(frozen=True)
class GrantEntry:
    """A grant, as claim.lua appended it (field `g`)."""

    outbox_id: str
    event: dict

    @property
    def grant_id(self) -> str:
        return self.event["grant_id"]

    def row(self) -> tuple:
        e = self.event
        return (
            e["grant_id"],
            e["campaign_id"],
            e["reward_id"],
            e["right_id"],
            e["customer_id"],
            e["channel_id"],
            e["request_id"],
            int(e["unit_cost"]),
            datetime.fromtimestamp(e["granted_at_ms"] / 1000, UTC),
            self.outbox_id,
        )


@dataclass(frozen=True)
class EventEntry:
    """A later transition of a grant, as transition.lua appended it (field `e`)."""

    outbox_id: str
    event: dict

    @property
    def grant_id(self) -> str:
        return self.event["grant_id"]

    @property
    def field(self) -> str:
        return f"{self.event['grant_id']}:{self.event['event']}"

    def row(self) -> tuple:
        e = self.event
        return (
            e["grant_id"],
            e["event"],
            datetime.fromtimestamp(e["at_ms"] / 1000, UTC),
            e["actor"],
            orjson.dumps(e.get("detail") or {}).decode(),
            self.outbox_id,
        )


@dataclass(frozen=True)
class CardEventEntry:
    """The card events one record_events.lua call recorded (field `t`): {channel_id, type,
    received_at_ms, events: [[event id, customer, amount, mcc, occurred_at_ms, reversal_of or
    "", outcome, counted, grants]]}, counted "<campaign>/<reward>/<period>,...", grants
    "<grant id>:<event>,...". Nothing of them waits in a read-your-writes hash."""

    outbox_id: str
    event: dict[str, Any]

    def rows(self) -> list[tuple]:
        e = self.event
        common = (_text(e["channel_id"]), _text(e["type"]), _moment(e["received_at_ms"]))
        events = e["events"]
        if not isinstance(events, list) or not events:
            raise ValueError("a card events entry with no events")
        return [self._row(common, item) for item in events]

    def row(self) -> tuple:
        """Checks every event; the first one's row."""
        return self.rows()[0]

    def _row(self, common: tuple[str, str, datetime], item: Any) -> tuple:
        channel_id, kind, received_at = common
        if not isinstance(item, list) or len(item) != 9:
            raise TypeError(f"a card event is a list of 9 values, not {item!r:.60}")
        event_id, customer, amount, mcc, occurred_ms, reversal_of, outcome, counted, grants = item
        if outcome not in CARD_EVENT_OUTCOMES:
            raise ValueError(f"unknown card event outcome {outcome!r}")
        return (
            channel_id,
            _text(event_id),
            kind,
            _text(customer),
            _integer(amount),
            _text(mcc),
            _moment(occurred_ms),
            _text(reversal_of) or None,
            outcome,
            _json_list(_split(counted, ("campaign_id", "reward_id", "period"), "/")),
            _json_list(_split(grants, ("grant_id", "event"), ":")),
            received_at,
            self.outbox_id,
        )


Entry = GrantEntry | EventEntry | CardEventEntry
FIELDS: dict[str, type[GrantEntry] | type[EventEntry] | type[CardEventEntry]] = {
    "g": GrantEntry,
    "e": EventEntry,
    "t": CardEventEntry,
}


def parse_entry(outbox_id: str, fields: dict) -> Entry:
    """Raises ValueError, KeyError or TypeError for an entry that cannot be written."""
    for field, kind in FIELDS.items():
        if field in fields:
            entry = kind(outbox_id, orjson.loads(fields[field]))
            break
    else:
        raise ValueError(f"no g, e or t field in {sorted(fields)}")
    if not isinstance(entry.event, dict):
        raise TypeError(f"an outbox entry holds an object, not {entry.event!r:.40}")
    entry.row()
    return entry


def entry_fields(entry: Entry) -> dict[str, str]:
    field = next(f for f, kind in FIELDS.items() if isinstance(entry, kind))
    return {field: orjson.dumps(entry.event).decode()}


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {value!r}")
    return value


def _integer(value: Any) -> int:
    # Lua's cjson writes every number as a double: 1200.0 is the integer 1200.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, not {value!r}")
    return value


def _moment(unix_ms: Any) -> datetime:
    try:
        return datetime.fromtimestamp(_integer(unix_ms) / 1000, UTC)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"not a time: {unix_ms!r}") from exc


def _split(text: Any, names: tuple[str, ...], sep: str) -> list[dict[str, str]]:
    """ "a/b/c,d/e/f" as [{names[0]: "a", ...}, ...] (the ids in it never hold sep or ",")."""
    parts = [item.split(sep) for item in _text(text).split(",") if item]
    if any(len(p) != len(names) for p in parts):
        raise ValueError(f"expected {len(names)} values apart by {sep!r} in {text!r:.60}")
    return [dict(zip(names, p, strict=True)) for p in parts]


def _json_list(value: list[dict[str, str]]) -> str:
    """A list of objects as text for a jsonb column."""
    return orjson.dumps(value).decode()
