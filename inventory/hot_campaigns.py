"""What a campaign publishes to Redis for the hot path, and the live counters read back."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from quanyi.stores.keys import Keys


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
        data["rewards"] = tuple(HotReward(**r) for r in data["rewards"])
        return cls(**data)


@dataclass(frozen=True)
class Counters:
    granted: dict[str, int]
    spent: int


class HotCampaigns:
    """The hot path's copy of each campaign in Redis: publishes definitions and stock counters,
    and reads them back (it keeps no ledger: PostgreSQL does)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def publish(self, campaign: HotCampaign, counters: Counters, fresh: bool) -> None:
        """Write the definition and state. Counters are only ever initialised, never reset:
        from the ledger's figures when Redis lost them. `fresh` (never approved, so never
        granted) clears what an earlier draft left."""
        key = self._keys.campaign(campaign.id)
        fields: dict[FieldT, EncodableT] = {
            "state": campaign.state,
            "ver": campaign.version,
            "starts": campaign.starts_ms,
            "ends": campaign.ends_ms,
        }
        fields.update({f"ch:{channel}": 1 for channel in campaign.channels})
        if campaign.budget is not None:
            fields["budget"] = campaign.budget
        for r in campaign.rewards:
            p = f"r:{r.id}:"
            fields[p + "stock"] = r.stock
            fields[p + "limit"] = r.limit
            fields[p + "cost"] = r.cost
            if r.daily_stock:
                fields[p + "dstock"] = r.daily_stock
            if r.daily_limit:
                fields[p + "dlimit"] = r.daily_limit
        async with self._redis.pipeline(transaction=True) as pipe:
            if fresh:
                pipe.delete(key)
            pipe.hset(key, mapping=fields)
            pipe.hsetnx(key, "spent", counters.spent)
            for r in campaign.rewards:
                pipe.hsetnx(key, f"r:{r.id}:granted", counters.granted.get(r.id, 0))
            pipe.set(self._keys.campaign_definition(campaign.id), campaign.to_json())
            await pipe.execute()

    async def definition(self, campaign_id: str) -> HotCampaign | None:
        raw = await self._redis.get(self._keys.campaign_definition(campaign_id))
        return HotCampaign.from_json(raw) if raw else None

    async def counters(self, campaign_id: str, reward_ids: list[str]) -> Counters:
        fields = ["spent", *(f"r:{rid}:granted" for rid in reward_ids)]
        values = await self._redis.hmget(self._keys.campaign(campaign_id), fields)
        granted = {rid: int(v or 0) for rid, v in zip(reward_ids, values[1:], strict=True)}
        return Counters(granted=granted, spent=int(values[0] or 0))
