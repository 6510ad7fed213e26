"""Batches of grants alone run side by side (the ledger lock shared: quanyi/ledger/batch.py), so
each must touch the report rollup rows in one order, sorted: a batch whose grants had events in
the ledger before them (a dead worker's batch taken over after its transitions) counts those
events in the same sorted upsert, never in a second one after it, or two such batches could
deadlock.

The interleaving is forced with row locks held by a third transaction and waits observed in
pg_stat_activity, so the test is deterministic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson

from quanyi.ledger.batch import write_batch
from quanyi.ledger.entries import Entry, parse_entries
from quanyi.ledger.rollups import rebuild_rollups
from tests.support.waiting import until

TZ = "UTC"
DAY0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)


def ms(day: int) -> int:
    return int((DAY0 + timedelta(days=day)).timestamp() * 1000)


def grant(n: int, day: int, *, born_fulfilled: bool = False) -> list[Entry]:
    event = {
        "grant_id": f"01JZ{n:022d}",
        "campaign_id": "c1",
        "reward_id": "r1",
        "right_id": "coffee",
        "customer_id": f"cust-{n}",
        "channel_id": "app",
        "request_id": f"q{n}",
        "unit_cost": 100,
        "granted_at_ms": ms(day),
    }
    if born_fulfilled:
        event["fulfilled_at_ms"] = ms(day)
    return parse_entries(f"{ms(day)}-{n}", {"g": orjson.dumps(event).decode()})


def revoked(n: int, day: int) -> list[Entry]:
    event = {
        "grant_id": f"01JZ{n:022d}",
        "event": "revoked",
        "at_ms": ms(day),
        "actor": "staff:ops",
        "detail": {},
        "campaign_id": "c1",
        "reward_id": "r1",
    }
    return parse_entries(f"{ms(day)}-9{n}", {"e": orjson.dumps(event).decode()})


async def write(pool, entries: list[Entry]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await write_batch(conn, entries, TZ)


async def waiting_on_a_lock(pool, pid: int) -> bool:
    kind = await pool.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
    return kind == "Lock"


async def daily(pool) -> list[tuple]:
    rows = await pool.fetch(
        "SELECT day, issued, fulfilled, revoked FROM report_daily ORDER BY day, channel_id"
    )
    return [tuple(r) for r in rows]


async def test_batches_of_grants_side_by_side_lock_rollup_rows_in_one_order(pool):
    # A rollup row for each of days 0..3, and grant 1's revocation in the ledger before it.
    await write(pool, [e for day in range(4) for e in grant(100 + day, day)])
    await write(pool, revoked(1, 1))

    async with (
        pool.acquire() as holder,
        pool.acquire() as conn_x,
        pool.acquire() as conn_y,
    ):
        async with holder.transaction():
            await holder.execute(
                "SELECT 1 FROM report_daily WHERE day = $1 FOR UPDATE",
                DAY0.date() + timedelta(days=2),
            )

            async def batch(conn, entries: list[Entry]) -> None:
                async with conn.transaction():
                    await write_batch(conn, entries, TZ)

            # Y: grants of days 1, 2, 3 (born fulfilled): it holds day 1 and waits for day 2.
            y = asyncio.create_task(
                batch(
                    conn_y,
                    [
                        e
                        for n, d in ((2, 1), (3, 2), (4, 3))
                        for e in grant(n, d, born_fulfilled=True)
                    ],
                )
            )
            pid_y = conn_y.get_server_pid()
            await until(lambda: waiting_on_a_lock(pool, pid_y), what="Y waiting for day 2")
            # X: grant 1 (day 0, its revocation on day 1) and grant 5 (day 3).
            x = asyncio.create_task(batch(conn_x, [*grant(1, 0), *grant(5, 3)]))
            pid_x = conn_x.get_server_pid()
            await until(lambda: waiting_on_a_lock(pool, pid_x), what="X waiting for day 1")
        # Day 2 let go: Y goes on to day 3, which X must not be holding while it waits for day 1.
        results = await asyncio.gather(x, y, return_exceptions=True)
    assert results == [None, None], results

    kept = await daily(pool)
    assert kept == [
        (DAY0.date(), 2, 0, 0),
        (DAY0.date() + timedelta(days=1), 2, 1, 1),
        (DAY0.date() + timedelta(days=2), 2, 1, 0),
        (DAY0.date() + timedelta(days=3), 3, 1, 0),
    ]
    statuses = await pool.fetch("SELECT grant_id, status FROM grants ORDER BY grant_id")
    assert dict((r["grant_id"], r["status"]) for r in statuses)[f"01JZ{1:022d}"] == "revoked"
    # What the batches counted is what the ledger's rows add up to.
    await rebuild_rollups(pool, TZ)
    assert await daily(pool) == kept
