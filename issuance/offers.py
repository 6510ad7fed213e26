"""What a customer can have now on a channel (定制化展示), and how far they are towards each
goal: every figure read from Redis in one offers.lua call, the decision made here.

An offer is shown for every reward of every active campaign on the channel that the customer
may have (a reward kept for an audience is left out for anyone outside it), with whether a
claim would be granted now and, when not, why. It is advice, read at most REFRESH_S behind the
publications: the claim itself decides (claim.lua), atomically.

A campaign split into stock parts (inventory/stock_parts.py) is read in the customer's part,
where their claims are decided and counted; a part run dry is judged by what the whole
campaign has left, as a claim would refill it from the other parts.

What each call sends whoever the customer is (its plan) is made and held by
issuance/offer_plans.py; the reply is read by issuance/offer_figures.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from redis.asyncio import Redis

from quanyi.core.clock import Clock, LocalCalendar, LocalPeriods
from quanyi.core.errors import CampaignNotFound, ChannelNotAllowed, StoreNotReady, Unavailable
from quanyi.core.settings import Settings
from quanyi.inventory import stock_parts
from quanyi.inventory.hot_campaigns import HotCampaign, HotCampaigns, HotReward
from quanyi.issuance import memberships
from quanyi.issuance.exposures import Exposures
from quanyi.issuance.live import REFRESH_S, LiveCampaigns, LiveList
from quanyi.issuance.offer_figures import (
    CampaignFigures,
    RewardFigures,
    part_is_dry,
    whole_campaign_figures,
)
from quanyi.issuance.offer_plans import OfferPlan, OfferPlans
from quanyi.stores.keys import PROGRESS_BUCKETS, Keys, customer_bucket
from quanyi.stores.redis import is_cluster
from quanyi.stores.scripts import Scripts

# Why a reward cannot be claimed now, in the order they are judged: the window, then what the
# customer already had, then the goal, then what is left to give.
NOT_STARTED, ENDED, AUTOMATIC = "not_started", "ended", "automatic"
RIGHT_SUSPENDED = "right_suspended"
LIMIT_REACHED, GOAL_NOT_MET = "limit_reached", "goal_not_met"
OUT_OF_STOCK, BUDGET_EXHAUSTED = "out_of_stock", "budget_exhausted"
# Reads of the live list before giving up while publications keep moving it.
STALE_RETRIES = 3


class OfferService:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        scripts: Scripts,
        live: LiveCampaigns,
        settings: Settings,
        clock: Clock,
        exposures: Exposures | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        # Who was shown which campaign, for the report funnel (quanyi/issuance/exposures.py).
        self._exposures = exposures
        self._scripts = scripts
        self._live = live
        self._stock = HotCampaigns(redis, keys)
        self._clock = clock
        self._calendar = LocalCalendar(settings.zone)
        self._cluster = is_cluster(redis)
        self._plans = OfferPlans(keys, LocalPeriods(settings.zone), cluster=self._cluster)

    async def offers(self, channel_id: str, customer_id: str) -> list[dict[str, Any]]:
        """One offer per reward of each active campaign on the channel the customer may have."""
        now = self._clock()
        live = await self._live.current(max_age_s=REFRESH_S)
        for _ in range(STALE_RETRIES):
            plans = self._plans.for_channel(live, channel_id, customer_id, now)
            read = await self._read_all(plans, channel_id, customer_id, now, live)
            if read is not None:
                break
            live = await self._live.reload()
        else:
            raise Unavailable("campaigns are being published faster than they can be read")
        read = await self._whole_where_dry(read)
        now_ms = int(now * 1000)
        offers: list[dict[str, Any]] = []
        for plan, campaign, held in read:
            if held.state != "active":  # paused or ended since the list was read
                continue
            shown = len(offers)
            for reward, fig in zip(campaign.rewards, held.rewards, strict=True):
                if fig.member == 0 or not fig.known:
                    continue
                offers.append(self._offer(plan, campaign, reward, held, fig, now_ms))
            if self._exposures is not None and len(offers) > shown:
                self._exposures.seen(campaign.id, campaign.ends_ms, customer_id)
        return offers

    async def _read_all(
        self,
        plans: tuple[OfferPlan, ...],
        channel_id: str,
        customer_id: str,
        now: float,
        live: LiveList,
    ) -> list[tuple[OfferPlan, HotCampaign, CampaignFigures]] | None:
        """Every plan's campaigns with their figures, in the live list's order (one call with
        one shard; one per shard at once with several), or None when a shard's list moved."""
        versions = live.versions
        if len(plans) == 1:
            (plan,) = plans
            figures = await self._read(
                plan, channel_id, customer_id, now, versions[plan.shard.shard]
            )
            return None if figures is None else list(_with_plan(plan, figures))
        replies = await asyncio.gather(
            *(
                self._read(plan, channel_id, customer_id, now, versions[plan.shard.shard])
                for plan in plans
            )
        )
        read: list[tuple[OfferPlan, HotCampaign, CampaignFigures]] = []
        for plan, figures in zip(plans, replies, strict=True):
            if figures is None:
                return None
            read.extend(_with_plan(plan, figures))
        return sorted(read, key=lambda item: item[1].id)

    async def _whole_where_dry(
        self, read: list[tuple[OfferPlan, HotCampaign, CampaignFigures]]
    ) -> list[tuple[OfferPlan, HotCampaign, CampaignFigures]]:
        """The figures, with those of a split campaign's part run dry replaced by the whole
        campaign's: a claim there would take stock (or budget) from the other parts
        (inventory/stock_parts.py refill), so it is refused only when no part has any left.
        One more round trip, only when a part shown is dry."""
        dry = [i for i, (_, c, held) in enumerate(read) if part_is_dry(c, held)]
        if not dry:
            return read
        found = await asyncio.gather(
            *(
                stock_parts.sums(self._redis, self._keys, c.id, c.parts, [r.id for r in c.rewards])
                for c in (read[i][1] for i in dry)
            )
        )
        whole = list(read)
        for i, (granted, spent, _moving) in zip(dry, found, strict=True):
            plan, campaign, held = read[i]
            whole[i] = (plan, campaign, whole_campaign_figures(campaign, held, granted, spent))
        return whole

    async def progress(
        self, channel_id: str, customer_id: str, campaign_id: str
    ) -> list[dict[str, Any]]:
        """The customer's progress towards each goal of the campaign, this period."""
        campaign = await self._campaign(campaign_id)
        if channel_id not in campaign.channels:
            raise ChannelNotAllowed(f"channel {channel_id} does not serve campaign {campaign_id}")
        now = self._clock()
        part = campaign.part_of(customer_id)
        plan = self._plans.plan(self._keys.of(part), (campaign,), (part,), now, audiences=False)
        figures = await self._read(plan, channel_id, customer_id, now, None)
        assert figures is not None  # read at no version: never stale
        (held,) = figures
        return [
            {"reward_id": reward.id, **self._progress(plan, campaign, reward, fig)}
            for reward, fig in zip(campaign.rewards, held.rewards, strict=True)
            if reward.goal is not None
        ]

    async def _campaign(self, campaign_id: str) -> HotCampaign:
        live = await self._live.current(max_age_s=REFRESH_S)
        for campaign in live.campaigns:
            if campaign.id == campaign_id:
                return campaign
        # Not active: its progress may still be read (paused, ended), one more round trip.
        found = await self._stock.definition(campaign_id)
        if found is None or found.state in ("draft", "pending", "rejected"):
            raise CampaignNotFound(f"no campaign {campaign_id}")
        return found

    async def _read(
        self, plan: OfferPlan, channel_id: str, customer_id: str, now: float, version: str | None
    ) -> list[CampaignFigures] | None:
        """The figures of the plan's campaigns for the customer on the channel, or None when the
        live list moved past `version` (None: not checked)."""
        day, _ = self._calendar.day(now)
        buckets = {b: customer_bucket(customer_id, b) for b in set(plan.bucket_counts)}
        handed: tuple[str, ...] = ()
        if self._cluster and plan.audiences:
            found = await memberships.members(self._scripts, list(plan.audiences), [customer_id])
            handed = ("".join("1" if customer_id in found[p] else "0" for p in plan.audiences),)
        reply = await self._scripts.offers(
            keys=(plan.shard.store_ready, plan.shard.live_version, *plan.keys),
            args=(
                customer_id,
                len(plan.campaigns),
                "" if version is None else version,
                day,
                customer_bucket(customer_id, PROGRESS_BUCKETS),
                " ".join(str(buckets[b]) for b in plan.bucket_counts),
                plan.rewards,
                channel_id,
                *handed,
            ),
        )
        if reply == "store_not_ready":
            raise StoreNotReady()
        if reply == "stale":
            return None
        return [
            CampaignFigures.parse(row, quoted)
            for row, quoted in zip(reply, plan.quoted, strict=True)
        ]

    def _offer(
        self,
        plan: OfferPlan,
        campaign: HotCampaign,
        reward: HotReward,
        held: CampaignFigures,
        fig: RewardFigures,
        now_ms: int,
    ) -> dict[str, Any]:
        left = max(fig.stock - fig.granted, 0)
        if fig.channel_left is not None:  # the channel's quota, or its share of what they leave
            left = min(left, max(fig.channel_left, 0))
        offer: dict[str, Any] = {
            "campaign_id": campaign.id,
            "reward_id": reward.id,
            "right_id": reward.right_id,
            "name": campaign.name,
            "claimable": False,
            "remaining_for_customer": min(max(fig.limit - fig.customer_total, 0), left),
        }
        progress = self._progress(plan, campaign, reward, fig) if reward.goal else None
        if progress is not None:
            offer["progress"] = progress
        reason = _why_not(reward, held, fig, now_ms, progress)
        if reason is None:
            offer["claimable"] = True
        else:
            offer["reason"] = reason
        return offer

    @staticmethod
    def _progress(
        plan: OfferPlan, campaign: HotCampaign, reward: HotReward, fig: RewardFigures
    ) -> dict[str, Any]:
        assert reward.goal is not None
        return {
            "count": fig.count,
            "amount": fig.amount,
            "goal": plan.goals[campaign.id, reward.id],
            "reached": reward.goal.reached(fig.count, fig.amount),
            "window_ends_at": plan.periods[campaign.id, reward.id].ends_at,
        }


