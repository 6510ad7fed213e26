"""A codepool vendor's pools: the codes each right has left, and what the live campaigns routed
to it may still grant. The fulfilment worker warns from it, the staff API shows it."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from quanyi.inventory.hot_campaigns import HotCampaigns
from quanyi.stores.keys import Keys
from quanyi.vendors import queries


@dataclass(frozen=True)
class PoolLevel:
    right_id: str
    codes: int
    # Grants the vendor's approved or paused campaigns may still make of the right.
    demand: int

    @property
    def low(self) -> bool:
        return self.codes < self.demand

    def to_json(self) -> dict[str, object]:
        return {
            "right_id": self.right_id,
            "codes": self.codes,
            "demand": self.demand,
            "low": self.low,
        }


async def demand(pool: asyncpg.Pool, redis: Redis, keys: Keys, vendor_id: str) -> dict[str, int]:
    """Per right: stock the vendor's live campaigns have not granted yet."""
    stock = HotCampaigns(redis, keys)
    needed: dict[str, int] = {}
    for row in await pool.fetch(queries.codepool_demand, vendor_id):
        counters = await stock.counters(row["campaign_id"], [row["reward_id"]])
        left = max(row["stock"] - counters.granted[row["reward_id"]], 0)
        needed[row["right_id"]] = needed.get(row["right_id"], 0) + left
    return needed


async def levels(
    pool: asyncpg.Pool, redis: Redis, keys: Keys, vendor_id: str, *, every_right: bool = False
) -> list[PoolLevel]:
    """The pools with demand; with `every_right`, also the vendor's rights without any."""
    needed = await demand(pool, redis, keys, vendor_id)
    rights = list(needed)
    if every_right:
        rights += [
            r["right_id"]
            for r in await pool.fetch(queries.code_pool_rights, vendor_id)
            if r["right_id"] not in needed
        ]
    rights.sort()
    async with redis.pipeline(transaction=False) as pipe:
        for right_id in rights:
            pipe.llen(keys.code_pool(vendor_id, right_id))
        counts = await pipe.execute()
    return [
        PoolLevel(right_id, int(codes), needed.get(right_id, 0))
        for right_id, codes in zip(rights, counts, strict=True)
    ]
