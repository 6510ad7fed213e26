"""What a campaign publishes to Redis for the hot path, and the live counters read back."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from quanyi.inventory import channel_quota, stock_parts
from quanyi.stores.keys import Keys, ShardKeys, part_ids, part_of
from quanyi.stores.redis import is_cluster


@dataclass(frozen=True)
class HotGoal:
    """A spending goal: what a card transaction must be to count, and what reaches it.

    `count` qualifying transactions and/or a total `amount` (fen) of them, within a `window`:
    the campaign, or each calendar `month` or `week` in QUANYI_TZ. A transaction qualifies when
    it is at least `min_amount` and its merchant category is in `mcc_in` (when given) and not
    in `mcc_not_in`."""

    window: str  # campaign | month | week
    count: int | None = None
    amount: int | None = None
    min_amount: int | None = None
    mcc_in: tuple[str, ...] | None = None
    mcc_not_in: tuple[str, ...] | None = None

    def qualifies(self, amount: int, mcc: str) -> bool:
        if self.min_amount is not None and amount < self.min_amount:
            return False
        if self.mcc_in is not None and mcc not in self.mcc_in:
            return False
        return not (self.mcc_not_in is not None and mcc in self.mcc_not_in)

    def reached(self, count: int, amount: int) -> bool:
        return (self.count is None or count >= self.count) and (
            self.amount is None or amount >= self.amount
        )

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HotGoal:
        data = dict(data)
        for name in ("mcc_in", "mcc_not_in"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return cls(**data)


@dataclass(frozen=True)
class HotReward:
    id: str
    right_id: str
    stock: int
    daily_stock: int | None
    limit: int
    daily_limit: int | None
    cost: int
    vendor_id: str | None = None
    # Only members of this audience may have it (audiences/service.py keeps the members).
    audience_id: str | None = None
    goal: HotGoal | None = None
    # auto: granted the moment the goal is reached; claim: a channel claims it once reached.
    grant: str = "claim"
    # A reversal that takes a customer back below the goal revokes an automatic grant that is
    # not redeemed yet.
    claw_back: bool = False
    # Its right is suspended: claims and goal grants of it are refused (campaign_not_active,
    # right_suspended) until the right is resumed. Published as the campaign hash's
    # r:<reward>:susp, which grant.lua reads with the fields it reads anyway.
    suspended: bool = False
    # Stock reserved per channel (README "Channel quotas", quanyi/inventory/channel_quota.py).
    channel_quota: dict[str, int] | None = None


@dataclass(frozen=True)
class HotCampaign:
    """The part of a campaign a claim needs: published on every change, cached by each process."""

    id: str
    version: int
    state: str  # active | draft | pending | rejected | paused | ended
    starts_ms: int
    ends_ms: int
    channels: tuple[str, ...]
    budget: int | None
    buckets: int
    rewards: tuple[HotReward, ...]
    return_stock_on_failure: bool = True
    # What a customer is shown the campaign as (offers).
    name: str = ""
    # Stock parts (README "Splitting a hot campaign"): the stock and the budget split over
    # this many copies of the campaign's hash, on as many shards; 1, the campaign's hash alone.
    parts: int = 1

    def reward(self, reward_id: str) -> HotReward | None:
        for reward in self.rewards:
            if reward.id == reward_id:
                return reward
        return None

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> HotCampaign:
        data = orjson.loads(raw)
        data["channels"] = tuple(data["channels"])
        data["rewards"] = tuple(
            HotReward(**{**r, "goal": HotGoal.from_json(r["goal"]) if r.get("goal") else None})
            for r in data["rewards"]
        )
        return cls(**data)

    @property
    def has_goals(self) -> bool:
        return any(r.goal is not None for r in self.rewards)

    def part_ids(self) -> list[str]:
        """The Redis ids of its parts (its own id alone when it is not split)."""
        return part_ids(self.id, self.parts)

    def part_of(self, customer_id: str) -> str:
        """The Redis id a customer's claims of it are decided under."""
        return part_of(self.id, self.parts, customer_id)


@dataclass(frozen=True)
class Counters:
    granted: dict[str, int]
    spent: int
    # reward -> channel -> live grants, for rewards with channel quotas (channel_quota.py).
    by_channel: dict[str, dict[str, int]] = field(default_factory=dict)
    # A split campaign's counters per part (stock_parts.counters_by_part); None when it is
    # not split, or when it has granted nothing.
    by_part: dict[str, stock_parts.PartCounters] | None = None


