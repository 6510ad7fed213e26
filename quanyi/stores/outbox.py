"""The outbox stream and its consumer groups: creating them, how far a group is behind, and
trimming what every group has done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quanyi.core.errors import StoreNotReady
from quanyi.stores.db import POSTGRES_AWAY
from quanyi.stores.keys import Keys

log = logging.getLogger(__name__)

LEDGER_GROUP = "ledger"
FULFIL_GROUP = "fulfil"
# Every consumer group of the outbox. They are created together (at API start, and again by a
# worker that finds its group gone after a Redis restart or flush): the outbox is trimmed only
# below what every existing group acknowledged, so a group made later would miss entries.
OUTBOX_GROUPS = (LEDGER_GROUP, FULFIL_GROUP)
# Redis is away (restarting, loading its data, failing over to a replica): retry later.
REDIS_AWAY = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A stream entry id as numbers, for ordering: '10-2' comes before '9-5' as text."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Lag:
    entries: int
    seconds: float


async def _groups(redis: Redis, keys: Keys) -> list[dict]:
    try:
        return await redis.xinfo_groups(keys.outbox)
    except ResponseError:  # no stream yet
        return []


async def outbox_lag(redis: Redis, keys: Keys, group: str = LEDGER_GROUP) -> Lag:
    """Entries appended but not yet acknowledged by `group`, and the age of the oldest one."""
    info = next((g for g in await _groups(redis, keys) if g["name"] == group), None)
    if info is None:
        return Lag(await redis.xlen(keys.outbox), 0.0)
    oldest: str | None = None
    if info["pending"]:
        oldest = (await redis.xpending(keys.outbox, group))["min"]
    else:
        after = await redis.xrange(keys.outbox, f"({info['last-delivered-id']}", "+", count=1)
        oldest = str(after[0][0]) if after else None
    undelivered = info.get("lag")
    if undelivered is None:  # Redis could not count it: count what is after the last delivery
        undelivered = len(
            await redis.xrange(keys.outbox, f"({info['last-delivered-id']}", "+") or []
        )
    seconds = max(time.time() - stream_id_key(oldest)[0] / 1000, 0.0) if oldest else 0.0
    return Lag(int(info["pending"]) + int(undelivered), seconds)


async def trim_outbox(redis: Redis, keys: Keys) -> None:
    """Drop outbox entries that every consumer group has acknowledged, never more.

    Entries at or after a group's lowest pending id, or after its last-delivered id, stay. New
    deliveries only ever take ids above the last-delivered one, so a floor computed here stays
    safe while other consumers keep working.
    """
    floor: tuple[int, int] | None = None
    floor_id = ""
    for info in await _groups(redis, keys):
        low = None
        if info["pending"]:
            # None when the group acknowledged the rest after XINFO GROUPS answered.
            low = (await redis.xpending(keys.outbox, info["name"]))["min"]
        if low is None:
            low = info["last-delivered-id"]
        if floor is None or stream_id_key(low) < floor:
            floor, floor_id = stream_id_key(low), low
    if floor is not None and floor > (0, 0):
        await redis.xtrim(keys.outbox, minid=floor_id, approximate=False)


async def ensure_group(redis: Redis, keys: Keys, group: str = LEDGER_GROUP) -> None:
    """Create the consumer group at the start of the outbox, so it sees every grant. Every group
    is created before the first claim (at API start), so trimming never passes a group that
    does not exist yet."""
    try:
        await redis.xgroup_create(keys.outbox, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def ensure_groups(redis: Redis, keys: Keys) -> None:
    """Every consumer group of the outbox, together: a worker re-creating only its own group
    after a Redis flush could trim entries the other group has not seen yet."""
    for group in OUTBOX_GROUPS:
        await ensure_group(redis, keys, group)


def group_missing(exc: BaseException) -> bool:
    """NOGROUP: the outbox or its consumer group is gone (a Redis restart without the data, a
    flush). The worker re-creates the groups and goes on."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


# A store away (restarting, failing over, or Redis emptied and not rebuilt yet): not the work's
# fault, so a worker retries it later and spends none of a grant's attempts on it.
STORES_AWAY = (*REDIS_AWAY, *POSTGRES_AWAY, asyncpg.PostgresError, StoreNotReady)


def worth_retrying(exc: BaseException) -> bool:
    """What a worker's side task logs briefly and tries again: a store away, or the consumer
    group gone (the read loop makes it again)."""
    return isinstance(exc, STORES_AWAY) or group_missing(exc)


async def read_until_stopped(
    name: str,
    step: Callable[[], Awaitable[Any]],
    redis: Redis,
    keys: Keys,
    stopping: asyncio.Event,
    *,
    retry_bugs: bool,
) -> None:
    """The read loop of a worker: `step()` again and again until `stopping` is set. A store
    away is waited out (0.5 s, doubling up to 5 s); the consumer groups gone (a Redis restart
    or flush) are made again, all of them; anything else is a bug, retried the same way with
    `retry_bugs`, else raised for the worker's supervisor."""
    groups_ready = False
    backoff = 0.5
    while not stopping.is_set():
        try:
            if not groups_ready:
                await ensure_groups(redis, keys)
                groups_ready = True
            await step()
            backoff = 0.5
            continue
        except STORES_AWAY as exc:
            log.warning("%s: store unavailable (%s); retrying in %.1f s", name, exc, backoff)
        except Exception as exc:
            if group_missing(exc):
                log.warning("%s: outbox consumer group gone (%s); re-creating it", name, exc)
                groups_ready = False
                continue
            if not retry_bugs:
                raise
            log.exception("%s: step failed; retrying in %.1f s", name, backoff)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), backoff)
        backoff = min(backoff * 2, 5.0)
