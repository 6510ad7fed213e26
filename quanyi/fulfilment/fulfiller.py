"""One grant fulfilled at its vendor: the call through the vendor's lane, then its outcome.

A failed attempt is parked in Redis (a sorted set by due time) and its outbox entry
acknowledged, so a slow or dead vendor holds neither the outbox nor the other vendors' lanes.
When retries run out, the grant fails (the campaign says whether its stock returns) and goes to
the dead-letter stream, from where `quanyi dlq redrive` puts it back. Outcomes go through
transition.lua, so the ledger records every one; the API learns them on a pub/sub channel (for
claims that wait for fulfilment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from quanyi.core import metrics
from quanyi.core.clock import Clock
from quanyi.core.errors import GrantNotFound
from quanyi.fulfilment.lanes import Lane, Lanes
from quanyi.fulfilment.recorder import Recorder, revoked_meanwhile
from quanyi.issuance.lifecycle import GrantLifecycle, grant_from_event
from quanyi.stores.db import POSTGRES_AWAY
from quanyi.stores.keys import Keys, ShardKeys
from quanyi.stores.outbox import FULFIL_GROUP, REDIS_AWAY, STORES_AWAY
from quanyi.vendors.adapters import Order, VendorError
from quanyi.vendors.breaker import STATE_VALUES
from quanyi.vendors.duplicates import DuplicateCheck

log = logging.getLogger(__name__)

# A fulfilment that raised something unexpected (a bug, not a vendor's answer) is retried this
# often, this far apart, then dead-lettered: fixed, since no setting makes a bug go away.
CRASH_ATTEMPTS = 10
CRASH_BACKOFF_S = 5.0


def order_of(event: dict[str, Any], face_value: int) -> Order:
    """What a vendor is asked to issue for a grant's outbox event: the one place an order is
    made from a grant (`face_value` is the right's, from the campaign's route)."""
    return Order(
        grant_id=event["grant_id"],
        campaign_id=event["campaign_id"],
        reward_id=event["reward_id"],
        right_id=event["right_id"],
        customer_id=event["customer_id"],
        face_value=face_value,
    )


@dataclass
class Work:
    event: dict[str, Any]
    outbox_id: str | None  # None for a parked retry, which has no outbox entry left
    # The shard whose outbox the entry is in, or whose retry set the grant was parked in: its
    # acknowledgement, retry state and dead letter stay there.
    shard: ShardKeys
    # Taken over from a dead worker or from the retry set: its outcome may be recorded already.
    redelivered: bool = False
    # Parked or counted an attempt: there is retry state to clean up.
    retried: bool = False


class Fulfiller:
    def __init__(
        self,
        redis: Redis,
        pool: asyncpg.Pool,
        keys: Keys,
        clock: Clock,
        lifecycle: GrantLifecycle,
        lanes: Lanes,
        *,
        suspended_wait_s: float = 10.0,
    ) -> None:
        """`suspended_wait_s`: how long a grant of a suspended vendor waits before it is looked
        at again (the worker passes how often it reloads vendors)."""
        self._suspended_wait_s = suspended_wait_s
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._lifecycle = lifecycle
        self._lanes = lanes
        self._duplicates = DuplicateCheck(pool)
        # Outcomes go to Redis in batches, a few connections whatever the backlog.
        self._recorder = Recorder(redis, keys, lifecycle)

    async def close(self) -> None:
        await self._recorder.close()

    async def fulfil(self, work: Work) -> None:
        try:
            status = await self._status_now(work.event["grant_id"]) if work.redelivered else None
            if status not in (None, "granted"):
                # A worker died after recording it, before finishing. Revoked: it may also have
                # died after the vendor issued it and before taking it back there.
                if status == "revoked":
                    await self._take_back(work.event)
                await self._done(work)
                return
            holder = await self._duplicate_of(work.event)
            if holder is not None:
                await self._refuse_duplicate(work, holder)
                return
            await self._fulfil_once(work)
        except STORES_AWAY as exc:
            await self._wait_for_stores(work, exc)
        except Exception as exc:  # a bug: retry, then dead-letter
            log.exception("fulfil: grant %s crashed", work.event["grant_id"])
            work.retried = True
            attempts = await self._redis.hincrby(
                work.shard.fulfil_attempts, work.event["grant_id"], 1
            )
            if attempts < CRASH_ATTEMPTS:
                await self._park(work, CRASH_BACKOFF_S)
            else:
                await self._give_up(work, "unknown", repr(exc), attempts)

    async def _duplicate_of(self, event: dict[str, Any]) -> str | None:
        """The grant the ledger holds for this grant's request, when it is another one. While
        PostgreSQL cannot say, a grant for a vendor waits (a vendor never issues a duplicate);
        one fulfilled internally goes on, since nothing leaves the bank."""
        try:
            return await self._duplicates.holder(event)
        except (*POSTGRES_AWAY, asyncpg.PostgresError):
            route = await self._lanes.route(event["campaign_id"], event["reward_id"])
            if route.vendor_id is not None:
                raise
            return None

    async def _refuse_duplicate(self, work: Work, holder: str) -> None:
        """The ledger refused this grant: its request id belongs to another grant (Redis lost
        the idempotency entry). Never issued; it fails, giving back what its campaign gives back
        on failure, and is dead-lettered with the reason."""
        event = work.event
        error = (
            f"duplicate request: {event['channel_id']}/{event['request_id']} already belongs to"
            f" grant {holder} in the ledger; not issued"
        )
        log.error("fulfil: grant %s refused: %s", event["grant_id"], error)
        detail = {"vendor_id": "none", "error": error, "duplicate_of": holder}
        moved = await self._lifecycle.move(
            event["grant_id"], "failed", "system:fulfilment", detail, grant=grant_from_event(event)
        )
        await self._dead_letter(work, "none", error, 0)
        metrics.FULFILMENTS.labels("none", "duplicate").inc()
        await self._announce(event["grant_id"], moved.state, detail)
        await self._done(work)

    async def _wait_for_stores(self, work: Work, exc: BaseException) -> None:
        """A store went away mid-way: park the grant without spending one of its attempts (an
        outage says nothing about the grant). With Redis away even parking fails; then the
        outbox entry stays pending (or the retry lease runs out) and it is taken over later.
        The grant id is the vendor's idempotency key, so the retry never issues twice."""
        log.warning("fulfil: grant %s waits for the stores (%s)", work.event["grant_id"], exc)
        with contextlib.suppress(*REDIS_AWAY):
            await self._park(work, CRASH_BACKOFF_S)

    async def _status_now(self, grant_id: str) -> str | None:
        """The grant's status (anything but `granted`: it no longer waits for fulfilment);
        None when it is not found."""
        try:
            grant = await self._lifecycle.grants.get(grant_id)
        except GrantNotFound:
            return None
        return str(grant["status"])

    async def _take_back(self, event: dict[str, Any]) -> None:
        """Revoke a revoked grant at its vendor, once, best effort (a vendor answers a revoke of
        a grant it never issued as done: adapters.py `missing_ok`)."""
        route = await self._lanes.route(event["campaign_id"], event["reward_id"])
        lane = self._lanes.get(route.vendor_id) if route.vendor_id else None
        if lane is not None:
            with contextlib.suppress(VendorError):
                await lane.adapter.revoke(event["grant_id"])

    async def _fulfil_once(self, work: Work) -> None:
        event = work.event
        route = await self._lanes.route(event["campaign_id"], event["reward_id"])
        if route.vendor_id is None:
            await self._fulfilled(work, None, {})
            return
        lane = self._lanes.get(route.vendor_id)
        if lane is None:
            await self._lanes.reload()
            lane = self._lanes.get(route.vendor_id)
        if lane is None:
            await self._attempt_failed(
                work, None, f"vendor {route.vendor_id} is not registered", True
            )
            return
        if lane.vendor.state == "suspended":
            # Not the grant's fault: it waits, spending no attempt, and is never dead-lettered
            # for it; tried again once the vendor is resumed (vendors/lifecycle.py).
            metrics.FULFILMENTS.labels(lane.vendor.id, "vendor_suspended").inc()
            await self._park(work, self._suspended_wait_s)
            return
        async with lane.slots:
            allowed = lane.breaker.allow()
            await self._lanes.note(lane)  # open may have turned half-open
            if not allowed:
                await self._park(work, lane.breaker.retry_in())
                return
            order = order_of(event, route.face_value)
            vendor_id = lane.vendor.id
            lane.in_flight += 1
            metrics.VENDOR_IN_FLIGHT.labels(vendor_id).set(lane.in_flight)
            started = time.monotonic()
            try:
                result = await lane.adapter.issue(order)
            except VendorError as exc:
                lane.breaker.failed()
                outcome = "retryable" if exc.retryable else "rejected"
                metrics.VENDOR_CALL_SECONDS.labels(vendor_id, outcome).observe(
                    time.monotonic() - started
                )
                metrics.VENDOR_CIRCUIT.labels(vendor_id).set(STATE_VALUES[lane.breaker.state])
                await self._lanes.note(lane)
                await self._attempt_failed(work, lane, str(exc), exc.retryable)
                return
            finally:
                lane.in_flight -= 1
                metrics.VENDOR_IN_FLIGHT.labels(vendor_id).set(lane.in_flight)
            lane.breaker.succeeded()
            metrics.VENDOR_CIRCUIT.labels(vendor_id).set(STATE_VALUES[lane.breaker.state])
            await self._lanes.note(lane)
            metrics.VENDOR_CALL_SECONDS.labels(vendor_id, "ok").observe(time.monotonic() - started)
            detail = {
                "vendor_id": vendor_id,
                "code": result.code,
                "reference": result.reference,
                "expires_at": result.expires_at,
            }
            # Recorded before the slot is given back: a lane never holds more issued but
            # unrecorded fulfilments than max_in_flight, however long the backlog.
            await self._fulfilled(work, lane, {k: v for k, v in detail.items() if v is not None})

    async def _fulfilled(self, work: Work, lane: Lane | None, detail: dict[str, Any]) -> None:
        """Recorded, announced and acknowledged with the other outcomes at hand (recorder.py).
        `lane` None: a grant of a right with no vendor from before grants of such rights were
        born fulfilled (an outbox entry without `fulfilled_at_ms`)."""
        event = work.event
        vendor_id = lane.vendor.id if lane else "internal"
        # A first attempt that went through leaves nothing else behind: its entry is
        # acknowledged in the batch. Anything with retry state is cleaned up below.
        plain = work.outbox_id is not None and not work.redelivered and not work.retried
        moved = await self._recorder.fulfilled(
            event, work.outbox_id if plain else None, f"vendor:{vendor_id}", detail, work.shard
        )
        revoked = revoked_meanwhile(moved)
        if revoked and lane is not None:
            # Revoked while the vendor was issuing it: take it back at the vendor too.
            with contextlib.suppress(VendorError):
                await lane.adapter.revoke(event["grant_id"])
        metrics.FULFILMENTS.labels(vendor_id, "fulfilled").inc()
        if not plain or revoked:
            # A revoked one's entry is acknowledged only now, after the vendor revoke: a worker
            # killed before it leaves the entry to whoever takes it over (fulfil()).
            await self._done(work)

    async def _attempt_failed(
        self, work: Work, lane: Lane | None, error: str, retryable: bool
    ) -> None:
        grant_id = work.event["grant_id"]
        work.retried = True
        attempts = await self._redis.hincrby(work.shard.fulfil_attempts, grant_id, 1)
        max_attempts = lane.vendor.max_attempts if lane else 1
        if retryable and attempts < max_attempts and lane is not None:
            metrics.VENDOR_RETRIES.labels(lane.vendor.id).inc()
            await self._park(work, lane.backoff_s(attempts))
            return
        await self._give_up(work, lane.vendor.id if lane else "unknown", error, attempts)

    async def _give_up(self, work: Work, vendor_id: str, error: str, attempts: int) -> None:
        """Retries are over: the grant fails and goes to the dead-letter stream."""
        grant_id = work.event["grant_id"]
        log.warning(
            "fulfil: grant %s failed at %s after %d attempts: %s",
            grant_id,
            vendor_id,
            attempts,
            error,
        )
        detail = {"vendor_id": vendor_id, "error": error[:500], "attempts": attempts}
        moved = await self._lifecycle.move(
            grant_id, "failed", "system:fulfilment", detail, grant=grant_from_event(work.event)
        )
        await self._dead_letter(work, vendor_id, error[:500], attempts)
        metrics.VENDOR_DEAD_LETTERS.labels(vendor_id).inc()
        metrics.FULFILMENTS.labels(vendor_id, "failed").inc()
        await self._announce(grant_id, moved.state, detail)
        await self._done(work)

    async def _dead_letter(self, work: Work, vendor_id: str, error: str, attempts: int) -> None:
        await self._redis.xadd(
            work.shard.fulfil_dead,
            {
                "grant": orjson.dumps(work.event).decode(),
                "vendor_id": vendor_id,
                "error": error,
                "attempts": attempts,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )

    async def _park(self, work: Work, delay_s: float) -> None:
        """Try again later: durable in Redis, and the outbox entry is released."""
        grant_id = work.event["grant_id"]
        work.retried = True
        due_ms = int((self._clock() + delay_s) * 1000)
        shard = work.shard  # one slot: a transaction on a cluster too
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(shard.fulfil_parked, grant_id, orjson.dumps(work.event))
            pipe.zadd(shard.fulfil_retry, {grant_id: due_ms})
            if work.outbox_id:
                pipe.xack(shard.outbox, FULFIL_GROUP, work.outbox_id)
            await pipe.execute()

    async def _done(self, work: Work) -> None:
        grant_id = work.event["grant_id"]
        shard = work.shard
        if work.outbox_id and not work.redelivered and not work.retried:
            # A first attempt that went through left nothing else behind.
            await self._redis.xack(shard.outbox, FULFIL_GROUP, work.outbox_id)
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            if work.outbox_id:
                pipe.xack(shard.outbox, FULFIL_GROUP, work.outbox_id)
            pipe.zrem(shard.fulfil_retry, grant_id)
            pipe.hdel(shard.fulfil_parked, grant_id)
            pipe.hdel(shard.fulfil_attempts, grant_id)
            await pipe.execute()

    async def _announce(self, grant_id: str, status: str, detail: dict[str, Any]) -> None:
        message = {"grant_id": grant_id, "status": status, **detail}
        await self._redis.publish(self._keys.outcomes, orjson.dumps(message))

    async def revoke_at_vendor(
        self, event: dict[str, Any], shard: ShardKeys, outbox_id: str
    ) -> None:
        """A revoked grant is taken back at its vendor too (best effort, a few tries)."""
        reward_id = event.get("reward_id")
        if reward_id is None:  # events written before they carried it
            reward_id = (await self._lifecycle.grants.get(event["grant_id"]))["reward_id"]
        route = await self._lanes.route(event["campaign_id"], reward_id)
        lane = self._lanes.get(route.vendor_id) if route.vendor_id else None
        if lane is not None:
            for attempt in range(1, 4):
                try:
                    await lane.adapter.revoke(event["grant_id"])
                    break
                except VendorError as exc:
                    if not exc.retryable or attempt == 3:
                        log.warning(
                            "fulfil: could not revoke %s at %s: %s",
                            event["grant_id"],
                            lane.vendor.id,
                            exc,
                        )
                        break
                    await asyncio.sleep(lane.backoff_s(attempt))
        await self._redis.xack(shard.outbox, FULFIL_GROUP, outbox_id)
