"""The outbox streams (one per shard, quanyi/stores/keys.py) and their consumer groups:
creating them, reading every shard's, how far a group is behind, and trimming what every group
has done. With one shard there is one stream and every helper is the single-stream call."""

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
from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quanyi.core.errors import StoreNotReady
from quanyi.stores.db import POSTGRES_AWAY
from quanyi.stores.keys import Keys, ShardKeys
from quanyi.stores.redis import is_cluster
from quanyi.stores.shards import shard_of_stream

log = logging.getLogger(__name__)

LEDGER_GROUP = "ledger"
FULFIL_GROUP = "fulfil"
# Every consumer group of the outbox. They are created together (at API start, and again by a
# worker that finds its group gone after a Redis restart or flush): the outbox is trimmed only
# below what every existing group acknowledged, so a group made later would miss entries.
OUTBOX_GROUPS = (LEDGER_GROUP, FULFIL_GROUP)
# Redis is away (restarting, loading its data, failing over to a replica; on a cluster, a
# master failed and not yet replaced, its slots moving, or no node answering the client's
# refresh of the slots map, RedisClusterException): retry later.
REDIS_AWAY = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    ClusterDownError,
    TryAgainError,
    RedisClusterException,
)


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A stream entry id as numbers, for ordering: '10-2' comes before '9-5' as text."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Lag:
    entries: int
    seconds: float


async def stream_groups(redis: Redis, outbox: str) -> list[dict]:
    """XINFO GROUPS of one shard's outbox; none while the shard has no stream yet."""
    try:
        return await redis.xinfo_groups(outbox)
    except ResponseError:  # no stream yet
        return []


async def outbox_lag(redis: Redis, keys: Keys, group: str = LEDGER_GROUP) -> Lag:
    """Entries appended but not yet acknowledged by `group`, and the age of the oldest one,
    over every shard's outbox."""
    lags = [await _stream_lag(redis, shard.outbox, group) for shard in keys.shards]
    return Lag(sum(lag.entries for lag in lags), max(lag.seconds for lag in lags))


async def _stream_lag(redis: Redis, outbox: str, group: str) -> Lag:
    info = next((g for g in await stream_groups(redis, outbox) if g["name"] == group), None)
    if info is None:
        return Lag(await redis.xlen(outbox), 0.0)
    oldest: str | None = None
    if info["pending"]:
        oldest = (await redis.xpending(outbox, group))["min"]
    else:
        after = await redis.xrange(outbox, f"({info['last-delivered-id']}", "+", count=1)
        oldest = str(after[0][0]) if after else None
    undelivered = info.get("lag")
    if undelivered is None:  # Redis could not count it: count what is after the last delivery
        undelivered = len(await redis.xrange(outbox, f"({info['last-delivered-id']}", "+") or [])
    seconds = max(time.time() - stream_id_key(oldest)[0] / 1000, 0.0) if oldest else 0.0
    return Lag(int(info["pending"]) + int(undelivered), seconds)


async def trim_outbox(redis: Redis, keys: Keys) -> None:
    """Every shard's outbox trimmed (_trim_stream)."""
    for shard in keys.shards:
        await _trim_stream(redis, shard.outbox)


async def _trim_stream(redis: Redis, outbox: str) -> None:
    """Drop outbox entries that every consumer group has acknowledged, never more.

    Entries at or after a group's lowest pending id, or after its last-delivered id, stay. New
    deliveries only ever take ids above the last-delivered one, so a floor computed here stays
    safe while other consumers keep working.
    """
    floor: tuple[int, int] | None = None
    floor_id = ""
    for info in await stream_groups(redis, outbox):
        low = None
        if info["pending"]:
            # None when the group acknowledged the rest after XINFO GROUPS answered.
            low = (await redis.xpending(outbox, info["name"]))["min"]
        if low is None:
            low = info["last-delivered-id"]
        if floor is None or stream_id_key(low) < floor:
            floor, floor_id = stream_id_key(low), low
    if floor is not None and floor > (0, 0):
        await redis.xtrim(outbox, minid=floor_id, approximate=False)


async def ensure_group(redis: Redis, keys: Keys, group: str = LEDGER_GROUP) -> None:
    """Create the consumer group at the start of every shard's outbox, so it sees every grant.
    Every group is created before the first claim (at API start), so trimming never passes a
    group that does not exist yet."""
    for shard in keys.shards:
        await _create_group(redis, shard.outbox, group)


