"""Claims of goal rewards: a reward claimed once its goal is reached (`grant: claim`) is refused
with the customer's progress until then, is had once a period, and is claimed again once the
next period's goal is reached; a reward granted automatically on its goal is never claimed."""

from __future__ import annotations

import asyncpg
import pytest

from quanyi.core.settings import Settings
from tests.support.clients import Api
from tests.support.clock import FakeClock
from tests.support.events import (
    add_card_channel,
    campaign_figures,
    event,
    goal_campaign,
    granted,
    local,
    send,
)

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]

THREE_A_MONTH = {"window": "month", "count": 3}
# January to April 2027, local time.
WINTER = {"starts_at": "2027-01-01T00:00:00+08:00", "ends_at": "2027-04-01T00:00:00+08:00"}


@pytest.fixture
async def core(api: Api, pool: asyncpg.Pool, settings: Settings) -> str:
    return await add_card_channel(api, pool, settings)


async def claim(api: Api, request_id: str, customer: str = "cust-1") -> tuple[int, dict]:
    return await api.claim(request_id=request_id, campaign_id="g1", customer_id=customer)


async def test_claimed_once_the_goal_is_reached_once_a_month(
    api: Api, core: str, clock: FakeClock
) -> None:
    clock.now = local("2027-01-10T12:00:00").timestamp()
    await goal_campaign(
        api,
        goal=THREE_A_MONTH,
        grant="claim",
        per_customer_limit=5,
        campaign={**WINTER, "channels": ["app"]},
    )
    # Counted, never granted by the events themselves.
    assert granted(await send(api, event(api, "tx-0"), event(api, "tx-1"))) == []

    status, body = await claim(api, "q1")
    assert status == 409, body
    assert body["error"] == {
        "code": "not_eligible",
        "message": body["error"]["message"],
        "reason": "goal_not_met",
        "progress": {"count": 2, "amount": 24_000, "goal": THREE_A_MONTH},
    }
    assert await campaign_figures(api) == (0, 0)

    await send(api, event(api, "tx-2"))
    status, body = await claim(api, "q2")
    assert status == 201, body
    status, again = await claim(api, "q2")  # a retry is answered with the same grant
    assert (status, again["grant_id"]) == (200, body["grant_id"])
    status, body = await claim(api, "q3")
    assert status == 409, body
    assert (body["error"]["code"], body["error"]["scope"]) == ("limit_reached", "window")
    # Other customers' progress is their own.
    status, body = await claim(api, "q4", "cust-2")
    assert (status, body["error"]["reason"]) == (409, "goal_not_met")
    assert await campaign_figures(api) == (1, 3_000)

    # February: the goal starts from nothing again.
    clock.now = local("2027-02-03T09:00:00").timestamp()
    status, body = await claim(api, "q5")
    assert status == 409, body
    assert body["error"]["progress"]["count"] == 0
    await send(api, *(event(api, f"feb-{i}") for i in range(3)))
    status, body = await claim(api, "q6")
    assert status == 201, body
    assert await campaign_figures(api) == (2, 6_000)


async def test_an_automatic_reward_is_not_claimed(api: Api, core: str) -> None:
    await goal_campaign(api, goal=THREE_A_MONTH)
    status, body = await claim(api, "q1")
    assert status == 409, body
    assert (body["error"]["code"], body["error"]["reason"]) == ("not_eligible", "automatic")
    # Not even once its goal is reached: the goal granted it.
    assert len(granted(await send(api, *(event(api, f"tx-{i}") for i in range(3))))) == 1
    status, body = await claim(api, "q2")
    assert (status, body["error"]["reason"]) == (409, "automatic")
    assert await campaign_figures(api) == (1, 3_000)
