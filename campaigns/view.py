"""The campaign view staff read: the definition, and per reward what Redis and the ledger count.

- `granted`: live grants as Redis counts them, the figure claims are decided against. A revoked
  grant (and a failed one when the campaign returns stock on failure) gave its stock back and
  is no longer counted.
- `persisted`: grants the ledger holds, whatever became of them, revoked and failed included.
- `revoked`, `failed`: of those, the ones the ledger records as revoked or failed.

Once the ledger has caught up (`ledger_lag.entries` is 0), `granted` = `persisted` − `revoked`
(− `failed` when `return_stock_on_failure`).
"""

from __future__ import annotations

from typing import Any

import asyncpg
from redis.asyncio import Redis

from campaigns import queries
from campaigns.model import Campaign, Reward
from inventory.keys import Keys
from ledger.lag import outbox_lag


async def campaign_views(
    pool: asyncpg.Pool, redis: Redis, keys: Keys, campaigns: list[Campaign]
) -> list[dict[str, Any]]:
    """Views of these campaigns: one ledger query and one Redis round trip for all of them."""
    ids = [c.id for c in campaigns]
    ledger = {
        (r["campaign_id"], r["reward_id"]): r for r in await pool.fetch(queries.ledger_counts, ids)
    }
    async with redis.pipeline(transaction=False) as pipe:
        for c in campaigns:
            pipe.hmget(keys.campaign(c.id), ["spent", *(f"r:{r.id}:granted" for r in c.rewards)])
        counters = await pipe.execute() if campaigns else []
    lag = await outbox_lag(redis, keys)
    ledger_lag = {"entries": lag.entries, "seconds": lag.seconds}
    views = []
    for campaign, (spent, *granted) in zip(campaigns, counters, strict=True):
        rewards = [
            _reward(r, int(g or 0), ledger.get((campaign.id, r.id)))
            for r, g in zip(campaign.rewards, granted, strict=True)
        ]
        views.append(
            {
                **campaign.to_json(),
                "spent": int(spent or 0),
                "rewards": rewards,
                "ledger_lag": ledger_lag,
            }
        )
    return views


def _reward(r: Reward, granted: int, ledger: asyncpg.Record | None) -> dict[str, Any]:
    return {
        "id": r.id,
        "right_id": r.right_id,
        "face_value": r.face_value,
        "unit_cost": r.unit_cost,
        "vendor_id": r.vendor_id,
        "stock": r.stock,
        "daily_stock": r.daily_stock,
        "per_customer_limit": r.per_customer_limit,
        "per_customer_daily_limit": r.per_customer_daily_limit,
        "granted": granted,
        "remaining": max(r.stock - granted, 0),
        "persisted": ledger["persisted"] if ledger else 0,
        "revoked": ledger["revoked"] if ledger else 0,
        "failed": ledger["failed"] if ledger else 0,
    }
