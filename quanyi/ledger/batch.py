"""One ledger transaction: a batch of outbox entries written to PostgreSQL (the ledger worker's
`_insert`, worker.py), idempotently, with the report rollups of exactly what it newly wrote.

The grants are copied (COPY) into a temporary table and inserted from it with ON CONFLICT DO
NOTHING: an entry delivered twice inserts nothing and is counted nowhere. Each grant is
inserted with the status its own batch's events give it (a grant born fulfilled is inserted
`fulfilled`), so the common case writes each grant row once; only grants whose events the
ledger held before (events that reached it first, or a fulfilment detail to copy) and grants
of events of their own entries (transitions) are refreshed from their events (refresh_status).

Rollups are summed in Python (rollups.py BatchRollups) and written in one upsert per table,
the events that reached the ledger before their grant included; events of grants written in an
earlier transaction (transitions) keep the SQL rollup (roll_up_events).

Locking: a batch with transitions (events of their own outbox entries) takes the ledger lock
exclusively, as every batch did before: its grant may be being written by another worker at
that moment, and each would miss the other. A batch of grants alone (and the events born with
them, in the same entries) meets no such event and takes the lock shared, so several ledger
workers write grants side by side.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from quanyi.ledger import queries
from quanyi.ledger.entries import (
    CardEventEntry,
    Entry,
    EventEntry,
    GrantEntry,
    merge_card_event_rows,
)
from quanyi.ledger.rollups import BatchRollups

GRANT_COLUMNS = (
    "grant_id",
    "campaign_id",
    "reward_id",
    "right_id",
    "customer_id",
    "channel_id",
    "request_id",
    "unit_cost",
    "granted_at",
    "outbox_id",
    "status",
)


def outbox_order(outbox_id: str) -> tuple[int, int]:
    """A stream id's place in the outbox (refresh_status orders events the same way)."""
    ms, _, seq = outbox_id.partition("-")
    return int(ms), int(seq or 0)


def status_of(event: str) -> str:
    return "granted" if event == "redriven" else event


def rows_status(latest: dict[str, tuple[tuple[int, int], str]], grant_id: str) -> str:
    """A grant's status by the batch's own events: `granted` with none."""
    held = latest.get(grant_id)
    return "granted" if held is None else held[1]


async def write_batch(conn: asyncpg.Connection, entries: list[Entry], tz: str) -> set[str]:
    """Writes the batch in the transaction `conn` is in; the ids of the grants newly inserted."""
    grant_entries = [e for e in entries if isinstance(e, GrantEntry)]
    grants = [e.row() for e in grant_entries]
    events = [e.row() for e in entries if isinstance(e, EventEntry)]
    card_events = merge_card_event_rows(
        [r for e in entries if isinstance(e, CardEventEntry) for r in e.rows()]
    )
    # The events born with a grant (parsed from the grant's own entry), by (grant id, outbox
    # id): an outbox id is unique in its own shard's stream only, and another shard's
    # transition with the same id is a transition all the same.
    born_with = {(e.grant_id, e.outbox_id) for e in grant_entries}
    transitions = any(
        isinstance(e, EventEntry) and (e.grant_id, e.outbox_id) not in born_with for e in entries
    )
    await conn.execute(queries.lock_ledger if transitions else queries.lock_ledger_shared)

    # The status each grant's events in this batch give it, and whether a fulfilment detail
    # (vendor, code, reference) is to be copied onto it: refresh_status does that.
    latest: dict[str, tuple[tuple[int, int], str]] = {}
    detailed: set[str] = set()
    for grant_id, event, _at, _actor, detail, outbox_id in events:
        order = outbox_order(outbox_id)
        held = latest.get(grant_id)
        if held is None or order > held[0]:
            latest[grant_id] = (order, status_of(event))
        if event == "fulfilled" and detail != "{}":
            detailed.add(grant_id)
    rollups = BatchRollups(tz)
    inserted: set[str] = set()
    if grants:
        rows = [(*g, rows_status(latest, g[0])) for g in grants]
        await conn.execute(queries.stage_grants)
        await conn.copy_records_to_table("ledger_grants_in", records=rows, columns=GRANT_COLUMNS)
        inserted = {r["grant_id"] for r in await conn.fetch(queries.insert_staged_grants)}
    by_id = {g[0]: g for g in grants if g[0] in inserted}
    for grant_id, g in by_id.items():
        rollups.issued(g)
        rollups.status(g[1], g[2], g[3], rows_status(latest, grant_id), 1)
    # Grants inserted now whose events reached the ledger first (a dead worker's batch taken
    # over later): their status and rollups come from every event they have, in SQL.
    earlier: set[str] = set()
    if inserted:
        earlier = {
            r["grant_id"] for r in await conn.fetch(queries.grants_with_events, list(inserted))
        }
    # A grant's born `fulfilled` event goes in with its grant only: a grant not inserted now is
    # in the ledger with it already (a re-delivery), or is set aside as a duplicate of another
    # grant's request (worker.py `_check_unwritten`), which must leave no event behind.
    events = [e for e in events if (e[0], e[5]) not in born_with or e[0] in inserted]
    new_events: list[Any] = []
    if events:
        columns = [list(col) for col in zip(*events, strict=True)]
        new_events = await conn.fetch(queries.insert_events, *columns)
    later = [e for e in new_events if e["grant_id"] not in inserted]
    for e in new_events:
        if e["grant_id"] in by_id and e["grant_id"] not in earlier:
            rollups.event(by_id[e["grant_id"]], e["event"], e["at"])
    # Every event of the grants in `earlier` (those inserted now too) goes in the batch's own
    # sorted upsert: in SQL after it, a batch of grants alone would lock report_daily rows out of
    # order, and two such batches side by side (the shared lock) could deadlock.
    if earlier:
        for e in await conn.fetch(queries.events_of_grants, sorted(earlier)):
            rollups.event(by_id[e["grant_id"]], e["event"], e["at"])
    # ... and grants of transitions, written in an earlier transaction.
    refresh = earlier | (detailed & inserted) | ({e["grant_id"] for e in new_events} - inserted)
    if refresh:
        for r in await conn.fetch(queries.refresh_status, sorted(refresh)):
            if r["before"] != r["after"]:
                rollups.status(r["campaign_id"], r["reward_id"], r["right_id"], r["before"], -1)
                rollups.status(r["campaign_id"], r["reward_id"], r["right_id"], r["after"], 1)
    # Only what this transaction wrote is counted: a re-delivered entry adds nothing.
    await rollups.write(conn)
    if later:  # only in a batch with transitions, which holds the lock exclusively
        await conn.execute(
            queries.roll_up_events,
            [],
            [e["grant_id"] for e in later],
            [e["outbox_id"] for e in later],
            tz,
        )
    if card_events:
        columns = [list(col) for col in zip(*card_events, strict=True)]
        await conn.execute(queries.insert_card_events, *columns)
    return inserted
