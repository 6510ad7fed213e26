"""Redemption callbacks that fail authentication (no, bad or stale signature, unknown vendor):
a 401 each, and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.clients import assert_error, send
from tests.support.stores import redis_state
from tests.support.vendors import (
    CALLBACK,
    assert_untouched,
    post_signed,
    redemption,
    vendor_headers,
)

pytestmark = pytest.mark.cluster_too

# --- authentication: 401, nothing changes -------------------------------------------------


def _no_headers(raw: bytes, key_pairs: Any, now: int) -> dict[str, str]:
    return {"Content-Type": "application/json"}


def _no_signature(raw: bytes, key_pairs: Any, now: int) -> dict[str, str]:
    headers = vendor_headers(key_pairs.vendor_private, str(now), raw)
    del headers["X-Vendor-Signature"]
    return headers


def _no_timestamp(raw: bytes, key_pairs: Any, now: int) -> dict[str, str]:
    headers = vendor_headers(key_pairs.vendor_private, str(now), raw)
    del headers["X-Vendor-Timestamp"]
    return headers


def _bad_base64(raw: bytes, key_pairs: Any, now: int) -> dict[str, str]:
    return {**vendor_headers(key_pairs.vendor_private, str(now), raw), "X-Vendor-Signature": "%%%"}


def _truncated_signature(raw: bytes, key_pairs: Any, now: int) -> dict[str, str]:
    headers = vendor_headers(key_pairs.vendor_private, str(now), raw)
    headers["X-Vendor-Signature"] = headers["X-Vendor-Signature"][:40]
    return headers


def _another_key(raw: bytes, key_pairs: Any, now: int) -> dict[str, str]:
    return vendor_headers(key_pairs.ours_private, str(now), raw)


def _body_changed(raw: bytes, key_pairs: Any, now: int) -> dict[str, str]:
    # Signed over other bytes than the ones sent (the request carries `raw`).
    return vendor_headers(key_pairs.vendor_private, str(now), raw.replace(b"rd-", b"rx-"))


def _timestamp_changed(raw: bytes, key_pairs: Any, now: int) -> dict[str, str]:
    headers = vendor_headers(key_pairs.vendor_private, str(now), raw)
    headers["X-Vendor-Timestamp"] = str(now - 1)
    return headers


def _stale(raw: bytes, key_pairs: Any, now: int) -> dict[str, str]:
    return vendor_headers(key_pairs.vendor_private, str(now - 301), raw)


def _future(raw: bytes, key_pairs: Any, now: int) -> dict[str, str]:
    return vendor_headers(key_pairs.vendor_private, str(now + 301), raw)


def _timestamp(value: str):
    def headers(raw: bytes, key_pairs: Any, now: int) -> dict[str, str]:
        return vendor_headers(key_pairs.vendor_private, value, raw)

    return headers


AUTH_FAILURES = {
    "no-headers": _no_headers,
    "no-signature": _no_signature,
    "no-timestamp": _no_timestamp,
    "signature-not-base64": _bad_base64,
    "signature-truncated": _truncated_signature,
    "signed-by-another-key": _another_key,
    "body-changed-after-signing": _body_changed,
    "timestamp-changed-after-signing": _timestamp_changed,
    "timestamp-301s-old": _stale,
    "timestamp-301s-ahead": _future,
    "timestamp-not-a-number": _timestamp("yesterday"),
    "timestamp-float": _timestamp("1.7e9"),
    "timestamp-negative": _timestamp("-1"),
    "timestamp-empty": _timestamp(""),
    "timestamp-fullwidth-digits": _timestamp("１７００００００００"),
}


async def test_a_callback_that_fails_authentication_is_401_and_changes_nothing(
    api, pool, key_pairs, fulfilled
):
    [grant] = await fulfilled()
    raw = redemption("rd-bad", grant["grant_id"])
    before = await redis_state()
    problems = []
    for case, make_headers in AUTH_FAILURES.items():
        headers = make_headers(raw, key_pairs, int(api.clock()))
        status, body = await send(api, "POST", CALLBACK, raw, headers=headers)
        if status != 401 or body["error"]["code"] != "unauthorized":
            problems.append((case, status, body))
    assert problems == []
    await assert_untouched(api, pool, grant["grant_id"])
    assert await redis_state() == before
    # The same bytes, properly signed, go through: the refusals were about the signing only.
    status, body = await post_signed(api, CALLBACK, raw, key_pairs.vendor_private)
    assert status == 200, body


@pytest.mark.parametrize("digits", [400, 5000])
async def test_an_absurdly_long_timestamp_is_401_not_500(api, pool, key_pairs, fulfilled, digits):
    [grant] = await fulfilled()
    raw = redemption("rd-long-ts", grant["grant_id"])
    before = await redis_state()
    headers = vendor_headers(key_pairs.vendor_private, "1" * digits, raw)
    status, body = await send(api, "POST", CALLBACK, raw, headers=headers)
    assert_error(status, body, 401, "unauthorized")
    await assert_untouched(api, pool, grant["grant_id"])
    assert await redis_state() == before


async def test_a_callback_for_an_unknown_vendor_is_401(api, pool, key_pairs, fulfilled):
    [grant] = await fulfilled()
    raw = redemption("rd-ghost", grant["grant_id"])
    status, body = await post_signed(
        api, "/v1/vendors/ghost/redemptions", raw, key_pairs.vendor_private
    )
    assert_error(status, body, 401, "unauthorized")
    await assert_untouched(api, pool, grant["grant_id"])
