"""Outbox entries as the ledger reads them: a grant (field `g`, from claim.lua) or a later
transition of one (field `e`, from transition.lua), each with the row it becomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson


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


def parse_entry(outbox_id: str, fields: dict) -> GrantEntry | EventEntry:
    """Raises ValueError, KeyError or TypeError for an entry that cannot be written."""
    if "g" in fields:
        entry: GrantEntry | EventEntry = GrantEntry(outbox_id, orjson.loads(fields["g"]))
    elif "e" in fields:
        entry = EventEntry(outbox_id, orjson.loads(fields["e"]))
    else:
        raise ValueError(f"no g or e field in {sorted(fields)}")
    entry.row()
    return entry


def entry_fields(entry: GrantEntry | EventEntry) -> dict[str, str]:
    return {"g" if isinstance(entry, GrantEntry) else "e": orjson.dumps(entry.event).decode()}
