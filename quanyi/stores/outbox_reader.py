"""One worker's reads of its consumer group from every shard's outbox, which on a Redis Cluster
go on while one master is away.

A cluster read is one XREADGROUP per shard, all at once. Each read that answers has delivered
its entries to this consumer: they are pending under its name and, if the worker never handles
them, wait for the reclaim (reclaim_idle_ms, 30 s by default). So one shard's master failing over
must not throw away what the other shards delivered in the same read: the failing shard rests
(0.5 s, doubling to 5 s while it keeps failing) and the others' entries are handed on. Only when
no shard could be read at all does the read raise, for the worker's read loop to wait out.

On a single Redis there is one server and one XREADGROUP over every stream: it answers or fails
as a whole, so the read is outbox.read_group's, unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from quanyi.core import metrics
from quanyi.stores.keys import Keys, ShardKeys
from quanyi.stores.outbox import (
    CLUSTER_BLOCK_MS,
    REDIS_AWAY,
    Batch,
    group_missing,
    read_group,
    read_shard,
)
from quanyi.stores.redis import is_cluster

log = logging.getLogger(__name__)

# How long a shard whose read failed is left alone: the first rest, and the longest.
FIRST_REST_S, LONGEST_REST_S = 0.5, 5.0


class _Rest:
    """A failing shard's rest: until when, how long the next one lasts, and why."""

    __slots__ = ("error", "length", "until")

    def __init__(self) -> None:
        self.until = 0.0
        self.length = FIRST_REST_S
        self.error: BaseException | None = None


class OutboxReader:
    """New entries of `group` for `consumer` from every shard's outbox (outbox.read_group), each
    shard of a cluster read on its own so that one away does not hold the others back."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        group: str,
        consumer: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._group = group
        self._consumer = consumer
        self._clock = clock
        self._cluster = is_cluster(redis)
        self._resting: dict[int, _Rest] = {}
        # A shard's group found gone while other shards delivered: raised at the next read,
        # after what they delivered was handed on (the read loop then makes the groups again).
        self._group_gone: BaseException | None = None
        self._failures = metrics.OUTBOX_SHARD_READ_FAILURES.labels(group)

    @property
    def resting(self) -> list[int]:
        """The shards left alone now after their read failed."""
        now = self._clock()
        return sorted(shard for shard, rest in self._resting.items() if rest.until > now)

    async def read(self, count: int, block_ms: int | None = None) -> Batch:
        """(shard, entries) for each shard that had new entries. Raises what kept every shard
        from being read (all away, or resting after failing), or a shard's group gone."""
        if self._group_gone is not None:
            gone, self._group_gone = self._group_gone, None
            raise gone
        if not self._cluster:
            return await read_group(
                self._redis, self._keys, self._group, self._consumer, count, block_ms
            )
        now = self._clock()
        shards = [s for s in self._keys.shards if self._ready(s, now)]
        if not shards:
            raise self._away_error()
        block = None if block_ms is None else min(block_ms, CLUSTER_BLOCK_MS)
        replies = await asyncio.gather(
            *(
                read_shard(self._redis, s, self._group, self._consumer, count, block)
                for s in shards
            ),
            return_exceptions=True,
        )
        batch: Batch = []
        read_any = False
        for shard, reply in zip(shards, replies, strict=True):
            if isinstance(reply, BaseException):
                self._failed(shard, reply)
                continue
            read_any = True
            self._resting.pop(shard.shard, None)
            if reply:
                batch.append((shard, reply))
        if self._group_gone is not None and not batch:
            gone, self._group_gone = self._group_gone, None
            raise gone
        if not read_any and self._group_gone is None:
            raise self._away_error()
        return batch

    def _ready(self, shard: ShardKeys, now: float) -> bool:
        rest = self._resting.get(shard.shard)
        return rest is None or rest.until <= now

    def _failed(self, shard: ShardKeys, exc: BaseException) -> None:
        if group_missing(exc):
            self._group_gone = self._group_gone or exc
            return
        if not isinstance(exc, REDIS_AWAY):
            raise exc  # a bug: the worker's read loop decides what to do with it
        rest = self._resting.setdefault(shard.shard, _Rest())
        rest.until, rest.error = self._clock() + rest.length, exc
        log.warning(
            "outbox shard %d unreadable for %s (%s); the other shards go on, it is tried again"
            " in %.1f s",
            shard.shard,
            self._group,
            exc,
            rest.length,
        )
        rest.length = min(rest.length * 2, LONGEST_REST_S)
        self._failures.inc()

    def _away_error(self) -> BaseException:
        """What kept the shards from being read, for the read loop to log and wait out."""
        errors: list[Any] = [r.error for r in self._resting.values() if r.error is not None]
        return errors[-1] if errors else RedisConnectionError("every outbox shard is resting")