class HotCampaigns:
    """The hot path's copy of each campaign in Redis: publishes definitions and stock counters,
    and reads them back (it keeps no ledger: PostgreSQL does)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def publish(self, campaign: HotCampaign, counters: Counters, fresh: bool) -> None:
        """Write the definition and state. Counters are only ever initialised, never reset:
        from the ledger's figures when Redis lost them. `fresh` (never approved, so never
        granted) clears what an earlier draft left.

        A split campaign (parts > 1) is written part by part, each in its own transaction (its
        own slot), the other parts before part 0, which holds the definition and the live
        list. A part's stock and budget are written only when fresh, or when Redis does not
        hold them: moves between parts changed them since (stock_parts.py)."""
        ids = campaign.part_ids()
        limits = (
            stock_parts.part_limits(
                {r.id: r.stock for r in campaign.rewards},
                campaign.budget,
                counters.by_part or {pid: stock_parts.PartCounters() for pid in ids},
            )
            if campaign.parts > 1
            else {}
        )
        if (
            campaign.parts > 1
            and not fresh
            and counters.by_part is None
            and any(counters.granted.values())
        ):
            raise ValueError(f"split campaign {campaign.id}: its counters per part are needed")
        if campaign.parts > 1 and not fresh:
            limits = await self._limits_of_lost_parts(campaign, counters, limits)
        for pid in reversed(ids):
            part_counters = (counters.by_part or {}).get(pid) if campaign.parts > 1 else None
            await self._publish_part(campaign, pid, counters, part_counters, limits.get(pid), fresh)

    async def _limits_of_lost_parts(
        self, campaign: HotCampaign, counters: Counters, limits: dict[str, dict[str, int]]
    ) -> dict[str, dict[str, int]]:
        """The stock and budget to write in a split campaign's parts Redis does not hold. All
        of them lost: each part's grants plus its share of what is left (a rebuild's figures).
        Some only (a shard lost, the others live, their stocks moved since): a lost part gets
        none left to sell, only what it granted and spent, so the parts never add up to more
        than the campaign; `quanyi rebuild-redis` shares out the rest again."""
        ids = campaign.part_ids()
        held = await asyncio.gather(*(self._redis.exists(self._keys.campaign(p)) for p in ids))
        if all(held) or not any(held):
            return limits
        by_part = counters.by_part or {}
        lost: dict[str, dict[str, int]] = {}
        for pid, present in zip(ids, held, strict=True):
            part = by_part.get(pid, stock_parts.PartCounters())
            lost[pid] = (
                limits[pid]
                if present
                else {
                    **{f"r:{r.id}:stock": part.granted.get(r.id, 0) for r in campaign.rewards},
                    **({} if campaign.budget is None else {"budget": part.spent}),
                }
            )
        return lost

    async def _publish_part(
        self,
        campaign: HotCampaign,
        pid: str,
        counters: Counters,
        part: stock_parts.PartCounters | None,
        limits: dict[str, int] | None,
        fresh: bool,
    ) -> None:
        key = self._keys.campaign(pid)
        fields: dict[FieldT, EncodableT] = {
            "state": campaign.state,
            "ver": campaign.version,
            "starts": campaign.starts_ms,
            "ends": campaign.ends_ms,
        }
        fields.update({f"ch:{channel}": 1 for channel in campaign.channels})
        if campaign.budget is not None and limits is None:
            fields["budget"] = campaign.budget
        for r in campaign.rewards:
            p = f"r:{r.id}:"
            if limits is None:
                fields[p + "stock"] = r.stock
            fields[p + "limit"] = r.limit
            fields[p + "cost"] = r.cost
            if r.daily_stock:
                fields[p + "dstock"] = r.daily_stock
            if r.daily_limit:
                fields[p + "dlimit"] = r.daily_limit
            if r.suspended:
                fields[p + "susp"] = 1
            if r.channel_quota is not None:
                fields.update(channel_quota.definition_fields(r.id, r.channel_quota))
        if limits is not None and fresh:
            fields.update(limits)
        # Resumed rewards lose their marker in the same transaction that writes the rest: a
        # claim sees the reward suspended or not, never half of a publication.
        resumed = [f"r:{r.id}:susp" for r in campaign.rewards if not r.suspended]
        home = pid == campaign.id
        async with self._redis.pipeline(transaction=True) as pipe:
            if fresh:
                pipe.delete(key)
            elif resumed:
                pipe.hdel(key, *resumed)
            stale = [
                f
                for r in campaign.rewards
                if r.channel_quota is not None
                for f in channel_quota.stale_fields(r.id, r.channel_quota, campaign.channels)
            ]
            if stale and not fresh:
                pipe.hdel(key, *stale)
            pipe.hset(key, mapping=fields)
            if limits is not None and not fresh:
                for limit_field, amount in limits.items():
                    pipe.hsetnx(key, limit_field, amount)
            granted = counters.granted if part is None else part.granted
            pipe.hsetnx(key, "spent", counters.spent if part is None else part.spent)
            for r in campaign.rewards:
                pipe.hsetnx(key, f"r:{r.id}:granted", granted.get(r.id, 0))
                if r.channel_quota is not None:
                    quota_counters = channel_quota.counter_fields(
                        r.id, r.channel_quota, campaign.channels, counters.by_channel.get(r.id, {})
                    )
                    for name, value in quota_counters.items():
                        pipe.hsetnx(key, name, value)
            if home:
                pipe.set(self._keys.campaign_definition(campaign.id), campaign.to_json())
                if campaign.state == "active":
                    pipe.sadd(self._keys.of(campaign.id).live_campaigns, campaign.id)
                else:
                    pipe.srem(self._keys.of(campaign.id).live_campaigns, campaign.id)
            # Whoever holds the list of live campaigns sees it is out of date (in every shard
            # a part is in: offers.lua checks the version of the shard it reads a part in). A
            # fresh token, not a counter: a counter lost with Redis's data would count again
            # from zero and meet the numbers of lists processes still hold.
            pipe.set(self._keys.of(pid).live_version, secrets.token_hex(8))
            await pipe.execute()

    async def definition(self, campaign_id: str) -> HotCampaign | None:
        raw = await self._redis.get(self._keys.campaign_definition(campaign_id))
        return HotCampaign.from_json(raw) if raw else None

    async def definitions(self, campaign_ids: list[str]) -> list[HotCampaign]:
        """The definitions of these campaigns that Redis holds, in one round trip (one per
        slot on a cluster)."""
        if not campaign_ids:
            return []
        names = [self._keys.campaign_definition(c) for c in campaign_ids]
        if is_cluster(self._redis):  # in many slots: one MGET per slot, each atomic alone
            raws = await self._redis.mget_nonatomic(names)  # type: ignore[attr-defined]
        else:
            raws = await self._redis.mget(names)
        return [HotCampaign.from_json(raw) for raw in raws if raw]

    async def live(self) -> tuple[tuple[str, ...], list[str]]:
        """Each shard's live-list version (in shard order) and the ids of the active campaigns:
        read together in one transaction on a single Redis; on a cluster each shard's at once."""
        shards = self._keys.shards
        if is_cluster(self._redis):
            read = await asyncio.gather(*(self._live_of_shard(s) for s in shards))
        else:
            read = await self._live_of(shards)
        versions = tuple(str(version or "0") for version, _ids in read)
        return versions, sorted(str(i) for _version, ids in read for i in ids)

    async def _live_of_shard(self, shard: ShardKeys) -> tuple[Any, Any]:
        # The version first, then the set: a publication in between leaves a set newer than
        # its version, which a script refuses as stale (never an older set passed as current).
        version = await self._redis.get(shard.live_version)
        return version, await self._redis.smembers(shard.live_campaigns)

    async def _live_of(self, shards: Sequence[ShardKeys]) -> list[tuple[Any, Any]]:
        async with self._redis.pipeline(transaction=True) as pipe:
            for shard in shards:
                pipe.get(shard.live_version)
                pipe.smembers(shard.live_campaigns)
            replies = await pipe.execute()
        return list(zip(replies[::2], replies[1::2], strict=True))

    async def counters(self, campaign_id: str, reward_ids: list[str], parts: int = 1) -> Counters:
        """The live counters: summed over the parts of a split campaign."""
        if parts > 1:
            granted, spent, _moving = await stock_parts.sums(
                self._redis, self._keys, campaign_id, parts, reward_ids
            )
            return Counters(granted=granted, spent=spent)
        fields = ["spent", *(f"r:{rid}:granted" for rid in reward_ids)]
        values = await self._redis.hmget(self._keys.campaign(campaign_id), fields)
        granted = {rid: int(v or 0) for rid, v in zip(reward_ids, values[1:], strict=True)}
        return Counters(granted=granted, spent=int(values[0] or 0))
