"""Outbox entries as the ledger reads them: a grant (field `g`, from claim.lua), a later
transition of one (field `e`, from transition.lua) or a card event as recorded (field `t`, from
record_events.lua), each with the row it becomes.

A grant of a right with no vendor is born fulfilled (quanyi/issuance/claims.py): its entry
carries `fulfilled_at_ms`, and `parse_entries` reads it as two entries, the grant and its
`fulfilled` event, written in the same transaction, so it never takes a second trip through
the outbox. An entry without the field (appended before the upgrade) stays one grant; its
fulfilment comes the old way, through the fulfilment worker and transition.lua."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from quanyi.issuance.grants import INTERNAL_ACTOR

# What record_events.lua decided for a card event (card_events.outcome).
CARD_EVENT_OUTCOMES = frozenset({"counted", "reversal", "held", "cancelled", "uncounted"})
# What a bigint column holds.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class GrantEntry:
    """A grant, as claim.lua appended it (field `g`)."""

    outbox_id: str
    event: dict

    @property
    def grant_id(self) -> str:
        return self.event["grant_id"]

    @property
    def fulfilled_at_ms(self) -> int | None:
        """When it was fulfilled, for a grant born fulfilled (a right with no vendor)."""
        at = self.event.get("fulfilled_at_ms")
        return None if at is None else _integer(at)

    def fulfilment(self) -> EventEntry | None:
        """The `fulfilled` event of a grant born fulfilled, as the fulfilment worker would have
        recorded it (actor vendor:internal, no detail). It shares the grant's outbox id: the
        grant's first event in outbox order, one `grant_events` row however often the entry is
        delivered."""
        at = self.fulfilled_at_ms
        if at is None:
            return None
        e = self.event
        return EventEntry(
            self.outbox_id,
            {
                "grant_id": e["grant_id"],
                "event": "fulfilled",
                "at_ms": at,
                "actor": INTERNAL_ACTOR,
                "detail": {},
                "campaign_id": e["campaign_id"],
                "reward_id": e["reward_id"],
            },
        )

    def row(self) -> tuple:
        """Checked here, at parse time: COPY (batch.py) encodes rows on the client, and a wrong
        type or a number past bigint raises TypeError or OverflowError there, not a DataError
        the worker could set the entry aside for."""
        e = self.event
        return (
            _text(e["grant_id"]),
            _text(e["campaign_id"]),
            _text(e["reward_id"]),
            _text(e["right_id"]),
            _text(e["customer_id"]),
            _text(e["channel_id"]),
            _text(e["request_id"]),
            _bigint(e["unit_cost"]),
            _moment(e["granted_at_ms"]),
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


# Which outcome a merged card event row keeps (queries.sql insert_card_events): the higher.
_OUTCOME_RANK = {"uncounted": 0, "held": 1, "cancelled": 2, "reversal": 3, "counted": 4}


def merge_card_event_rows(rows: list[tuple]) -> list[tuple]:
    """CardEventEntry rows with one per (channel_id, event_id), as insert_card_events merges
    a row already in the ledger: an event counted in campaigns of several shards comes in one
    entry per shard, and a batch may hold several of them. The first row's other values stay."""
    merged: dict[tuple[str, str], tuple] = {}
    for row in rows:
        held = merged.get((row[0], row[1]))
        if held is None:
            merged[(row[0], row[1])] = row
            continue
        outcome = row[8] if _OUTCOME_RANK[row[8]] > _OUTCOME_RANK[held[8]] else held[8]
        merged[(row[0], row[1])] = (
            *held[:8],
            outcome,
            _union(held[9], row[9]),
            _union(held[10], row[10]),
            *held[11:],
        )
    return list(merged.values())


def _union(first: str, then: str) -> str:
    """Two JSON lists as one: `first`, then what of `then` it lacks."""
    items = orjson.loads(first)
    items += [item for item in orjson.loads(then) if item not in items]
    return _json_list(items)


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


def parse_entries(outbox_id: str, fields: dict) -> list[Entry]:
    """The entries one outbox entry becomes: itself, and for a grant born fulfilled its
    `fulfilled` event after it. Raises as parse_entry does."""
    entry = parse_entry(outbox_id, fields)
    fulfilment = entry.fulfilment() if isinstance(entry, GrantEntry) else None
    return [entry] if fulfilment is None else [entry, fulfilment]


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


def _bigint(value: Any) -> int:
    """An integer a bigint column holds."""
    number = _integer(value)
    if not BIGINT_MIN <= number <= BIGINT_MAX:
        raise ValueError(f"{number} is out of bigint range")
    return number


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
