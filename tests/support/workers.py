"""Workers for tests, wired as the service wires them (quanyi.runtime.Stores), on the test's own
stores and clock."""

from __future__ import annotations

from typing import Any

import asyncpg
from redis.asyncio import Redis

from quanyi.core.clock import Clock
from quanyi.core.settings import Settings
from quanyi.fulfilment.tunables import FulfilmentTunables
from quanyi.fulfilment.worker import FulfilmentWorker
from quanyi.runtime import Stores
from quanyi.stores.keys import Keys
from quanyi.stores.scripts import Scripts


def fulfilment_worker(
    redis: Redis,
    pool: asyncpg.Pool,
    keys: Keys,
    settings: Settings,
    clock: Clock,
    *,
    consumer: str | None = None,
    **tunables: Any,
) -> FulfilmentWorker:
    """A fulfilment worker with the default tunables, but for `tunables` (block_ms=20, ...)."""
    stores = Stores(settings, clock, keys, redis, pool, Scripts(redis))
    return FulfilmentWorker(
        redis,
        pool,
        keys,
        clock,
        scripts=stores.scripts,
        lifecycle=stores.lifecycle(),
        consumer=consumer,
        tunables=FulfilmentTunables(**tunables),
    )
