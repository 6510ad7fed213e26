"""What spans shards (quanyi/stores/keys.py): a request id's shard, and reading every shard.

A (channel, request id) is the only identity of a claim, across all campaigns. Its idempotency
field lives in the shard of the campaign it named, so with several shards a request id reused
for a campaign of another shard would not be seen there. The route records, once, the shard a
request id was first decided in; a claim in another shard is refused as an idempotency
conflict without reaching its script. Stricter than one shard, where a request id whose first
claim was refused may be reused with another body: the first claim may still be in flight in
its shard, and only refusing keeps "never grant twice for one request" without a cross-slot
step. With one shard there is no route and no extra round trip.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from quanyi.stores.keys import Keys, ShardKeys


async def route_request(
    redis: Redis, keys: Keys, channel_id: str, request_id: str, shard: int, keep_until: int
) -> bool:
    """Whether the request id may be decided in `shard`: it was routed there now or before."""
    if not keys.sharded:
        return True
    key, field = keys.idempotency_route(channel_id, request_id)
    # One key, so one slot: a transaction on a cluster too.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hsetnx(key, field, shard)
        pipe.hget(key, field)
        # Kept as long as the idempotency fields it guards (NX: a first expiry; GT: a later one).
        pipe.expireat(key, keep_until, nx=True)
        pipe.expireat(key, keep_until, gt=True)
        _set, held, *_ = await pipe.execute()
    return int(held) == shard


async def routed_elsewhere(redis: Redis, keys: Keys, channel_id: str, request_id: str) -> bool:
    """Whether the request id was already decided in some shard (for a claim whose campaign is
    not found: that is a conflict, as an idempotency field held would be with one shard)."""
    if not keys.sharded:
        return False
    key, field = keys.idempotency_route(channel_id, request_id)
    return bool(await redis.hexists(key, field))


async def record_route(
    redis: Redis, keys: Keys, channel_id: str, request_id: str, campaign_id: str, keep_until: int
) -> None:
    """The route of a request the ledger holds (`quanyi rebuild-redis`)."""
    if keys.sharded:
        await route_request(
            redis, keys, channel_id, request_id, keys.of(campaign_id).shard, keep_until
        )


def queue_route(
    pipe: Any, keys: Keys, channel_id: str, request_id: str, shard: int, keep_until: int
) -> None:
    """record_route's writes queued on a pipeline (not a transaction: the routes of many
    requests are in many slots), for `quanyi rebuild-redis` writing thousands at once."""
    key, field = keys.idempotency_route(channel_id, request_id)
    pipe.hsetnx(key, field, shard)
    pipe.expireat(key, keep_until, nx=True)
    pipe.expireat(key, keep_until, gt=True)


def shards_of(keys: Keys, campaign_ids: list[str]) -> dict[int, list[str]]:
    """The campaigns grouped by shard, for a script called once per shard with its own."""
    grouped: dict[int, list[str]] = {}
    for campaign_id in campaign_ids:
        grouped.setdefault(keys.of(campaign_id).shard, []).append(campaign_id)
    return grouped


def shard_of_stream(keys: Keys, stream: str) -> ShardKeys:
    """The shard whose outbox `stream` is."""
    for shard in keys.shards:
        if shard.outbox == stream:
            return shard
    raise LookupError(f"{stream} is no shard's outbox")
