"""Offers (what a customer can have now on a channel) and goal progress, through the signed
channel API on real Redis and PostgreSQL: campaigns of the caller's channel only, audience
rewards for members only, each reason a reward is not claimable (limit, stock, budget, window,
goal, automatic), progress of goal rewards, and bad input as 4xx.

Goal progress is written here straight into Redis with the key layout the card-event
evaluation uses (stores/keys.py `progress`), so the read side is tested on its own; the path
from POST /v1/events to these fields is tested with the events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from quanyi.core.clock import LocalPeriods, rfc3339
from quanyi.stores.keys import PROGRESS_BUCKETS, customer_bucket, progress_value
from tests.support.clients import Api, assert_error
from tests.support.factories import reward
from tests.support.settings import CHANNEL

pytestmark = pytest.mark.usefixtures("signed_in")

MONTHLY_3 = {"window": "month", "count": 3}


async def offers(api: Api, customer: str = "cust-1", channel: str = CHANNEL) -> list[dict]:
    kwargs: dict[str, Any] = {}
    if channel != CHANNEL:
        kwargs = {"channel": channel, "secret": f"{channel}-secret"}
    status, body = await api.channel("GET", f"/v1/customers/{customer}/offers", **kwargs)
    assert status == 200, body
    return body["offers"]


def by_reward(found: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["campaign_id"], o["reward_id"]): o for o in found}


async def audience(api: Api, members: list[str], audience_id: str = "vip") -> None:
    body = {"id": audience_id, "name": "VIP customers", "branch": "HQ"}
    status, created = await api.admin("marketer", "POST", "/admin/v1/audiences", body)
    assert status == 201, created
    token = await api.login("marketer")
    resp = await api.client.put(
        f"/admin/v1/audiences/{audience_id}/members",
        data="\n".join(members).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    assert resp.status == 200, await resp.text()


async def set_progress(
    redis, keys, campaign_id: str, reward_id: str, customer: str, period: str, **fields: Any
) -> None:
    """A progress field as the card-event evaluation writes it: n (count), a (amount), g (the
    grant, "<grant id> <day>")."""
    await redis.hset(
        keys.progress(campaign_id, customer_bucket(customer, PROGRESS_BUCKETS)),
        f"{reward_id}|{customer}|{period}",
        progress_value(fields.get("n", 0), fields.get("a", 0), fields.get("g")),
    )


def campaign_ends_ms(api: Api) -> int:
    """When a campaign of the factories ends (30 days from now), in unix ms."""
    return int((api.clock() + 30 * 86_400) * 1000)


def period_of(api: Api, settings, window: str) -> tuple[str, int]:
    return LocalPeriods(settings.zone).period(window, api.clock())


@pytest.mark.cluster_too
async def test_a_channel_sees_the_campaigns_it_serves_and_no_other(api):
    await api.create_right()
    await api.create_campaign("c1", name="Coffee month")
    await api.create_campaign("c2", channels=["wechat"])
    await api.create_campaign("c3", channels=[CHANNEL, "wechat"])

    seen = await offers(api)
    assert [(o["campaign_id"], o["reward_id"]) for o in seen] == [("c1", "r1"), ("c3", "r1")]
    assert seen[0] == {
        "campaign_id": "c1",
        "reward_id": "r1",
        "right_id": "coffee",
        "name": "Coffee month",
        "claimable": True,
        "remaining_for_customer": 1,
    }
    assert {o["campaign_id"] for o in await offers(api, channel="wechat")} == {"c2", "c3"}


@pytest.mark.cluster_too
async def test_an_audience_reward_is_offered_to_its_members_only(api):
    await api.create_right()
    await audience(api, ["cust-1", "cust-9"])
    await api.create_campaign("c1", [reward("r1"), reward("r2", audience_id="vip")])

    assert set(by_reward(await offers(api, "cust-1"))) == {("c1", "r1"), ("c1", "r2")}
    assert set(by_reward(await offers(api, "cust-2"))) == {("c1", "r1")}


@pytest.mark.cluster_too
async def test_claims_up_to_the_limit_leave_it_reached(api):
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=10, per_customer_limit=2)])

    for i in range(2):
        (offer,) = await offers(api)
        assert offer["claimable"] and offer["remaining_for_customer"] == 2 - i
        status, body = await api.claim(request_id=f"q{i}", campaign_id="c1", customer_id="cust-1")
        assert status == 201, body

    (offer,) = await offers(api)
    assert offer["claimable"] is False
    assert offer["reason"] == "limit_reached"
    assert offer["remaining_for_customer"] == 0
    (other,) = await offers(api, "cust-2")
    assert other["claimable"] and other["remaining_for_customer"] == 2


@pytest.mark.cluster_too
async def test_a_daily_limit_reached_is_limit_reached(api):
    await api.create_right()
    await api.create_campaign(
        "c1", [reward(stock=10, per_customer_limit=5, per_customer_daily_limit=1)]
    )
    status, body = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, body
    (offer,) = await offers(api)
    assert (offer["claimable"], offer["reason"]) == (False, "limit_reached")


@pytest.mark.cluster_too
async def test_stock_gone_is_out_of_stock_for_everyone(api):
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=1, per_customer_limit=3)])
    status, body = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-2")
    assert status == 201, body

    (offer,) = await offers(api, "cust-1")
    assert (offer["claimable"], offer["reason"]) == (False, "out_of_stock")
    assert offer["remaining_for_customer"] == 0


@pytest.mark.cluster_too
async def test_todays_stock_gone_is_out_of_stock(api):
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=10, per_customer_limit=3, daily_stock=1)])
    status, body = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-2")
    assert status == 201, body
    (offer,) = await offers(api, "cust-1")
    assert (offer["claimable"], offer["reason"]) == (False, "out_of_stock")


@pytest.mark.cluster_too
async def test_a_spent_budget_is_budget_exhausted(api):
    await api.create_right(unit_cost=100)
    await api.create_campaign("c1", [reward(stock=10)], budget=150)
    status, body = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-2")
    assert status == 201, body

    (offer,) = await offers(api, "cust-1")
    assert (offer["claimable"], offer["reason"]) == (False, "budget_exhausted")
    assert offer["remaining_for_customer"] == 1  # stock and limit allow it; money does not


@pytest.mark.cluster_too
async def test_a_campaign_not_started_yet_says_so(api):
    await api.create_right()
    start = datetime.fromtimestamp(api.clock(), UTC) + timedelta(days=1)
    await api.create_campaign(
        "c1",
        starts_at=start.isoformat(),
        ends_at=(start + timedelta(days=3)).isoformat(),
    )
    (offer,) = await offers(api)
    assert (offer["claimable"], offer["reason"]) == (False, "not_started")


@pytest.mark.cluster_too
async def test_a_campaign_past_its_end_says_ended(api):
    await api.create_right()
    await api.create_campaign("c1")
    api.clock.advance(31 * 86_400)  # past ends_at, still active until someone ends it
    (offer,) = await offers(api)
    assert (offer["claimable"], offer["reason"]) == (False, "ended")


@pytest.mark.cluster_too
async def test_a_paused_campaign_is_no_longer_offered(api):
    await api.create_right()
    await api.create_campaign("c1")
    await api.create_campaign("c2")
    assert len(await offers(api)) == 2
    status, body = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/pause")
    assert status == 200, body
    # At once, not after the list is next reloaded: the read sees the publication moved on.
    assert [o["campaign_id"] for o in await offers(api)] == ["c2"]


@pytest.mark.cluster_too
async def test_a_goal_reward_shows_progress_and_opens_once_reached(api, redis, keys, settings):
    await api.create_right()
    await api.create_campaign("c1", [reward(goal=MONTHLY_3, grant="claim")])
    period, period_end = period_of(api, settings, "month")
    window_ends = rfc3339(min(period_end * 1000, campaign_ends_ms(api)))

    (offer,) = await offers(api)
    assert (offer["claimable"], offer["reason"]) == (False, "goal_not_met")
    assert offer["progress"] == {
        "count": 0,
        "amount": 0,
        "goal": MONTHLY_3,
        "reached": False,
        "window_ends_at": window_ends,
    }

    await set_progress(redis, keys, "c1", "r1", "cust-1", period, n=3, a=45_000)
    (offer,) = await offers(api)
    assert offer["claimable"] is True and "reason" not in offer
    assert offer["progress"]["count"] == 3 and offer["progress"]["amount"] == 45_000
    assert offer["progress"]["reached"] is True
    # Progress of another period (last month) does not count for this one.
    await set_progress(redis, keys, "c1", "r1", "cust-2", "M200001", n=9)
    (other,) = await offers(api, "cust-2")
    assert other["progress"]["count"] == 0 and other["reason"] == "goal_not_met"

    # Claimed in this period: one claim per period.
    await set_progress(redis, keys, "c1", "r1", "cust-1", period, g="01KBC3W4Y8N0F5D6G7H8J9KMNP 1")
    (offer,) = await offers(api)
    assert (offer["claimable"], offer["reason"]) == (False, "limit_reached")


@pytest.mark.cluster_too
async def test_an_automatic_reward_is_never_claimable_and_shows_progress(
    api, redis, keys, settings
):
    await api.create_right()
    goal = {"window": "campaign", "amount": 100_000}
    await api.create_campaign("c1", [reward(goal=goal)])
    await set_progress(redis, keys, "c1", "r1", "cust-1", "C", n=2, a=60_000)

    (offer,) = await offers(api)
    assert (offer["claimable"], offer["reason"]) == (False, "automatic")
    assert offer["progress"] == {
        "count": 2,
        "amount": 60_000,
        "goal": goal,
        "reached": False,
        # A campaign-long goal ends with the campaign.
        "window_ends_at": rfc3339(campaign_ends_ms(api)),
    }


@pytest.mark.cluster_too
async def test_progress_lists_the_goal_rewards_of_a_campaign(api, redis, keys, settings):
    await api.create_right()
    weekly = {"window": "week", "count": 2, "min_amount": 1_000}
    await api.create_campaign(
        "c1",
        [
            reward("plain"),
            reward("monthly", goal=MONTHLY_3, grant="claim"),
            reward("w", goal=weekly),
        ],
    )
    month, _ = period_of(api, settings, "month")
    week, week_end = period_of(api, settings, "week")
    await set_progress(redis, keys, "c1", "monthly", "cust-1", month, n=1, a=2_000)
    await set_progress(redis, keys, "c1", "w", "cust-1", week, n=2, a=5_000)

    status, body = await api.channel("GET", "/v1/customers/cust-1/progress?campaign_id=c1")
    assert status == 200, body
    assert body["campaign_id"] == "c1"
    rewards = {r["reward_id"]: r for r in body["rewards"]}
    assert set(rewards) == {"monthly", "w"}
    assert rewards["monthly"]["count"] == 1 and rewards["monthly"]["reached"] is False
    assert rewards["w"] == {
        "reward_id": "w",
        "count": 2,
        "amount": 5_000,
        "goal": weekly,
        "reached": True,
        "window_ends_at": rfc3339(week_end * 1000),
    }


@pytest.mark.cluster_too
async def test_progress_of_an_unknown_campaign_is_404_and_a_bad_query_400(api):
    await api.create_right()
    await api.create_campaign("c1")
    await api.create_campaign("c2", channels=["wechat"])
    base = "/v1/customers/cust-1/progress"
    assert_error(*await api.channel("GET", f"{base}?campaign_id=nope"), 404, "campaign_not_found")
    assert_error(*await api.channel("GET", base), 400, "invalid_request")
    assert_error(*await api.channel("GET", f"{base}?campaign_id=%20x"), 400, "invalid_request")
    assert_error(*await api.channel("GET", f"{base}?campaign_id=c2"), 403, "channel_not_allowed")
    status, body = await api.channel("GET", f"{base}?campaign_id=c1")
    assert status == 200 and body == {"campaign_id": "c1", "rewards": []}


@pytest.mark.cluster_too
async def test_a_card_number_as_customer_id_is_refused_and_not_repeated(api):
    await api.create_right()
    await api.create_campaign("c1")
    for path in (
        "/v1/customers/4111111111111111/offers",
        "/v1/customers/4111111111111111/progress?campaign_id=c1",
    ):
        status, body = await api.channel("GET", path)
        assert_error(status, body, 400, "invalid_request")
        assert "4111111111111111" not in str(body)


@pytest.mark.cluster_too
async def test_offers_need_a_signed_request(api):
    resp = await api.client.get("/v1/customers/cust-1/offers")
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"


@pytest.mark.cluster_too
async def test_no_campaign_no_offers(api):
    assert await offers(api) == []
