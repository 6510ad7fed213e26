"""The one wiring of the service: opens the stores and builds the services from them.

The HTTP app, every CLI command and every worker get their Redis, PostgreSQL pool, scripts and
services here, so each is built one way, with the same settings, and closed in one place
(workers stop before the pools they use close).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from quanyi.access.channels import ChannelDirectory
from quanyi.access.rate_limits import RateLimiter, default_limit
from quanyi.access.secret_box import secret_box
from quanyi.audiences.service import AudienceService
from quanyi.campaigns.budgets import BudgetRules
from quanyi.campaigns.issuance_worker import IssuanceWorker
from quanyi.campaigns.issuances import BULK_CHANNEL
from quanyi.campaigns.schedule import CampaignScheduler
from quanyi.campaigns.service import CampaignService
from quanyi.core.clock import Clock, system_clock
from quanyi.core.errors import SecretsKeyError, StartupError
from quanyi.core.settings import Settings
from quanyi.fulfilment.tunables import FulfilmentTunables
from quanyi.fulfilment.worker import FulfilmentWorker
from quanyi.inventory.hot_campaigns import HotCampaigns
from quanyi.issuance.bulk_claims import BulkClaims
from quanyi.issuance.claims import ClaimService
from quanyi.issuance.definitions import CampaignCache, Republisher
from quanyi.issuance.events import EventService
from quanyi.issuance.exposures import Exposures
from quanyi.issuance.grants import GrantReader
from quanyi.issuance.lifecycle import GrantLifecycle
from quanyi.issuance.live import LiveCampaigns
from quanyi.issuance.offers import OfferService
from quanyi.issuance.outcomes import OutcomeWaiter
from quanyi.ledger.rebuild import open_store_at_startup
from quanyi.ledger.worker import LedgerWorker
from quanyi.notifications.webhook import WebhookConfig, WebhookSender
from quanyi.reports.service import ReportService
from quanyi.stores.db import close_pool, open_pool
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import ensure_groups
from quanyi.stores.redis import open_redis
from quanyi.stores.scripts import Scripts
from quanyi.vendors.directory import VendorDirectory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stores:
    """What every part of the service works on: settings, clock, Redis with its key names and
    scripts, and the PostgreSQL pool."""

    settings: Settings
    clock: Clock
    keys: Keys
    redis: Redis
    pool: asyncpg.Pool
    scripts: Scripts

    def campaign_cache(self, republish: Republisher | None = None) -> CampaignCache:
        """Campaign definitions as the hot path reads them, gated on the store-ready marker."""
        return CampaignCache.of_store(self.redis, self.keys, republish)

    def grant_reader(self) -> GrantReader:
        return GrantReader(self.redis, self.pool, self.keys)

    def lifecycle(self, campaigns: CampaignCache | None = None) -> GrantLifecycle:
        """Grant state transitions (fulfilled, redeemed, revoked, ...) through transition.lua."""
        return GrantLifecycle(
            self.redis,
            self.keys,
            self.grant_reader(),
            campaigns or self.campaign_cache(),
            self.settings,
            self.clock,
            self.scripts,
        )

    def audiences(self) -> AudienceService:
        """Audiences and their members (PostgreSQL rows, Redis buckets)."""
        return AudienceService(self.pool, self.redis, self.keys, self.scripts)

    def ledger_worker(self, consumer: str | None = None) -> LedgerWorker:
        s = self.settings
        return LedgerWorker(
            self.redis,
            self.pool,
            self.keys,
            consumer=consumer,
            batch_size=s.ledger_batch_size,
            block_ms=s.ledger_block_ms,
            reclaim_idle_ms=s.ledger_reclaim_idle_ms,
            linger_ms=s.ledger_linger_ms,
            tz=s.tz,
            lifecycle=self.lifecycle(),
        )

    def campaign_service(self) -> CampaignService:
        """The campaign workflow, as the API and the scheduler both run it."""
        s = self.settings
        return CampaignService(
            self.pool,
            self.redis,
            self.keys,
            dual_approval_above=s.dual_approval_above,
            scripts=self.scripts,
            retention_days=s.idempotency_retention_days,
            budget_rules=BudgetRules.of(s),
        )

    def scheduler(self) -> CampaignScheduler:
        """Moves campaigns at their window's edges and watches stock (campaigns/schedule.py)."""
        return CampaignScheduler(
            self.pool,
            self.redis,
            self.keys,
            self.campaign_service(),
            self.clock,
            every_s=self.settings.schedule_every_s,
        )

    def issuance_worker(self) -> IssuanceWorker:
        """Runs approved bulk issuances through a claim service of its own, channel "bulk",
        hundreds of members a claim.lua call (campaigns/issuance_worker.py,
        issuance/bulk_claims.py)."""
        claims = BulkClaims(
            self.redis,
            self.keys,
            self.settings,
            self.clock,
            scripts=self.scripts,
            campaigns=self.campaign_cache(self.campaign_service().publish_one),
        )

        async def issue(
            campaign_id: str, reward_id: str, requests: Sequence[tuple[str, str]]
        ) -> list[str]:
            return await claims.decide_many(BULK_CHANNEL, campaign_id, reward_id, requests)

        return IssuanceWorker(self.pool, self.redis, self.keys, issue)

    def webhook_sender(self) -> WebhookSender:
        """Delivers queued notifications to QUANYI_WEBHOOK_URL (notifications/webhook.py)."""
        return WebhookSender(self.pool, WebhookConfig.from_settings(self.settings), self.clock)

    def fulfilment_worker(self, consumer: str | None = None) -> FulfilmentWorker:
        s = self.settings
        return FulfilmentWorker(
            self.redis,
            self.pool,
            self.keys,
            self.clock,
            scripts=self.scripts,
            lifecycle=self.lifecycle(),
            consumer=consumer,
            tunables=FulfilmentTunables(
                batch_size=s.fulfil_batch_size,
                block_ms=s.fulfil_block_ms,
                reclaim_idle_ms=s.fulfil_reclaim_idle_ms or s.ledger_reclaim_idle_ms,
                breaker_threshold=s.fulfil_breaker_threshold,
                breaker_reset_s=s.fulfil_breaker_reset_s,
                max_tasks=s.fulfil_max_tasks,
                lease_ms=s.fulfil_lease_ms,
                retries_every_s=s.fulfil_retries_every_s,
                reclaim_every_s=s.fulfil_reclaim_every_s,
                vendors_every_s=s.fulfil_vendors_every_s,
                code_pools_every_s=s.fulfil_code_pools_every_s,
                expiry_every_s=s.fulfil_expiry_every_s,
            ),
        )


