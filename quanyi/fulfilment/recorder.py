"""Fulfilments recorded together: the outcomes of the grants a worker has in hand go to Redis in
one pipeline of transition.lua calls, then one pipeline of their announcements and a single XACK
of their outbox entries, instead of three round trips per grant.

Each fulfilment task hands its outcome here and waits for it to be recorded (so a vendor's lane
never holds more issued but unrecorded fulfilments than its slots). A flush takes whatever is
waiting, up to BATCH_MAX; while one is under way the next outcomes gather for the next, so a
batch grows with the load and a lone fulfilment waits for no one. At most FLUSHES run at once.

Exactly once, as with one call per grant: each transition is its own atomic transition.lua call,
and an outbox entry is acknowledged only after its transition is recorded. A worker killed between
the two leaves the entry pending; whoever takes it over finds the grant moved on and only
acknowledges it (fulfiller.py `fulfil`). A grant with retry state (parked, counted attempts,
taken over) is cleaned up by its own task, in one MULTI as before, and so is one revoked while
its vendor issued it, after the revoke at the vendor (`revoked_meanwhile`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from quanyi.issuance.lifecycle import GrantLifecycle, Move, Transition, grant_from_event
from quanyi.stores.keys import Keys, ShardKeys
from quanyi.stores.outbox import FULFIL_GROUP
from quanyi.stores.redis import is_cluster

# Outcomes recorded in one flush, and flushes at once: two flushes keep Redis busy while one
# waits for its replies, and a batch stays short enough not to hold other clients long.
BATCH_MAX = 256
FLUSHES = 2


@dataclass
class Outcome:
    """One grant's outcome waiting to be recorded."""

    event: dict[str, Any]
    outbox_id: str | None  # acknowledged in the flush when set
    actor: str
    detail: dict[str, Any]
    shard: ShardKeys | None  # whose outbox `outbox_id` is in (None: its campaign's shard)
    future: asyncio.Future[Transition] = field(repr=False)


def revoked_meanwhile(moved: Transition) -> bool:
    """The grant was revoked while its vendor issued it: the vendor's issue must be taken back.
    Its entry is not acknowledged in the flush: the caller acknowledges it once the vendor
    revoke was tried, so a worker killed before that leaves it pending, and whoever takes it
    over revokes at the vendor (fulfiller.py)."""
    return moved.refused and moved.before == "revoked"


class Recorder:
    def __init__(self, redis: Redis, keys: Keys, lifecycle: GrantLifecycle) -> None:
        self._redis = redis
        self._keys = keys
        self._lifecycle = lifecycle
        self._waiting: list[Outcome] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def fulfilled(
        self,
        event: dict[str, Any],
        outbox_id: str | None,
        actor: str,
        detail: dict[str, Any],
        shard: ShardKeys | None = None,
    ) -> Transition:
        """Record the grant fulfilled (by `actor`, with `detail`), announce it and acknowledge
        `outbox_id` in `shard`'s outbox (by default its campaign's shard; None: the caller
        finishes the entry itself; so it must when the answer is `revoked_meanwhile`). Raises
        what Redis raised for its batch, or StoreNotReady: then nothing of it may have been
        acknowledged."""
        future: asyncio.Future[Transition] = asyncio.get_running_loop().create_future()
        self._waiting.append(Outcome(event, outbox_id, actor, detail, shard, future))
        if len(self._flushes) < FLUSHES:
            task = asyncio.create_task(self._flush_while_waiting(), name="fulfil-record")
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        return await future

    async def close(self) -> None:
        """Stop flushing (shutdown): whoever still waits gets a CancelledError."""
        for task in list(self._flushes):
            task.cancel()
        await asyncio.gather(*self._flushes, return_exceptions=True)
        for outcome in self._waiting:
            outcome.future.cancel()
        self._waiting = []

    async def _flush_while_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:BATCH_MAX], self._waiting[BATCH_MAX:]
                try:
                    await self._flush(batch)
                except asyncio.CancelledError:
                    for outcome in batch:
                        outcome.future.cancel()
                    raise
                except Exception as exc:  # Redis away: each task takes its own retry path
                    for outcome in batch:
                        if not outcome.future.done():
                            outcome.future.set_exception(exc)
        finally:
            # Out of the set in the very step that found nothing waiting: the done callback
            # runs a loop turn later, and an outcome handed in meanwhile would find every flush
            # slot taken by flushes that no longer look, and wait for ever.
            self._flushes.discard(asyncio.current_task())

    async def _flush(self, batch: list[Outcome]) -> None:
        moves = [
            Move(o.event["grant_id"], "fulfilled", o.actor, o.detail, grant_from_event(o.event))
            for o in batch
        ]
        results = await self._lifecycle.move_many(moves)
        announcements: list[bytes] = []
        acks: dict[str, list[str]] = {}  # outbox -> its entries
        for outcome, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                continue
            message = {"grant_id": outcome.event["grant_id"], "status": result.state}
            announcements.append(orjson.dumps({**message, **outcome.detail}))
            if outcome.outbox_id is not None and not revoked_meanwhile(result):
                shard = outcome.shard or self._keys.of(outcome.event["campaign_id"])
                acks.setdefault(shard.outbox, []).append(outcome.outbox_id)
        cluster = is_cluster(self._redis)
        if cluster:  # a cluster client refuses PUBLISH in a pipeline: at once, beside it
            await asyncio.gather(
                *(self._redis.publish(self._keys.outcomes, a) for a in announcements)
            )
        async with self._redis.pipeline(transaction=False) as pipe:
            for announcement in [] if cluster else announcements:
                pipe.publish(self._keys.outcomes, announcement)
            # One XACK per shard's outbox (one in all with one shard).
            for outbox, ids in acks.items():
                pipe.xack(outbox, FULFIL_GROUP, *ids)
            await pipe.execute()
        for outcome, result in zip(batch, results, strict=True):
            if outcome.future.done():
                continue
            if isinstance(result, Exception):
                outcome.future.set_exception(result)
            else:
                outcome.future.set_result(result)
