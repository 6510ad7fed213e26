"""The store-ready marker: one Redis key that says Redis holds everything the ledger says it
should (idempotency entries, per-customer and daily counters, final grant states).

It lives in the same Redis as that data, so whatever empties Redis (a flush, a restart without
persistence, a failover to an empty replica) takes the marker with it. claim.lua and
transition.lua decide nothing while it is missing; it is set only where nothing can be missing:
at the start of an install whose ledger holds no grant, and by `quanyi rebuild-redis` once it
restored everything.
"""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from quanyi.core.clock import rfc3339
from quanyi.stores.keys import Keys

# What /readyz says while the marker is missing.
LOST = "lost: run quanyi rebuild-redis"


async def store_ready(redis: Redis, keys: Keys) -> bool:
    """Every shard's marker is there (one per shard, each in its shard's slot: a master that
    lost its data takes its own shards' markers with it)."""
    for shard in keys.shards:
        if not await redis.exists(shard.store_ready):
            return False
    return True


async def mark_store_ready(redis: Redis, keys: Keys, reason: str, now: float) -> None:
    """Claims and transitions may be decided from now on; records when and why."""
    at = rfc3339(int(now * 1000))
    for shard in keys.shards:
        await redis.set(shard.store_ready, orjson.dumps({"at": at, "reason": reason}))


async def unmark_store_ready(redis: Redis, keys: Keys) -> None:
    """Claims and transitions wait (answer store_not_ready) until the marker is set again."""
    for shard in keys.shards:
        await redis.delete(shard.store_ready)
