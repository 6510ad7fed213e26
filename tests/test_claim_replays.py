"""Replays come before every other check: the same request answers the same grant, another body
under the same request id is a conflict, a refused request id is not burnt."""

from __future__ import annotations

import pytest

from tests.support.clients import CLAIM, assert_only_error
from tests.support.settings import CHANNEL
from tests.support.stores import granted, ledger_count, redis_state

pytestmark = pytest.mark.usefixtures("signed_in")


# replays and idempotency


async def test_replay_comes_before_the_campaign_state(api, c1, redis):
    status, grant = await api.claim(**CLAIM)
    assert status == 201
    status, _ = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/pause")
    assert status == 200
    before = await redis_state()
    status, again = await api.claim(**CLAIM)
    assert status == 200, again
    assert again == {**grant, "replayed": True}
    assert await redis_state() == before
    status, resp = await api.claim(**{**CLAIM, "request_id": "q2", "customer_id": "cust-2"})
    assert (status, resp["error"]["code"]) == (409, "campaign_not_active")


async def test_replay_after_the_campaign_ended_and_sold_out(api, redis):
    await api.create_right()
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 1, "per_customer_limit": 1}]
    )
    status, grant = await api.claim(**CLAIM)
    assert status == 201
    status, again = await api.claim(**CLAIM)
    assert (status, again["grant_id"]) == (200, grant["grant_id"])
    status, _ = await api.admin("approver", "POST", "/admin/v1/campaigns/c1/end")
    assert status == 200
    status, again = await api.claim(**CLAIM)
    assert (status, again) == (200, {**grant, "replayed": True})


@pytest.mark.parametrize(
    "change",
    [
        {"customer_id": "cust-2"},
        {"campaign_id": "c2"},
        {"reward_id": "r2"},
        {"campaign_id": "no-such-campaign"},
        {"reward_id": "no-such-reward"},
    ],
    ids=["customer", "other-campaign", "other-reward", "unknown-campaign", "unknown-reward"],
)
async def test_replay_with_another_body_is_a_conflict_and_changes_nothing(
    api, redis, pool, keys, change
):
    """Idempotency comes first: a used request id with another body is a conflict, whatever
    the new body names."""
    await api.create_right()
    rewards = [
        {"id": "r1", "right_id": "coffee", "stock": 10, "per_customer_limit": 1},
        {"id": "r2", "right_id": "coffee", "stock": 10, "per_customer_limit": 1},
    ]
    await api.create_campaign("c1", rewards)
    await api.create_campaign("c2", rewards)
    status, grant = await api.claim(**CLAIM, reward_id="r1")
    assert status == 201
    before = await redis_state()
    status, resp = await api.claim(**{**CLAIM, "reward_id": "r1", **change})
    assert_only_error(status, resp, 409, "idempotency_conflict")
    assert await redis_state() == before
    status, again = await api.claim(**CLAIM, reward_id="r1")
    assert (status, again["grant_id"]) == (200, grant["grant_id"])
    assert await ledger_count(redis, pool, keys) == 1


async def test_refused_request_id_is_not_burnt(api, c1):
    """A refused claim records nothing, so its request id can be used again once it can succeed."""
    status, _ = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/pause")
    assert status == 200
    status, resp = await api.claim(**CLAIM)
    assert (status, resp["error"]["code"]) == (409, "campaign_not_active")
    status, _ = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/resume")
    assert status == 200
    status, grant = await api.claim(**CLAIM)
    assert status == 201, grant
    assert grant["replayed"] is False


async def test_same_request_id_from_another_channel_is_another_request(api, redis, pool, keys):
    await api.create_right()
    await api.create_campaign(
        channels=[CHANNEL, "wechat"],
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 10, "per_customer_limit": 3}],
    )
    wechat = {"channel": "wechat", "secret": "wechat-secret"}
    status, from_app = await api.claim(**CLAIM)
    assert status == 201
    status, from_wechat = await api.channel("POST", "/v1/claims", CLAIM, **wechat)
    assert status == 201, from_wechat
    assert from_wechat["grant_id"] != from_app["grant_id"]
    assert (from_wechat["channel_id"], from_wechat["replayed"]) == ("wechat", False)
    other_body = {**CLAIM, "request_id": "q2", "customer_id": "cust-2"}
    status, _ = await api.claim(**other_body)
    assert status == 201
    status, resp = await api.channel(
        "POST", "/v1/claims", {**other_body, "customer_id": "cust-3"}, **wechat
    )
    assert status == 201, resp
    status, again = await api.claim(**CLAIM)
    assert (status, again["grant_id"]) == (200, from_app["grant_id"])
    status, again = await api.channel("POST", "/v1/claims", CLAIM, **wechat)
    assert (status, again["grant_id"]) == (200, from_wechat["grant_id"])
    assert await granted(redis, keys) == 4
    assert await ledger_count(redis, pool, keys) == 4
