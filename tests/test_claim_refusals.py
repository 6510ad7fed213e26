"""Claims the rules refuse, each with its status and error code and nothing changed: a channel
not allowed, an unknown campaign or reward, a campaign not active, stock, limits and budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.clients import CLAIM, assert_only_error
from tests.support.settings import CHANNEL
from tests.support.stores import granted, ledger_count, redis_state

pytestmark = pytest.mark.usefixtures("signed_in")


# 403 channel_not_allowed


async def test_channel_not_in_the_campaign_is_refused(api, c1, redis, pool, keys):
    before = await redis_state()
    status, resp = await api.channel(
        "POST", "/v1/claims", CLAIM, channel="wechat", secret="wechat-secret"
    )
    assert_only_error(status, resp, 403, "channel_not_allowed")
    assert await redis_state() == before
    assert await ledger_count(redis, pool, keys) == 0


async def test_channel_in_the_campaign_may_claim(api):
    await api.create_right()
    await api.create_campaign(channels=[CHANNEL, "wechat"])
    status, grant = await api.channel(
        "POST", "/v1/claims", CLAIM, channel="wechat", secret="wechat-secret"
    )
    assert status == 201, grant
    assert grant["channel_id"] == "wechat"


# 404 campaign_not_found / reward_not_found


async def test_unknown_campaign(api, c1, redis, pool, keys):
    before = await redis_state()
    status, resp = await api.claim(**{**CLAIM, "campaign_id": "nope"})
    assert_only_error(status, resp, 404, "campaign_not_found")
    assert await redis_state() == before
    assert await ledger_count(redis, pool, keys) == 0


async def test_unknown_reward(api, c1, redis, pool, keys):
    before = await redis_state()
    status, resp = await api.claim(**CLAIM, reward_id="r2")
    assert_only_error(status, resp, 404, "reward_not_found")
    assert await redis_state() == before
    assert await ledger_count(redis, pool, keys) == 0


@pytest.fixture
async def two_rewards(api):
    await api.create_right("coffee", 100)
    await api.create_right("lounge", 500)
    return await api.create_campaign(
        rewards=[
            {"id": "r1", "right_id": "coffee", "stock": 10, "per_customer_limit": 1},
            {"id": "r2", "right_id": "lounge", "stock": 10, "per_customer_limit": 1},
        ]
    )


async def test_campaign_with_two_rewards_needs_a_reward_id(api, two_rewards, redis, pool, keys):
    before = await redis_state()
    status, resp = await api.claim(**CLAIM)
    assert_only_error(status, resp, 404, "reward_not_found")
    assert await redis_state() == before
    assert await ledger_count(redis, pool, keys) == 0


async def test_campaign_with_two_rewards_grants_the_named_one(api, two_rewards, redis, keys):
    status, grant = await api.claim(**CLAIM, reward_id="r2")
    assert status == 201, grant
    assert (grant["reward_id"], grant["right_id"]) == ("r2", "lounge")
    assert await granted(redis, keys, "c1", "r2") == 1
    assert await granted(redis, keys, "c1", "r1") == 0
    assert int(await redis.hget(keys.campaign("c1"), "spent")) == 500


# 409 campaign_not_active


async def _campaign_in(api, state: str) -> None:
    await api.create_right()
    now = datetime.fromtimestamp(api.clock(), UTC)
    if state in ("draft", "pending", "rejected"):
        await api.create_campaign(approve=False)
        if state != "draft":
            status, _ = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/submit")
            assert status == 200
        if state == "rejected":
            status, _ = await api.admin("approver", "POST", "/admin/v1/campaigns/c1/reject")
            assert status == 200
    elif state in ("paused", "ended"):
        await api.create_campaign()
        action = "pause" if state == "paused" else "end"
        status, _ = await api.admin("marketer", "POST", f"/admin/v1/campaigns/c1/{action}")
        assert status == 200
    elif state == "not_started":
        await api.create_campaign(
            starts_at=(now + timedelta(hours=1)).isoformat(),
            ends_at=(now + timedelta(days=2)).isoformat(),
        )
    elif state == "past_ends_at":
        await api.create_campaign(
            starts_at=(now - timedelta(hours=1)).isoformat(),
            ends_at=(now + timedelta(hours=1)).isoformat(),
        )
        api.clock.advance(3601)
    else:
        raise AssertionError(state)


@pytest.mark.parametrize(
    ("state", "detail"),
    [
        ("draft", "draft"),
        ("pending", "pending"),
        ("rejected", "rejected"),
        ("paused", "paused"),
        ("ended", "ended"),
        ("not_started", "not_started"),
        ("past_ends_at", "ended"),
    ],
)
async def test_campaign_not_active(api, redis, pool, keys, state, detail):
    await _campaign_in(api, state)
    before = await redis_state()
    status, resp = await api.claim(**CLAIM)
    error = assert_only_error(status, resp, 409, "campaign_not_active")
    assert error["state"] == detail
    assert await redis_state() == before
    assert await ledger_count(redis, pool, keys) == 0


async def test_campaign_opens_at_starts_at_and_closes_at_ends_at(api):
    await api.create_right()
    now = datetime.fromtimestamp(api.clock(), UTC).replace(microsecond=0)
    await api.create_campaign(
        starts_at=(now + timedelta(hours=1)).isoformat(),
        ends_at=(now + timedelta(hours=2)).isoformat(),
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 10, "per_customer_limit": 5}],
    )
    api.clock.now = (now + timedelta(hours=1)).timestamp() - 1
    status, resp = await api.claim(**CLAIM)
    assert (status, resp["error"]["state"]) == (409, "not_started")
    api.clock.now = (now + timedelta(hours=1)).timestamp()
    status, resp = await api.claim(**{**CLAIM, "request_id": "q2"})
    assert status == 201, resp
    api.clock.now = (now + timedelta(hours=2)).timestamp() - 1
    status, resp = await api.claim(**{**CLAIM, "request_id": "q3"})
    assert status == 201, resp
    api.clock.now = (now + timedelta(hours=2)).timestamp()
    status, resp = await api.claim(**{**CLAIM, "request_id": "q4"})
    assert (status, resp["error"]["state"]) == (409, "ended")


# 409 out_of_stock / limit_reached / budget_exhausted


async def test_out_of_stock_total(api, redis, pool, keys):
    await api.create_right()
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 2, "per_customer_limit": 1}]
    )
    for i in (1, 2):
        status, _ = await api.claim(request_id=f"q{i}", campaign_id="c1", customer_id=f"cust-{i}")
        assert status == 201
    before = await redis_state()
    status, resp = await api.claim(request_id="q3", campaign_id="c1", customer_id="cust-3")
    error = assert_only_error(status, resp, 409, "out_of_stock")
    assert error["scope"] == "total"
    assert await redis_state() == before
    assert await granted(redis, keys) == 2
    assert await ledger_count(redis, pool, keys) == 2


async def test_out_of_stock_daily(api, redis, pool, keys):
    await api.create_right()
    await api.create_campaign(
        rewards=[
            {
                "id": "r1",
                "right_id": "coffee",
                "stock": 10,
                "daily_stock": 2,
                "per_customer_limit": 1,
            }
        ]
    )
    for i in (1, 2):
        status, _ = await api.claim(request_id=f"q{i}", campaign_id="c1", customer_id=f"cust-{i}")
        assert status == 201
    before = await redis_state()
    status, resp = await api.claim(request_id="q3", campaign_id="c1", customer_id="cust-3")
    error = assert_only_error(status, resp, 409, "out_of_stock")
    assert error["scope"] == "daily"
    assert await redis_state() == before
    assert await ledger_count(redis, pool, keys) == 2


async def test_limit_reached_customer(api, redis, pool, keys):
    await api.create_right()
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 10, "per_customer_limit": 2}]
    )
    for i in (1, 2):
        status, _ = await api.claim(request_id=f"q{i}", campaign_id="c1", customer_id="cust-1")
        assert status == 201
    before = await redis_state()
    status, resp = await api.claim(request_id="q3", campaign_id="c1", customer_id="cust-1")
    error = assert_only_error(status, resp, 409, "limit_reached")
    assert error["scope"] == "customer"
    assert await redis_state() == before
    status, _ = await api.claim(request_id="q4", campaign_id="c1", customer_id="cust-2")
    assert status == 201
    assert await ledger_count(redis, pool, keys) == 3


async def test_limit_reached_customer_daily(api, redis, pool, keys):
    await api.create_right()
    await api.create_campaign(
        rewards=[
            {
                "id": "r1",
                "right_id": "coffee",
                "stock": 10,
                "per_customer_limit": 5,
                "per_customer_daily_limit": 1,
            }
        ]
    )
    status, _ = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201
    before = await redis_state()
    status, resp = await api.claim(request_id="q2", campaign_id="c1", customer_id="cust-1")
    error = assert_only_error(status, resp, 409, "limit_reached")
    assert error["scope"] == "customer_daily"
    assert await redis_state() == before
    assert await ledger_count(redis, pool, keys) == 1


async def test_limits_are_per_reward(api, two_rewards):
    status, _ = await api.claim(**CLAIM, reward_id="r1")
    assert status == 201
    status, resp = await api.claim(**{**CLAIM, "request_id": "q2"}, reward_id="r1")
    assert (status, resp["error"]["code"]) == (409, "limit_reached")
    status, resp = await api.claim(**{**CLAIM, "request_id": "q3"}, reward_id="r2")
    assert status == 201, resp


async def test_budget_exhausted_before_stock(api, redis, pool, keys):
    """Budget 250 at unit cost 100 pays for two grants although stock is 5."""
    await api.create_right("coffee", 100)
    await api.create_campaign(
        budget=250,
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 5, "per_customer_limit": 1}],
    )
    for i in (1, 2):
        status, _ = await api.claim(request_id=f"q{i}", campaign_id="c1", customer_id=f"cust-{i}")
        assert status == 201
    before = await redis_state()
    status, resp = await api.claim(request_id="q3", campaign_id="c1", customer_id="cust-3")
    assert_only_error(status, resp, 409, "budget_exhausted")
    assert await redis_state() == before
    assert await ledger_count(redis, pool, keys) == 2
    status, campaign = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
    assert status == 200
    assert campaign["spent"] == 200
    assert (campaign["rewards"][0]["granted"], campaign["rewards"][0]["remaining"]) == (2, 3)


async def test_budget_that_exactly_covers_the_stock_grants_it_all(api):
    await api.create_right("coffee", 100)
    await api.create_campaign(
        budget=300,
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 3, "per_customer_limit": 1}],
    )
    for i in (1, 2, 3):
        status, _ = await api.claim(request_id=f"q{i}", campaign_id="c1", customer_id=f"cust-{i}")
        assert status == 201
    status, resp = await api.claim(request_id="q4", campaign_id="c1", customer_id="cust-4")
    assert (status, resp["error"]["code"], resp["error"]["scope"]) == (409, "out_of_stock", "total")
