"""The load test's goal audit (loadtests/goal_audit.py) reads the ledger's card events as the
service wrote them: a goal reached and a refund after it in one batch (one outbox entry) is a
goal reached, whose grant stays where the reward does not claw back."""

from __future__ import annotations

import asyncpg
import pytest

from loadtests.goal_audit import goal_grants, reversals
from quanyi.core.settings import Settings
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import Api
from tests.support.events import add_card_channel, event, goal_campaign, granted, refund, send

pytestmark = pytest.mark.usefixtures("signed_in")


async def audit(pool: asyncpg.Pool) -> dict[str, tuple[bool, str]]:
    async with pool.acquire() as db:
        checks = await goal_grants(db, "g1", 1) + await reversals(db)
    return {c.name: (c.ok, c.detail) for c in checks}


async def test_a_goal_reached_and_refunded_in_one_batch_audits_as_reached(
    api: Api, pool: asyncpg.Pool, redis, keys, settings: Settings
) -> None:
    await add_card_channel(api, pool, settings)
    await goal_campaign(api)  # no claw back: the grant outlives the refund
    # Ids numbered in the batch's order, as the load test's card system numbers them.
    batch = [event(api, f"u1-{i}") for i in range(1, 6)] + [refund(api, "u1-6", "u1-5")]
    results = await send(api, *batch)
    assert [r["status"] for r in results] == ["accepted"] * 6
    assert len(granted(results)) == 1  # the fifth purchase reached the goal
    await LedgerWorker(redis, pool, keys).drain()

    checks = await audit(pool)
    assert checks["g1/r1: goal grants == customers reaching the goal, capped by stock"] == (
        True,
        "1 grants; 1 (customer, period) reached the goal, stock 10",
    )
    assert all(ok for ok, _detail in checks.values()), checks


async def test_a_grant_without_a_reached_goal_fails_the_audit(
    api: Api, pool: asyncpg.Pool, redis, keys, settings: Settings
) -> None:
    """The audit is not blind: with the fifth purchase taken out of the ledger, the grant it
    made has no event reaching the goal behind it."""
    await add_card_channel(api, pool, settings)
    await goal_campaign(api)
    await send(api, *(event(api, f"u1-{i}") for i in range(1, 6)))
    await LedgerWorker(redis, pool, keys).drain()
    await pool.execute("DELETE FROM card_events WHERE event_id = 'u1-5'")

    checks = await audit(pool)
    assert checks["g1: no goal grant without a reached goal"][0] is False
    assert checks["g1/r1: goal grants == customers reaching the goal, capped by stock"] == (
        False,
        "1 grants; 0 (customer, period) reached the goal, stock 10",
    )
