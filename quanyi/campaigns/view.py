"""The campaign view staff read: the definition, and per reward what Redis and the ledger count.

- `granted`: live grants as Redis counts them, the figure claims are decided against. A revoked
  grant (and a failed one when the campaign returns stock on failure) gave its stock back and
  is no longer counted.
- `persisted`: grants the ledger holds, whatever became of them, revoked and failed included.
- `revoked`, `failed`: of those, the ones the ledger records as revoked or failed.

Once the ledger has caught up (`ledger_lag.entries` is 0), `granted` = `persisted` − `revoked`
(− `failed` when `return_stock_on_failure`).

The ledger counts cost a read of the campaign's grants (through its index): only the view of
one campaign has them. The list shows each campaign without them, so that listing 500
campaigns costs one Redis round trip, not a read of the grants table.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from redis.asyncio import Redis

from quanyi.campaigns import queries
from quanyi.campaigns.model import Campaign, Reward
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import outbox_lag

LEDGER_COUNTS = ("persisted", "revoked", "failed")


async def campaign_views(
    pool: asyncpg.Pool,
    redis: Redis,
    keys: Keys,
    campaigns: list[Campaign],
    *,
    with_ledger: bool = False,
) -> list[dict[str, Any]]:
    """Views of these campaigns from one Redis round trip; `with_ledger` (one campaign's view)
    adds the ledger counts of each reward, one indexed query per campaign."""
    ledger: dict[tuple[str, str], asyncpg.Record] = {}
    if with_ledger:
        for c in campaigns:
            for r in await pool.fetch(queries.ledger_counts, c.id):
                ledger[(c.id, r["reward_id"])] = r
    async with redis.pipeline(transaction=False) as pipe:
        for c in campaigns:
            pipe.hmget(keys.campaign(c.id), ["spent", *(f"r:{r.id}:granted" for r in c.rewards)])
        counters = await pipe.execute() if campaigns else []
    lag = await outbox_lag(redis, keys)
    ledger_lag = {"entries": lag.entries, "seconds": lag.seconds}
    views = []
    for campaign, (spent, *granted) in zip(campaigns, counters, strict=True):
        rewards = [_reward(r, int(g or 0)) for r, g in zip(campaign.rewards, granted, strict=True)]
        if with_ledger:
            for shown in rewards:
                counted = ledger.get((campaign.id, shown["id"]))
                shown.update({k: counted[k] if counted else 0 for k in LEDGER_COUNTS})
        views.append(
            {
                **campaign.to_json(),
                "spent": int(spent or 0),
                "rewards": rewards,
                "ledger_lag": ledger_lag,
            }
        )
    return views


def _reward(r: Reward, granted: int) -> dict[str, Any]:
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
        "audience_id": r.audience_id,
        "goal": r.goal,
        "grant": r.grant,
        "claw_back": r.claw_back,
        "granted": granted,
        "remaining": max(r.stock - granted, 0),
    }
