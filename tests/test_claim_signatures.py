"""Channel signatures on claims: a missing, tampered, stale or non-ASCII signature is a 401 and
changes nothing; the window is 300 s either way on the app's clock."""

from __future__ import annotations

import orjson
import pytest
import yarl

from tests.support.clients import CLAIM, assert_only_error, send, sign
from tests.support.settings import CHANNEL
from tests.support.stores import ledger_count, redis_state

pytestmark = pytest.mark.usefixtures("signed_in")


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
    assert_only_error(status, resp, 401, "unauthorized")
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
    assert_only_error(status, resp, 401, "unauthorized")
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
    assert_only_error(status, resp, 401, "unauthorized")


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
    assert_only_error(status, resp, 401, "unauthorized")
    assert await redis_state() == before


async def test_the_signature_covers_the_path_exactly_as_sent(api, c1):
    """Channels sign the raw path they send, percent-escapes and all."""
    path = "/v1/customers/cust%2D1/grants"
    resp = await api.client.get(yarl.URL(path, encoded=True), headers=sign(api, "GET", path))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["customer_id"] == "cust-1"
