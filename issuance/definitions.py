"""The campaign definitions each process keeps for the hot path, and their republication when
Redis lost one of them (a write that went missing while the rest of Redis is intact).

A Redis that lost everything is another matter: its store-ready marker is gone with the data
(inventory/readiness.py), and nothing is republished into it; claims answer 503 store_not_ready
until `quanyi rebuild-redis` restored the idempotency entries and counters too."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from quanyi.core.errors import CampaignNotFound, StoreNotReady, Unavailable
from quanyi.inventory.hot_campaigns import HotCampaign, HotCampaigns
from quanyi.inventory.readiness import store_ready
from quanyi.stores.keys import Keys

log = logging.getLogger(__name__)

# A campaign id PostgreSQL does not know is not looked up again for this long, so claims for
# an id that does not exist cannot send every request to PostgreSQL.
ABSENT_TTL_S = 2.0
ABSENT_MAX = 4096
# Republication reads PostgreSQL: at most this many look-ups at once per process, and a claim
# waits at most this long for one, so random campaign ids or a slow PostgreSQL neither flood
# PostgreSQL nor hold claims (they answer 503 and retry).
REPUBLISH_CONCURRENCY = 2
REPUBLISH_WAIT_S = 1.0

# Publishes one campaign from PostgreSQL to Redis again; False when there is no such campaign.
Republisher = Callable[[str], Awaitable[bool]]
# Whether Redis holds its store-ready marker (inventory.readiness.store_ready).
ReadyCheck = Callable[[], Awaitable[bool]]


class CampaignCache:
    """Each process keeps the hot definitions it has used. claim.lua checks the version on every
    claim, so a cached definition that went stale is noticed and reloaded, never acted on.

    A definition missing from Redis (a lost write) is published again from PostgreSQL by the
    `republish` callable, once for a burst of claims, at most REPUBLISH_CONCURRENCY look-ups at
    once, a claim waiting REPUBLISH_WAIT_S at most (then 503); an id PostgreSQL does not know
    either is remembered as absent for a moment. A cached definition costs none of this. Nothing
    is republished while Redis lacks its store-ready marker (`ready`): StoreNotReady instead."""

    def __init__(
        self,
        stock: HotCampaigns,
        republish: Republisher | None = None,
        ready: ReadyCheck | None = None,
    ) -> None:
        self._stock = stock
        self._republish = republish
        self._ready = ready
        self._lookups = asyncio.Semaphore(REPUBLISH_CONCURRENCY)
        self._campaigns: dict[str, HotCampaign] = {}
        self._loading: dict[str, asyncio.Task[HotCampaign | None]] = {}
        self._republishing: dict[str, asyncio.Task[HotCampaign | None]] = {}
        self._absent: dict[str, float] = {}

    @classmethod
    def of_store(
        cls, redis: Redis, keys: Keys, republish: Republisher | None = None
    ) -> CampaignCache:
        """The definitions of the campaigns in `redis`, gated on its store-ready marker."""
        return cls(
            HotCampaigns(redis, keys), republish, functools.partial(store_ready, redis, keys)
        )

    async def get(self, campaign_id: str, reload: bool = False) -> HotCampaign:
        campaign = None if reload else self._campaigns.get(campaign_id)
        if campaign is None:
            campaign = await self._load(campaign_id)
            if campaign is None:
                return await self.republish(campaign_id)
            self._campaigns[campaign_id] = campaign
        return campaign

    async def republish(self, campaign_id: str) -> HotCampaign:
        """Redis has no definition of the campaign (none to load, or claim.lua found none although
        one was at hand): publish it again from PostgreSQL. CampaignNotFound when PostgreSQL has
        none either."""
        campaign = await self._republished(campaign_id)
        if campaign is None:
            self._campaigns.pop(campaign_id, None)
            raise CampaignNotFound(f"no campaign {campaign_id}")
        self._campaigns[campaign_id] = campaign
        return campaign

    def _known_absent(self, campaign_id: str) -> bool:
        absent_until = self._absent.get(campaign_id)
        if absent_until is not None:
            if time.monotonic() < absent_until:
                return True
            del self._absent[campaign_id]
        return False

    async def _republished(self, campaign_id: str) -> HotCampaign | None:
        # An id just found absent costs nothing more, not even a look at the marker.
        if self._known_absent(campaign_id):
            return None
        if self._ready is not None:
            try:
                ready = await self._ready()
            except RedisError as exc:
                raise Unavailable("the rights store is unreachable; retry") from exc
            if not ready:
                # Redis lost everything, not one definition: republishing it alone would
                # reopen claims with no idempotency entries or counters behind them.
                raise StoreNotReady()
        if self._republish is None or self._known_absent(campaign_id):
            return None  # (again: found absent while the marker was looked at)
        task = self._republishing.get(campaign_id)
        if task is None:
            task = asyncio.create_task(self._publish_again(campaign_id))
            self._republishing[campaign_id] = task

            def done(t: asyncio.Task[Any], campaign_id: str = campaign_id) -> None:
                self._republishing.pop(campaign_id, None)
                if not t.cancelled():
                    t.exception()  # retrieved: every waiter may have timed out already

            task.add_done_callback(done)
        try:
            # The look-up itself is never cancelled (a half-written definition helps nobody):
            # the claim stops waiting for it.
            return await asyncio.wait_for(asyncio.shield(task), REPUBLISH_WAIT_S)
        except TimeoutError:
            raise Unavailable("the campaign definition is being restored; retry") from None

    async def _publish_again(self, campaign_id: str) -> HotCampaign | None:
        assert self._republish is not None
        try:
            async with asyncio.timeout(REPUBLISH_WAIT_S):
                await self._lookups.acquire()
        except TimeoutError:
            raise Unavailable(
                "too many campaign definitions are being restored at once; retry"
            ) from None
        try:
            exists = await self._republish(campaign_id)
            campaign = await self._stock.definition(campaign_id) if exists else None
        except (OSError, RedisError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("campaign %s could not be published again: %s", campaign_id, exc)
            raise Unavailable("the campaign definition is being restored; retry") from exc
        finally:
            self._lookups.release()
        if not exists:
            if len(self._absent) >= ABSENT_MAX:
                self._absent.clear()  # bounded: ids that do not exist must not fill memory
            self._absent[campaign_id] = time.monotonic() + ABSENT_TTL_S
            return None
        if campaign is None:
            raise Unavailable("the campaign definition is being restored; retry")
        log.warning("campaign %s was missing from redis: published it again", campaign_id)
        return campaign

    async def _load(self, campaign_id: str) -> HotCampaign | None:
        # A burst of claims for a campaign this process has not seen yet shares one read.
        task = self._loading.get(campaign_id)
        if task is None:
            task = asyncio.create_task(self._stock.definition(campaign_id))
            self._loading[campaign_id] = task
            task.add_done_callback(lambda _t: self._loading.pop(campaign_id, None))
        return await asyncio.shield(task)
