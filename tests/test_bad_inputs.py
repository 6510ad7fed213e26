"""Inputs that once answered 500: each is a 400 `invalid_request` naming the field, and nothing
changes (no grant moves, no statement or redemption is kept)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.clients import assert_error, grant_view, send, sign
from tests.support.stores import redis_state
from tests.support.vendors import (
    SIM,
    assert_untouched,
    post_signed,
    redemption_rows,
    statement,
    upload,
)


def invalid(status: int, body: Any, field: str) -> None:
    error = assert_error(status, body, 400, "invalid_request")
    assert field in error["fields"], error


# --- grant reads ------------------------------------------------------------------------------


async def test_a_limit_of_5000_digits_is_400_not_500(api):
    path = "/v1/customers/C1/grants?limit=" + "9" * 5000
    before = await redis_state()
    status, body = await send(api, "GET", path, headers=sign(api, "GET", path))
    invalid(status, body, "limit")
    assert await redis_state() == before


@pytest.mark.parametrize("limit", ["", "0", "501", "-1", "1e2", "%D9%A1%D9%A0", "10%20", "0x10"])
async def test_every_other_bad_limit_is_400(api, limit):
    path = f"/v1/customers/C1/grants?limit={limit}"
    status, body = await send(api, "GET", path, headers=sign(api, "GET", path))
    invalid(status, body, "limit")


# --- statements ---------------------------------------------------------------------------


async def _statements(pool: Any) -> int:
    return await pool.fetchval("SELECT count(*) FROM statements")


async def _audited(pool: Any) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'statement.reconcile'"
    )


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01", "1999-12-31"])
async def test_a_statement_for_a_day_out_of_range_is_400_from_staff_and_vendor(
    api, pool, key_pairs, sim, day
):
    text = statement(("X", "", "issued"))
    invalid(*await upload(api, day, text), "day")
    status, body = await post_signed(
        api, f"/v1/vendors/{SIM}/statements?day={day}", text.encode(), key_pairs.vendor_private
    )
    invalid(status, body, "day")
    assert await _statements(pool) == 0
    assert await _audited(pool) == 0


async def test_a_statement_with_a_nul_byte_is_400_from_staff_and_vendor(api, pool, key_pairs, sim):
    day = datetime.now(UTC).date().isoformat()
    raw = b"grant_id,code,status,redeemed_at\nX\x00Y,,issued,\n"
    invalid(*await upload(api, day, raw), "body")
    status, body = await post_signed(
        api, f"/v1/vendors/{SIM}/statements?day={day}", raw, key_pairs.vendor_private
    )
    invalid(status, body, "body")
    assert await _statements(pool) == 0
    assert await _audited(pool) == 0


# --- redemptions --------------------------------------------------------------------------

# Numbers orjson reads (as 0.0 or a float) but PostgreSQL's jsonb cannot keep.
UNSTORABLE_NUMBERS = {
    "20000-fraction-digits": b"0." + b"0" * 20000 + b"1",
    "tiny-exponent": b"1e-20000",
}


@pytest.mark.parametrize("number", UNSTORABLE_NUMBERS.values(), ids=UNSTORABLE_NUMBERS.keys())
async def test_a_redemption_with_a_number_that_cannot_be_stored_is_refused_first(
    api, pool, key_pairs, fulfilled, number
):
    [grant] = await fulfilled()
    gid = grant["grant_id"]
    raw = (
        b'{"redemption_id":"rd-big","grant_id":"'
        + gid.encode()
        + b'","redeemed_at":"'
        + datetime.now(UTC).isoformat(timespec="seconds").encode()
        + b'","amount":'
        + number
        + b"}"
    )
    path = f"/v1/vendors/{SIM}/redemptions"
    for _attempt in range(2):  # the vendor retries: the same answer, still nothing moved
        status, body = await post_signed(api, path, raw, key_pairs.vendor_private)
        invalid(status, body, "amount")
        await assert_untouched(api, pool, gid)

    # A storable redemption of the same grant still goes through afterwards.
    ok = raw.replace(b"rd-big", b"rd-ok").replace(number, b"12.5")
    status, body = await post_signed(api, path, ok, key_pairs.vendor_private)
    assert status == 200, body
    assert (await grant_view(api, gid))["status"] == "redeemed"
    assert [r[1] for r in await redemption_rows(pool)] == ["rd-ok"]


async def test_a_deeply_nested_redemption_is_refused_before_anything_moves(
    api, pool, key_pairs, fulfilled
):
    """Nesting orjson reads (up to 1,024 levels) but that recursive code (masking a card number
    in the stored body) cannot walk: refused first, the grant still fulfilled."""
    [grant] = await fulfilled()
    gid = grant["grant_id"]
    deep = b'{"n":' * 900 + b'"4111111111111111"' + b"}" * 900
    raw = (
        b'{"redemption_id":"rd-deep","grant_id":"'
        + gid.encode()
        + b'","redeemed_at":"'
        + datetime.now(UTC).isoformat(timespec="seconds").encode()
        + b'","extra":'
        + deep
        + b"}"
    )
    for _attempt in range(2):
        status, body = await post_signed(
            api, f"/v1/vendors/{SIM}/redemptions", raw, key_pairs.vendor_private
        )
        invalid(status, body, "body")
        await assert_untouched(api, pool, gid)
