"""A campaign's share of its branch's budget (budgets.py): reserved at its approval, changed by
a revision of its budget, and what it did not spend given back at its end. Each runs in the
transaction of the change it follows, under the campaign's row lock, which is always taken
before its branch's balance.
"""

from __future__ import annotations

import dataclasses

import asyncpg

from quanyi.access.staff import Actor, audit
from quanyi.campaigns.budgets import (
    COMMITTED,
    BudgetRules,
    lock_balance,
    move_balance,
    queries,
)
from quanyi.campaigns.model import Campaign
from quanyi.core.errors import BudgetRequired, InvalidRequest
from quanyi.inventory.hot_campaigns import HotCampaigns


async def reserve(
    conn: asyncpg.Connection, rules: BudgetRules, actor: Actor, campaign: Campaign
) -> None:
    """Reserve `campaign`'s budget from its branch's budget for the year of its start. Called in
    the approval's transaction, under the campaign's row lock and before the approval reaches
    Redis; refuses (BudgetExceeded, BudgetRequired) when it cannot, and the approval with it.
    Nothing to do while head office has no budget for that year, or when the campaign holds a
    reservation already."""
    if await conn.fetchrow(queries.lock_reservation, campaign.id) is not None:
        return
    period = rules.period_of(campaign.starts_at)
    if not await conn.fetchval(queries.in_force, period):
        return
    if campaign.budget is None:
        if rules.required:
            raise BudgetRequired(
                f"budgets are in force for {period}: campaign {campaign.id} needs a budget,"
                f" reserved from {campaign.branch}'s",
                campaign.branch,
                period,
            )
        return
    balance = await lock_balance(conn, campaign.branch, period)
    balance.ensure(campaign.budget, f"campaign {campaign.id} cannot reserve its budget")
    await move_balance(
        conn,
        campaign.branch,
        period,
        COMMITTED,
        "reservation",
        campaign.budget,
        actor.username,
        campaign_id=campaign.id,
    )
    await conn.execute(
        queries.insert_reservation, campaign.id, campaign.branch, period, campaign.budget
    )
    await audit(
        conn,
        actor,
        "budget.reserve",
        f"campaign:{campaign.id}",
        {"branch": campaign.branch, "period": period, "amount": campaign.budget},
    )


async def rereserve(
    conn: asyncpg.Connection,
    rules: BudgetRules,
    actor: Actor,
    campaign: Campaign,
    budget: int | None,
) -> None:
    """A revision of live `campaign` changes its budget to `budget`: its reservation follows, in
    the revision's transaction under the campaign's row lock, before Redis takes the revision
    (whose script refuses a budget below what was spent). A higher budget reserves the
    difference (BudgetExceeded when the branch lacks it), a lower one gives it back. A campaign
    holding no reservation is reserved for as at its approval."""
    current = await conn.fetchrow(queries.lock_reservation, campaign.id)
    if current is None:
        await reserve(conn, rules, actor, dataclasses.replace(campaign, budget=budget))
        return
    branch, period, amount = current["branch_id"], current["period"], current["amount"]
    if budget is None:
        raise InvalidRequest(
            "a campaign holding budget keeps a budget",
            {"budget": f"required: it holds {amount} of {branch}'s {period} budget"},
        )
    delta = budget - amount
    if delta == 0:
        return
    balance = await lock_balance(conn, branch, period)
    balance.ensure(delta, f"campaign {campaign.id} cannot raise its budget")
    await move_balance(
        conn, branch, period, COMMITTED, "revision", delta, actor.username, campaign_id=campaign.id
    )
    await conn.execute(queries.update_reservation, campaign.id, budget)
    await audit(
        conn,
        actor,
        "budget.revise",
        f"campaign:{campaign.id}",
        {"branch": branch, "period": period, "amount": budget, "was": amount},
    )


async def release_reservation(
    conn: asyncpg.Connection,
    stock: HotCampaigns,
    campaign_id: str,
    ended_by: str,
    parts: int = 1,
) -> int | None:
    """At a campaign's end, give back to its branch what it reserved and did not spend; what it
    spent stays charged for good. Called in the ending's transaction (quanyi/campaigns/ending.py)
    once Redis has the campaign ended, so no grant can follow and `spent` is final; the movement
    row names `ended_by`, the ending itself is audited as campaign.end. Returns the amount given
    back; None when the campaign held no reservation. `parts`: the campaign's stock parts, whose
    `spent` counters add up to what it spent."""
    current = await conn.fetchrow(queries.lock_reservation, campaign_id)
    if current is None:
        return None
    spent = (await stock.counters(campaign_id, [], parts=parts)).spent
    charged = min(spent, current["amount"])
    released = current["amount"] - charged
    await move_balance(
        conn,
        current["branch_id"],
        current["period"],
        COMMITTED,
        "release",
        -released,
        ended_by,
        campaign_id=campaign_id,
    )
    await conn.execute(queries.close_reservation, campaign_id, charged)
    return released
