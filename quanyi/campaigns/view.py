"""The campaign view staff read: the definition, and per reward what Redis and the ledger count.

- `granted`: live grants as Redis counts them, the figure claims are decided against. A revoked
  grant (and a failed one when the campaign returns stock on failure) gave its stock back and
  is no longer counted.
- `persisted`: grants the ledger holds, whatever became of them, revoked and failed included.
- `revoked`, `failed`: of those, the ones the ledger records as revoked or failed.

Once the ledger has caught up (`ledger_lag.entries` is 0), `granted` = `persisted` − `revoked`
(− `failed` when `return_stock_on_failure`).

`phase` is the scheduler's (scheduled | running | ended, null before approval), and an ended
campaign's view (and its entry in the list) has its `results`: the figures per reward written
when it ended, `persisted` counted as above as the ledger held it then.

The ledger counts cost a read of the campaign's grants (through its index): only the view of
one campaign has them. The list shows each campaign without them, so that listing 500
campaigns costs one Redis round trip, not a read of the grants table.

A campaign split into stock parts (inventory/stock_parts.py) counts in each part's hash: its
`granted` and `spent` are the sums over its parts, read at once after that round trip.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from redis.asyncio import Redis

from quanyi.campaigns import queries
from quanyi.campaigns.ending import queries as schedule_queries
from quanyi.campaigns.model import Campaign, Reward
from quanyi.inventory.channel_quota import GOAL_CHANNEL, granted_fields
from quanyi.inventory.stock_parts import sums
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
    for i, c in enumerate(campaigns):
        if c.stock_parts > 1:
            counters[i] = await _split_counters(redis, keys, c)
    by_channel = await _channel_granted(redis, keys, campaigns)
    lag = await outbox_lag(redis, keys)
    ledger_lag = {"entries": lag.entries, "seconds": lag.seconds}
    # The phase the scheduler keeps (quanyi/campaigns/schedule.py), as stored: never worked out
    # here from the clock.
    phases = {
        r["id"]: r for r in await pool.fetch(schedule_queries.phases, [c.id for c in campaigns])
    }
    results = await _results(pool, [c.id for c in campaigns])
    views = []
    for campaign, (spent, *granted) in zip(campaigns, counters, strict=True):
        rewards = [_reward(r, int(g or 0)) for r, g in zip(campaign.rewards, granted, strict=True)]
        for shown in rewards:
            if shown["channel_quota"] is not None:
                shown["channel_granted"] = by_channel[(campaign.id, shown["id"])]
        if with_ledger:
            for shown in rewards:
                counted = ledger.get((campaign.id, shown["id"]))
                shown.update({k: counted[k] if counted else 0 for k in LEDGER_COUNTS})
        phase = phases.get(campaign.id)
        view = {
            **campaign.to_json(),
            "phase": phase["phase"] if phase else None,
            "phase_changed_at": (
                phase["phase_changed_at"].isoformat()
                if phase and phase["phase_changed_at"]
                else None
            ),
            "spent": int(spent or 0),
            "rewards": rewards,
            "ledger_lag": ledger_lag,
            "results": results.get(campaign.id),
        }
        views.append(view)
    return views


async def _split_counters(redis: Redis, keys: Keys, campaign: Campaign) -> list[int]:
    """[spent, granted of each reward] of a split campaign: the sums over its parts (stock in
    a move between parts is granted by none)."""
    granted, spent, _moving = await sums(
        redis, keys, campaign.id, campaign.stock_parts, [r.id for r in campaign.rewards]
    )
    return [spent, *(granted[r.id] for r in campaign.rewards)]


async def _results(pool: asyncpg.Pool, campaign_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The figures at the end of those of these campaigns that ended (quanyi/campaigns/ending.py),
    in one query."""
    results: dict[str, list[dict[str, Any]]] = {}
    for r in await pool.fetch(schedule_queries.results, campaign_ids):
        shown = {k: v for k, v in r.items() if k != "campaign_id"}
        results.setdefault(r["campaign_id"], []).append(
            {**shown, "ended_at": r["ended_at"].isoformat()}
        )
    return results


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
        "channel_quota": r.channel_quota,
        "granted": granted,
        "remaining": max(r.stock - granted, 0),
    }


async def _channel_granted(
    redis: Redis, keys: Keys, campaigns: list[Campaign]
) -> dict[tuple[str, str], dict[str, int]]:
    """What each channel (and goal grants) granted of the rewards with channel quotas: one
    more round trip, only when some reward has them."""
    wanted = [
        (c, r, [*c.channels, GOAL_CHANNEL])
        for c in campaigns
        for r in c.rewards
        if r.channel_quota is not None
    ]
    if not wanted:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for c, r, channels in wanted:
            pipe.hmget(keys.campaign(c.id), granted_fields(r.id, channels))
        values = await pipe.execute()
    return {
        (c.id, r.id): {ch: int(v or 0) for ch, v in zip(channels, held, strict=True)}
        for (c, r, channels), held in zip(wanted, values, strict=True)
    }
