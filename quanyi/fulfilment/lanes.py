"""Where a grant goes: each vendor's lane (its calls in flight, circuit breaker, adapter and HTTP
session) and each reward's route to its vendor, both loaded from PostgreSQL and kept in memory."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
import asyncpg
from redis.asyncio import Redis

from quanyi.core.clock import Clock
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import REDIS_AWAY
from quanyi.stores.scripts import Scripts
from quanyi.vendors import health, queries
from quanyi.vendors.adapters import Adapter, make_adapter
from quanyi.vendors.breaker import OPEN, CircuitBreaker
from quanyi.vendors.registry import Vendor

log = logging.getLogger(__name__)


@dataclass
class Lane:
    """One vendor's share of the worker."""

    vendor: Vendor
    adapter: Adapter
    session: aiohttp.ClientSession | None
    breaker: CircuitBreaker
    slots: asyncio.Semaphore
    in_flight: int = 0
    # The circuit as last published (quanyi/vendors/health.py), and when it last opened.
    published: tuple[str, int] | None = None
    opened_at_ms: int | None = None

    def backoff_s(self, attempt: int) -> float:
        """Exponential, capped, with jitter so retries of one outage do not arrive together."""
        ceiling = min(self.vendor.backoff_max_ms, self.vendor.backoff_base_ms * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0) / 1000


@dataclass(frozen=True)
class Route:
    """The vendor a reward is fulfilled at (None: internally), and its face value there."""

    vendor_id: str | None
    face_value: int


class Lanes:
    """The vendors' lanes and the rewards' routes of one worker."""

    def __init__(
        self,
        redis: Redis,
        pool: asyncpg.Pool,
        keys: Keys,
        clock: Clock,
        scripts: Scripts,
        *,
        breaker_threshold: int,
        breaker_reset_s: float,
        worker: str = "",
        health_ttl_s: int = 30,
    ) -> None:
        self._scripts = scripts
        self._redis = redis
        self._pool = pool
        self._keys = keys
        self._clock = clock
        self._breaker_threshold = breaker_threshold
        self._breaker_reset_s = breaker_reset_s
        self._worker = worker
        self._health_ttl_s = health_ttl_s
        self._lanes: dict[str, Lane] = {}
        self._routes: dict[tuple[str, str], Route] = {}
        self._loading_routes: dict[str, asyncio.Task[None]] = {}
        self._reloading: asyncio.Task[None] | None = None

    def get(self, vendor_id: str) -> Lane | None:
        return self._lanes.get(vendor_id)

    def current(self) -> list[Lane]:
        return list(self._lanes.values())

    async def note(self, lane: Lane) -> None:
        """Publish the lane's circuit if it changed since it was last published."""
        breaker = lane.breaker
        if lane.published != (breaker.state, breaker.failures):
            await self._publish(lane, changed=True)

    async def refresh(self) -> None:
        """The vendors timer: take in vendor changes, then publish every lane's circuit again,
        so what the staff API reads stays current (and ages out once this worker is gone)."""
        await self.reload()
        for lane in self.current():
            await self._publish(lane, changed=False)

    async def _publish(self, lane: Lane, *, changed: bool) -> None:
        breaker = lane.breaker
        now_ms = int(self._clock() * 1000)
        if breaker.state == OPEN and (lane.published is None or lane.published[0] != OPEN):
            lane.opened_at_ms = now_ms
        view = health.CircuitView(breaker.state, breaker.failures, lane.opened_at_ms)
        try:
            await health.publish(
                self._redis,
                self._keys,
                lane.vendor.id,
                view,
                worker=self._worker,
                now_ms=now_ms,
                ttl_s=self._health_ttl_s,
                changed=changed,
            )
        except REDIS_AWAY as exc:
            # What staff read, not what fulfils: the next change or timer publishes it.
            log.warning("fulfil: circuit of %s not published: %s", lane.vendor.id, exc)
            return
        lane.published = (breaker.state, breaker.failures)

    async def route(self, campaign_id: str, reward_id: str) -> Route:
        route = self._routes.get((campaign_id, reward_id))
        if route is None:
            # A backlog of a campaign not seen yet shares one look-up.
            loading = self._loading_routes.get(campaign_id)
            if loading is None:
                loading = asyncio.create_task(
                    self._load_routes(campaign_id), name=f"fulfil-routes-{campaign_id}"
                )
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

    async def reload(self) -> None:
        """Take in vendor changes: a changed vendor gets a new lane, its old session closes.
        Callers at the same time (the reload task, grants of a vendor not seen yet) share one
        reload, so no lane is built twice and left with its session open."""
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self._reload(), name="fulfil-vendors-load")
        await asyncio.shield(self._reloading)

    async def _reload(self) -> None:
        rows = await self._pool.fetch(queries.list_vendors)
        stale = []
        for row in rows:
            vendor = Vendor.from_row(row)
            current = self._lanes.get(vendor.id)
            if current is not None and current.vendor == vendor:
                # Reached the same way: the lane stays, with the vendor's state as it is now
                # (a suspended vendor's grants wait, fulfiller.py).
                current.vendor = vendor
                continue
            if current is not None:
                stale.append(current)
            try:
                self._lanes[vendor.id] = self._lane(vendor)
            except (OSError, KeyError, ValueError) as exc:
                log.error("fulfil: vendor %s cannot be used: %s", vendor.id, exc)
        await _close(stale)

    def _lane(self, vendor: Vendor) -> Lane:
        session = None
        if vendor.adapter != "codepool":
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=vendor.max_in_flight)
            )
        adapter = make_adapter(vendor, session, self._redis, self._keys, self._clock, self._scripts)
        return Lane(
            vendor=vendor,
            adapter=adapter,
            session=session,
            breaker=CircuitBreaker(self._breaker_threshold, self._breaker_reset_s),
            slots=asyncio.Semaphore(vendor.max_in_flight),
        )

    async def close(self) -> None:
        """Close every lane's session, once a reload under way has finished or been stopped."""
        if self._reloading is not None and not self._reloading.done():
            self._reloading.cancel()
            await asyncio.gather(self._reloading, return_exceptions=True)
        lanes, self._lanes = list(self._lanes.values()), {}
        await _close(lanes)


async def _close(lanes: Iterable[Lane]) -> None:
    for lane in lanes:
        if lane.session is not None:
            await lane.session.close()
