"""The cluster benchmark's stores: its own database (quanyi_bench_cluster on the shared
PostgreSQL, made afresh for every run and dropped at the end), the scratch Redis servers'
data (theirs alone, so flushed between runs), the campaigns spread over the shards, the signed
claims over them, and what is read back: grants per campaign in Redis and in the ledger, and
the Redis masters' CPU."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import asyncpg
import orjson
from redis.asyncio import Redis

from loadtests import procs, seeding
from loadtests.bench.results import BenchError
from loadtests.drivers import CLAIM_PATH
from loadtests.procs import HOST
from loadtests.scratch_redis import ScratchServers
from quanyi.access.signing import sign
from quanyi.core.settings import Settings
from quanyi.stores.db import migrate
from quanyi.stores.keys import Keys, shard_of
from quanyi.stores.redis import open_redis

PG_ADMIN_URL = f"postgresql://{HOST}:5432/postgres"
DATABASE = "quanyi_bench_cluster"
DATABASE_URL = f"postgresql://{HOST}:5432/{DATABASE}"
PREFIX = "qybcl"

# The claims benchmarks' channel, reward and sizes (seeding's): every claim goes the whole way.
CHANNEL = seeding.CHANNEL
CHANNEL_SECRET = seeding.CHANNEL_SECRET
REWARD = seeding.REWARD
CUSTOMERS = seeding.CUSTOMERS
STOCK = seeding.STOCK
CAMPAIGNS = 16
# The sharded runs' shards: one campaign in each, a few shards per master on the cluster.
SHARDS = 16


def campaign_ids(count: int = CAMPAIGNS, shards: int = SHARDS) -> list[str]:
    """`count` campaign ids in as many distinct shards of `shards` as there are (the same ids
    in every run, so one shard or sixteen differ only in where their keys go)."""
    chosen: dict[int, str] = {}
    n = 0
    while len(chosen) < min(count, shards):
        candidate = f"bcl{n:03d}"
        chosen.setdefault(shard_of(candidate, shards), candidate)
        n += 1
    ids = sorted(chosen.values())
    while len(ids) < count:
        ids.append(f"bclx{len(ids):03d}")
    return ids


def settings(redis: ScratchServers, shards: int) -> Settings:
    return Settings(
        redis_url=redis.url,
        redis_cluster=redis.cluster,
        redis_shards=shards,
        database_url=DATABASE_URL,
        key_prefix=PREFIX,
    )


def service_env(redis: ScratchServers, shards: int, port: int, **extra: str) -> dict[str, str]:
    """The environment of `quanyi serve` and the ledger worker."""
    return procs.service_env(
        redis.url,
        DATABASE_URL,
        PREFIX,
        port,
        QUANYI_REDIS_CLUSTER="true" if redis.cluster else "false",
        QUANYI_REDIS_SHARDS=str(shards),
        **extra,
    )


def masters(redis: ScratchServers) -> list[Redis]:
    """A plain client on each master: INFO and FLUSHALL are per node."""
    return [Redis(host=HOST, port=port, decode_responses=True) for port in redis.ports]


async def flush(nodes: list[Redis]) -> None:
    """The scratch servers hold nothing but this benchmark's keys."""
    for node in nodes:
        await node.flushall()


async def redis_cpu_s(nodes: list[Redis]) -> float:
    """INFO cpu (used_cpu_sys + used_cpu_user) summed over the masters."""
    total = 0.0
    for node in nodes:
        info = await node.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


async def command_calls(nodes: list[Redis]) -> dict[str, int]:
    """INFO commandstats: calls per command, summed over the masters (what the claim path
    sends per claim explains most of its cost)."""
    calls: dict[str, int] = {}
    for node in nodes:
        for name, stats in (await node.info("commandstats")).items():
            command = name.removeprefix("cmdstat_")
            calls[command] = calls.get(command, 0) + int(stats["calls"])
    return calls


async def drop_database() -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()


async def fresh_stores(redis: ScratchServers, shards: int, campaigns: list[str]) -> None:
    """Empty stores, the schema, the accounts, the channel and the live campaigns."""
    nodes = masters(redis)
    try:
        await flush(nodes)
    finally:
        for node in nodes:
            await node.aclose()
    await drop_database()
    await migrate(DATABASE_URL)
    pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=2)
    client = await open_redis(settings(redis, shards))
    try:
        await create_campaigns(pool, client, Keys(PREFIX, shards=shards), campaigns)
    finally:
        await client.aclose()
        await pool.close()


async def create_campaigns(
    pool: asyncpg.Pool, redis: Redis, keys: Keys, campaigns: list[str]
) -> None:
    """The claims benchmarks' accounts, channel, right with no vendor and approved campaigns
    (seeding's, through the workflow staff use, maker-checker kept), one per id here."""
    await seeding.create_accounts(pool)
    await seeding.create_campaign(pool, redis, keys, campaigns=campaigns)


def write_claims(path: Path, campaigns: list[str], count: int, tag: str, seed: int) -> None:
    """`count` unique signed claims for wrk_claims.lua, round-robin over `campaigns` (the
    format drivers.write_claims writes for one campaign), signed now: the API accepts a
    timestamp within 300 s."""
    rng = random.Random(seed)
    ts = str(int(time.time()))
    lines = [f"{ts} {CHANNEL} {CLAIM_PATH}"]
    for i in range(count):
        body = orjson.dumps(
            {
                "request_id": f"{tag}-{i}",
                "campaign_id": campaigns[i % len(campaigns)],
                "customer_id": f"cu{rng.randrange(CUSTOMERS):07d}",
            }
        )
        lines.append(f"{sign(CHANNEL_SECRET, 'POST', CLAIM_PATH, ts, body)} {body.decode()}")
    path.write_text("\n".join(lines) + "\n")


async def granted(redis: Redis, keys: Keys, campaigns: list[str]) -> dict[str, int]:
    """Each campaign's granted counter in Redis."""
    counts = {}
    for campaign in campaigns:
        counts[campaign] = int(
            await redis.hget(keys.campaign(campaign), f"r:{REWARD}:granted") or 0
        )
    return counts


async def ledger_rows(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT campaign_id, count(*) AS n FROM grants GROUP BY campaign_id")
    return {r["campaign_id"]: int(r["n"]) for r in rows}


async def check_invariants(
    pool: asyncpg.Pool, redis: Redis, keys: Keys, campaigns: list[str], timeout_s: float
) -> tuple[int, int]:
    """Waits until the ledger holds a row for every grant Redis counted, then checks that no
    campaign went over its stock: (grants in Redis, ledger rows), or a BenchError."""
    deadline = time.monotonic() + timeout_s
    while True:
        in_redis, in_ledger = await granted(redis, keys, campaigns), await ledger_rows(pool)
        if all(in_ledger.get(c, 0) == n for c, n in in_redis.items()) and set(in_ledger) <= set(
            in_redis
        ):
            break
        if time.monotonic() > deadline:
            behind = {c: (n, in_ledger.get(c, 0)) for c, n in in_redis.items()}
            raise BenchError(f"ledger rows != grants in Redis after {timeout_s:.0f} s: {behind}")
        await asyncio.sleep(0.2)
    over = {c: n for c, n in in_redis.items() if n > STOCK}
    if over:
        raise BenchError(f"campaigns over their stock of {STOCK}: {over}")
    return sum(in_redis.values()), sum(in_ledger.values())
