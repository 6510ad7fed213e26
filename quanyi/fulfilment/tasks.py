"""The fulfilment worker's side tasks, each on its own timer beside the read loop: retries of
parked grants as they fall due, re-claiming outbox entries a dead worker left pending, vendor
changes, the code-pool check and the expiry of fulfilled grants."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import orjson
from redis.asyncio import Redis

from quanyi.core import metrics
from quanyi.core.clock import Clock
from quanyi.core.side_tasks import SideTask
from quanyi.fulfilment.lanes import Lanes
from quanyi.fulfilment.tunables import FulfilmentTunables
from quanyi.issuance.lifecycle import GrantLifecycle
from quanyi.stores.keys import Keys, ShardKeys
from quanyi.stores.outbox import FULFIL_GROUP
from quanyi.stores.scripts import Scripts
from quanyi.vendors import code_pools, queries

log = logging.getLogger(__name__)

# Parked grants leased at once by one retries run.
RETRY_BATCH = 200
# Fulfilled grants expired at once by one expiry run.
EXPIRY_BATCH = 500


class Reader(Protocol):
    """What the side tasks hand their finds to: the worker's read loop."""

    def busy(self, key: str) -> bool: ...

    async def dispatch(
        self, shard: ShardKeys, outbox_id: str, fields: dict[str, str], redelivered: bool = False
    ) -> None: ...

    async def retry(self, shard: ShardKeys, grant_id: str, event: dict[str, Any]) -> None: ...

    async def flush_acks(self) -> None: ...


class Upkeep:
    def __init__(
        self,
        reader: Reader,
        redis: Redis,
        pool: asyncpg.Pool,
        keys: Keys,
        clock: Clock,
        *,
        scripts: Scripts,
        lifecycle: GrantLifecycle,
        lanes: Lanes,
        consumer: str,
        tunables: FulfilmentTunables,
    ) -> None:
        self._reader = reader
        self._redis = redis
        self._pool = pool
        self._keys = keys
        self._clock = clock
        self._scripts = scripts
        self._lifecycle = lifecycle
        self._lanes = lanes
        self._consumer = consumer
        self._tunables = tunables

    def side_tasks(self) -> list[SideTask]:
        t = self._tunables
        return [
            SideTask("fulfil-retries", t.retries_every_s, self.retry_due),
            # Not at once: a worker just started has its own entries to read first, and the
            # consumer group may still be being made.
            SideTask("fulfil-reclaim", t.reclaim_every_s, self.reclaim, t.reclaim_every_s),
            SideTask("fulfil-vendors", t.vendors_every_s, self._lanes.refresh),
            # A second in: the vendors' lanes it looks at are loaded by then.
            SideTask("fulfil-code-pools", t.code_pools_every_s, self.check_code_pools, 1.0),
            SideTask("fulfil-expiry", t.expiry_every_s, self.expire_due),
        ]

    async def retry_due(self) -> None:
        """Parked grants whose retry is due, each leased so no other worker takes it too, in
        every shard's retry set."""
        for shard in self._keys.shards:
            await self._retry_due(shard)

    async def _retry_due(self, shard: ShardKeys) -> None:
        now_ms = int(self._clock() * 1000)
        due = await self._scripts.lease_due(
            keys=[shard.fulfil_retry],
            args=[now_ms, now_ms + self._tunables.lease_ms, RETRY_BATCH],
        )
        for grant_id in due:
            if self._reader.busy(grant_id):
                continue
            raw = await self._redis.hget(shard.fulfil_parked, grant_id)
            if raw is None:
                await self._redis.zrem(shard.fulfil_retry, grant_id)
                continue
            await self._reader.retry(shard, grant_id, orjson.loads(raw))

    async def reclaim(self) -> None:
        """Entries a dead worker took and never acknowledged, in every shard's outbox."""
        for shard in self._keys.shards:
            await self._reclaim(shard)

    async def _reclaim(self, shard: ShardKeys) -> None:
        start = "0-0"
        while True:
            start, messages, *_ = await self._redis.xautoclaim(
                shard.outbox,
                FULFIL_GROUP,
                self._consumer,
                self._tunables.reclaim_idle_ms,
                start_id=start,
                count=self._tunables.batch_size,
            )
            emptied = []
            for outbox_id, fields in messages:
                if fields:
                    await self._reader.dispatch(shard, outbox_id, fields, redelivered=True)
                else:  # trimmed under us: nothing left to do
                    emptied.append(outbox_id)
            if emptied:
                await self._redis.xack(shard.outbox, FULFIL_GROUP, *emptied)
            await self._reader.flush_acks()
            if start == "0-0":
                return

    async def expire_due(self) -> int:
        """Fulfilled grants whose validity is over become expired."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        expired = 0
        for row in await self._pool.fetch(queries.expiring_grants, now, EXPIRY_BATCH):
            moved = await self._lifecycle.move(row["grant_id"], "expired", "system:expiry")
            expired += moved.applied
        return expired

    async def check_code_pools(self) -> None:
        """Warn when a code pool holds fewer codes than its campaigns may still grant."""
        for lane in self._lanes.current():
            if lane.vendor.adapter != "codepool":
                continue
            for level in await code_pools.levels(
                self._pool, self._redis, self._keys, lane.vendor.id
            ):
                metrics.CODEPOOL_REMAINING.labels(lane.vendor.id, level.right_id).set(level.codes)
                if level.low:
                    log.warning(
                        "code pool low: vendor %s right %s has %d codes for %d grants still possible",
                        lane.vendor.id,
                        level.right_id,
                        level.codes,
                        level.demand,
                    )
