"""The fulfilment worker: every grant fulfilled at its vendor exactly once.

It reads new grants from the outbox with its own consumer group. Each vendor has a lane: a
limit on calls in flight, a timeout, a circuit breaker, its own HTTP session. A failed attempt is
parked in Redis (a sorted set by due time) and its outbox entry acknowledged, so a slow or dead
vendor holds neither the outbox nor the other vendors' lanes. When retries run out, the grant
fails (the campaign says whether its stock returns) and goes to the dead-letter stream, from
where `quanyi dlq redrive` puts it back.

Outcomes go through transition.lua, so the ledger records every one; the API learns them on a
pub/sub channel (for claims that wait for fulfilment).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from inventory.keys import Keys
from inventory.readiness import store_ready
from inventory.scripts import Scripts
from inventory.stock import StockLedger
from issuance.claims import CampaignCache
from issuance.grants import GrantReader
from issuance.lifecycle import GrantLifecycle, grant_from_event
from ledger.lag import FULFIL_GROUP
from ledger.worker import (
    POSTGRES_AWAY,
    REDIS_AWAY,
    default_consumer_name,
    ensure_groups,
    group_missing,
)
from quanyi import metrics
from quanyi.clock import Clock
from quanyi.errors import GrantNotFound, StoreNotReady
from quanyi.settings import Settings
from vendors import queries
from vendors.adapters import Adapter, Order, VendorError, make_adapter
from vendors.breaker import STATE_VALUES, CircuitBreaker
from vendors.duplicates import DuplicateCheck
from vendors.registry import Vendor

log = logging.getLogger(__name__)

# A store away (restarting, failing over, or Redis emptied and not rebuilt yet): not the
# grant's fault, so no attempt is spent on it; the grant is parked and tried again.
STORES_AWAY = (*REDIS_AWAY, *POSTGRES_AWAY, asyncpg.PostgresError, StoreNotReady)
LEASE_MS = 60_000
# A fulfilment that raised something unexpected is retried this often, this far apart.
CRASH_ATTEMPTS = 10
CRASH_BACKOFF_S = 5.0
EXPIRY_EVERY_S = 30.0
VENDORS_EVERY_S = 10.0
# Outcomes recorded at once, well below the Redis pool (128): beyond it, tasks would wait for a
# connection longer than the pool's timeout and fail after the vendor already issued.
RECORDING_LIMIT = 64


@dataclass
class Lane:
    """One vendor's share of the worker."""

    vendor: Vendor
    adapter: Adapter
    session: aiohttp.ClientSession | None
    breaker: CircuitBreaker
    slots: asyncio.Semaphore
    in_flight: int = 0

    def backoff_s(self, attempt: int) -> float:
        """Exponential, capped, with jitter so retries of one outage do not arrive together."""
        ceiling = min(self.vendor.backoff_max_ms, self.vendor.backoff_base_ms * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0) / 1000


@dataclass(frozen=True)
class Route:
    vendor_id: str | None
    face_value: int


@dataclass
class _Work:
    event: dict[str, Any]
    outbox_id: str | None  # None for a parked retry, which has no outbox entry left
    # Taken over from a dead worker or from the retry set: its outcome may be recorded already.
    redelivered: bool = False
    # Parked or counted an attempt: there is retry state to clean up.
    retried: bool = False