def _why_not(
    reward: HotReward,
    held: CampaignFigures,
    fig: RewardFigures,
    now_ms: int,
    progress: dict[str, Any] | None,
) -> str | None:
    """Why a claim of this reward would be refused now, or None when it would be granted."""
    if now_ms < held.starts_ms:
        return NOT_STARTED
    if now_ms >= held.ends_ms:
        return ENDED
    if reward.suspended:  # as claims refuse it: campaign_not_active, right_suspended
        return RIGHT_SUSPENDED
    if reward.goal is not None and reward.grant == "auto":
        return AUTOMATIC  # granted on reaching the goal, never claimed by a channel
    if fig.customer_total >= fig.limit:
        return LIMIT_REACHED
    if fig.daily_limit and fig.customer_today >= fig.daily_limit:
        return LIMIT_REACHED
    if progress is not None:
        if fig.claimed_in_period:  # one claim per goal period
            return LIMIT_REACHED
        if not progress["reached"]:
            return GOAL_NOT_MET
    if fig.granted >= fig.stock:
        return OUT_OF_STOCK
    if fig.channel_left is not None and fig.channel_left <= 0:  # as claims: scope channel
        return OUT_OF_STOCK
    if fig.daily_stock and fig.reward_today >= fig.daily_stock:
        return OUT_OF_STOCK
    if held.budget is not None and held.spent + fig.cost > held.budget:
        return BUDGET_EXHAUSTED
    return None


def _with_plan(
    plan: OfferPlan, figures: list[CampaignFigures]
) -> Iterator[tuple[OfferPlan, HotCampaign, CampaignFigures]]:
    for campaign, held in zip(plan.campaigns, figures, strict=True):
        yield plan, campaign, held
