"""The invariants of goals after the load, from the ledger's card events alone: goal grants
against the customers who reached each goal, and refunds against what they took back
(loadtests/audit.py runs them)."""

from __future__ import annotations

import json

import asyncpg

from loadtests.checks import Check

# Each counted event's move of a goal's progress, (+1, +amount) for a purchase and (-1,
# -amount) for a refund, and the customer's running progress in that goal's period after it,
# in the order record_events.lua applied them: by outbox id ("ms-seq", one per call), then by
# place in the call's batch, which the card system's event ids number ("<user>-<n>", n growing
# in a batch's order: loadtests/card_events.py). Without the place, a purchase reaching the
# goal and a refund after it in one batch were peers in the window, both seen after the refund.
GOAL_PROGRESS = """
WITH moves AS (
    SELECT e.channel_id, e.event_id, e.customer_id, e.grants,
           m->>'campaign_id' AS campaign_id, m->>'reward_id' AS reward_id, m->>'period' AS period,
           CASE e.outcome WHEN 'counted' THEN 1 ELSE -1 END AS n,
           CASE e.outcome WHEN 'counted' THEN e.amount ELSE -e.amount END AS a,
           split_part(e.outbox_id, '-', 1)::bigint AS ms,
           split_part(e.outbox_id, '-', 2)::bigint AS seq,
           coalesce(substring(e.event_id FROM '([0-9]+)$')::bigint, 0) AS place
    FROM card_events e, jsonb_array_elements(e.counted) m
    WHERE e.outcome IN ('counted', 'reversal')
)
SELECT mv.*,
       sum(n) OVER w AS count, sum(a) OVER w AS amount,
       (r.goal->>'count' IS NULL OR sum(n) OVER w >= (r.goal->>'count')::bigint)
       AND (r.goal->>'amount' IS NULL OR sum(a) OVER w >= (r.goal->>'amount')::bigint)
           AS reached
FROM moves mv JOIN rewards r ON r.campaign_id = mv.campaign_id AND r.id = mv.reward_id
WHERE mv.campaign_id = $1
WINDOW w AS (PARTITION BY mv.reward_id, mv.customer_id, mv.period ORDER BY ms, seq, place
             ROWS UNBOUNDED PRECEDING)
"""


async def goal_grants(db: asyncpg.Connection, campaign_id: str, limit: int) -> list[Check]:
    """From the ledger's card events alone: the goal grants per reward are the (customer,
    period) pairs whose counted events ever reached the goal (a customer at most `limit` of
    them), capped by stock; each goal grant was made by an event at which its customer's
    progress in that period met the goal; and no refund took back more than was counted."""
    rows = await db.fetch(GOAL_PROGRESS, campaign_id)
    grants = await db.fetch(
        "SELECT g.grant_id, g.reward_id, g.customer_id, g.status, r.stock FROM grants g"
        " JOIN rewards r ON r.campaign_id = g.campaign_id AND r.id = g.reward_id"
        " WHERE g.campaign_id = $1 AND g.channel_id = 'goal'",
        campaign_id,
    )
    stocks = {
        r["id"]: r["stock"]
        for r in await db.fetch("SELECT id, stock FROM rewards WHERE campaign_id = $1", campaign_id)
    }
    checks = []
    for reward_id, stock in sorted(stocks.items()):
        periods: dict[str, set[str]] = {}
        for row in rows:
            if row["reward_id"] == reward_id and row["reached"]:
                periods.setdefault(row["customer_id"], set()).add(row["period"])
        reached = sum(min(len(p), limit) for p in periods.values())
        live = sum(1 for g in grants if g["reward_id"] == reward_id and g["status"] != "revoked")
        expected = min(reached, stock)
        where = f"{campaign_id}/{reward_id}"
        checks.append(
            Check(f"{where}: goal grants <= stock", live <= stock, f"{live}, stock {stock}")
        )
        checks.append(
            Check(
                f"{where}: goal grants == customers reaching the goal, capped by stock",
                live == expected,
                f"{live} grants; {reached} (customer, period) reached the goal, stock {stock}",
            )
        )
    # The event that made each grant, and the progress right after it.
    reward_of = {g["grant_id"]: g["reward_id"] for g in grants}
    made_by = {}
    for row in rows:
        for grant in json.loads(row["grants"]):
            gid = grant.get("grant_id")
            if grant.get("event") == "granted" and reward_of.get(gid) == row["reward_id"]:
                made_by[gid] = row
    unearned = [
        g["grant_id"]
        for g in grants
        if g["grant_id"] not in made_by
        or not made_by[g["grant_id"]]["reached"]
        or made_by[g["grant_id"]]["customer_id"] != g["customer_id"]
        or made_by[g["grant_id"]]["reward_id"] != g["reward_id"]
    ]
    checks.append(
        Check(
            f"{campaign_id}: no goal grant without a reached goal",
            not unearned,
            f"{len(grants)} goal grants, each made by an event reaching the goal"
            if not unearned
            else f"{len(unearned)} not, e.g. {unearned[0]}",
        )
    )
    below = [r for r in rows if r["count"] < 0 or r["amount"] < 0]
    checks.append(
        Check(
            f"{campaign_id}: no progress below zero (a refund never takes back twice)",
            not below,
            f"{len(rows)} moves"
            if not below
            else f"{len(below)} below, e.g. {below[0]['customer_id']} {below[0]['period']}",
        )
    )
    return checks


async def reversals(db: asyncpg.Connection) -> list[Check]:
    """Every refund applied (outcome reversal) took back a purchase that counted, and no
    purchase was taken back twice; a purchase its refund overtook (cancelled) counted for
    nothing, so nothing took it back either."""
    orphans = await db.fetch(
        "SELECT r.channel_id, r.event_id, o.outcome FROM card_events r"
        " LEFT JOIN card_events o ON o.channel_id = r.channel_id AND o.event_id = r.reversal_of"
        " WHERE r.outcome = 'reversal' AND (o.event_id IS NULL OR o.outcome <> 'counted') LIMIT 5"
    )
    twice = await db.fetch(
        "SELECT channel_id, reversal_of, count(*) AS n FROM card_events"
        " WHERE outcome = 'reversal' GROUP BY channel_id, reversal_of HAVING count(*) > 1 LIMIT 5"
    )
    figures = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE outcome = 'reversal') AS applied,"
        " count(*) FILTER (WHERE outcome = 'held') AS held,"
        " count(*) FILTER (WHERE outcome = 'cancelled') AS cancelled,"
        " count(*) FILTER (WHERE outcome = 'cancelled' AND counted <> '[]'::jsonb)"
        "   AS cancelled_counted"
        " FROM card_events"
    )
    return [
        Check(
            "every applied reversal took back a counted event",
            not orphans,
            f"{figures['applied']} applied, {figures['held']} held"
            if not orphans
            else "; ".join(
                f"{o['event_id']}: original {o['outcome'] or 'missing'}" for o in orphans
            ),
        ),
        Check(
            "no event reversed twice",
            not twice,
            "none" if not twice else "; ".join(f"{t['reversal_of']} x{t['n']}" for t in twice),
        ),
        Check(
            "events overtaken by their reversal counted for nothing",
            figures["cancelled_counted"] == 0,
            f"{figures['cancelled']} cancelled, {figures['cancelled_counted']} counted",
        ),
    ]