class FulfilmentWorker:
    def __init__(
        self,
        redis: Redis,
        pool: asyncpg.Pool,
        keys: Keys,
        settings: Settings,
        clock: Clock,
        *,
        consumer: str | None = None,
        batch_size: int = 500,
        block_ms: int = 100,
        reclaim_idle_ms: int = 30_000,
        breaker_threshold: int = 5,
        breaker_reset_s: float = 5.0,
        max_tasks: int = 20_000,
    ) -> None:
        self._redis = redis
        self._pool = pool
        self._keys = keys
        self._clock = clock
        self.consumer = consumer or default_consumer_name()
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._reclaim_idle_ms = reclaim_idle_ms
        self._breaker_threshold = breaker_threshold
        self._breaker_reset_s = breaker_reset_s
        self._tasks: set[asyncio.Task] = set()
        self._room = asyncio.Semaphore(max_tasks)
        self._in_progress: set[str] = set()
        self._recording = asyncio.Semaphore(RECORDING_LIMIT)
        self._loading_routes: dict[str, asyncio.Task[None]] = {}
        self._acks: list[str] = []
        self._lanes: dict[str, Lane] = {}
        self._routes: dict[tuple[str, str], Route] = {}
        self._scripts = Scripts(redis)
        self._duplicates = DuplicateCheck(pool)
        campaigns = CampaignCache(
            StockLedger(redis, keys), ready=functools.partial(store_ready, redis, keys)
        )
        self.lifecycle = GrantLifecycle(
            redis, keys, GrantReader(redis, pool, keys), campaigns, settings, clock
        )
        self._stopping = asyncio.Event()
        self._last = {"housekeeping": 0.0, "expiry": 0.0, "vendors": 0.0}
        self._groups_ready = False

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, grace_s: float = 10.0) -> None:
        log.info("fulfilment worker %s started", self.consumer)
        try:
            backoff = 0.5
            while not self._stopping.is_set():
                try:
                    if not self._groups_ready:
                        await ensure_groups(self._redis, self._keys)
                        self._groups_ready = True
                    await self.step()
                    backoff = 0.5
                    continue
                except STORES_AWAY as exc:
                    log.warning("fulfil: store unavailable (%s); retrying in %.1f s", exc, backoff)
                except ResponseError as exc:
                    if not group_missing(exc):
                        log.exception("fulfil: step failed; retrying in %.1f s", backoff)
                    else:
                        log.warning("fulfil: outbox consumer group gone (%s); re-creating it", exc)
                        self._groups_ready = False
                        continue
                except Exception:  # a bug: logged, and never a reason to stop for good
                    log.exception("fulfil: step failed; retrying in %.1f s", backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
            await self.wait_idle(grace_s)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._close_lanes(self._lanes.values())
            log.info("fulfilment worker %s stopped", self.consumer)

    async def wait_idle(self, timeout_s: float) -> None:
        """Wait until no fulfilment is under way (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self._tasks), timeout=deadline - time.monotonic())

    async def step(self) -> None:
        now = time.monotonic()
        if now - self._last["vendors"] >= VENDORS_EVERY_S:
            self._last["vendors"] = now
            await self._load_vendors()
        if now - self._last["housekeeping"] >= 1.0:
            self._last["housekeeping"] = now
            await self._reclaim()
            await self._check_code_pools()
        await self._take_due()
        if now - self._last["expiry"] >= EXPIRY_EVERY_S:
            self._last["expiry"] = now
            await self.expire_due()
        reply = await self._redis.xreadgroup(
            FULFIL_GROUP,
            self.consumer,
            {self._keys.outbox: ">"},
            count=self._batch_size,
            block=self._block_ms,
        )
        for _stream, messages in reply or []:
            for outbox_id, fields in messages:
                await self._dispatch(outbox_id, fields)
        await self._flush_acks()

    async def _flush_acks(self) -> None:
        if self._acks:
            acks, self._acks = self._acks, []
            await self._redis.xack(self._keys.outbox, FULFIL_GROUP, *acks)

    # reading

    async def _dispatch(
        self, outbox_id: str, fields: dict[str, str], redelivered: bool = False
    ) -> None:
        if outbox_id in self._in_progress:
            return
        if "g" in fields:
            work = _Work(orjson.loads(fields["g"]), outbox_id, redelivered)
            await self._spawn(self._fulfil(work), outbox_id)
        elif "e" in fields and orjson.loads(fields["e"]).get("event") == "revoked":
            await self._spawn(
                self._revoke_at_vendor(orjson.loads(fields["e"]), outbox_id), outbox_id
            )
        else:  # other lifecycle events need nothing from vendors: acknowledged per batch
            self._acks.append(outbox_id)

    async def _spawn(self, coro: Any, key: str) -> None:
        await self._room.acquire()
        self._in_progress.add(key)
        task = asyncio.create_task(coro, name=f"fulfil-{key}")
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            self._in_progress.discard(key)
            self._room.release()
            if not t.cancelled() and t.exception() is not None:
                log.error("fulfilment task %s failed", key, exc_info=t.exception())

        task.add_done_callback(done)

    async def _reclaim(self) -> None:
        """Entries a dead worker took and never acknowledged."""
        start = "0-0"
        while not self._stopping.is_set():
            start, messages, *_ = await self._redis.xautoclaim(
                self._keys.outbox,
                FULFIL_GROUP,
                self.consumer,
                self._reclaim_idle_ms,
                start_id=start,
                count=self._batch_size,
            )
            for outbox_id, fields in messages:
                if fields:
                    await self._dispatch(outbox_id, fields, redelivered=True)
                else:
                    self._acks.append(outbox_id)
            await self._flush_acks()
            if start == "0-0":
                return

    async def _take_due(self) -> None:
        now_ms = int(self._clock() * 1000)
        due = await self._scripts.lease_due(
            keys=[self._keys.fulfil_retry], args=[now_ms, now_ms + LEASE_MS, 200]
        )
        for grant_id in due:
            if grant_id in self._in_progress:
                continue
            raw = await self._redis.hget(self._keys.fulfil_parked, grant_id)
            if raw is None:
                await self._redis.zrem(self._keys.fulfil_retry, grant_id)
                continue
            await self._spawn(self._fulfil(_Work(orjson.loads(raw), None, True)), grant_id)

    # fulfilling

    async def _fulfil(self, work: _Work) -> None:
        try:
            if work.redelivered and await self._moved_on(work.event["grant_id"]):
                await self._done(work)  # a worker died after recording it, before finishing
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
                self._keys.fulfil_attempts, work.event["grant_id"], 1
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
            route = await self._route(event["campaign_id"], event["reward_id"])
            if route.vendor_id is not None:
                raise
            return None

    async def _refuse_duplicate(self, work: _Work, holder: str) -> None:
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
        moved = await self.lifecycle.move(
            event["grant_id"], "failed", "system:fulfilment", detail, grant=grant_from_event(event)
        )
        await self._redis.xadd(
            self._keys.fulfil_dead,
            {
                "grant": orjson.dumps(event).decode(),
                "vendor_id": "none",
                "error": error,
                "attempts": 0,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        metrics.FULFILMENTS.labels("none", "duplicate").inc()
        await self._announce(event["grant_id"], "failed" if moved.applied else moved.before, detail)
        await self._done(work)

    async def _wait_for_stores(self, work: _Work, exc: BaseException) -> None:
        """A store went away mid-way: park the grant without spending one of its attempts (an
        outage says nothing about the grant). With Redis away even parking fails; then the
        outbox entry stays pending (or the retry lease runs out) and it is taken over later.
        The grant id is the vendor's idempotency key, so the retry never issues twice."""
        log.warning("fulfil: grant %s waits for the stores (%s)", work.event["grant_id"], exc)
        with contextlib.suppress(*REDIS_AWAY):
            await self._park(work, CRASH_BACKOFF_S)

    async def _moved_on(self, grant_id: str) -> bool:
        """Whether the grant is no longer waiting for fulfilment (fulfilled, revoked, ...)."""
        try:
            grant = await self.lifecycle.grants.get(grant_id)
        except GrantNotFound:
            return False
        return grant["status"] != "granted"

    async def _fulfil_once(self, work: _Work) -> None:
        event = work.event
        route = await self._route(event["campaign_id"], event["reward_id"])
        if route.vendor_id is None:
            await self._fulfilled(work, None, {})
            return
        lane = self._lanes.get(route.vendor_id)
        if lane is None:
            await self._load_vendors()
            lane = self._lanes.get(route.vendor_id)
        if lane is None:
            await self._attempt_failed(
                work, None, f"vendor {route.vendor_id} is not registered", True
            )
            return
        async with lane.slots:
            if not lane.breaker.allow():
                await self._park(work, lane.breaker.retry_in())
                return
            order = Order(
                grant_id=event["grant_id"],
                campaign_id=event["campaign_id"],
                reward_id=event["reward_id"],
                right_id=event["right_id"],
                customer_id=event["customer_id"],
                face_value=route.face_value,
            )
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
                await self._attempt_failed(work, lane, str(exc), exc.retryable)
                return
            finally:
                lane.in_flight -= 1
                metrics.VENDOR_IN_FLIGHT.labels(vendor_id).set(lane.in_flight)
            lane.breaker.succeeded()
            metrics.VENDOR_CIRCUIT.labels(vendor_id).set(STATE_VALUES[lane.breaker.state])
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

    async def _fulfilled(self, work: _Work, lane: Lane | None, detail: dict[str, Any]) -> None:
        async with self._recording:
            await self._record_fulfilled(work, lane, detail)

    async def _record_fulfilled(
        self, work: _Work, lane: Lane | None, detail: dict[str, Any]
    ) -> None:
        event = work.event
        vendor_id = lane.vendor.id if lane else "internal"
        moved = await self.lifecycle.move(
            event["grant_id"],
            "fulfilled",
            f"vendor:{vendor_id}",
            detail,
            grant=grant_from_event(event),
        )
        if moved.outcome == "refused" and moved.before == "revoked" and lane is not None:
            # Revoked while the vendor was issuing it: take it back at the vendor too.
            with contextlib.suppress(VendorError):
                await lane.adapter.revoke(event["grant_id"])
        metrics.FULFILMENTS.labels(vendor_id, "fulfilled").inc()
        await self._announce(
            event["grant_id"], "fulfilled" if moved.applied else moved.before, detail
        )
        await self._done(work)

    async def _attempt_failed(
        self, work: _Work, lane: Lane | None, error: str, retryable: bool
    ) -> None:
        grant_id = work.event["grant_id"]
        work.retried = True
        attempts = await self._redis.hincrby(self._keys.fulfil_attempts, grant_id, 1)
        max_attempts = lane.vendor.max_attempts if lane else 1
        if retryable and attempts < max_attempts and lane is not None:
            metrics.VENDOR_RETRIES.labels(lane.vendor.id).inc()
            await self._park(work, lane.backoff_s(attempts))
            return
        await self._give_up(work, lane.vendor.id if lane else "unknown", error, attempts)

    async def _give_up(self, work: _Work, vendor_id: str, error: str, attempts: int) -> None:
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
        moved = await self.lifecycle.move(
            grant_id, "failed", "system:fulfilment", detail, grant=grant_from_event(work.event)
        )
        await self._redis.xadd(
            self._keys.fulfil_dead,
            {
                "grant": orjson.dumps(work.event).decode(),
                "vendor_id": vendor_id,
                "error": error[:500],
                "attempts": attempts,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        metrics.VENDOR_DEAD_LETTERS.labels(vendor_id).inc()
        metrics.FULFILMENTS.labels(vendor_id, "failed").inc()
        await self._announce(grant_id, "failed" if moved.applied else moved.before, detail)
        await self._done(work)

    async def _park(self, work: _Work, delay_s: float) -> None:
        """Try again later: durable in Redis, and the outbox entry is released."""
        grant_id = work.event["grant_id"]
        work.retried = True
        due_ms = int((self._clock() + delay_s) * 1000)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.fulfil_parked, grant_id, orjson.dumps(work.event))
            pipe.zadd(self._keys.fulfil_retry, {grant_id: due_ms})
            if work.outbox_id:
                pipe.xack(self._keys.outbox, FULFIL_GROUP, work.outbox_id)
            await pipe.execute()

    async def _done(self, work: _Work) -> None:
        grant_id = work.event["grant_id"]
        if work.outbox_id and not work.redelivered and not work.retried:
            # A first attempt that went through left nothing else behind.
            await self._redis.xack(self._keys.outbox, FULFIL_GROUP, work.outbox_id)
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            if work.outbox_id:
                pipe.xack(self._keys.outbox, FULFIL_GROUP, work.outbox_id)
            pipe.zrem(self._keys.fulfil_retry, grant_id)
            pipe.hdel(self._keys.fulfil_parked, grant_id)
            pipe.hdel(self._keys.fulfil_attempts, grant_id)
            await pipe.execute()

    async def _announce(self, grant_id: str, status: str, detail: dict[str, Any]) -> None:
        message = {"grant_id": grant_id, "status": status, **detail}
        await self._redis.publish(self._keys.outcomes, orjson.dumps(message))

    async def _revoke_at_vendor(self, event: dict[str, Any], outbox_id: str) -> None:
        """A revoked grant is taken back at its vendor too (best effort, a few tries)."""
        reward_id = event.get("reward_id")
        if reward_id is None:  # events written before they carried it
            reward_id = (await self.lifecycle.grants.get(event["grant_id"]))["reward_id"]
        route = await self._route(event["campaign_id"], reward_id)
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
        await self._redis.xack(self._keys.outbox, FULFIL_GROUP, outbox_id)

    # upkeep

    async def expire_due(self) -> int:
        """Fulfilled grants whose validity is over become expired."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        expired = 0
        for row in await self._pool.fetch(queries.expiring_grants, now, 500):
            moved = await self.lifecycle.move(row["grant_id"], "expired", "system:expiry")
            expired += moved.applied
        return expired

    async def _route(self, campaign_id: str, reward_id: str) -> Route:
        route = self._routes.get((campaign_id, reward_id))
        if route is None:
            # A backlog of a campaign not seen yet shares one look-up.
            loading = self._loading_routes.get(campaign_id)
            if loading is None:
                loading = asyncio.create_task(self._load_routes(campaign_id))
                self._loading_routes[campaign_id] = loading
                loading.add_done_callback(lambda _t: self._loading_routes.pop(campaign_id, None))
            await asyncio.shield(loading)
            route = self._routes.setdefault((campaign_id, reward_id), Route(None, 0))
        return route

    async def _load_routes(self, campaign_id: str) -> None:
        for row in await self._pool.fetch(queries.reward_routes, campaign_id):
            self._routes[(campaign_id, row["reward_id"])] = Route(
                row["vendor_id"], row["face_value"]
            )

    async def _load_vendors(self) -> None:
        rows = await self._pool.fetch(queries.list_vendors)
        stale = []
        for row in rows:
            vendor = Vendor.from_row(row)
            current = self._lanes.get(vendor.id)
            if current is not None and current.vendor == vendor:
                continue
            if current is not None:
                stale.append(current)
            try:
                self._lanes[vendor.id] = self._lane(vendor)
            except (OSError, KeyError, ValueError) as exc:
                log.error("fulfil: vendor %s cannot be used: %s", vendor.id, exc)
        await self._close_lanes(stale)

    def _lane(self, vendor: Vendor) -> Lane:
        session = None
        if vendor.adapter != "codepool":
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=vendor.max_in_flight)
            )
        adapter = make_adapter(vendor, session, self._redis, self._keys, self._clock)
        return Lane(
            vendor=vendor,
            adapter=adapter,
            session=session,
            breaker=CircuitBreaker(self._breaker_threshold, self._breaker_reset_s),
            slots=asyncio.Semaphore(vendor.max_in_flight),
        )

    @staticmethod
    async def _close_lanes(lanes: Any) -> None:
        for lane in lanes:
            if lane.session is not None:
                await lane.session.close()

    async def _check_code_pools(self) -> None:
        """Warn when a code pool holds fewer codes than its campaigns may still grant."""
        stock = StockLedger(self._redis, self._keys)
        for lane in self._lanes.values():
            if lane.vendor.adapter != "codepool":
                continue
            demand: dict[str, int] = {}
            for row in await self._pool.fetch(queries.codepool_demand, lane.vendor.id):
                counters = await stock.counters(row["campaign_id"], [row["reward_id"]])
                left = max(row["stock"] - counters.granted[row["reward_id"]], 0)
                demand[row["right_id"]] = demand.get(row["right_id"], 0) + left
            for right_id, needed in demand.items():
                codes = await self._redis.llen(self._keys.code_pool(lane.vendor.id, right_id))
                metrics.CODEPOOL_REMAINING.labels(lane.vendor.id, right_id).set(codes)
                if codes < needed:
                    log.warning(
                        "code pool low: vendor %s right %s has %d codes for %d grants still possible",
                        lane.vendor.id,
                        right_id,
                        codes,
                        needed,
                    )