@contextlib.asynccontextmanager
async def open_stores(
    settings: Settings, clock: Clock = system_clock, *, consumer_groups: bool = True
) -> AsyncIterator[Stores]:
    """Redis and PostgreSQL opened (or a StartupError saying why not), every outbox consumer
    group created (unless `consumer_groups` is False: a command that only reads leaves Redis as
    it found it), and both closed on the way out."""
    redis = await open_redis(settings)
    try:
        pool = await open_pool(settings)
    except BaseException:
        await redis.aclose()
        raise
    try:
        keys = Keys(settings.key_prefix, settings.idempotency_buckets, settings.redis_shards)
        # Every consumer group exists before the first claim: the outbox is trimmed only below
        # what all groups acknowledged, so a group made later would miss entries.
        if consumer_groups:
            await ensure_groups(redis, keys)
        yield Stores(settings, clock, keys, redis, pool, Scripts(redis))
    finally:
        await close_pool(pool)
        await redis.aclose()


@dataclass(frozen=True)
class Services:
    """What the API process serves with, built once from the stores."""

    stores: Stores
    channels: ChannelDirectory
    campaigns: CampaignService
    grants: GrantReader
    claims: ClaimService
    lifecycle: GrantLifecycle
    outcomes: OutcomeWaiter
    vendors: VendorDirectory
    audiences: AudienceService
    offers: OfferService
    events: EventService
    reports: ReportService
    # Who GET offers showed which campaign, written to Redis once a second (the funnel).
    exposures: Exposures


@contextlib.asynccontextmanager
async def open_services(stores: Stores) -> AsyncIterator[Services]:
    """The API's services; claims are batched for as long as the context lasts."""
    settings, clock, redis, pool, keys = (
        stores.settings,
        stores.clock,
        stores.redis,
        stores.pool,
        stores.keys,
    )
    try:
        channels = ChannelDirectory(
            pool,
            clock,
            settings.signature_window_s,
            secret_box(settings),
            limiter=RateLimiter(redis, keys, stores.scripts.rate_limit, clock),
            default_limit=default_limit(settings),
        )
        await channels.refresh()
    except SecretsKeyError as exc:
        raise StartupError(str(exc)) from exc
    campaigns = stores.campaign_service()
    # Definitions alone in an emptied Redis would reopen claims with no idempotency entries or
    # counters behind them: a lost store waits for `quanyi rebuild-redis` instead.
    if await open_store_at_startup(redis, pool, keys, clock, log):
        published = await campaigns.publish_all()
        log.info("published %d campaigns to redis", published)
    claims = ClaimService(
        redis,
        keys,
        settings,
        clock,
        scripts=stores.scripts,
        campaigns=stores.campaign_cache(campaigns.publish_one),
    )
    vendors = VendorDirectory(pool)
    await vendors.refresh()
    # One list of the live campaigns per process, for card events and offers alike.
    live = LiveCampaigns(HotCampaigns(redis, keys))
    exposures = Exposures(redis, keys)
    services = Services(
        stores=stores,
        channels=channels,
        campaigns=campaigns,
        grants=stores.grant_reader(),
        claims=claims,
        lifecycle=stores.lifecycle(claims.campaigns),
        outcomes=OutcomeWaiter(redis, keys),
        vendors=vendors,
        audiences=stores.audiences(),
        offers=OfferService(redis, keys, stores.scripts, live, settings, clock, exposures),
        events=EventService(redis, keys, settings, clock, live, stores.scripts),
        reports=ReportService(pool, redis, keys, settings.zone, clock),
        exposures=exposures,
    )
    await claims.start()
    try:
        yield services
    finally:
        await claims.close()
