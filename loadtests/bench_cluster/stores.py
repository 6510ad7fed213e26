"""The cluster benchmark's stores: its own database (quanyi_bench_cluster on the shared
PostgreSQL, made afresh for every run and dropped at the end), the scratch Redis servers'
data (theirs alone, so flushed between runs), the campaigns spread over the shards, the signed
claims over them, the hot campaign (one campaign all claims go to, split into stock parts or
not), and what is read back: grants per campaign in Redis (summed over a split campaign's
parts) and in the ledger, each part's stock, and each Redis master's CPU."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from loadtests import procs, seeding
from loadtests.bench.results import BenchError
from loadtests.drivers import CLAIM_PATH
from loadtests.procs import HOST
from loadtests.scratch_redis import ScratchServers
from quanyi.access.signing import sign
from quanyi.campaigns.service import CampaignService
from quanyi.core.settings import Settings
from quanyi.inventory.stock_parts import read_parts, sums
from quanyi.stores.db import migrate
from quanyi.stores.keys import Keys, part_ids, shard_of
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
# The hot campaign: far more stock than a run can grant, and one claim per customer (a flash
# sale's rule; every claim of the hot runs is a customer of its own, so each is a grant).
HOT_STOCK = 10_000_000
HOT_LIMIT = 1


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
    return sum(await redis_cpu_by_node(nodes))


async def redis_cpu_by_node(nodes: list[Redis]) -> list[float]:
    """INFO cpu (used_cpu_sys + used_cpu_user) of each master, in the order of `nodes`."""
    seconds = []
    for node in nodes:
        info = await node.info("cpu")
        seconds.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return seconds


async def shard_masters(redis: ScratchServers, shards: int) -> list[int]:
    """The master (an index into `redis.ports`) each shard's keys live on, from the cluster's
    slot table as a cluster client reads it; all 0 for a plain server."""
    if not redis.cluster:
        return [0] * shards
    client = RedisCluster(host=HOST, port=redis.ports[0])
    try:
        await client.initialize()
        found = []
        for shard in Keys(PREFIX, shards=shards).shards:
            node = client.get_node_from_key(shard.tag)
            if node is None:
                raise BenchError(f"no master serves the slot of {shard.tag}")
            found.append(redis.ports.index(int(node.port)))
        return found
    finally:
        await client.aclose()


def hot_campaign_id(masters_of_shards: list[int], parts: int) -> str:
    """A campaign id whose `parts` stock parts land on as many distinct masters as there are
    (consecutive shards need not be on distinct masters), else on as many as any id's do: the
    same id in both hot runs, so 1 part and `parts` parts differ only in the split."""
    shards = len(masters_of_shards)
    wanted = min(parts, len(set(masters_of_shards)))
    best, best_on = "", 0
    for n in range(shards * 4):  # every shard a few times over as part 0's
        candidate = f"bclhot{n:03d}"
        on = len({masters_of_shards[shard_of(p, shards)] for p in part_ids(candidate, parts)})
        if on == wanted:
            return candidate
        if on > best_on:
            best, best_on = candidate, on
    return best


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


async def fresh_stores(
    redis: ScratchServers, shards: int, campaigns: list[str], hot_parts: int = 0
) -> None:
    """Empty stores, the schema, the accounts, the channel and the live campaigns (with
    `hot_parts`, the one hot campaign in `campaigns` split into that many stock parts)."""
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
        keys = Keys(PREFIX, shards=shards)
        if hot_parts:
            await create_hot_campaign(pool, client, keys, campaigns[0], hot_parts)
        else:
            await create_campaigns(pool, client, keys, campaigns)
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


async def create_hot_campaign(
    pool: asyncpg.Pool, redis: Redis, keys: Keys, campaign_id: str, parts: int
) -> None:
    """The accounts, the channel, the right (seeding's) and one approved campaign of
    HOT_STOCK, one claim per customer, created with `stock_parts: parts` through the workflow
    staff use, so the service publishes its parts as it would any split campaign."""
    await seeding.create_accounts(pool)
    await seeding.create_campaign(pool, redis, keys, campaigns=())  # the right alone
    service = CampaignService(pool, redis, keys)
    now = datetime.now(UTC)
    await service.create(
        seeding.MARKETER,
        {
            "id": campaign_id,
            "name": f"bench hot campaign, {parts} part(s)",
            "branch": "HQ",
            "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(days=7)).isoformat(),
            "channels": [CHANNEL],
            "stock_parts": parts,
            "rewards": [
                {
                    "id": REWARD,
                    "right_id": seeding.RIGHT,
                    "stock": HOT_STOCK,
                    "per_customer_limit": HOT_LIMIT,
                }
            ],
        },
    )
    await service.transition(seeding.MARKETER, campaign_id, "submit")
    await service.transition(seeding.APPROVER, campaign_id, "approve")


def write_claims(
    path: Path,
    campaigns: list[str],
    count: int,
    tag: str,
    seed: int,
    unique_customers: bool = False,
) -> None:
    """`count` unique signed claims for wrk_claims.lua, round-robin over `campaigns` (the
    format drivers.write_claims writes for one campaign), signed now: the API accepts a
    timestamp within 300 s. Customers are drawn from seeding's pool, or with
    `unique_customers` each claim is a customer of its own (the hot campaign's one claim per
    customer)."""
    rng = random.Random(seed)
    ts = str(int(time.time()))
    lines = [f"{ts} {CHANNEL} {CLAIM_PATH}"]
    for i in range(count):
        body = orjson.dumps(
            {
                "request_id": f"{tag}-{i}",
                "campaign_id": campaigns[i % len(campaigns)],
                "customer_id": f"{tag}-{i}"
                if unique_customers
                else f"cu{rng.randrange(CUSTOMERS):07d}",
            }
        )
        lines.append(f"{sign(CHANNEL_SECRET, 'POST', CLAIM_PATH, ts, body)} {body.decode()}")
    path.write_text("\n".join(lines) + "\n")


async def granted(redis: Redis, keys: Keys, campaigns: list[str], parts: int = 1) -> dict[str, int]:
    """Each campaign's granted counter in Redis, summed over its `parts` stock parts."""
    counts = dict.fromkeys(campaigns, 0)
    for campaign in campaigns:
        for part in part_ids(campaign, parts):
            got = await redis.hget(keys.campaign(part), f"r:{REWARD}:granted")
            counts[campaign] += int(got or 0)
    return counts


async def part_problems(redis: Redis, keys: Keys, campaign: str, parts: int) -> list[str]:
    """What is wrong with a split campaign's parts: a part that granted more than its stock,
    or stocks (with the stock in moves not completed) that do not add up to HOT_STOCK."""
    problems = []
    _granted, _spent, moving = await sums(redis, keys, campaign, parts, [REWARD])
    stock = moving[REWARD]
    hashes = await read_parts(redis, keys, campaign, parts)
    for part, h in zip(part_ids(campaign, parts), hashes, strict=True):
        has, took = int(h.get(f"r:{REWARD}:stock") or 0), int(h.get(f"r:{REWARD}:granted") or 0)
        stock += has
        if took > has:
            problems.append(f"part {part} granted {took} of its stock of {has}")
    if stock != HOT_STOCK:
        problems.append(f"the parts' stock adds up to {stock}, not {HOT_STOCK}")
    return problems


async def ledger_rows(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT campaign_id, count(*) AS n FROM grants GROUP BY campaign_id")
    return {r["campaign_id"]: int(r["n"]) for r in rows}


async def check_invariants(
    pool: asyncpg.Pool,
    redis: Redis,
    keys: Keys,
    campaigns: list[str],
    timeout_s: float,
    hot_parts: int = 0,
) -> tuple[int, int]:
    """Waits until the ledger holds a row for every grant Redis counted (a hot campaign's
    summed over its `hot_parts` parts), then checks that no campaign, and no part, went over
    its stock: (grants in Redis, ledger rows), or a BenchError."""
    deadline = time.monotonic() + timeout_s
    parts = max(hot_parts, 1)
    while True:
        in_redis = await granted(redis, keys, campaigns, parts)
        in_ledger = await ledger_rows(pool)
        if all(in_ledger.get(c, 0) == n for c, n in in_redis.items()) and set(in_ledger) <= set(
            in_redis
        ):
            break
        if time.monotonic() > deadline:
            behind = {c: (n, in_ledger.get(c, 0)) for c, n in in_redis.items()}
            raise BenchError(f"ledger rows != grants in Redis after {timeout_s:.0f} s: {behind}")
        await asyncio.sleep(0.2)
    stock = HOT_STOCK if hot_parts else STOCK
    over = {c: n for c, n in in_redis.items() if n > stock}
    if over:
        raise BenchError(f"campaigns over their stock of {stock}: {over}")
    if hot_parts:
        problems = [p for c in campaigns for p in await part_problems(redis, keys, c, parts)]
        if problems:
            raise BenchError("; ".join(problems))
    return sum(in_redis.values()), sum(in_ledger.values())
