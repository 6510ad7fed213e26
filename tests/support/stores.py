"""This run's stores seen from outside the app: emptying them, and reading what they hold."""

from __future__ import annotations

from typing import Any

import asyncpg
from redis.asyncio import Redis

from quanyi.ledger.worker import LedgerWorker
from tests.support.settings import TEST_DATABASE_URL, TEST_PREFIX, TEST_REDIS_URL


async def drop_test_database() -> None:
    admin = await asyncpg.connect(TEST_DATABASE_URL.rsplit("/", 1)[0] + "/postgres")
    name = TEST_DATABASE_URL.rsplit("/", 1)[1]
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def empty_tables(pool: asyncpg.Pool) -> None:
    """Every table but the migrations' own, emptied."""
    tables = [
        r["tablename"]
        for r in await pool.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'schema_migrations'"
        )
    ]
    async with pool.acquire() as conn, conn.transaction():
        # The audit log refuses TRUNCATE (migration 0008) except to a superuser in replica mode.
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
    await seed_branches(pool)


# The tree every test starts with: head office, branches SZ (with sub-branch SZ01) and GZ.
TEST_BRANCHES = (("HQ", None), ("SZ", "HQ"), ("GZ", "HQ"), ("SZ01", "SZ"))


async def seed_branches(db: asyncpg.Pool | asyncpg.Connection) -> None:
    """TEST_BRANCHES, as migration 0010 and POST /admin/v1/branches make them."""
    for branch_id, parent in TEST_BRANCHES:
        await db.execute(
            "INSERT INTO branches (id, name, parent_id, depth)"
            " VALUES ($1, $1, $2, CASE WHEN $2::text IS NULL THEN 1"
            " ELSE (SELECT depth + 1 FROM branches WHERE id = $2) END)"
            " ON CONFLICT (id) DO NOTHING",
            branch_id,
            parent,
        )


async def delete_test_keys(client: Redis) -> None:
    """Every key of this run's prefix, and only those: other runs share the Redis db."""
    batch = [k async for k in client.scan_iter(match=f"{TEST_PREFIX}:*", count=1000)]
    for i in range(0, len(batch), 1000):
        await client.unlink(*batch[i : i + 1000])


async def redis_state() -> dict[bytes, Any]:
    """Every key of the service (test prefix) with its content: equal snapshots mean nothing
    moved. Read as bytes: idempotency fields are binary digests."""
    raw = Redis.from_url(TEST_REDIS_URL)
    try:
        return await redis_snapshot(raw)
    finally:
        await raw.aclose()


async def redis_snapshot(redis: Redis) -> dict[bytes, Any]:
    """What `redis_state` reads, from a given client (a scratch server, say)."""
    state: dict[bytes, Any] = {}
    for key in sorted([k async for k in redis.scan_iter(match=f"{TEST_PREFIX}:*", count=1000)]):
        kind = (await redis.type(key)).decode()
        if kind == "hash":
            state[key] = await redis.hgetall(key)
        elif kind == "string":
            state[key] = await redis.get(key)
        elif kind == "set":
            state[key] = sorted(await redis.smembers(key))
        elif kind == "stream":
            state[key] = [entry_id for entry_id, _ in await redis.xrange(key)]
        elif kind == "list":
            state[key] = await redis.lrange(key, 0, -1)
        elif kind == "zset":
            state[key] = await redis.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = kind
    return state


async def granted(redis: Redis, keys: Any, campaign_id: str = "c1", reward_id: str = "r1") -> int:
    """The live granted counter of one reward."""
    return int(await redis.hget(keys.campaign(campaign_id), f"r:{reward_id}:granted") or 0)


async def ledger_count(redis: Redis, pool: asyncpg.Pool, keys: Any) -> int:
    """Grants in the ledger, once the ledger worker has caught up."""
    await LedgerWorker(redis, pool, keys).drain()
    return await pool.fetchval("SELECT count(*) FROM grants")


async def redeemed_events(redis: Redis, pool: asyncpg.Pool, keys: Any, grant_id: str) -> int:
    """The grant's `redeemed` events in the ledger, once the ledger worker has caught up."""
    await LedgerWorker(redis, pool, keys).drain()
    return await pool.fetchval(
        "SELECT count(*) FROM grant_events WHERE grant_id = $1 AND event = 'redeemed'", grant_id
    )


async def ledger_rows(pool: asyncpg.Pool, grant_ids: list[str]) -> dict[str, Any]:
    """grant id -> its row in the ledger (status, code, vendor, expiry)."""
    rows = await pool.fetch(
        "SELECT grant_id, status, code, vendor_id, expires_at FROM grants"
        " WHERE grant_id = ANY($1::text[])",
        grant_ids,
    )
    return {r["grant_id"]: r for r in rows}


async def ledger_events(pool: asyncpg.Pool, grant_id: str) -> list[str]:
    """The grant's events in the ledger, in the order the outbox had them."""
    rows = await pool.fetch(
        "SELECT event FROM grant_events WHERE grant_id = $1"
        " ORDER BY split_part(outbox_id, '-', 1)::bigint, split_part(outbox_id, '-', 2)::bigint",
        grant_id,
    )
    return [r["event"] for r in rows]


async def campaign_status(pool: asyncpg.Pool, campaign_id: str = "c1") -> str | None:
    """The campaign's status as PostgreSQL has it (None: no such campaign)."""
    return await pool.fetchval("SELECT status FROM campaigns WHERE id = $1", campaign_id)


async def audit_rows(pool: asyncpg.Pool, target: str | None = None) -> list[tuple[str, ...]]:
    """(actor, branch, action, target) of the audit log, oldest first."""
    rows = await pool.fetch(
        "SELECT actor, branch, action, target FROM audit_log"
        " WHERE $1::text IS NULL OR target = $1 ORDER BY id",
        target,
    )
    return [tuple(r) for r in rows]
