"""The plans of offers.lua calls (issuance/offers.py), made and held here: what a call for a
channel's campaigns sends whoever the customer is, so a request only adds the customer's
buckets.

A plan is made once per live list, channel and goal periods. A split campaign
(inventory/stock_parts.py) is read in the customer's part, on that part's shard, so with split
campaigns the plans also depend on the parts the customer's claims go to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quanyi.core.clock import LocalPeriods, rfc3339
from quanyi.inventory.hot_campaigns import HotCampaign
from quanyi.issuance.live import LiveList
from quanyi.stores.keys import MAX_STOCK_PARTS, Keys, ShardKeys

# Live lists and channels whose plans are held at once: a new list makes the old ones useless.
MAX_PLANS = 64
# Plans held at once: one per channel and live list, times the customers' choices of parts of
# its split campaigns.
MAX_PART_PLANS = MAX_PLANS * MAX_STOCK_PARTS


@dataclass(frozen=True)
class GoalPeriod:
    id: str
    ends_at: str  # RFC 3339: the period's end, or the campaign's when that comes first


@dataclass(frozen=True)
class OfferPlan:
    """What an offers.lua call for these campaigns sends whoever the customer is: made once
    per live list, channel and goal periods (and parts chosen, with split campaigns), so a
    request only adds the customer's buckets."""

    shard: ShardKeys  # the shard of every campaign hash of the plan
    campaigns: tuple[HotCampaign, ...]
    keys: tuple[str, ...]  # campaign hashes, then audience pointers (not on a cluster)
    audiences: tuple[str, ...]  # audience pointers, in the order rewards name them
    rewards: str  # ARGV[7]
    quoted: tuple[tuple[bool, ...], ...]  # per campaign, which rewards have channel quotas
    bucket_counts: tuple[int, ...]
    periods: dict[tuple[str, str], GoalPeriod]  # (campaign, reward) -> its goal's period now
    goals: dict[tuple[str, str], dict[str, Any]]  # (campaign, reward) -> goal as JSON


class OfferPlans:
    """The plans of a service's offers.lua calls, made on first use and held until the live
    list moves on."""

    def __init__(self, keys: Keys, periods: LocalPeriods, *, cluster: bool) -> None:
        self._keys = keys
        self._periods = periods
        self._cluster = cluster
        self._plans: dict[tuple[Any, ...], tuple[OfferPlan, ...]] = {}
        # (live list, channel) -> its split campaigns, whose part is the customer's choice.
        self._split: dict[tuple[Any, ...], tuple[HotCampaign, ...]] = {}

    def for_channel(
        self, live: LiveList, channel_id: str, customer_id: str, now: float
    ) -> tuple[OfferPlan, ...]:
        """One plan per shard with campaigns on the channel (the one shard's, with one). A split
        campaign is read in the customer's part, on that part's shard, so the plans depend on
        the parts the customer's claims go to: the cache key holds them (none without split
        campaigns, so a plan is made once per list and channel)."""
        periods = tuple(self._periods.period(w, now)[0] for w in ("month", "week"))
        key: tuple[Any, ...] = (live.version, live.read_at, channel_id, periods)
        split = self._split.get(key)
        if split is None:
            if len(self._split) >= MAX_PLANS:
                self._split.clear()
            split = self._split[key] = tuple(c for c in live.on_channel(channel_id) if c.parts > 1)
        chosen = {c.id: c.part_of(customer_id) for c in split}
        if chosen:
            key = (*key, tuple(chosen.values()))
        plans = self._plans.get(key)
        if plans is None:
            if len(self._plans) >= MAX_PART_PLANS:
                self._plans.clear()
            grouped: dict[int, list[tuple[HotCampaign, str]]] = {}
            for c in live.on_channel(channel_id):
                hash_id = chosen.get(c.id, c.id)
                shard = self._keys.of(hash_id).shard if self._keys.sharded else 0
                grouped.setdefault(shard, []).append((c, hash_id))
            plans = self._plans[key] = tuple(
                self.plan(
                    self._keys.shards[n],
                    tuple(c for c, _ in held),
                    tuple(hash_id for _, hash_id in held),
                    now,
                    audiences=True,
                )
                for n, held in sorted(grouped.items())
            ) or (self.plan(self._keys.shards[0], (), (), now, audiences=True),)
        return plans

    def plan(
        self,
        shard: ShardKeys,
        campaigns: tuple[HotCampaign, ...],
        ids: tuple[str, ...],
        now: float,
        *,
        audiences: bool,
    ) -> OfferPlan:
        """The plan of one call for `campaigns`, read in the hashes `ids` (a split campaign's
        part, or the campaign's own); `audiences`: whether the call reads membership."""
        audience_index: dict[str, int] = {}
        periods: dict[tuple[str, str], GoalPeriod] = {}
        goals: dict[tuple[str, str], dict[str, Any]] = {}
        specs = []
        for c in campaigns:
            rewards = []
            for r in c.rewards:
                j = 0
                if audiences and r.audience_id:
                    j = audience_index.setdefault(r.audience_id, len(audience_index) + 1)
                period = ""
                if r.goal is not None:
                    period, ends_s = self._periods.period(r.goal.window, now)
                    ends_ms = c.ends_ms if ends_s == 0 else min(ends_s * 1000, c.ends_ms)
                    periods[c.id, r.id] = GoalPeriod(period, rfc3339(ends_ms))
                    goals[c.id, r.id] = r.goal.to_json()
                rewards.append(f"{r.id},{j},{period},{int(r.channel_quota is not None)}")
            specs.append(" ".join(rewards))
        pointers = tuple(self._keys.audience(a) for a in audience_index)
        return OfferPlan(
            shard=shard,
            campaigns=campaigns,
            # On a cluster the audiences are read before (OfferService._read), out of the
            # script's slot.
            keys=(
                *(self._keys.campaign(hash_id) for hash_id in ids),
                *(() if self._cluster else pointers),
            ),
            audiences=pointers,
            rewards=";".join(specs),
            quoted=tuple(tuple(r.channel_quota is not None for r in c.rewards) for c in campaigns),
            bucket_counts=tuple(c.buckets for c in campaigns),
            periods=periods,
            goals=goals,
        )