async def _create_group(redis: Redis, outbox: str, group: str) -> None:
    try:
        await redis.xgroup_create(outbox, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):  # there already
            raise


# A cluster serves one slot per XREADGROUP: each shard's stream is read on its own, all at
# once, each waiting at most this long, so an idle shard holds the others' entries back no
# longer than that.
CLUSTER_BLOCK_MS = 20

Batch = list[tuple[ShardKeys, list[Any]]]


async def read_group(
    redis: Redis,
    keys: Keys,
    group: str,
    consumer: str,
    count: int,
    block_ms: int | None = None,
) -> Batch:
    """New entries for `consumer` of `group` from every shard's outbox: (shard, entries) for
    each shard that had some. One XREADGROUP over all streams on a single Redis (with one
    shard, the call it always was); one per stream, at once, on a cluster, every one of which
    must answer (a worker's reads go on without a shard that does not: outbox_reader.py)."""
    if not is_cluster(redis):
        reply: Any = await redis.xreadgroup(
            group, consumer, {s.outbox: ">" for s in keys.shards}, count=count, block=block_ms
        )
        return [(shard_of_stream(keys, stream), messages) for stream, messages in reply or []]
    block = None if block_ms is None else min(block_ms, CLUSTER_BLOCK_MS)
    replies = await asyncio.gather(
        *(read_shard(redis, s, group, consumer, count, block) for s in keys.shards)
    )
    return [
        (shard, messages) for shard, messages in zip(keys.shards, replies, strict=True) if messages
    ]


async def read_shard(
    redis: Redis, shard: ShardKeys, group: str, consumer: str, count: int, block_ms: int | None
) -> list[Any]:
    """New entries for `consumer` of `group` from one shard's outbox (one cluster slot)."""
    reply: Any = await redis.xreadgroup(
        group, consumer, {shard.outbox: ">"}, count=count, block=block_ms
    )
    return [entry for _stream, messages in reply or [] for entry in messages]


async def ensure_groups(redis: Redis, keys: Keys) -> None:
    """Every consumer group of the outbox, together: a worker re-creating only its own group
    after a Redis flush could trim entries the other group has not seen yet."""
    for group in OUTBOX_GROUPS:
        await ensure_group(redis, keys, group)


async def ensure_groups_reachable(redis: Redis, keys: Keys) -> list[int]:
    """ensure_groups on every shard that answers; the shards that did not (their master away),
    for a later try, so a worker started during a master's outage reads the others meanwhile.
    On a single Redis, ensure_groups: one server answers for every shard or for none."""
    if not is_cluster(redis):
        await ensure_groups(redis, keys)
        return []
    away = []
    for shard in keys.shards:
        try:
            for group in OUTBOX_GROUPS:
                await _create_group(redis, shard.outbox, group)
        except REDIS_AWAY:
            away.append(shard.shard)
    return away


def group_missing(exc: BaseException) -> bool:
    """NOGROUP: the outbox or its consumer group is gone (a Redis restart without the data, a
    flush). The worker re-creates the groups and goes on."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


# How often a worker tries again to make the groups on shards that were away.
GROUPS_RETRY_S = 5.0


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
    next_groups = 0.0  # when to try the shards whose groups could not be made again
    backoff = 0.5
    clock = asyncio.get_running_loop().time
    while not stopping.is_set():
        try:
            if not groups_ready and clock() >= next_groups:
                away = await ensure_groups_reachable(redis, keys)
                groups_ready = not away
                if away:
                    log.warning(
                        "%s: outbox groups not made on shards %s (away); the others are read,"
                        " these tried again in %.0f s",
                        name,
                        away,
                        GROUPS_RETRY_S,
                    )
                    next_groups = clock() + GROUPS_RETRY_S
            await step()
            backoff = 0.5
            continue
        except STORES_AWAY as exc:
            log.warning("%s: store unavailable (%s); retrying in %.1f s", name, exc, backoff)
        except Exception as exc:
            if group_missing(exc):
                log.warning("%s: outbox consumer group gone (%s); re-creating it", name, exc)
                groups_ready, next_groups = False, 0.0
                continue
            if not retry_bugs:
                raise
            log.exception("%s: step failed; retrying in %.1f s", name, backoff)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), backoff)
        backoff = min(backoff * 2, 5.0)
