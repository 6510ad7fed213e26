"""The fulfilment worker: every grant fulfilled at its vendor exactly once.

Its read loop takes new outbox entries with the worker's own consumer group and starts one
fulfilment task per grant (quanyi/fulfilment/fulfiller.py), each through its vendor's lane
(quanyi/fulfilment/lanes.py). Beside the loop run its side tasks (quanyi/fulfilment/tasks.py),
each a named task on its own timer: retries of parked grants, re-claiming what a dead worker left
pending, vendor changes, the code-pool check and expiry. Stopping the worker stops them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from quanyi.core import metrics
from quanyi.core.clock import Clock
from quanyi.core.side_tasks import SideTasks
from quanyi.fulfilment.fulfiller import Fulfiller, Work
from quanyi.fulfilment.lanes import Lanes
from quanyi.fulfilment.tasks import Upkeep
from quanyi.fulfilment.tunables import FulfilmentTunables
from quanyi.issuance.lifecycle import GrantLifecycle
from quanyi.stores.keys import Keys, ShardKeys
from quanyi.stores.outbox import (
    FULFIL_GROUP,
    default_consumer_name,
    read_until_stopped,
    worth_retrying,
)
from quanyi.stores.outbox_reader import OutboxReader
from quanyi.stores.scripts import Scripts

__all__ = ["FulfilmentTunables", "FulfilmentWorker"]

# How a grant born fulfilled (quanyi/issuance/claims.py) shows in its outbox entry, looked for in
# the text rather than parsed: within a JSON string every `"` is escaped, so `ms":` can only close
# a key, and no other key of a grant ends so.
BORN_FULFILLED = '"fulfilled_at_ms":'

log = logging.getLogger(__name__)


def entry_key(shard: ShardKeys, outbox_id: str) -> str:
    """An outbox entry among those being fulfilled: its shard and id. An entry id is unique in
    its own stream only: two shards' outboxes written in the same millisecond give out the same
    ids, and one entry taken for the other would be left pending until re-claimed. (A grant id,
    the key of a parked retry, has no `/`.)"""
    return f"{shard.shard}/{outbox_id}"


class FulfilmentWorker:
    def __init__(
        self,
        redis: Redis,
        pool: asyncpg.Pool,
        keys: Keys,
        clock: Clock,
        *,
        scripts: Scripts,
        lifecycle: GrantLifecycle,
        consumer: str | None = None,
        tunables: FulfilmentTunables | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.consumer = consumer or default_consumer_name()
        self.tunables = tunables = tunables or FulfilmentTunables()
        self.lifecycle = lifecycle
        self._lanes = Lanes(
            redis,
            pool,
            keys,
            clock,
            scripts,
            breaker_threshold=tunables.breaker_threshold,
            breaker_reset_s=tunables.breaker_reset_s,
            worker=self.consumer,
            # A few vendors timers: a live worker refreshes it well before it ages out.
            health_ttl_s=max(int(tunables.vendors_every_s * 3), 5),
        )
        self._fulfiller = Fulfiller(
            redis,
            pool,
            keys,
            clock,
            lifecycle,
            self._lanes,
            suspended_wait_s=tunables.vendors_every_s,
        )
        self._upkeep = Upkeep(
            self,
            redis,
            pool,
            keys,
            clock,
            scripts=scripts,
            lifecycle=lifecycle,
            lanes=self._lanes,
            consumer=self.consumer,
            tunables=tunables,
        )
        self._side_tasks = SideTasks(worth_retrying)
        self._tasks: set[asyncio.Task] = set()
        self._room = asyncio.Semaphore(tunables.max_tasks)
        self._in_progress: set[str] = set()
        # Entries to acknowledge with the batch, per shard (each shard's outbox is its own stream).
        self._acks: dict[int, list[str]] = {}
        self._internal = metrics.FULFILMENTS.labels("internal", "fulfilled")
        self._stopping = asyncio.Event()
        self._reader = OutboxReader(redis, keys, FULFIL_GROUP, self.consumer)

    def stop(self) -> None:
        self._stopping.set()

    @property
    def side_tasks(self) -> list[str]:
        """The names of the side tasks running now."""
        return self._side_tasks.running

    async def run(self, grace_s: float = 10.0) -> None:
        log.info("fulfilment worker %s started", self.consumer)
        self._side_tasks.start(self._upkeep.side_tasks())
        try:
            await self._read_until_stopped()
            # Nothing new starts from here on; what is under way (fulfilments and side tasks
            # alike) gets the same `grace_s` to finish, together.
            await asyncio.gather(self._side_tasks.stop(grace_s), self.wait_idle(grace_s))
        finally:
            await self._reader.close()
            await self._side_tasks.stop()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._fulfiller.close()
            await self._lanes.close()
            log.info("fulfilment worker %s stopped", self.consumer)

    async def _read_until_stopped(self) -> None:
        # A bug in one step is logged and retried: one bad entry must not stop fulfilment.
        await read_until_stopped(
            "fulfil", self.step, self._redis, self._keys, self._stopping, retry_bugs=True
        )

    async def wait_idle(self, timeout_s: float) -> None:
        """Wait until no fulfilment is under way (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self._tasks), timeout=deadline - time.monotonic())

    async def step(self) -> None:
        """One read of new entries of every shard's outbox, each dispatched."""
        batch = await self._reader.read(self.tunables.batch_size, self.tunables.block_ms)
        for shard, messages in batch:
            for outbox_id, fields in messages:
                await self.dispatch(shard, outbox_id, fields)
        await self.flush_acks()

    async def expire_due(self) -> int:
        """Fulfilled grants whose validity is over become expired (the expiry task's job)."""
        return await self._upkeep.expire_due()

    # what the read loop and the side tasks hand work to

    def busy(self, key: str) -> bool:
        """Whether the parked grant `key` (or the outbox entry `entry_key(...)`) is being
        fulfilled now."""
        return key in self._in_progress

    async def dispatch(
        self, shard: ShardKeys, outbox_id: str, fields: dict[str, str], redelivered: bool = False
    ) -> None:
        """One entry of `shard`'s outbox: its fulfilment started, or its acknowledgement queued."""
        key = entry_key(shard, outbox_id)
        if key in self._in_progress:
            return
        if "g" in fields:
            if BORN_FULFILLED in fields["g"]:
                # A right with no vendor: fulfilled where it was granted, and the ledger records
                # its fulfilment from this same entry (quanyi/ledger/entries.py). Nothing to do
                # but acknowledge it with the batch.
                self._acks.setdefault(shard.shard, []).append(outbox_id)
                self._internal.inc()
                return
            work = Work(orjson.loads(fields["g"]), outbox_id, shard, redelivered)
            await self._spawn(self._fulfiller.fulfil(work), key)
        elif "e" in fields and orjson.loads(fields["e"]).get("event") == "revoked":
            await self._spawn(
                self._fulfiller.revoke_at_vendor(orjson.loads(fields["e"]), shard, outbox_id),
                key,
            )
        else:
            # Other lifecycle events, and card events (`t`), need nothing from vendors:
            # acknowledged per batch.
            self._acks.setdefault(shard.shard, []).append(outbox_id)

    async def retry(self, shard: ShardKeys, grant_id: str, event: dict[str, Any]) -> None:
        """Fulfil a grant parked in `shard` again (it has no outbox entry left)."""
        if grant_id not in self._in_progress:
            await self._spawn(self._fulfiller.fulfil(Work(event, None, shard, True)), grant_id)

    async def flush_acks(self) -> None:
        if not self._acks:
            return
        acks, self._acks = self._acks, {}
        if len(acks) == 1:  # one shard: the one XACK it always was
            [(shard, ids)] = acks.items()
            await self._redis.xack(self._keys.shards[shard].outbox, FULFIL_GROUP, *ids)
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard, ids in acks.items():
                pipe.xack(self._keys.shards[shard].outbox, FULFIL_GROUP, *ids)
            await pipe.execute()

    async def _spawn(self, coro: Coroutine[Any, Any, None], key: str) -> None:
        # Marked busy before waiting for room: the read loop and the reclaim task may both hold
        # the same entry (one read and left pending long enough to be re-claimed).
        self._in_progress.add(key)
        try:
            await self._room.acquire()
        except BaseException:
            self._in_progress.discard(key)
            coro.close()
            raise
        task = asyncio.create_task(coro, name=f"fulfil-{key}")
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            self._in_progress.discard(key)
            self._room.release()
            if not t.cancelled() and t.exception() is not None:
                log.error("fulfilment task %s failed", key, exc_info=t.exception())

        task.add_done_callback(done)
