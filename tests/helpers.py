"""Shared helpers for the contract tests: raw signed requests, a Redis snapshot, time in a zone."""

from __future__ import annotations

import secrets
import socket
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from redis.asyncio import Redis

from access import queries as staff_queries
from access.signing import signed_headers
from access.staff import _token_hash
from tests.conftest import CHANNEL, CHANNEL_SECRET, TEST_PREFIX, TEST_REDIS_URL

SHANGHAI = ZoneInfo("Asia/Shanghai")
STAFF = ("marketer", "marketer2", "approver", "admin", "sz-marketer", "sz-approver", "sz-admin")


async def send(
    api: Any,
    method: str,
    path: str,
    data: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Sends exactly these headers and bytes; returns the status and the JSON body."""
    resp = await api.client.request(method, path, data=data, headers=headers or {})
    assert resp.content_type == "application/json", await resp.text()
    return resp.status, await resp.json()


def sign(
    api: Any,
    method: str,
    path: str,
    data: bytes = b"",
    *,
    ts: int | None = None,
    channel: str = CHANNEL,
    secret: str = CHANNEL_SECRET,
) -> dict[str, str]:
    """Signature headers over (method, path, ts, data); ts defaults to the app clock."""
    timestamp = int(api.clock()) if ts is None else ts
    return signed_headers(channel, secret, method, path, timestamp, data)


async def redis_state() -> dict[bytes, Any]:
    """Every key of the service (test prefix) with its content: equal snapshots mean nothing
    moved. Read as bytes: idempotency fields are binary digests."""
    raw = Redis.from_url(TEST_REDIS_URL)
    try:
        return await _state(raw)
    finally:
        await raw.aclose()


async def _state(redis: Redis) -> dict[bytes, Any]:
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


async def audit_rows(pool: asyncpg.Pool, target: str | None = None) -> list[tuple[str, ...]]:
    """(actor, branch, action, target) of the audit log, oldest first."""
    rows = await pool.fetch(
        "SELECT actor, branch, action, target FROM audit_log"
        " WHERE $1::text IS NULL OR target = $1 ORDER BY id",
        target,
    )
    return [tuple(r) for r in rows]


def next_local_midnight(now: float, zone: ZoneInfo) -> datetime:
    """The first local midnight after `now` in `zone`, as an aware datetime."""
    local = datetime.fromtimestamp(now, zone)
    return datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone)


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def sign_in(api: Any, pool: asyncpg.Pool, *usernames: str) -> None:
    """Sessions for these staff, stored as POST /admin/v1/login stores them, without paying
    for scrypt in every test (login itself is tested in test_admin.py)."""
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    for username in usernames or STAFF:
        token = secrets.token_urlsafe(32)
        await pool.execute(staff_queries.insert_session, _token_hash(token), username, expires_at)
        api._tokens[username] = token
