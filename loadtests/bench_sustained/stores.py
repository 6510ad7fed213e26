"""The sustained benchmark's scratch stores (database quanyi_bench_sustained, Redis db 13, only
keys under the `qybsu` prefix touched), made afresh for every run of a topology, its campaign
(a right with no vendor, or one fulfilled by the simulated vendor), and what is read back: grants
counted and the CPU time of the two servers."""

from __future__ import annotations

import asyncio

import asyncpg
from redis.asyncio import Redis

from loadtests import procs, scratch, seeding
from loadtests.bench.results import BenchError
from loadtests.procs import HOST, cpu_s
from loadtests.seeding import ADMIN, APPROVER
from quanyi.stores.keys import Keys
from quanyi.vendors.lifecycle import VendorLifecycle

DATABASE = "quanyi_bench_sustained"
DATABASE_URL = f"postgresql://{HOST}:5432/{DATABASE}"
REDIS_DB = 13  # shared with bench_simulate and bench_audience, each under its own prefix
REDIS_URL = f"redis://{HOST}:6379/{REDIS_DB}"
PREFIX = "qybsu"

VENDOR = "bench-sim"
# The simulator's default latency is what the vendor scenario measures; this many calls in
# flight keep a few thousand fulfilments a second going at it.
VENDOR_MAX_IN_FLIGHT = 256


def service_env(port: int, **extra: str) -> dict[str, str]:
    """The environment of `quanyi run`, `quanyi serve` and the workers."""
    return procs.service_env(REDIS_URL, DATABASE_URL, PREFIX, port, **extra)


def redis_client() -> Redis:
    return Redis.from_url(REDIS_URL, decode_responses=True)


async def drop_database() -> None:
    await scratch.drop_database(DATABASE_URL)


async def fresh_stores(redis: Redis, vendor_url: str | None) -> None:
    """Empty stores (this benchmark's keys only: db 13 has other benchmarks' keys under other
    prefixes), the schema, then the accounts and the campaign the claims go to; with
    `vendor_url`, its right is fulfilled by the simulated vendor there."""
    await scratch.clear_prefix(redis, PREFIX)
    await scratch.fresh_database(DATABASE_URL)
    pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=2)
    try:
        await create_campaign(pool, redis, vendor_url)
    finally:
        await pool.close()


async def create_campaign(pool: asyncpg.Pool, redis: Redis, vendor_url: str | None) -> None:
    """The claims benchmark's accounts and campaign; with `vendor_url`, its right fulfilled by
    the simulated vendor there, registered and activated first (by an admin and an approver)."""
    await seeding.create_accounts(pool)
    vendor_id = None
    if vendor_url is not None:
        vendors = VendorLifecycle(pool)
        await vendors.create(
            ADMIN,
            {
                "id": VENDOR,
                "name": "bench simulated vendor",
                "adapter": "simulated",
                "base_url": vendor_url,
                "timeout_ms": 2000,
                "max_in_flight": VENDOR_MAX_IN_FLIGHT,
                "retry": {"max_attempts": 3, "backoff_base_ms": 100, "backoff_max_ms": 1000},
            },
        )
        await vendors.transition(APPROVER, VENDOR, "activate")
        vendor_id = VENDOR
    await seeding.create_campaign(pool, redis, Keys(PREFIX), vendor_id)


async def granted_total(redis: Redis) -> int:
    return await seeding.granted_total(redis, Keys(PREFIX))


async def ledger_rows(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM grants"))


class PostgresCpu:
    """CPU of the PostgreSQL processes that work for us: the backends connected to our database
    and the server's own background processes (WAL writer, checkpointer, ...), each read from
    /proc/<pid>/stat, so another database's sessions on the shared server do not count. A
    backend that exits between two readings takes its CPU with it (the service's pools keep
    theirs open)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def pids(self) -> list[int]:
        rows = await self._pool.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = $1 OR backend_type <> 'client backend'",
            DATABASE,
        )
        return [r["pid"] for r in rows]

    async def read(self) -> dict[int, float]:
        """pid -> CPU seconds so far."""
        pids = await self.pids()
        readings = await asyncio.to_thread(lambda: {pid: cpu_s(pid=pid) for pid in pids})
        return {pid: s for pid, s in readings.items() if s is not None}

    @staticmethod
    def used(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU seconds between two readings; a process born in between counts from its start."""
        return sum(s - before.get(pid, 0.0) for pid, s in after.items())


async def wait_ledger(pool: asyncpg.Pool, redis: Redis, timeout_s: float) -> None:
    """Until the ledger holds a row for every grant Redis counted."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await ledger_rows(pool) < await granted_total(redis):
        if asyncio.get_running_loop().time() > deadline:
            raise BenchError(f"the ledger was behind Redis after {timeout_s:.0f} s")
        await asyncio.sleep(0.1)
