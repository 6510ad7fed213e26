"""The claim API contract: every refusal has its status and error code and changes nothing;
replays come before every other check; Redis trouble is a 503, never a 500."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import yarl
from redis.asyncio import ConnectionPool

from inventory.scripts import lua_source
from ledger.worker import LedgerWorker
from quanyi.appkeys import REDIS
from tests.conftest import CHANNEL
from tests.helpers import audit_rows, closed_port, granted, redis_state, send, sign, sign_in

CLAIM = {"request_id": "q1", "campaign_id": "c1", "customer_id": "cust-1"}


@pytest.fixture(autouse=True)
async def _signed_in(api, pool):
    await sign_in(api, pool)


@pytest.fixture
async def c1(api):
    """Right `coffee` (unit cost 100) and approved campaign c1: reward r1, stock 100, limit 1."""
    await api.create_right()
    return await api.create_campaign()


async def ledger_count(redis, pool, keys) -> int:
    await LedgerWorker(redis, pool, keys).drain()
    return await pool.fetchval("SELECT count(*) FROM grants")


def assert_error(status: int, body: dict, expected_status: int, code: str) -> dict:
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"], body
    return error


async def claim_raw(api, data: bytes) -> tuple[int, dict]:
    return await send(
        api, "POST", "/v1/claims", data, headers=sign(api, "POST", "/v1/claims", data)
    )


# 400 invalid_request


def _bad(case_id: str, body: dict, *fields: str):
    return pytest.param(body, set(fields), id=case_id)


@pytest.mark.parametrize(
    ("body", "bad_fields"),
    [
        _bad("no-request-id", {"campaign_id": "c1", "customer_id": "cust-1"}, "request_id"),
        _bad("no-campaign-id", {"request_id": "q1", "customer_id": "cust-1"}, "campaign_id"),
        _bad("no-customer-id", {"request_id": "q1", "campaign_id": "c1"}, "customer_id"),
        _bad("empty-object", {}, "request_id", "campaign_id", "customer_id"),
        _bad("null-request-id", {**CLAIM, "request_id": None}, "request_id"),
        _bad("empty-request-id", {**CLAIM, "request_id": ""}, "request_id"),
        _bad("space-in-request-id", {**CLAIM, "request_id": "q 1"}, "request_id"),
        _bad("leading-symbol", {**CLAIM, "request_id": "-q1"}, "request_id"),
        _bad("slash-in-request-id", {**CLAIM, "request_id": "q1/../x"}, "request_id"),
        _bad("65-char-request-id", {**CLAIM, "request_id": "q" * 65}, "request_id"),
        _bad("number-request-id", {**CLAIM, "request_id": 12345}, "request_id"),
        _bad("list-request-id", {**CLAIM, "request_id": ["q1"]}, "request_id"),
        _bad("newline-after-request-id", {**CLAIM, "request_id": "q1\n"}, "request_id"),
        _bad("brace-in-campaign-id", {**CLAIM, "campaign_id": "c1}"}, "campaign_id"),
        _bad("newline-after-campaign-id", {**CLAIM, "campaign_id": "c1\n"}, "campaign_id"),
        _bad("pipe-in-customer-id", {**CLAIM, "customer_id": "cust|1"}, "customer_id"),
        _bad("non-ascii-customer-id", {**CLAIM, "customer_id": "客户1"}, "customer_id"),
        _bad("newline-after-customer-id", {**CLAIM, "customer_id": "cust-1\n"}, "customer_id"),
        _bad("space-in-reward-id", {**CLAIM, "reward_id": "r 1"}, "reward_id"),
        _bad("number-reward-id", {**CLAIM, "reward_id": 1}, "reward_id"),
        _bad(
            "all-three-bad",
            {"request_id": "q 1", "campaign_id": "", "customer_id": 7},
            "request_id",
            "campaign_id",
            "customer_id",
        ),
    ],
)
async def test_bad_fields_are_named_and_change_nothing(
    api, c1, redis, pool, keys, body, bad_fields
):
    before = await redis_state()
    status, resp = await api.claim(**body)
    error = assert_error(status, resp, 400, "invalid_request")
    assert set(error["fields"]) == bad_fields
    assert await redis_state() == before
    assert await ledger_count(redis, pool, keys) == 0


@pytest.mark.parametrize(
    "card", ["4111111111111111", "5555555555554444", "4111-1111-1111-1111", "6011000990139424"]
)
async def test_customer_id_that_is_a_card_number_is_refused_and_not_echoed(
    api, c1, redis, pool, keys, card
):
    before = await redis_state()
    data = orjson.dumps({**CLAIM, "customer_id": card})
    resp = await api.client.post(
        "/v1/claims", data=data, headers=sign(api, "POST", "/v1/claims", data)
    )
    text = await resp.text()
    error = assert_error(resp.status, orjson.loads(text), 400, "invalid_request")
    assert set(error["fields"]) == {"customer_id"}
    assert card not in text and card.replace("-", "") not in text
    assert await redis_state() == before
    assert await ledger_count(redis, pool, keys) == 0


async def test_digits_that_fail_the_luhn_check_are_a_valid_customer_id(api, c1):
    status, grant = await api.claim(**{**CLAIM, "customer_id": "4111111111111112"})
    assert status == 201, grant
    assert grant["customer_id"] == "4111111111111112"


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"\xff\xfe\x00", b""],
    ids=["garbage", "not-utf8", "empty"],
)
async def test_body_that_is_not_json_is_invalid_and_names_the_body(api, c1, redis, data):
    before = await redis_state()
    status, resp = await claim_raw(api, data)
    error = assert_error(status, resp, 400, "invalid_request")
    assert set(error["fields"]) == {"body"}
    assert await redis_state() == before


@pytest.mark.parametrize("data", [b"[1, 2]", b"null", b'"q1"', b"42", b"true"])
async def test_body_that_is_not_an_object_is_invalid(api, c1, redis, data):
    before = await redis_state()
    status, resp = await claim_raw(api, data)
    error = assert_error(status, resp, 400, "invalid_request")
    assert "body" in error["fields"]
    assert await redis_state() == before


async def test_body_over_the_size_limit_is_413_not_500(api, c1, redis):
    before = await redis_state()
    data = orjson.dumps({**CLAIM, "padding": "x" * 70_000})
    status, resp = await claim_raw(api, data)
    assert_error(status, resp, 413, "payload_too_large")
    assert await redis_state() == before


# 401 unauthorized


@pytest.mark.parametrize(
    "dropped",
    [
        ("X-Channel-Id",),
        ("X-Timestamp",),
        ("X-Signature",),
        ("X-Channel-Id", "X-Timestamp", "X-Signature"),
    ],
)
async def test_missing_signature_headers_are_unauthorized(api, c1, redis, dropped):
    data = orjson.dumps(CLAIM)
    headers = {k: v for k, v in sign(api, "POST", "/v1/claims", data).items() if k not in dropped}
    before = await redis_state()
    status, resp = await send(api, "POST", "/v1/claims", data, headers=headers)
    assert_error(status, resp, 401, "unauthorized")
    assert await redis_state() == before


P = "/v1/claims"
OTHER_BODY = orjson.dumps({**CLAIM, "customer_id": "cust-2"})

# Each case: (app, signed body) -> (body sent, headers sent).
TAMPERED = {
    "bad-signature": lambda api, d: (d, {**sign(api, "POST", P, d), "X-Signature": "0" * 64}),
    "unknown-channel": lambda api, d: (d, sign(api, "POST", P, d, channel="nope", secret="x")),
    "secret-of-another-channel": lambda api, d: (
        d,
        sign(api, "POST", P, d, channel=CHANNEL, secret="wechat-secret"),
    ),
    "301-s-old": lambda api, d: (d, sign(api, "POST", P, d, ts=int(api.clock()) - 301)),
    "301-s-ahead": lambda api, d: (d, sign(api, "POST", P, d, ts=int(api.clock()) + 301)),
    "an-hour-old": lambda api, d: (d, sign(api, "POST", P, d, ts=int(api.clock()) - 3600)),
    "milliseconds": lambda api, d: (d, sign(api, "POST", P, d, ts=int(api.clock()) * 1000)),
    "timestamp-not-a-number": lambda api, d: (
        d,
        {**sign(api, "POST", P, d), "X-Timestamp": "soon"},
    ),
    "body-changed-after-signing": lambda api, d: (OTHER_BODY, sign(api, "POST", P, d)),
    "signed-for-another-path": lambda api, d: (d, sign(api, "POST", "/v1/grants", d)),
    "signed-with-a-query": lambda api, d: (d, sign(api, "POST", P + "?x=1", d)),
    "signed-for-another-method": lambda api, d: (d, sign(api, "PUT", P, d)),
}


@pytest.mark.parametrize("case", TAMPERED)
async def test_bad_signatures_are_unauthorized_and_change_nothing(api, c1, redis, pool, keys, case):
    data, headers = TAMPERED[case](api, orjson.dumps(CLAIM))
    before = await redis_state()
    status, resp = await send(api, "POST", P, data, headers=headers)
    assert_error(status, resp, 401, "unauthorized")
    assert await redis_state() == before
    assert await ledger_count(redis, pool, keys) == 0


@pytest.mark.parametrize("offset", [-300, 300])
async def test_timestamp_exactly_300_s_off_is_still_accepted(api, c1, offset):
    api.clock.now = float(int(api.clock.now))
    data = orjson.dumps(CLAIM)
    headers = sign(api, "POST", "/v1/claims", data, ts=int(api.clock()) + offset)
    status, resp = await send(api, "POST", "/v1/claims", data, headers=headers)
    assert status == 201, resp


async def test_signature_window_follows_the_app_clock(api, c1):
    """A request signed at the app's "now" is refused once the app's clock moved on 301 s."""
    data = orjson.dumps(CLAIM)
    headers = sign(api, "POST", "/v1/claims", data)
    api.clock.advance(301)
    status, resp = await send(api, "POST", "/v1/claims", data, headers=headers)
    assert_error(status, resp, 401, "unauthorized")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Timestamp", "\u00b2"),
        ("X-Timestamp", "\u00b9\u00b2\u00b3"),
        ("X-Signature", "\u00e9" * 64),
        ("X-Channel-Id", "\u00e9"),
    ],
    ids=[
        "superscript-two-timestamp",
        "superscript-digits-timestamp",
        "latin1-signature",
        "latin1-channel",
    ],
)
async def test_non_ascii_signature_headers_are_unauthorized_not_500(api, c1, redis, header, value):
    data = orjson.dumps(CLAIM)
    headers = {**sign(api, "POST", "/v1/claims", data), header: value}
    before = await redis_state()
    status, resp = await send(api, "POST", "/v1/claims", data, headers=headers)
    assert_error(status, resp, 401, "unauthorized")
    assert await redis_state() == before


# 403 channel_not_allowed


async def test_channel_not_in_the_campaign_is_refused(api, c1, redis, pool, keys):
    before = await redis_state()
    status, resp = await api.channel(
        "POST", "/v1/claims", CLAIM, channel="wechat", secret="wechat-secret"
    )
    assert_error(status, resp, 403, "channel_not_allowed")
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
    assert_error(status, resp, 404, "campaign_not_found")
    assert await redis_state() == before
    assert await ledger_count(redis, pool, keys) == 0


async def test_unknown_reward(api, c1, redis, pool, keys):
    before = await redis_state()
    status, resp = await api.claim(**CLAIM, reward_id="r2")
    assert_error(status, resp, 404, "reward_not_found")
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
    assert_error(status, resp, 404, "reward_not_found")
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
    error = assert_error(status, resp, 409, "campaign_not_active")
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
    error = assert_error(status, resp, 409, "out_of_stock")
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
    error = assert_error(status, resp, 409, "out_of_stock")
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
    error = assert_error(status, resp, 409, "limit_reached")
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
    error = assert_error(status, resp, 409, "limit_reached")
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
    assert_error(status, resp, 409, "budget_exhausted")
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
    assert_error(status, resp, 409, "idempotency_conflict")
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


# the script cache


async def test_claims_survive_a_script_cache_flush(api, c1, redis, keys):
    sha = hashlib.sha1(lua_source("claim").encode()).hexdigest()
    status, first = await api.claim(**CLAIM)
    assert status == 201
    assert await redis.script_exists(sha) == [True]
    await redis.script_flush()
    assert await redis.script_exists(sha) == [False]
    status, second = await api.claim(**{**CLAIM, "request_id": "q2", "customer_id": "cust-2"})
    assert status == 201, second
    await redis.script_flush()
    status, again = await api.claim(**CLAIM)
    assert (status, again["grant_id"]) == (200, first["grant_id"])
    await redis.script_flush()
    status, resp = await api.claim(**{**CLAIM, "request_id": "q3"})
    assert (status, resp["error"]["code"]) == (409, "limit_reached")
    assert await granted(redis, keys) == 2
    assert await redis.script_exists(sha) == [True]


# Redis unreachable


async def test_redis_unreachable_is_503_and_service_recovers(api, c1, redis, pool, keys):
    await api.create_campaign("c2")
    status, first = await api.claim(**CLAIM)  # c1's definition is now cached by the app
    assert status == 201
    # Point the app's Redis client at a port nothing listens on, then put it back.
    app_redis = api.client.server.app[REDIS]
    reachable = app_redis.connection_pool
    app_redis.connection_pool = ConnectionPool.from_url(
        f"redis://127.0.0.1:{closed_port()}/9", socket_connect_timeout=2
    )
    try:
        status, resp = await api.claim(**{**CLAIM, "request_id": "q2", "customer_id": "cust-2"})
        assert_error(status, resp, 503, "unavailable")
        status, resp = await api.claim(**{**CLAIM, "request_id": "q3", "campaign_id": "c2"})
        assert_error(status, resp, 503, "unavailable")
        status, resp = await api.channel("GET", f"/v1/grants/{first['grant_id']}")
        assert_error(status, resp, 503, "unavailable")
        status, resp = await api.channel("GET", "/v1/customers/cust-1/grants")
        assert_error(status, resp, 503, "unavailable")
        status, resp = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
        assert_error(status, resp, 503, "unavailable")
        # A change Redis did not take is rolled back in PostgreSQL.
        status, resp = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/pause")
        assert_error(status, resp, 503, "unavailable")
        assert await pool.fetchval("SELECT status FROM campaigns WHERE id = 'c1'") == "approved"
        assert [r[2] for r in await audit_rows(pool, "campaign:c1")] == [
            "campaign.create",
            "campaign.submit",
            "campaign.approve",
        ]
    finally:
        unreachable, app_redis.connection_pool = app_redis.connection_pool, reachable
        await unreachable.aclose()
    assert await granted(redis, keys, "c1") == 1
    assert await granted(redis, keys, "c2") == 0
    status, second = await api.claim(**{**CLAIM, "request_id": "q2", "customer_id": "cust-2"})
    assert status == 201, second
    status, _ = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/pause")
    assert status == 200
    assert await ledger_count(redis, pool, keys) == 2


# routing


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/", 404, "not_found"),
        ("GET", "/v1/nope", 404, "not_found"),
        ("POST", "/v1/claims/extra", 404, "not_found"),
        ("POST", "/admin/v1/campaigns/c1/launch", 404, "not_found"),
        ("GET", "/v1/claims", 405, "method_not_allowed"),
        ("DELETE", "/v1/grants/01ARZ3NDEKTSV4RRFFQ69G5FAV", 405, "method_not_allowed"),
    ],
)
async def test_unknown_routes_answer_json_errors(api, method, path, status, code):
    got, resp = await send(api, method, path)
    assert_error(got, resp, status, code)


@pytest.mark.parametrize("limit", ["%C2%B2", "1.5", "-1", "0", "501", "abc", ""])
async def test_bad_limit_on_customer_grants_is_400_not_500(api, c1, limit):
    path = f"/v1/customers/cust-1/grants?limit={limit}"
    status, resp = await api.channel("GET", path)
    error = assert_error(status, resp, 400, "invalid_request")
    assert set(error["fields"]) == {"limit"}


async def test_the_signature_covers_the_path_exactly_as_sent(api, c1):
    """Channels sign the raw path they send, percent-escapes and all."""
    path = "/v1/customers/cust%2D1/grants"
    resp = await api.client.get(yarl.URL(path, encoded=True), headers=sign(api, "GET", path))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["customer_id"] == "cust-1"
