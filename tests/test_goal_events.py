"""Card events toward spending goals: counted once, granted once when the goal is reached,
taken back by a reversal (with or without a claw back), held when the reversal comes first."""

from __future__ import annotations

import asyncpg
import pytest

from quanyi.core.settings import Settings
from quanyi.ledger.reconcile import Reconcile, drifted
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import Api, stock_granted
from tests.support.events import add_card_channel, event, goal_campaign, send

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]


@pytest.fixture
async def core(api: Api, pool: asyncpg.Pool, settings: Settings) -> str:
    """The card system's channel: events only."""
    return await add_card_channel(api, pool, settings)


async def test_the_fifth_qualifying_purchase_grants_once(api: Api, core: str) -> None:
    await goal_campaign(api)
    results = await send(api, *(event(api, f"tx-{i}") for i in range(4)))
    assert [r["status"] for r in results] == ["accepted"] * 4
    assert not any("granted" in r for r in results)
    assert await stock_granted(api, "g1") == 0

    fifth = (await send(api, event(api, "tx-4")))[0]
    assert fifth["status"] == "accepted" and len(fifth["granted"]) == 1
    sixth = (await send(api, event(api, "tx-5")))[0]
    assert "granted" not in sixth
    again = await send(api, event(api, "tx-4"), event(api, "tx-0"))
    assert [r["status"] for r in again] == ["duplicate", "duplicate"]
    assert await stock_granted(api, "g1") == 1


async def test_reversal_with_claw_back_revokes_the_grant(api: Api, core: str) -> None:
    await goal_campaign(api, claw_back=True)
    results = await send(api, *(event(api, f"tx-{i}") for i in range(5)))
    granted = results[-1]["granted"][0]
    refund = (await send(api, event(api, "rf-1", reversal_of="tx-2")))[0]
    assert refund["status"] == "accepted" and refund["revoked"] == [granted]
    assert await stock_granted(api, "g1") == 0
    # Reaching the goal again grants again.
    regained = (await send(api, event(api, "tx-9")))[0]
    assert len(regained["granted"]) == 1 and regained["granted"][0] != granted
    assert (await send(api, event(api, "rf-1", reversal_of="tx-2")))[0]["status"] == "duplicate"


async def test_reversal_before_its_original_cancels_it(api: Api, core: str) -> None:
    await goal_campaign(api)
    held = (await send(api, event(api, "rf-1", reversal_of="tx-0")))[0]
    assert held == {"event_id": "rf-1", "status": "accepted", "held": True}
    await send(api, event(api, "tx-0"), *(event(api, f"tx-{i}") for i in range(1, 5)))
    # tx-0 counted for nothing: four purchases, no grant yet.
    assert await stock_granted(api, "g1") == 0
    assert (await send(api, event(api, "tx-0")))[0]["status"] == "duplicate"
    assert len((await send(api, event(api, "tx-5")))[0]["granted"]) == 1


async def test_bad_events_are_rejected_in_place(api: Api, core: str) -> None:
    await goal_campaign(api)
    results = await send(
        api,
        event(api, "tx-0"),
        {**event(api, "tx-1"), "amount": -5},
        {**event(api, "tx-2"), "customer_id": "4111111111111111"},
        "not an event",
    )
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected", "rejected"]
    assert "4111111111111111" not in str(results)


async def test_reconcile_finds_goal_grants_in_agreement(
    api: Api, core: str, pool: asyncpg.Pool, redis, keys, settings: Settings, clock
) -> None:
    """A goal grant is made once a period by its progress, under no channel's request id: the
    ledger holding it with no idempotency entry in Redis is no drift."""
    await goal_campaign(api, claw_back=True)
    results = await send(api, *(event(api, f"tx-{i}") for i in range(5)))
    assert len(results[-1]["granted"]) == 1
    await send(api, event(api, "rf-1", reversal_of="tx-0"), event(api, "tx-5"))
    await LedgerWorker(redis, pool, keys).drain()
    assert drifted(await Reconcile(pool, redis, keys, settings, clock).run()) == []
