"""Reading grants back: from the ledger, or from Redis while the ledger has not caught up, so a
channel reads its grant right after the 201 (read-your-writes)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from inventory.keys import Keys
from issuance.claims import _rfc3339
from ledger import queries
from quanyi.errors import GrantNotFound


def _from_event(raw: str) -> dict[str, Any]:
    e = orjson.loads(raw)
    return {
        "grant_id": e["grant_id"],
        "campaign_id": e["campaign_id"],
        "reward_id": e["reward_id"],
        "right_id": e["right_id"],
        "customer_id": e["customer_id"],
        "channel_id": e["channel_id"],
        "request_id": e["request_id"],
        "status": "granted",
        "granted_at": _rfc3339(e["granted_at_ms"]),
        "persisted": False,
    }


def _from_row(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "grant_id": row["grant_id"],
        "campaign_id": row["campaign_id"],
        "reward_id": row["reward_id"],
        "right_id": row["right_id"],
        "customer_id": row["customer_id"],
        "channel_id": row["channel_id"],
        "request_id": row["request_id"],
        "status": row["status"],
        "granted_at": _rfc3339(int(row["granted_at"].timestamp() * 1000)),
        "persisted": True,
    }


class GrantReader:
    def __init__(self, redis: Redis, pool: asyncpg.Pool, keys: Keys) -> None:
        self._redis = redis
        self._pool = pool
        self._keys = keys

    async def get(self, grant_id: str) -> dict[str, Any]:
        # Redis first: the ledger worker deletes the pending copy only after its commit, so one of
        # the two always has the grant.
        raw = await self._redis.hget(self._keys.pending, grant_id)
        if raw is not None:
            return _from_event(raw)
        row = await self._pool.fetchrow(queries.grant_by_id, grant_id)
        if row is None:
            raise GrantNotFound(f"no grant {grant_id}")
        return _from_row(row)

    async def of_customer(self, customer_id: str, limit: int = 100) -> list[dict[str, Any]]:
        pending_ids = await self._redis.smembers(self._keys.customer_pending(customer_id))
        pending = []
        if pending_ids:
            raws = await self._redis.hmget(self._keys.pending, list(pending_ids))
            pending = [_from_event(r) for r in raws if r is not None]
        rows = await self._pool.fetch(queries.grants_of_customer, customer_id, limit)
        grants = {g["grant_id"]: g for g in pending}
        for row in rows:
            grants[row["grant_id"]] = _from_row(row)
        return sorted(grants.values(), key=lambda g: g["grant_id"], reverse=True)[:limit]
