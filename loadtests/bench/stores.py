"""The claim benchmark's scratch stores (database quanyi_bench, Redis db 11 for the API and 12
for claim.lua alone, prefix qyb) and its campaign, and what is read back from them: grants
counted, memory per key family, the outbox's consumer groups, the ledger's catch-up and lag."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from redis.asyncio import Redis

from loadtests import procs, scratch, seeding
from loadtests.bench.results import BenchError, Settled
from loadtests.seeding import CHANNEL
from quanyi.core.settings import Settings
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import LEDGER_GROUP, stream_groups, trim_outbox

PG_ADMIN_URL = "postgresql://127.0.0.1:5432/postgres"
DATABASE = "quanyi_bench"
DATABASE_URL = f"postgresql://127.0.0.1:5432/{DATABASE}"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
API_REDIS_DB, LUA_REDIS_DB = 11, 12
PREFIX = "qyb"

CATCH_UP_TIMEOUT_S = 60.0


def service_env(port: int = Settings.http_port, **extra: str) -> dict[str, str]:
    """The environment of `quanyi serve` and the workers against the scratch stores (the
    workers listen on no HTTP port: `port` matters only to the API)."""
    return procs.service_env(
        f"redis://{REDIS_HOST}:{REDIS_PORT}/{API_REDIS_DB}", DATABASE_URL, PREFIX, port, **extra
    )


def redis_client(db: int) -> Redis:
    return Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, decode_responses=True)


async def redis_cpu_s(redis: Redis) -> float:
    """The Redis server's own CPU (INFO cpu: its getrusage, what /proc/<pid>/stat says too,
    also when the server runs in another pid namespace). Other users of it count too."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def fresh_database() -> None:
    await scratch.fresh_database(DATABASE_URL)


async def drop_database() -> None:
    await scratch.drop_database(DATABASE_URL)


async def create_campaign(pool: asyncpg.Pool, redis: Redis) -> None:
    """A channel and an approved campaign, through the same workflow staff use."""
    await seeding.create_accounts(pool)
    await seeding.create_campaign(pool, redis, Keys(PREFIX))


async def granted_total(redis: Redis) -> int:
    return await seeding.granted_total(redis, Keys(PREFIX))


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


def key_family(key: str) -> str:
    if ":idem:" in key:
        return "idempotency"
    if ":cu:" in key:
        return "customer totals"
    if ":cd:" in key or ":rd:" in key:
        return "daily counters"
    if ":outbox" in key:
        return "outbox"
    if ":pending" in key:
        return "pending grants"
    return "campaigns"


async def keys_memory(redis: Redis) -> dict[str, tuple[int, int]]:
    """(keys, bytes) per key family of this run: unlike used_memory, blind to other users of
    the server, but also blind to the server's own per-key tables (main and expires dicts)."""
    families: dict[str, tuple[int, int]] = {}
    batch: list[str] = []

    async def measure() -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.memory_usage(key, samples=0)
            sizes = await pipe.execute()
        for key, size in zip(batch, sizes, strict=True):
            count, total = families.get(key_family(key), (0, 0))
            families[key_family(key)] = (count + 1, total + (size or 0))
        batch.clear()

    async for key in redis.scan_iter(match=f"{PREFIX}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await measure()
    if batch:
        await measure()
    return families


async def settled(
    redis: Redis, pool: asyncpg.Pool, keys_of: Settled | None = None, timeout_s: float = 30.0
) -> Settled:
    """Waits for the ledger group to acknowledge every outbox entry, then trims the outbox the
    way the worker's house-keeping does: never past what any consumer group acknowledged.
    `keys_of`: an earlier measurement whose key sizes still hold, to skip a scan."""
    keys = Keys(PREFIX)
    deadline = time.monotonic() + timeout_s
    while (groups := await outbox_groups(redis, keys)).get(LEDGER_GROUP):
        if time.monotonic() > deadline:
            raise BenchError(f"the ledger still had outbox entries after {timeout_s:.0f} s")
        await asyncio.sleep(0.1)
    await trim_outbox(redis, keys)
    return Settled(
        used_memory=await used_memory(redis),
        held={name: n for name, n in groups.items() if name != LEDGER_GROUP and n},
        grants=await pool.fetchval("SELECT count(*) FROM grants"),
        keys=keys_of.keys if keys_of else await keys_memory(redis),
    )


async def outbox_groups(redis: Redis, keys: Keys) -> dict[str, int]:
    """Consumer group -> outbox entries it has not acknowledged (pending or not yet read),
    summed over the shards' streams."""
    counts: dict[str, int] = {}
    for shard in keys.shards:
        for group in await stream_groups(redis, shard.outbox):
            lag = group.get("lag")
            if lag is None:  # Redis could not count it: count what follows the last delivery
                after = f"({group['last-delivered-id']}"
                lag = len(await redis.xrange(shard.outbox, after, "+"))
            name = group["name"]
            counts[name] = counts.get(name, 0) + int(group["pending"]) + int(lag)
    return counts


async def caught_up(redis: Redis, pool: asyncpg.Pool, since: float) -> float | None:
    """Seconds from `since` until the ledger holds as many grants as Redis counted."""
    deadline = since + CATCH_UP_TIMEOUT_S
    while time.monotonic() < deadline:
        granted = await granted_total(redis)
        if await pool.fetchval("SELECT count(*) FROM grants") >= granted:
            return max(time.monotonic() - since, 0.0)
        await asyncio.sleep(0.05)
    return None


async def ledger_lag(pool: asyncpg.Pool, tag: str) -> tuple[float | None, float | None]:
    """Max and p99 of (persisted - granted) over the grants of one measured run."""
    row = await pool.fetchrow(
        "SELECT max(lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) FROM"
        " (SELECT extract(epoch FROM persisted_at - granted_at)::float8 AS lag"
        "  FROM grants WHERE channel_id = $1 AND request_id LIKE $2) AS g",
        CHANNEL,
        f"{tag}-%",
    )
    return row[0], row[1]
