"""Claims the API cannot read: each bad field is named in a 400 `invalid_request`, an oversized
body is a 413, an unknown route a JSON 404; none changes anything."""

from __future__ import annotations

import orjson
import pytest

from tests.support.clients import CLAIM, assert_only_error, claim_raw, send, sign
from tests.support.stores import ledger_count, redis_state

pytestmark = pytest.mark.usefixtures("signed_in")


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
    error = assert_only_error(status, resp, 400, "invalid_request")
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
    error = assert_only_error(resp.status, orjson.loads(text), 400, "invalid_request")
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
    error = assert_only_error(status, resp, 400, "invalid_request")
    assert set(error["fields"]) == {"body"}
    assert await redis_state() == before


@pytest.mark.parametrize("data", [b"[1, 2]", b"null", b'"q1"', b"42", b"true"])
async def test_body_that_is_not_an_object_is_invalid(api, c1, redis, data):
    before = await redis_state()
    status, resp = await claim_raw(api, data)
    error = assert_only_error(status, resp, 400, "invalid_request")
    assert "body" in error["fields"]
    assert await redis_state() == before


async def test_body_over_the_size_limit_is_413_not_500(api, c1, redis):
    before = await redis_state()
    data = orjson.dumps({**CLAIM, "padding": "x" * 70_000})
    status, resp = await claim_raw(api, data)
    assert_only_error(status, resp, 413, "payload_too_large")
    assert await redis_state() == before


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
    assert_only_error(got, resp, status, code)


@pytest.mark.parametrize("limit", ["%C2%B2", "1.5", "-1", "0", "501", "abc", ""])
async def test_bad_limit_on_customer_grants_is_400_not_500(api, c1, limit):
    path = f"/v1/customers/cust-1/grants?limit={limit}"
    status, resp = await api.channel("GET", path)
    error = assert_only_error(status, resp, 400, "invalid_request")
    assert set(error["fields"]) == {"limit"}
