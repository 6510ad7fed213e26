"""Reversals (refunds) of card events: progress drops before and after a grant; without a claw
back the grant stays, with one it is revoked and its stock, limit and budget come back exactly
once, unless it was redeemed; a reversal that comes first holds its original to nothing; a
reversal that does not match its original, or reverses it twice, is rejected and changes
nothing."""

from __future__ import annotations

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from quanyi.core.settings import Settings
from quanyi.issuance.api import LIFECYCLE
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import Keys
from tests.support.clients import Api, grant_view
from tests.support.events import (
    add_card_channel,
    campaign_figures,
    event,
    goal_campaign,
    granted,
    progress,
    refund,
    send,
)
from tests.support.stores import redis_state

pytestmark = pytest.mark.usefixtures("signed_in")


@pytest.fixture
async def core(api: Api, pool: asyncpg.Pool, settings: Settings) -> str:
    return await add_card_channel(api, pool, settings)


async def reach(api: Api, customer: str = "cust-1", first: int = 0) -> str:
    """Five purchases tx-<first>..: the goal is reached by the fifth; its grant id."""
    results = await send(api, *(event(api, f"tx-{i}", customer) for i in range(first, first + 5)))
    (grant_id,) = granted(results)
    return grant_id


@pytest.mark.parametrize("claw_back", [False, True])
@pytest.mark.cluster_too
async def test_a_reversal_before_the_grant_takes_the_progress_back(
    api: Api, core: str, claw_back: bool
) -> None:
    await goal_campaign(api, claw_back=claw_back)
    await send(api, *(event(api, f"tx-{i}") for i in range(4)))
    result = (await send(api, refund(api, "rf-1", "tx-1")))[0]
    assert result == {"event_id": "rf-1", "status": "accepted"}
    shown = await progress(api)
    assert (shown["count"], shown["amount"]) == (3, 36_000)
    # The fifth purchase now makes four: no grant until the sixth.
    assert granted(await send(api, event(api, "tx-4"))) == []
    assert len(granted(await send(api, event(api, "tx-5")))) == 1
    assert await campaign_figures(api) == (1, 3_000)


async def test_without_claw_back_the_grant_stays(api: Api, core: str) -> None:
    await goal_campaign(api)
    grant_id = await reach(api)
    result = (await send(api, refund(api, "rf-1", "tx-3")))[0]
    assert result == {"event_id": "rf-1", "status": "accepted"}
    assert (await progress(api))["count"] == 4
    assert await campaign_figures(api) == (1, 3_000)
    assert (await grant_view(api, grant_id))["status"] == "fulfilled"  # lounge: no vendor
    # Back at five: the goal gave its grant for this month already.
    assert granted(await send(api, event(api, "tx-9"))) == []
    assert await campaign_figures(api) == (1, 3_000)


async def test_a_claw_back_gives_stock_limit_and_budget_back_once(
    api: Api, core: str, redis: Redis, pool: asyncpg.Pool, keys: Keys
) -> None:
    await goal_campaign(api, claw_back=True, campaign={"budget": 30_000})
    grant_id = await reach(api)
    assert await campaign_figures(api) == (1, 3_000)
    result = (await send(api, refund(api, "rf-1", "tx-2")))[0]
    assert result == {"event_id": "rf-1", "status": "accepted", "revoked": [grant_id]}
    assert await campaign_figures(api) == (0, 0)
    assert (await grant_view(api, grant_id))["status"] == "revoked"
    # The same reversal again, and a reversal of another purchase: nothing more comes back.
    assert (await send(api, refund(api, "rf-1", "tx-2")))[0]["status"] == "duplicate"
    other = (await send(api, refund(api, "rf-2", "tx-3")))[0]
    assert other == {"event_id": "rf-2", "status": "accepted"}
    assert await campaign_figures(api) == (0, 0)
    assert (await progress(api))["count"] == 3
    # The customer's limit came back: reaching five again grants again.
    again = granted(await send(api, event(api, "tx-10"), event(api, "tx-11")))
    assert len(again) == 1 and again[0] != grant_id
    assert await campaign_figures(api) == (1, 3_000)

    await LedgerWorker(redis, pool, keys).drain()
    statuses = dict(await pool.fetch("SELECT grant_id, status FROM grants"))
    assert statuses == {grant_id: "revoked", again[0]: "fulfilled"}
    rows = await pool.fetch("SELECT event_id, outcome, grants FROM card_events")
    by_id = {r["event_id"]: (r["outcome"], orjson.loads(r["grants"])) for r in rows}
    assert by_id["rf-1"] == ("reversal", [{"grant_id": grant_id, "event": "revoked"}])
    assert by_id["rf-2"] == ("reversal", [])


