"""Reading grants back: from the ledger, or from Redis while the ledger has not caught up, so a
channel reads its grant (and its latest state) right after the change (read-your-writes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from quanyi.core.clock import rfc3339
from quanyi.core.errors import GrantNotFound
from quanyi.issuance import queries
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import stream_id_key
from quanyi.stores.redis import as_text

# Kept on the grant for the lifecycle, not shown to channels.
INTERNAL_FIELDS = ("granted_at_ms", "unit_cost")
# Who fulfilled a grant of a right with no vendor, in its `fulfilled` event.
INTERNAL_ACTOR = "vendor:internal"
# Set on a grant read from its pending copy while that copy says it was born fulfilled.
BORN_FULFILLED = "_fulfilled_at_ms"
EVENTS = ("fulfilled", "failed", "redriven", "redeemed", "expired", "revoked")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _from_event(raw: str | bytes) -> dict[str, Any]:
    e = orjson.loads(raw)
    grant = {
        "grant_id": e["grant_id"],
        "campaign_id": e["campaign_id"],
        "reward_id": e["reward_id"],
        "right_id": e["right_id"],
        "customer_id": e["customer_id"],
        "channel_id": e["channel_id"],
        "request_id": e["request_id"],
        "unit_cost": e["unit_cost"],
        "status": "granted",
        "granted_at": rfc3339(e["granted_at_ms"]),
        "granted_at_ms": e["granted_at_ms"],
        "persisted": False,
    }
    if e.get("fulfilled_at_ms") is not None:
        # Born fulfilled (a right with no vendor): its fulfilment is in this same copy.
        grant["status"] = "fulfilled"
        grant[BORN_FULFILLED] = e["fulfilled_at_ms"]
    return grant


def _born_fulfilment(grant: dict[str, Any]) -> list[dict[str, Any]]:
    """The `fulfilled` event a grant born fulfilled carries in its pending copy, as the ledger
    will write it (quanyi/ledger/entries.py): first in outbox order, before any later event."""
    at_ms = grant.pop(BORN_FULFILLED, None)
    if at_ms is None:
        return []
    return [
        {
            "event": "fulfilled",
            "at_ms": at_ms,
            "actor": INTERNAL_ACTOR,
            "detail": {},
            "outbox_id": "0-0",
        }
    ]


def _from_row(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "grant_id": row["grant_id"],
        "campaign_id": row["campaign_id"],
        "reward_id": row["reward_id"],
        "right_id": row["right_id"],
        "customer_id": row["customer_id"],
        "channel_id": row["channel_id"],
        "request_id": row["request_id"],
        "unit_cost": row["unit_cost"],
        "status": row["status"],
        "granted_at": rfc3339(_ms(row["granted_at"])),
        "granted_at_ms": _ms(row["granted_at"]),
        "persisted": True,
    }


def _apply(grant: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """The grant's status, fulfilment details and timeline from its events, oldest first: the
    status is the latest event (a redrive puts a failed grant back to granted)."""
    latest = events[-1]["event"] if events else "granted"
    grant["status"] = "granted" if latest == "redriven" else latest
    fulfilled: dict[str, Any] = next(
        (e["detail"] for e in reversed(events) if e["event"] == "fulfilled"), {}
    )
    for field in ("vendor_id", "code", "reference", "expires_at"):
        grant[field] = fulfilled.get(field)
    timeline = [
        {"event": "granted", "at": grant["granted_at"], "actor": f"channel:{grant['channel_id']}"}
    ]
    for e in events:
        entry = {"event": e["event"], "at": rfc3339(e["at_ms"]), "actor": e["actor"]}
        if e.get("detail"):
            entry["detail"] = e["detail"]
        timeline.append(entry)
    grant["timeline"] = timeline
    return grant


def _pending_event(raw: str | bytes) -> dict[str, Any]:
    outbox_id, _, body = as_text(raw).partition(" ")
    return {**orjson.loads(body), "outbox_id": outbox_id}


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value


def public(grant: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in grant.items() if k not in INTERNAL_FIELDS}


class GrantReader:
    def __init__(self, redis: Redis, pool: asyncpg.Pool, keys: Keys) -> None:
        self._redis = redis
        self._pool = pool
        self._keys = keys

    async def get(self, grant_id: str) -> dict[str, Any]:
        # Redis first: the ledger worker deletes a pending copy only after its commit, so one of
        # the two always has it. A grant id does not say its campaign, so every shard is asked,
        # in one pipeline (with one shard, the two commands it always was); a grant id is unique,
        # so only its own shard answers.
        fields = [f"{grant_id}:{e}" for e in EVENTS]
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in self._keys.shards:
                pipe.hget(shard.pending, grant_id)
                pipe.hmget(shard.pending_events, fields)
            replies = await pipe.execute()
        raw = next((r for r in replies[0::2] if r is not None), None)
        pending = [_pending_event(r) for found in replies[1::2] for r in found if r is not None]
        if raw is not None:
            grant = _from_event(raw)
            persisted = _born_fulfilment(grant)
        else:
            row = await self._pool.fetchrow(queries.grant_by_id, grant_id)
            if row is None:
                raise GrantNotFound(f"no grant {grant_id}")
            grant = _from_row(row)
            persisted = [
                {
                    "event": r["event"],
                    "at_ms": _ms(r["at"]),
                    "actor": r["actor"],
                    "detail": _json(r["detail"]),
                    "outbox_id": r["outbox_id"],
                }
                for r in await self._pool.fetch(queries.events_of_grant, grant_id)
            ]
        # In outbox order: the order Redis applied them in, whatever the hosts' clocks say.
        seen = {e["outbox_id"] for e in persisted}
        events = sorted(
            persisted + [e for e in pending if e["outbox_id"] not in seen],
            key=lambda e: stream_id_key(e["outbox_id"]),
        )
        return _apply(grant, events)

    async def of_customer(self, customer_id: str, limit: int = 100) -> list[dict[str, Any]]:
        pending = []
        for raw in await self._pending_of(customer_id):
            g = _from_event(raw)
            g.pop(BORN_FULFILLED, None)
            pending.append(g)
        rows = await self._pool.fetch(queries.grants_of_customer, customer_id, limit)
        grants = {g["grant_id"]: g for g in pending}
        for row in rows:
            grants[row["grant_id"]] = _from_row(row)
        listed = sorted(grants.values(), key=lambda g: g["grant_id"], reverse=True)[:limit]
        await self._apply_pending_events(listed)
        return [public(g) for g in listed]

    async def _pending_of(self, customer_id: str) -> list[str | bytes]:
        """The pending copies of a customer's grants the ledger has not written yet, from every
        shard: each shard's set of them, then their copies (two round trips, as with one)."""
        shards = self._keys.shards
        if len(shards) == 1:
            ids = await self._redis.smembers(shards[0].customer_pending(customer_id))
            found = [(shards[0], ids)] if ids else []
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                for shard in shards:
                    pipe.smembers(shard.customer_pending(customer_id))
                replies = await pipe.execute()
            found = [(s, ids) for s, ids in zip(shards, replies, strict=True) if ids]
        if not found:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard, ids in found:
                pipe.hmget(shard.pending, list(ids))
            raws = await pipe.execute()
        return [r for copies in raws for r in copies if r is not None]

    async def _apply_pending_events(self, grants: list[dict[str, Any]]) -> None:
        """A transition the ledger has not stored yet (a revoke a moment ago) sets the status:
        the list reads the latest state, as a single grant read does. A grant's events are in
        its campaign's shard (issuance/lifecycle.py), or its part's."""
        if not grants:
            return
        # Every shard is asked for every grant: a grant of a split campaign is in the shard of
        # its customer's part, which the row does not say (as a single grant read asks them).
        fields = [f"{g['grant_id']}:{e}" for g in grants for e in EVENTS]
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in self._keys.shards:
                pipe.hmget(shard.pending_events, fields)
            replies = await pipe.execute()
        raws = [raw for found in replies for raw in found]
        latest: dict[str, dict[str, Any]] = {}
        for raw in raws:
            if raw is None:
                continue
            event = _pending_event(raw)
            held = latest.get(event["grant_id"])
            if held is None or stream_id_key(event["outbox_id"]) > stream_id_key(held["outbox_id"]):
                latest[event["grant_id"]] = event
        for g in grants:
            found = latest.get(g["grant_id"])
            if found is not None:
                g["status"] = "granted" if found["event"] == "redriven" else found["event"]
