"""What ending a campaign does besides its status: one code path, whether staff end it (the
`end` action) or its window's end does (the scheduler ends it through the same action).

In the ending's transaction, in this order (CampaignService.transition):

1. prepare_ending, before Redis is told: the ledger's figures (one read of the campaign's
   grants) and how far the ledger is behind. Reads that may fail fail here, while Redis still
   has the campaign as it was and a rollback leaves both stores agreeing.
2. The campaign is published to Redis as ended: no claim is decided any more.
3. campaign_ended: Redis's counters, final now (one HMGET, one per part of a campaign split
   into stock parts, summed), the figures at the end
   (campaign_results), the phase `ended`, `campaign.ended` queued once, and last the budget
   reservation released, so the branch's budget row is locked only for that step and the
   commit.

A failure after step 2 leaves Redis ended and PostgreSQL not: each scheduler tick compares the
two and publishes PostgreSQL's state again (quanyi/campaigns/schedule.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis

from quanyi.access.staff import HEAD_OFFICE, Staff
from quanyi.campaigns.budget_reservations import release_reservation
from quanyi.campaigns.model import Campaign
from quanyi.core.clock import rfc3339
from quanyi.inventory.hot_campaigns import HotCampaigns
from quanyi.notifications.outbox import CAMPAIGN_ENDED, enqueue
from quanyi.stores.db import load_queries
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import outbox_lag

queries = load_queries("quanyi.campaigns", "schedule.sql")

# Whom the audit log names when a campaign's window moves it: it ends what an approver approved,
# at the time approved, so it acts with an approver's rights at head office. Not a username
# anyone can have (usernames are ids; this has parentheses).
SCHEDULE_ACTOR = Staff("(schedule)", "approver", HEAD_OFFICE)


@dataclass(frozen=True)
class Ending:
    """What an ending reads before Redis stops claims: the ledger per reward (persisted,
    redeemed) and the outbox entries the ledger has not written yet."""

    ledger: dict[str, asyncpg.Record]
    lag_entries: int


async def prepare_ending(
    conn: asyncpg.Connection, redis: Redis, keys: Keys, campaign: Campaign
) -> Ending:
    ledger = {r["reward_id"]: r for r in await conn.fetch(queries.ledger_final, campaign.id)}
    return Ending(ledger, (await outbox_lag(redis, keys)).entries)


async def release_budget_reservation(
    conn: asyncpg.Connection, redis: Redis, keys: Keys, campaign: Campaign, ended_by: str
) -> None:
    """Hand back what the campaign reserved of its branch's budget and did not spend, in the
    ending's transaction (quanyi/campaigns/budget_reservations.py): the one place every ending
    passes."""
    await release_reservation(
        conn, HotCampaigns(redis, keys), campaign.id, ended_by, parts=campaign.stock_parts
    )


async def campaign_ended(
    conn: asyncpg.Connection,
    redis: Redis,
    keys: Keys,
    campaign: Campaign,
    ended_by: str,
    ending: Ending,
) -> list[dict[str, Any]]:
    """Everything an ending does once Redis has the campaign ended (see the module's
    docstring). Returns the figures at the end per reward."""
    figures, spent = await final_figures(redis, keys, campaign, ending)
    for f in figures:
        await conn.execute(
            queries.insert_result,
            campaign.id,
            f["reward_id"],
            f["granted"],
            f["redeemed"],
            f["cost"],
            f["persisted"],
            ending.lag_entries,
        )
    await conn.execute(queries.end_phase, campaign.id)
    await enqueue(
        conn,
        CAMPAIGN_ENDED,
        f"{CAMPAIGN_ENDED}:{campaign.id}",
        {
            **about(
                campaign.id, campaign.name, campaign.branch, campaign.starts_at, campaign.ends_at
            ),
            "ended_by": ended_by,
            "reason": "schedule" if ended_by == SCHEDULE_ACTOR.username else "staff",
            "budget": campaign.budget,
            "spent": spent,
            "rewards": figures,
        },
    )
    await release_budget_reservation(conn, redis, keys, campaign, ended_by)
    return figures


async def final_figures(
    redis: Redis, keys: Keys, campaign: Campaign, ending: Ending
) -> tuple[list[dict[str, Any]], int]:
    """Per reward: granted (Redis's live count, the figure claims were decided on), cost
    (granted x the reward's unit cost), and redeemed and persisted (every grant, as the campaign
    view counts it) as the ledger held them; and what the campaign spent in all, as Redis
    counts it."""
    reward_ids = [r.id for r in campaign.rewards]
    counters = await HotCampaigns(redis, keys).counters(
        campaign.id, reward_ids, parts=campaign.stock_parts
    )
    figures = []
    for reward in campaign.rewards:
        granted = counters.granted[reward.id]
        held = ending.ledger.get(reward.id)
        figures.append(
            {
                "reward_id": reward.id,
                "stock": reward.stock,
                "granted": granted,
                "redeemed": held["redeemed"] if held else 0,
                "cost": granted * reward.unit_cost,
                "persisted": held["persisted"] if held else 0,
            }
        )
    return figures, counters.spent


def about(
    campaign_id: str, name: str, branch: str, starts_at: datetime, ends_at: datetime
) -> dict[str, Any]:
    """What every campaign notification says of its campaign; times in RFC 3339, UTC."""
    return {
        "campaign_id": campaign_id,
        "name": name,
        "branch": branch,
        "starts_at": _rfc3339(starts_at),
        "ends_at": _rfc3339(ends_at),
    }


def _rfc3339(moment: datetime) -> str:
    return rfc3339(round(moment.timestamp() * 1000))
