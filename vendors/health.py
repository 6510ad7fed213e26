"""Each vendor's circuit as the fulfilment workers see it, published to Redis for the staff API.

The breaker lives in a worker's memory (quanyi/vendors/breaker.py). A worker writes a vendor's
hash when its circuit changes and again on its vendors timer, each time with a TTL a few timers
long: a worker that died leaves nothing that looks current. With several workers the hash holds
the worst news: a closed circuit does not overwrite another live worker's open one on a timer
refresh (only a change it saw itself does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from quanyi.core.clock import rfc3339
from quanyi.stores.keys import Keys
from quanyi.vendors.breaker import CLOSED

UNKNOWN = "unknown"  # no live worker has said anything about the vendor


@dataclass(frozen=True)
class CircuitView:
    state: str
    failures: int
    opened_at_ms: int | None


async def publish(
    redis: Redis,
    keys: Keys,
    vendor_id: str,
    view: CircuitView,
    *,
    worker: str,
    now_ms: int,
    ttl_s: int,
    changed: bool,
) -> None:
    key = keys.vendor_health(vendor_id)
    if not changed and view.state == CLOSED:
        held: Any = await redis.hmget(key, ["worker", "state"])
        if held[0] not in (None, worker) and held[1] != CLOSED:
            return
    fields: dict[FieldT, EncodableT] = {
        "state": view.state,
        "failures": view.failures,
        "opened_at": "" if view.opened_at_ms is None else view.opened_at_ms,
        "updated_at": now_ms,
        "worker": worker,
    }
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping=fields)
        pipe.expire(key, ttl_s)
        await pipe.execute()


async def read(redis: Redis, keys: Keys, vendor_ids: list[str]) -> list[dict[str, Any]]:
    """Each vendor's circuit, in the order asked: state `unknown` when no live worker wrote it."""
    async with redis.pipeline(transaction=False) as pipe:
        for vendor_id in vendor_ids:
            pipe.hgetall(keys.vendor_health(vendor_id))
        found = await pipe.execute()
    return [_view(v, h) for v, h in zip(vendor_ids, found, strict=True)]


def _view(vendor_id: str, fields: dict[str, str]) -> dict[str, Any]:
    if not fields:
        return {
            "vendor_id": vendor_id,
            "state": UNKNOWN,
            "failures": None,
            "opened_at": None,
            "updated_at": None,
            "worker": None,
        }
    opened = fields.get("opened_at") or ""
    return {
        "vendor_id": vendor_id,
        "state": fields.get("state", UNKNOWN),
        "failures": int(fields.get("failures") or 0),
        "opened_at": rfc3339(int(opened)) if opened else None,
        "updated_at": rfc3339(int(fields["updated_at"])) if fields.get("updated_at") else None,
        "worker": fields.get("worker"),
    }
