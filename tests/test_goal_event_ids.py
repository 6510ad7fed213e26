"""What an event id means: one transaction of one customer, counted once; an id sent again for
another transaction is refused. And the edges of time: an event from the future is refused, a
held reversal waits only so long, and only when a goal could have counted its original."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import pytest

from quanyi.core.settings import Settings
from tests.support.clients import Api
from tests.support.clock import SHANGHAI, FakeClock
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

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]
DAY_S = 86_400


@pytest.fixture
async def core(api: Api, pool: asyncpg.Pool, settings: Settings) -> str:
    return await add_card_channel(api, pool, settings)


@pytest.mark.parametrize(
    "other", [{"customer": "cust-2"}, {"amount": 13_000}], ids=["customer", "amount"]
)
async def test_an_id_sent_again_for_another_transaction_is_refused(
    api: Api, core: str, other: dict
) -> None:
    await goal_campaign(api)
    await send(api, *(event(api, f"tx-{i}") for i in range(4)))
    before = await redis_state()
    again = (await send(api, event(api, "tx-0", **other)))[0]
    assert (again["status"], again["error"]["code"]) == ("rejected", "event_conflict")
    assert await redis_state() == before
    # The transaction it names is still the one counted: a fifth of its own reaches the goal.
    assert len(granted(await send(api, event(api, "tx-4")))) == 1
    assert await campaign_figures(api) == (1, 3_000)


async def test_an_event_from_the_future_is_refused(api: Api, core: str) -> None:
    await goal_campaign(api)
    ahead = event(api, "tx-0", at=datetime.fromtimestamp(api.clock() + 3_600, SHANGHAI))
    result = await send(api, ahead, event(api, "tx-1"))
    assert (result[0]["status"], result[0]["error"]["code"]) == ("rejected", "in_the_future")
    assert result[1]["status"] == "accepted"
    assert (await progress(api))["count"] == 1  # tx-1 alone
    # Within the clocks' tolerance it counts.
    near = event(api, "tx-2", at=datetime.fromtimestamp(api.clock() + 60, SHANGHAI))
    assert (await send(api, near))[0]["status"] == "accepted"


async def test_an_event_cannot_reverse_itself(api: Api, core: str) -> None:
    await goal_campaign(api)
    result = (await send(api, refund(api, "rf-1", "rf-1")))[0]
    assert result["status"] == "rejected" and result["error"]["code"] == "invalid_request"


async def test_a_second_reversal_while_the_first_waits_is_refused(api: Api, core: str) -> None:
    await goal_campaign(api)
    first = (await send(api, refund(api, "rf-1", "tx-0")))[0]
    assert first.get("held") is True
    second = (await send(api, refund(api, "rf-2", "tx-0")))[0]
    assert (second["status"], second["error"]["code"]) == ("rejected", "already_reversed")
    assert (await send(api, refund(api, "rf-1", "tx-0")))[0]["status"] == "duplicate"
    # The original comes: the first reversal cancels it; both repeat as duplicates.
    assert (await send(api, event(api, "tx-0")))[0]["status"] == "accepted"
    assert (await progress(api))["count"] == 0
    again = await send(api, event(api, "tx-0"), refund(api, "rf-1", "tx-0"))
    assert [r["status"] for r in again] == ["duplicate", "duplicate"]


async def test_a_reversal_no_goal_could_have_counted_waits_for_nothing(api: Api, core: str) -> None:
    await goal_campaign(api)  # at least 100 yuan a purchase
    small = (await send(api, refund(api, "rf-1", "tx-0", amount=5_000)))[0]
    assert small == {"event_id": "rf-1", "status": "accepted"}  # not held
    # Its original, when it comes, counts for nothing anyway (below the minimum).
    assert (await send(api, event(api, "tx-0", amount=5_000)))[0]["status"] == "accepted"
    assert (await progress(api))["count"] == 0


async def test_a_reversal_for_a_non_member_waits_for_nothing(
    api: Api, core: str, pool: asyncpg.Pool
) -> None:
    status, body = await api.admin(
        "marketer", "POST", "/admin/v1/audiences", {"id": "vip", "name": "VIP", "branch": "HQ"}
    )
    assert status == 201, body
    await goal_campaign(api, audience_id="vip")
    result = (await send(api, refund(api, "rf-1", "tx-0", customer="outsider")))[0]
    assert result == {"event_id": "rf-1", "status": "accepted"}


async def test_a_hold_ends_after_the_hold_days(
    api: Api, core: str, clock: FakeClock, settings: Settings
) -> None:
    ends = datetime.fromtimestamp(clock() + 90 * DAY_S, SHANGHAI).isoformat()
    await goal_campaign(api, campaign={"ends_at": ends})
    assert (await send(api, refund(api, "rf-1", "tx-0")))[0].get("held") is True
    clock.advance(settings.event_hold_days * DAY_S + 60)
    # Too late to cancel anything: the original counts like any purchase.
    late = event(api, "tx-0")
    assert (await send(api, late))[0]["status"] == "accepted"
    assert (await progress(api))["count"] == 1