async def test_a_redeemed_grant_is_not_clawed_back(api: Api, core: str) -> None:
    await goal_campaign(api, claw_back=True)
    grant_id = await reach(api)
    lifecycle = api.client.app[LIFECYCLE]
    assert (await lifecycle.move(grant_id, "fulfilled", "vendor")).applied
    assert (await lifecycle.move(grant_id, "redeemed", "vendor")).applied
    result = (await send(api, refund(api, "rf-1", "tx-0")))[0]
    assert result == {"event_id": "rf-1", "status": "accepted"}  # nothing revoked
    assert (await grant_view(api, grant_id))["status"] == "redeemed"
    assert await campaign_figures(api) == (1, 3_000)
    assert (await progress(api))["count"] == 4


@pytest.mark.cluster_too
async def test_a_reversal_first_holds_its_original_to_nothing(
    api: Api, core: str, redis: Redis, pool: asyncpg.Pool, keys: Keys
) -> None:
    await goal_campaign(api, claw_back=True)
    held = (await send(api, refund(api, "rf-1", "tx-0")))[0]
    assert held == {"event_id": "rf-1", "status": "accepted", "held": True}
    original = (await send(api, event(api, "tx-0")))[0]
    assert original == {"event_id": "tx-0", "status": "accepted"}
    assert (await progress(api))["count"] == 0
    assert [
        r["status"] for r in await send(api, event(api, "tx-0"), refund(api, "rf-1", "tx-0"))
    ] == ["duplicate", "duplicate"]
    other = (await send(api, refund(api, "rf-2", "tx-0")))[0]
    assert (other["status"], other["error"]["code"]) == ("rejected", "already_reversed")
    await send(api, *(event(api, f"tx-{i}") for i in range(1, 5)))
    assert (await progress(api))["count"] == 4
    assert await campaign_figures(api) == (0, 0)

    await LedgerWorker(redis, pool, keys).drain()
    outcomes = dict(await pool.fetch("SELECT event_id, outcome FROM card_events"))
    assert (outcomes["rf-1"], outcomes["tx-0"], outcomes["tx-1"]) == (
        "held",
        "cancelled",
        "counted",
    )


@pytest.mark.parametrize(
    "changes", [{"customer": "cust-2"}, {"amount": 11_999}], ids=["customer", "amount"]
)
@pytest.mark.cluster_too
async def test_a_reversal_unlike_its_original_is_rejected(
    api: Api, core: str, changes: dict
) -> None:
    await goal_campaign(api, claw_back=True)
    grant_id = await reach(api)
    before = await redis_state()
    result = (await send(api, refund(api, "rf-1", "tx-0", **changes)))[0]
    assert result["status"] == "rejected", result
    assert result["error"]["code"] == "reversal_mismatch"
    assert await redis_state() == before  # nothing counted, nothing revoked, nothing recorded
    # The right reversal is still taken afterwards.
    right = (await send(api, refund(api, "rf-2", "tx-0")))[0]
    assert right == {"event_id": "rf-2", "status": "accepted", "revoked": [grant_id]}


@pytest.mark.cluster_too
async def test_a_second_reversal_of_one_purchase_is_rejected(api: Api, core: str) -> None:
    await goal_campaign(api, claw_back=True)
    grant_id = await reach(api)
    first = (await send(api, refund(api, "rf-1", "tx-0")))[0]
    assert first["revoked"] == [grant_id]
    before = await redis_state()
    second = (await send(api, refund(api, "rf-2", "tx-0")))[0]
    assert second["status"] == "rejected", second
    assert second["error"]["code"] == "already_reversed"
    assert await redis_state() == before
    assert (await progress(api))["count"] == 4
    assert await campaign_figures(api) == (0, 0)
