"""The sustained benchmark's scratch stores (database quanyi_bench_sustained, Redis db 13, only
keys under the `qybsu` prefix touched), made afresh for every run of a topology, its campaign
(a right with no vendor, or one fulfilled by the simulated vendor), and what is read back: grants
counted and the CPU time of the two servers."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.asyncio import Redis

from loadtests.bench.results import BenchError
from loadtests.drivers import ClaimSigner
from loadtests.procs import HOST, cpu_s
from quanyi.access.channels import create_channel
from quanyi.access.staff import Staff, create_staff
from quanyi.campaigns.service import CampaignService
from quanyi.stores.db import migrate
from quanyi.stores.keys import Keys
from quanyi.vendors.lifecycle import VendorLifecycle

PG_ADMIN_URL = f"postgresql://{HOST}:5432/postgres"
DATABASE = "quanyi_bench_sustained"
DATABASE_URL = f"postgresql://{HOST}:5432/{DATABASE}"
REDIS_DB = 13  # shared with bench_simulate and bench_audience, each under its own prefix
REDIS_URL = f"redis://{HOST}:6379/{REDIS_DB}"
PREFIX = "qybsu"

CHANNEL = "bench-app"
CHANNEL_SECRET = "bench-channel-secret-not-for-production"
CAMPAIGN = "bench"
REWARD = "r1"
VENDOR = "bench-sim"
# The simulator's default latency is what the vendor scenario measures; this many calls in
# flight keep a few thousand fulfilments a second going at it.
VENDOR_MAX_IN_FLIGHT = 256
# As in the claims benchmark: every claim is decided the whole way to a grant.
CUSTOMERS = 1_000_000
PER_CUSTOMER_LIMIT = 1_000
STOCK = 100_000_000
SIGNER = ClaimSigner(CHANNEL, CHANNEL_SECRET, CAMPAIGN, CUSTOMERS)

MARKETER = Staff("bench-marketer", "marketer", "HQ")
APPROVER = Staff("bench-approver", "approver", "HQ")
ADMIN = Staff("bench-admin", "admin", "HQ")  # registers the vendor
PASSWORD = "bench-password"


def service_env(port: int, **extra: str) -> dict[str, str]:
    """The environment of `quanyi run`, `quanyi serve` and the workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANYI_")}
    env.update(
        QUANYI_REDIS_URL=REDIS_URL,
        QUANYI_DATABASE_URL=DATABASE_URL,
        QUANYI_KEY_PREFIX=PREFIX,
        QUANYI_HTTP_HOST=HOST,
        QUANYI_HTTP_PORT=str(port),
        QUANYI_LOG_LEVEL="WARNING",
        # Two workers of different kinds would both want the same metrics ports otherwise.
        QUANYI_WORKER_METRICS_PORT="0",
    )
    env.update(extra)
    return env


def redis_client() -> Redis:
    return Redis.from_url(REDIS_URL, decode_responses=True)


async def clear_prefix(redis: Redis) -> None:
    """This benchmark's keys only: db 13 has other benchmarks' keys under other prefixes."""
    batch: list[str] = []
    async for key in redis.scan_iter(match=f"{PREFIX}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await redis.unlink(*batch)
            batch.clear()
    if batch:
        await redis.unlink(*batch)


async def drop_database() -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()


async def fresh_stores(redis: Redis, vendor_url: str | None) -> None:
    """Empty stores, the schema, then the accounts and the campaign the claims go to; with
    `vendor_url`, its right is fulfilled by the simulated vendor there."""
    await clear_prefix(redis)
    await drop_database()
    await migrate(DATABASE_URL)
    pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=2)
    try:
        await create_campaign(pool, redis, vendor_url)
    finally:
        await pool.close()


async def create_campaign(pool: asyncpg.Pool, redis: Redis, vendor_url: str | None) -> None:
    """A channel, maybe a vendor, a right and an approved campaign, through the same workflow
    staff use (each step by a role that may take it, maker-checker kept)."""
    for staff in (MARKETER, APPROVER, ADMIN):
        await create_staff(pool, staff.username, PASSWORD, staff.role, staff.branch)
    await create_channel(pool, CHANNEL, CHANNEL_SECRET)
    right: dict[str, object] = {
        "id": "bench-voucher",
        "name": "bench voucher",
        "kind": "voucher",
        "face_value": 200,
        "unit_cost": 100,
    }
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
        right["vendor_id"] = VENDOR
    service = CampaignService(pool, redis, Keys(PREFIX))
    await service.create_right(MARKETER, right)
    await service.rights.transition(APPROVER, str(right["id"]), "admit")
    now = datetime.now(UTC)
    await service.create(
        MARKETER,
        {
            "id": CAMPAIGN,
            "name": "bench campaign",
            "branch": "HQ",
            "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(days=7)).isoformat(),
            "channels": [CHANNEL],
            "rewards": [
                {
                    "id": REWARD,
                    "right_id": right["id"],
                    "stock": STOCK,
                    "per_customer_limit": PER_CUSTOMER_LIMIT,
                }
            ],
        },
    )
    await service.transition(MARKETER, CAMPAIGN, "submit")
    await service.transition(APPROVER, CAMPAIGN, "approve")


async def granted_total(redis: Redis) -> int:
    return int(await redis.hget(Keys(PREFIX).campaign(CAMPAIGN), f"r:{REWARD}:granted") or 0)


async def ledger_rows(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM grants"))


async def redis_cpu_s(redis: Redis) -> float:
    """The Redis server's own CPU (INFO cpu: its getrusage, what /proc/<pid>/stat says too,
    also when the server runs in another pid namespace). Other users of it count too."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


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
