"""The campaign definitions each process keeps for the hot path, and their republication when
Redis lost them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
from redis.exceptions import RedisError

from inventory.stock import HotCampaign, StockLedger
from quanyi.errors import CampaignNotFound, Unavailable

log = logging.getLogger(__name__)

# A campaign id PostgreSQL does not know is not looked up again for this long, so claims for
# an id that does not exist cannot send every request to PostgreSQL.
ABSENT_TTL_S = 2.0
ABSENT_MAX = 4096

# Publishes one campaign from PostgreSQL to Redis again; False when there is no such campaign.
Republisher = Callable[[str], Awaitable[bool]]


class CampaignCache:
    """Each process keeps the hot definitions it has used. claim.lua checks the version on every
    claim, so a cached definition that went stale is noticed and reloaded, never acted on.

    A definition missing from Redis (Redis lost its data) is published again from PostgreSQL by
    the `republish` callable, once for a burst of claims; an id PostgreSQL does not know either
    is remembered as absent for a moment. A cached definition costs none of this."""

    def __init__(self, stock: StockLedger, republish: Republisher | None = None) -> None:
        self._stock = stock
        self._republish = republish
        self._campaigns: dict[str, HotCampaign] = {}
        self._loading: dict[str, asyncio.Task[HotCampaign | None]] = {}
        self._republishing: dict[str, asyncio.Task[HotCampaign | None]] = {}
        self._absent: dict[str, float] = {}

    async def get(self, campaign_id: str, reload: bool = False) -> HotCampaign:
        campaign = None if reload else self._campaigns.get(campaign_id)
        if campaign is None:
            campaign = await self._load(campaign_id)
            if campaign is None:
                campaign = await self._republished(campaign_id)
            if campaign is None:
                self._campaigns.pop(campaign_id, None)
                raise CampaignNotFound(f"no campaign {campaign_id}")
            self._campaigns[campaign_id] = campaign
        return campaign

    async def republish(self, campaign_id: str) -> HotCampaign:
        """Redis answered that it has no such campaign although a definition was at hand: publish
        it again from PostgreSQL. CampaignNotFound when PostgreSQL has none either."""
        campaign = await self._republished(campaign_id)
        if campaign is None:
            self._campaigns.pop(campaign_id, None)
            raise CampaignNotFound(f"no campaign {campaign_id}")
        self._campaigns[campaign_id] = campaign
        return campaign

    async def _republished(self, campaign_id: str) -> HotCampaign | None:
        if self._republish is None:
            return None
        absent_until = self._absent.get(campaign_id)
        if absent_until is not None:
            if time.monotonic() < absent_until:
                return None
            del self._absent[campaign_id]
        task = self._republishing.get(campaign_id)
        if task is None:
            task = asyncio.create_task(self._publish_again(campaign_id))
            self._republishing[campaign_id] = task
            task.add_done_callback(lambda _t: self._republishing.pop(campaign_id, None))
        return await asyncio.shield(task)

    async def _publish_again(self, campaign_id: str) -> HotCampaign | None:
        assert self._republish is not None
        try:
            exists = await self._republish(campaign_id)
            campaign = await self._stock.definition(campaign_id) if exists else None
        except (OSError, RedisError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("campaign %s could not be published again: %s", campaign_id, exc)
            raise Unavailable("the campaign definition is being restored; retry") from exc
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
