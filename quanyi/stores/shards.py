"""What spans shards (quanyi/stores/keys.py): a request id's shard, and reading every shard.

A (channel, request id) is the only identity of a claim, across all campaigns. Its idempotency
field lives in the shard of the campaign it named, so with several shards a request id reused
for a campaign of another shard would not be seen there. The route records, once, the shard a
request id was first decided in; a claim in another shard is refused as an idempotency
conflict without reaching its script. Stricter than one shard, where a request id whose first
claim was refused may be reused with another body: the first claim may still be in flight in
its shard, and only refusing keeps "never grant twice for one request" without a cross-slot
step. With one shard there is no route and no extra round trip; with several, one round trip
per claim batch (route_requests), whatever its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from quanyi.stores.keys import Keys, ShardKeys
from quanyi.stores.scripts import pipelined_reloading


class Route(NamedTuple):
    channel_id: str
    request_id: str
    shard: int  # the shard its claim asks for
    keep_until: int  # unix seconds: as long as the idempotency field it guards


async def route_requests(
    redis: Redis, script: AsyncScript, keys: Keys, routes: Sequence[Route]
) -> list[bool]:
    """Whether each request id may be decided in its shard: routed there now or before.

    The routes of a whole claim batch at once: one lua/route.lua call per route bucket (no
    MULTI: a cluster client runs a transaction's every command on a thread of its own), all in
    one round trip on a single Redis, at once on a cluster. Two claims of one batch with one
    request id are seen in order, so the second is routed where the first was."""
    if not keys.sharded:
        return [True] * len(routes)
    fields: list[bytes] = []
    buckets: dict[str, list[int]] = {}
    for i, route in enumerate(routes):
        key, field = keys.idempotency_route(route.channel_id, route.request_id)
        fields.append(field)
        buckets.setdefault(key, []).append(i)
    calls: list[tuple[list[str], list[Any]]] = []
    for key, ix in buckets.items():
        args: list[Any] = [max(routes[i].keep_until for i in ix)]
        for i in ix:
            args.extend((fields[i], routes[i].shard))
        calls.append(([key], args))
    # A call that found the script cache emptied goes once more, loaded (routes are HSETNX:
    # a route bucket's call decides its routes in order however often it is sent).
    replies = await pipelined_reloading(redis, script, calls)
    allowed = [False] * len(routes)
    for ix, reply in zip(buckets.values(), replies, strict=True):
        if isinstance(reply, BaseException):
            raise reply
        for i, held in zip(ix, reply, strict=True):
            allowed[i] = int(held) == routes[i].shard
    return allowed


async def routed_elsewhere(redis: Redis, keys: Keys, channel_id: str, request_id: str) -> bool:
    """Whether the request id was already decided in some shard (for a claim whose campaign is
    not found: that is a conflict, as an idempotency field held would be with one shard)."""
    if not keys.sharded:
        return False
    key, field = keys.idempotency_route(channel_id, request_id)
    return bool(await redis.hexists(key, field))


def queue_route(
    pipe: Any, keys: Keys, channel_id: str, request_id: str, shard: int, keep_until: int
) -> None:
    """The route of a request the ledger holds, queued on a pipeline (not a transaction: the
    routes of many requests are in many slots), for `quanyi rebuild-redis` writing thousands at
    once."""
    key, field = keys.idempotency_route(channel_id, request_id)
    pipe.hsetnx(key, field, shard)
    pipe.expireat(key, keep_until, nx=True)
    pipe.expireat(key, keep_until, gt=True)


def shard_of_stream(keys: Keys, stream: str) -> ShardKeys:
    """The shard whose outbox `stream` is."""
    for shard in keys.shards:
        if shard.outbox == stream:
            return shard
    raise LookupError(f"{stream} is no shard's outbox")
