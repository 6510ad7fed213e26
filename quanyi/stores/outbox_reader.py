"""One worker's reads of its consumer group from every shard's outbox, which on a Redis Cluster
go on while one master is away.

A cluster read is one XREADGROUP per shard, all at once. Each read that answers has delivered
its entries to this consumer: they are pending under its name and, if the worker never handles
them, wait for the reclaim (reclaim_idle_ms, 30 s by default). So one shard's master failing over
must not throw away what the other shards delivered in the same read: the failing shard rests
(0.5 s, doubling to 5 s while it keeps failing) and the others' entries are handed on. Nor
must a master that does not answer at all hold the others back: each shard's read is a task of
its own, waited for a little past its blocking time, and one still under way is taken by a later
read. Only when no shard could be read at all does the read raise, for the worker's read loop
to wait out.

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
    read_group,
    read_shard,
)
from quanyi.stores.redis import is_cluster

log = logging.getLogger(__name__)

# How long a shard whose read failed is left alone: the first rest, and the longest.
FIRST_REST_S, LONGEST_REST_S = 0.5, 5.0
# How long past its blocking time a shard's read is waited for before the others are handed on.
ANSWER_S = 0.5


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
        # Each shard's read under way, by shard.
        self._reading: dict[int, asyncio.Task[list[Any]]] = {}
        # A shard's group found gone, or an unexpected error, while other shards delivered:
        # raised at the next read, after what they delivered was handed on.
        self._deferred: BaseException | None = None
        self._failures = metrics.OUTBOX_SHARD_READ_FAILURES.labels(group)

    @property
    def resting(self) -> list[int]:
        """The shards left alone now after their read failed."""
        now = self._clock()
        return sorted(shard for shard, rest in self._resting.items() if rest.until > now)

    @property
    def reading(self) -> list[int]:
        """The shards whose read is still under way (a master slow to answer)."""
        return sorted(self._reading)

    async def read(self, count: int, block_ms: int | None = None) -> Batch:
        """(shard, entries) for each shard that had new entries. Raises what kept every shard
        from being read (all away, or resting after failing), or, once what the others
        delivered was handed on, a shard's group gone or a shard's unexpected error."""
        if self._deferred is not None:
            deferred, self._deferred = self._deferred, None
            raise deferred
        if not self._cluster:
            return await read_group(
                self._redis, self._keys, self._group, self._consumer, count, block_ms
            )
        now = self._clock()
        block = None if block_ms is None else min(block_ms, CLUSTER_BLOCK_MS)
        for shard in self._keys.shards:
            if shard.shard not in self._reading and self._ready(shard, now):
                self._reading[shard.shard] = asyncio.create_task(
                    read_shard(self._redis, shard, self._group, self._consumer, count, block)
                )
        if not self._reading:
            raise self._away_error()
        # A master that does not answer at all takes the client's socket timeout to fail: its
        # shard's read is not waited for, but goes on and is taken by a later call, so what
        # it delivers meanwhile is handed on then, not left for the reclaim.
        await asyncio.wait(
            self._reading.values(), timeout=None if block is None else block / 1000 + ANSWER_S
        )
        batch: Batch = []
        answered = False
        for shard in self._keys.shards:
            task = self._reading.get(shard.shard)
            if task is None or not task.done():
                continue
            del self._reading[shard.shard]
            error = task.exception()
            if error is not None:
                self._failed(shard, error)
                continue
            answered = True
            self._resting.pop(shard.shard, None)
            if messages := task.result():
                batch.append((shard, messages))
        if self._deferred is not None and not batch:
            deferred, self._deferred = self._deferred, None
            raise deferred
        if not answered and not self._reading and self._deferred is None:
            raise self._away_error()
        return batch

    async def close(self) -> None:
        """Reads still under way stopped (a worker stopping): what they may have delivered
        stays pending for the reclaim."""
        reading, self._reading = list(self._reading.values()), {}
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)

    def _ready(self, shard: ShardKeys, now: float) -> bool:
        rest = self._resting.get(shard.shard)
        return rest is None or rest.until <= now

    def _failed(self, shard: ShardKeys, exc: BaseException) -> None:
        if not isinstance(exc, REDIS_AWAY):
            # The group gone (the read loop makes the groups again), or a bug (the loop decides
            # what to do with it): raised once what the other shards delivered is handed on.
            self._deferred = self._deferred or exc
            return
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
