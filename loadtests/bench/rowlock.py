"""The claim "the usual way", for comparison: every claim locks the one stock row of a
PostgreSQL table for its transaction."""

from __future__ import annotations

import asyncio
import random

import asyncpg

from loadtests.bench.results import RowLockRun
from loadtests.bench.stores import DATABASE_URL
from loadtests.seeding import CUSTOMERS, STOCK
from loadtests.stats import percentile

ROWLOCK_TASKS = 64


async def rowlock_claims(seconds: float, warmup_s: float) -> RowLockRun:
    """ROWLOCK_TASKS concurrent claimers for `seconds` after `warmup_s`, in scratch tables."""
    pool = await asyncpg.create_pool(DATABASE_URL, min_size=ROWLOCK_TASKS, max_size=ROWLOCK_TASKS)
    try:
        await pool.execute(
            "DROP TABLE IF EXISTS rowlock_grants, rowlock_stock;"
            " CREATE TABLE rowlock_stock (id int PRIMARY KEY, stock bigint NOT NULL,"
            "  granted bigint NOT NULL);"
            " CREATE TABLE rowlock_grants (request_id text PRIMARY KEY, customer_id text NOT NULL,"
            "  granted_at timestamptz NOT NULL DEFAULT now());"
            f" INSERT INTO rowlock_stock VALUES (1, {STOCK}, 0)"
        )
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + warmup_s
        until = measure_from + seconds
        latencies: list[float] = []
        errors = 0

        async def claimer(n: int) -> None:
            nonlocal errors
            rng = random.Random(n)
            i = 0
            while (started := loop.time()) < until:
                i += 1
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        row = await conn.fetchrow(
                            "SELECT stock, granted FROM rowlock_stock WHERE id = 1 FOR UPDATE"
                        )
                        if row["granted"] < row["stock"]:
                            await conn.execute(
                                "UPDATE rowlock_stock SET granted = granted + 1 WHERE id = 1"
                            )
                            await conn.execute(
                                "INSERT INTO rowlock_grants (request_id, customer_id)"
                                " VALUES ($1, $2)",
                                f"{n}-{i}",
                                f"cu{rng.randrange(CUSTOMERS):07d}",
                            )
                except asyncpg.PostgresError:
                    errors += 1
                    continue
                if started >= measure_from:
                    latencies.append(loop.time() - started)

        await asyncio.gather(*(claimer(n) for n in range(ROWLOCK_TASKS)))
        elapsed = loop.time() - measure_from
        await pool.execute("DROP TABLE rowlock_grants, rowlock_stock")
    finally:
        await pool.close()
    return RowLockRun(
        claims=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        errors=errors,
    )
