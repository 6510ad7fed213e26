"""Signed redemption callbacks from vendors, and reconciling their daily statements.

Grants are fulfilled at a simulated vendor (a real HTTP server) by a fulfilment worker run in
process; callbacks are signed with the vendor's RSA key exactly as a vendor signs them."""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from ledger.worker import LedgerWorker
from quanyi.ids import new_grant_id
from tests.conftest import register_vendor, sim_stats
from tests.helpers import SHANGHAI, audit_rows, redis_state, send, sign_in
from tests.test_fulfilment import running, until
from vendors import rsa
from vendors.fulfil import FulfilmentWorker

SIM = "sim"
CALLBACK = f"/v1/vendors/{SIM}/redemptions"


# --- helpers ------------------------------------------------------------------------------


@functools.cache
def _key(pem: str) -> rsa.RsaKey:
    return rsa.load_key(pem)


def vendor_headers(private_pem: str, timestamp: str, raw: bytes, **extra: str) -> dict[str, str]:
    return {
        "X-Vendor-Timestamp": timestamp,
        "X-Vendor-Signature": rsa.sign(_key(private_pem), timestamp, raw),
        "Content-Type": "application/json",
        **extra,
    }


async def post_signed(
    api: Any,
    path: str,
    raw: bytes,
    private_pem: str,
    *,
    ts: int | None = None,
) -> tuple[int, Any]:
    """POSTs these bytes signed by `private_pem` at `ts` (default: the app clock)."""
    timestamp = str(int(api.clock()) if ts is None else ts)
    return await send(api, "POST", path, raw, headers=vendor_headers(private_pem, timestamp, raw))


def redemption(
    redemption_id: str, grant_id: str | None = None, *, code: str | None = None
) -> bytes:
    body: dict[str, Any] = {
        "redemption_id": redemption_id,
        "redeemed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if grant_id is not None:
        body["grant_id"] = grant_id
    if code is not None:
        body["code"] = code
    return orjson.dumps(body)


async def redeem(
    api: Any,
    key_pairs: Any,
    redemption_id: str,
    grant_id: str | None = None,
    *,
    code: str | None = None,
    vendor_id: str = SIM,
    private_pem: str | None = None,
) -> tuple[int, Any]:
    raw = redemption(redemption_id, grant_id, code=code)
    return await post_signed(
        api,
        f"/v1/vendors/{vendor_id}/redemptions",
        raw,
        private_pem or key_pairs.vendor_private,
    )


def assert_error(status: int, body: Any, expected_status: int, code: str) -> dict[str, Any]:
    assert status == expected_status, body
    assert body["error"]["code"] == code, body
    return body["error"]


async def grant_view(api: Any, grant_id: str) -> dict[str, Any]:
    status, grant = await api.channel("GET", f"/v1/grants/{grant_id}")
    assert status == 200, grant
    return grant


async def redemption_rows(pool: Any) -> list[tuple[Any, ...]]:
    rows = await pool.fetch(
        "SELECT vendor_id, redemption_id, grant_id, code, outcome, reason FROM redemptions"
        " ORDER BY received_at, redemption_id"
    )
    return [tuple(r) for r in rows]


async def redeemed_events(redis: Any, pool: Any, keys: Any, grant_id: str) -> int:
    await LedgerWorker(redis, pool, keys).drain()
    return await pool.fetchval(
        "SELECT count(*) FROM grant_events WHERE grant_id = $1 AND event = 'redeemed'", grant_id
    )


async def assert_untouched(api: Any, pool: Any, grant_id: str) -> None:
    """The grant is still fulfilled with nothing after it, and no callback was kept."""
    grant = await grant_view(api, grant_id)
    assert grant["status"] == "fulfilled", grant
    assert [e["event"] for e in grant["timeline"]] == ["granted", "fulfilled"]
    assert await redemption_rows(pool) == []


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def make_worker(redis, pool, keys, settings, clock):
    def make() -> FulfilmentWorker:
        return FulfilmentWorker(
            redis, pool, keys, settings, clock, block_ms=20, breaker_reset_s=0.5
        )

    return make


@pytest.fixture
async def sim(api, pool, start_sim, key_pairs, our_key_file) -> str:
    """Vendor `sim` (a running simulator) fulfils right `lounge` of approved campaign c1."""
    await sign_in(api, pool)
    base_url = await start_sim()
    await register_vendor(api, SIM, base_url, key_pairs, our_key_file)
    await api.create_right("lounge", vendor_id=SIM)
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "lounge", "stock": 50, "per_customer_limit": 1}]
    )
    return base_url


@pytest.fixture
def fulfilled(api, redis, pool, keys, make_worker, sim):
    """Claims `n` grants for new customers, fulfils them at the vendor and persists them."""
    made = 0

    async def fulfil(n: int = 1) -> list[dict[str, Any]]:
        nonlocal made
        ids = []
        for _ in range(n):
            made += 1
            status, grant = await api.claim(
                request_id=f"q{made}", campaign_id="c1", customer_id=f"cust-{made}"
            )
            assert status == 201, grant
            ids.append(grant["grant_id"])
        async with running(make_worker()):

            async def all_fulfilled() -> bool:
                views = [await grant_view(api, g) for g in ids]
                return all(v["status"] == "fulfilled" for v in views)

            await until(all_fulfilled, what="fulfilment")
        await LedgerWorker(redis, pool, keys).drain()
        grants = [await grant_view(api, g) for g in ids]
        assert all(g["persisted"] and g["vendor_id"] == SIM and g["code"] for g in grants)
        return grants

    return fulfil


# --- the happy paths ----------------------------------------------------------------------


async def test_a_signed_callback_by_grant_id_redeems_the_grant(
    api, redis, pool, keys, key_pairs, fulfilled
):
    [grant] = await fulfilled()
    gid = grant["grant_id"]

    status, body = await redeem(api, key_pairs, "rd-1", gid)
    assert status == 200, body
    assert body == {
        "redemption_id": "rd-1",
        "grant_id": gid,
        "status": "redeemed",
        "replayed": False,
    }

    seen = await grant_view(api, gid)
    assert seen["status"] == "redeemed"
    assert [e["event"] for e in seen["timeline"]] == ["granted", "fulfilled", "redeemed"]
    assert seen["timeline"][-1]["actor"] == f"vendor:{SIM}"
    assert seen["timeline"][-1]["detail"]["redemption_id"] == "rd-1"
    assert await redemption_rows(pool) == [(SIM, "rd-1", gid, None, "applied", None)]

    assert await redeemed_events(redis, pool, keys, gid) == 1
    assert await pool.fetchval("SELECT status FROM grants WHERE grant_id = $1", gid) == "redeemed"

    # A redeemed grant is used: nobody can take it back any more.
    status, body = await api.channel("POST", f"/v1/grants/{gid}/revoke", {"reason": "late"})
    assert_error(status, body, 409, "grant_not_live")
    assert (await grant_view(api, gid))["status"] == "redeemed"


async def test_a_signed_callback_by_code_redeems_the_grant(
    api, redis, pool, keys, key_pairs, fulfilled
):
    [grant] = await fulfilled()  # persisted: the code is looked up in the ledger
    gid, code = grant["grant_id"], grant["code"]

    status, body = await redeem(api, key_pairs, "rd-code", code=code)
    assert status == 200, body
    assert body["grant_id"] == gid and body["status"] == "redeemed"
    assert (await grant_view(api, gid))["status"] == "redeemed"
    assert await redemption_rows(pool) == [(SIM, "rd-code", gid, code, "applied", None)]
    assert await redeemed_events(redis, pool, keys, gid) == 1


async def test_the_simulators_own_redeem_call_is_accepted(api, redis, pool, keys, sim, fulfilled):
    [grant] = await fulfilled()
    gid = grant["grant_id"]
    callback_url = str(api.client.make_url(CALLBACK))

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim}/_sim/redeem",
            json={"callback_url": callback_url, "grant_id": gid, "redemption_id": "sim-rd-1"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        reply = await resp.json()
    assert reply["status"] == 200, reply
    assert reply["body"]["grant_id"] == gid and reply["body"]["status"] == "redeemed"
    assert reply["sent"]["redemption_id"] == "sim-rd-1"

    assert (await grant_view(api, gid))["status"] == "redeemed"
    assert await redemption_rows(pool) == [(SIM, "sim-rd-1", gid, None, "applied", None)]
    assert await redeemed_events(redis, pool, keys, gid) == 1


# --- idempotency --------------------------------------------------------------------------


async def test_a_repeated_callback_is_answered_again_and_changes_nothing(
    api, redis, pool, keys, key_pairs, fulfilled
):
    [grant] = await fulfilled()
    gid = grant["grant_id"]
    raw = redemption("rd-dup", gid)

    status, first = await post_signed(api, CALLBACK, raw, key_pairs.vendor_private)
    assert status == 200 and first["replayed"] is False, first
    timeline = (await grant_view(api, gid))["timeline"]

    # The vendor retries the same callback (same bytes), then again later with a new signature.
    status, again = await post_signed(api, CALLBACK, raw, key_pairs.vendor_private)
    assert status == 200, again
    assert again == {**first, "replayed": True}
    api.clock.advance(60)
    status, later = await post_signed(api, CALLBACK, raw, key_pairs.vendor_private)
    assert status == 200 and later["replayed"] is True, later

    assert (await grant_view(api, gid))["timeline"] == timeline
    assert await redemption_rows(pool) == [(SIM, "rd-dup", gid, None, "applied", None)]
    assert await redeemed_events(redis, pool, keys, gid) == 1


async def test_the_same_callback_arriving_twice_at_once_redeems_once(
    api, redis, pool, keys, key_pairs, fulfilled
):
    [grant] = await fulfilled()
    gid = grant["grant_id"]
    raw = redemption("rd-race", gid)
    replies = await asyncio.gather(
        *(post_signed(api, CALLBACK, raw, key_pairs.vendor_private) for _ in range(4))
    )
    assert [status for status, _ in replies] == [200] * 4, replies
    assert sorted(body["replayed"] for _, body in replies) == [False, True, True, True]
    assert await redemption_rows(pool) == [(SIM, "rd-race", gid, None, "applied", None)]
    assert await redeemed_events(redis, pool, keys, gid) == 1


async def test_a_second_redemption_of_a_redeemed_grant_is_refused(
    api, redis, pool, keys, key_pairs, fulfilled
):
    [grant] = await fulfilled()
    gid = grant["grant_id"]
    status, body = await redeem(api, key_pairs, "rd-first", gid)
    assert status == 200, body

    # Another redemption (another shop, another day) of the same voucher: a used voucher.
    status, body = await redeem(api, key_pairs, "rd-second", gid)
    error = assert_error(status, body, 409, "grant_not_redeemable")
    assert error["redemption_id"] == "rd-second" and error["grant_id"] == gid

    rows = await redemption_rows(pool)
    assert rows[0] == (SIM, "rd-first", gid, None, "applied", None)
    assert rows[1][:5] == (SIM, "rd-second", gid, None, "refused")
    assert len(rows) == 2
    assert await redeemed_events(redis, pool, keys, gid) == 1


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


# --- key rotation -------------------------------------------------------------------------


async def test_both_keys_verify_during_a_rotation_and_only_the_new_one_after(
    api, pool, key_pairs, fulfilled
):
    g1, g2, g3, g4 = [g["grant_id"] for g in await fulfilled(4)]
    path = f"/admin/v1/vendors/{SIM}"

    status, vendor = await api.admin(
        "admin", "PATCH", path, {"public_keys": [key_pairs.vendor_public, key_pairs.rotated_public]}
    )
    assert status == 200, vendor
    assert vendor["public_keys"] == [key_pairs.vendor_public, key_pairs.rotated_public]

    status, body = await redeem(api, key_pairs, "rot-old", g1)
    assert status == 200, body
    status, body = await redeem(
        api, key_pairs, "rot-new", g2, private_pem=key_pairs.rotated_private
    )
    assert status == 200, body

    status, vendor = await api.admin(
        "admin", "PATCH", path, {"public_keys": [key_pairs.rotated_public]}
    )
    assert status == 200, vendor
    assert vendor["public_keys"] == [key_pairs.rotated_public]

    status, body = await redeem(api, key_pairs, "rot-retired", g3)
    assert_error(status, body, 401, "unauthorized")
    assert (await grant_view(api, g3))["status"] == "fulfilled"
    status, body = await redeem(
        api, key_pairs, "rot-only", g4, private_pem=key_pairs.rotated_private
    )
    assert status == 200, body

    assert {r[1] for r in await redemption_rows(pool)} == {"rot-old", "rot-new", "rot-only"}


# --- refusals -----------------------------------------------------------------------------


async def test_a_grant_of_another_vendor_is_403_and_changes_nothing(
    api, pool, key_pairs, sim, fulfilled
):
    [grant] = await fulfilled()
    body = {
        "id": "other",
        "name": "another vendor",
        "adapter": "simulated",
        "base_url": sim,
        "public_keys": [key_pairs.rotated_public],
    }
    status, vendor = await api.admin("admin", "POST", "/admin/v1/vendors", body)
    assert status == 201, vendor

    status, reply = await redeem(
        api,
        key_pairs,
        "rd-other",
        grant["grant_id"],
        vendor_id="other",
        private_pem=key_pairs.rotated_private,
    )
    assert_error(status, reply, 403, "forbidden")
    await assert_untouched(api, pool, grant["grant_id"])

    # Its code is not the other vendor's either.
    status, reply = await redeem(
        api,
        key_pairs,
        "rd-other-code",
        code=grant["code"],
        vendor_id="other",
        private_pem=key_pairs.rotated_private,
    )
    assert status == 409, reply
    assert (await grant_view(api, grant["grant_id"]))["status"] == "fulfilled"


async def test_a_revoked_grant_is_not_redeemable_and_the_refusal_is_kept(
    api, redis, pool, keys, key_pairs, fulfilled
):
    [grant] = await fulfilled()
    gid = grant["grant_id"]
    status, revoked = await api.channel("POST", f"/v1/grants/{gid}/revoke", {"reason": "fraud"})
    assert status == 200 and revoked["status"] == "revoked", revoked

    status, body = await redeem(api, key_pairs, "rd-revoked", gid)
    error = assert_error(status, body, 409, "grant_not_redeemable")
    assert error["grant_id"] == gid and error["redemption_id"] == "rd-revoked"
    assert (await grant_view(api, gid))["status"] == "revoked"
    [row] = await redemption_rows(pool)
    assert row[:5] == (SIM, "rd-revoked", gid, None, "refused")
    assert "revoked" in row[5]

    # Retried: the same refusal, still one row.
    status, body = await redeem(api, key_pairs, "rd-revoked", gid)
    assert_error(status, body, 409, "grant_not_redeemable")
    assert len(await redemption_rows(pool)) == 1
    assert await redeemed_events(redis, pool, keys, gid) == 0


async def sim_grant(base_url: str, key_pairs: Any, grant_id: str) -> dict[str, Any]:
    """The grant as the simulated vendor has it (GET /grants/{id}, signed with our key)."""
    timestamp = str(int(time.time()))
    headers = {
        "X-Quanyi-Timestamp": timestamp,
        "X-Quanyi-Signature": rsa.sign(_key(key_pairs.ours_private), timestamp, b""),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url}/grants/{grant_id}", headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_a_fulfilled_grant_revoked_by_staff_is_revoked_at_the_vendor_too(
    api, key_pairs, sim, fulfilled, make_worker
):
    [grant] = await fulfilled()
    gid = grant["grant_id"]
    assert (await sim_grant(sim, key_pairs, gid))["state"] == "issued"
    status, body = await api.admin(
        "marketer", "POST", f"/admin/v1/grants/{gid}/revoke", {"reason": "fraud"}
    )
    assert status == 200 and body["status"] == "revoked", body

    async with running(make_worker()):

        async def revoked_at_the_vendor() -> bool:
            return (await sim_grant(sim, key_pairs, gid))["state"] == "revoked"

        await until(revoked_at_the_vendor, timeout=10, what="the revoke at the vendor")


async def test_a_grant_revoked_while_the_vendor_issued_it_is_409_not_403(
    api, pool, key_pairs, sim, make_worker
):
    """Revoked before its fulfilment was recorded: the vendor may still have handed out a code
    and call back. It is this vendor's grant (its right is fulfilled there): a refusal to keep."""
    status, grant = await api.claim(request_id="q-early", campaign_id="c1", customer_id="cust-e")
    assert status == 201, grant
    gid = grant["grant_id"]
    status, body = await api.channel("POST", f"/v1/grants/{gid}/revoke", {"reason": "oops"})
    assert status == 200 and body["status"] == "revoked", body
    async with running(make_worker()):

        async def issued_at_the_vendor() -> bool:
            return gid in (await sim_stats(sim))["effects"]

        await until(issued_at_the_vendor, what="the vendor issuing the revoked grant")
    assert (await grant_view(api, gid))["status"] == "revoked"

    status, body = await redeem(api, key_pairs, "rd-early", gid)
    assert_error(status, body, 409, "grant_not_redeemable")
    [row] = await redemption_rows(pool)
    assert row[:5] == (SIM, "rd-early", gid, None, "refused")


async def test_an_expired_grant_is_not_redeemable_and_the_refusal_is_kept(
    api, pool, key_pairs, fulfilled, make_worker
):
    [grant] = await fulfilled()
    gid = grant["grant_id"]
    api.clock.advance(31 * 86400)  # past the voucher's validity (30 days at the simulator)
    assert await make_worker().expire_due() == 1
    assert (await grant_view(api, gid))["status"] == "expired"

    status, body = await redeem(api, key_pairs, "rd-expired", gid)
    assert_error(status, body, 409, "grant_not_redeemable")
    assert (await grant_view(api, gid))["status"] == "expired"
    [row] = await redemption_rows(pool)
    assert row[:5] == (SIM, "rd-expired", gid, None, "refused")
    assert "expired" in row[5]


async def test_an_unknown_grant_or_code_is_409_grant_unknown_and_kept(api, pool, key_pairs, sim):
    unknown = new_grant_id(int(api.clock() * 1000))

    status, body = await redeem(api, key_pairs, "rd-unknown", unknown)
    error = assert_error(status, body, 409, "grant_unknown")
    assert error["grant_id"] == unknown

    status, body = await redeem(api, key_pairs, "rd-unknown-code", code="SIM-NOSUCHCODE")
    assert_error(status, body, 409, "grant_unknown")

    # Not even shaped like a grant id: unknown as well, never a 500.
    status, body = await redeem(api, key_pairs, "rd-not-an-id", "not-a-grant-id")
    assert_error(status, body, 409, "grant_unknown")

    assert await redemption_rows(pool) == [
        (SIM, "rd-unknown", unknown, None, "refused", "unknown grant"),
        (SIM, "rd-unknown-code", None, "SIM-NOSUCHCODE", "refused", "unknown grant"),
        (SIM, "rd-not-an-id", "not-a-grant-id", None, "refused", "unknown grant"),
    ]


# --- garbage, signed ----------------------------------------------------------------------

NOW = "2026-01-01T08:00:00+08:00"


GARBAGE = {
    "empty": b"",
    "not-json": b"not json",
    "truncated-json": b'{"redemption_id": "r1",',
    "not-utf8": b"\xff\xfe{}",
    "array": b"[]",
    "array-of-object": b'[{"redemption_id": "r1"}]',
    "string": b'"text"',
    "null": b"null",
    "number": b"42",
    "empty-object": b"{}",
    "no-redemption-id": {"grant_id": "X", "redeemed_at": NOW},
    "no-grant-or-code": {"redemption_id": "r1", "redeemed_at": NOW},
    "no-redeemed-at": {"redemption_id": "r1", "code": "C1"},
    "redeemed-at-without-offset": {
        "redemption_id": "r1",
        "code": "C1",
        "redeemed_at": "2026-01-01T08:00:00",
    },
    "redeemed-at-not-a-time": {"redemption_id": "r1", "code": "C1", "redeemed_at": "soon"},
    "redeemed-at-number": {"redemption_id": "r1", "code": "C1", "redeemed_at": 1767225600},
    "redemption-id-with-space": {"redemption_id": "r 1", "code": "C1", "redeemed_at": NOW},
    "redemption-id-number": {"redemption_id": 7, "code": "C1", "redeemed_at": NOW},
    "redemption-id-too-long": {"redemption_id": "r" * 65, "code": "C1", "redeemed_at": NOW},
    "grant-id-number": {"redemption_id": "r1", "grant_id": 7, "redeemed_at": NOW},
    "grant-id-empty": {"redemption_id": "r1", "grant_id": "", "redeemed_at": NOW},
    "code-list": {"redemption_id": "r1", "code": ["C1"], "redeemed_at": NOW},
    "code-with-nul": {"redemption_id": "r1", "code": "C\x001", "redeemed_at": NOW},
}


async def test_a_signed_garbage_body_is_400_never_500(api, pool, key_pairs, sim):
    problems = []
    for case, garbage in GARBAGE.items():
        raw = garbage if isinstance(garbage, bytes) else orjson.dumps(garbage)
        status, body = await post_signed(api, CALLBACK, raw, key_pairs.vendor_private)
        if status != 400 or body["error"]["code"] != "invalid_request":
            problems.append((case, status, body))
    assert problems == []
    assert await redemption_rows(pool) == []


async def test_an_odd_but_valid_body_never_answers_500(api, pool, key_pairs, fulfilled):
    """Extra fields are the vendor's business; one PostgreSQL cannot store as jsonb (a NUL
    character) must still get a clean answer, and the grant and the kept callback agree."""
    [grant] = await fulfilled()
    gid = grant["grant_id"]
    raw = orjson.dumps(
        {
            "redemption_id": "rd-nul",
            "grant_id": gid,
            "redeemed_at": NOW,
            "store": "shop\u0000 42",
        }
    )
    applied = [(SIM, "rd-nul", gid, None, "applied", None)]
    for _attempt in ("first", "retry"):  # a vendor retries until it gets an answer
        status, body = await post_signed(api, CALLBACK, raw, key_pairs.vendor_private)
        outcome = (status, (await grant_view(api, gid))["status"], await redemption_rows(pool))
        # Either kept and applied, or refused as a bad request with nothing changed.
        assert outcome in ((200, "redeemed", applied), (400, "fulfilled", [])), (outcome, body)


# --- statements ---------------------------------------------------------------------------


def statement(*rows: tuple[str, str, str]) -> str:
    lines = ["grant_id,code,status,redeemed_at"]
    lines += [f"{gid},{code},{status}," for gid, code, status in rows]
    return "\n".join(lines) + "\n"


async def upload(api: Any, day: str, text: str | bytes, vendor_id: str = SIM) -> tuple[int, Any]:
    token = await api.login("approver")
    resp = await api.client.post(
        f"/admin/v1/vendors/{vendor_id}/statements",
        params={"day": day},
        data=text.encode() if isinstance(text, str) else text,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    return resp.status, await resp.json()


@pytest.fixture
async def a_day_at_the_vendor(api, redis, pool, keys, key_pairs, fulfilled):
    """Five grants of today at `sim`: g1 redeemed, g2..g5 fulfilled, then g4 revoked; the
    ledger has it all. Returns (local day, grants)."""
    grants = await fulfilled(5)
    g1, _g2, _g3, g4, _g5 = (g["grant_id"] for g in grants)
    status, body = await redeem(api, key_pairs, "st-rd-1", g1)
    assert status == 200, body
    status, body = await api.channel("POST", f"/v1/grants/{g4}/revoke", {"reason": "closed"})
    assert status == 200, body
    await LedgerWorker(redis, pool, keys).drain()
    statuses = dict(await pool.fetch("SELECT grant_id, status FROM grants"))
    assert sorted(statuses.values()) == [
        "fulfilled",
        "fulfilled",
        "fulfilled",
        "redeemed",
        "revoked",
    ]
    day = datetime.fromtimestamp(api.clock(), SHANGHAI).date().isoformat()
    return day, grants


def _their_statement(grants: list[dict[str, Any]], stranger: str) -> str:
    g1, g2, g3, g4, _g5 = grants
    return statement(
        (g1["grant_id"], g1["code"], "redeemed"),  # matched
        ("", g2["code"], "issued"),  # matched, by code only
        (g3["grant_id"], "", "redeemed"),  # mismatched: ours fulfilled
        (g4["grant_id"], g4["code"], "issued"),  # mismatched: ours revoked
        (stranger, "SIM-STRANGER", "issued"),  # missing_ours
    )  # g5 is not on it: missing_theirs


def _check_report(report: dict[str, Any], day: str, grants: list[dict[str, Any]], stranger: str):
    g1, g2, g3, g4, g5 = grants
    assert report["vendor_id"] == SIM and report["day"] == day and report["rows"] == 5
    assert report["summary"] == {
        "matched": 2,
        "mismatched": 2,
        "missing_ours": 1,
        "missing_theirs": 1,
    }
    assert sorted(report["matched"], key=lambda e: e["grant_id"]) == sorted(
        [
            {
                "grant_id": g1["grant_id"],
                "code": g1["code"],
                "ours": "redeemed",
                "theirs": "redeemed",
            },
            {
                "grant_id": g2["grant_id"],
                "code": g2["code"],
                "ours": "fulfilled",
                "theirs": "issued",
            },
        ],
        key=lambda e: e["grant_id"],
    )
    assert sorted(report["mismatched"], key=lambda e: e["grant_id"]) == sorted(
        [
            {
                "grant_id": g3["grant_id"],
                "code": g3["code"],
                "ours": "fulfilled",
                "theirs": "redeemed",
            },
            {"grant_id": g4["grant_id"], "code": g4["code"], "ours": "revoked", "theirs": "issued"},
        ],
        key=lambda e: e["grant_id"],
    )
    [missing] = report["missing_ours"]
    assert (missing["grant_id"], missing["code"], missing["status"]) == (
        stranger,
        "SIM-STRANGER",
        "issued",
    )
    assert report["missing_theirs"] == [
        {"grant_id": g5["grant_id"], "code": g5["code"], "ours": "fulfilled"}
    ]


async def test_staff_upload_a_statement_and_get_the_reconciliation(api, pool, a_day_at_the_vendor):
    day, grants = a_day_at_the_vendor
    stranger = new_grant_id(int(api.clock() * 1000))

    status, report = await upload(api, day, _their_statement(grants, stranger))
    assert status == 201, report
    _check_report(report, day, grants, stranger)

    saved = await pool.fetchrow("SELECT * FROM statements WHERE id = $1", report["statement_id"])
    assert (saved["vendor_id"], saved["uploaded_by"], saved["rows"]) == (SIM, "approver", 5)
    assert orjson.loads(saved["report"])["summary"] == report["summary"]
    assert ("approver", "HQ", "statement.reconcile", f"vendor:{SIM}") in await audit_rows(pool)

    # Another day has none of these grants: every row is missing on our side.
    next_day = (datetime.fromisoformat(day) + timedelta(days=1)).date().isoformat()
    status, other = await upload(api, next_day, _their_statement(grants, stranger))
    assert status == 201, other
    assert other["summary"] == {
        "matched": 0,
        "mismatched": 0,
        "missing_ours": 5,
        "missing_theirs": 0,
    }


async def test_a_vendor_sends_its_signed_statement_itself(
    api, pool, key_pairs, a_day_at_the_vendor
):
    day, grants = a_day_at_the_vendor
    stranger = new_grant_id(int(api.clock() * 1000))
    raw = _their_statement(grants, stranger).encode()
    path = f"/v1/vendors/{SIM}/statements?day={day}"

    status, report = await post_signed(api, path, raw, key_pairs.vendor_private)
    assert status == 201, report
    _check_report(report, day, grants, stranger)
    assert (
        await pool.fetchval(
            "SELECT uploaded_by FROM statements WHERE id = $1", report["statement_id"]
        )
        == f"vendor:{SIM}"
    )

    # Unsigned, signed by another key, or stale: refused, nothing saved.
    count = await pool.fetchval("SELECT count(*) FROM statements")
    status, body = await send(api, "POST", path, raw, headers={"Content-Type": "text/csv"})
    assert_error(status, body, 401, "unauthorized")
    status, body = await post_signed(api, path, raw, key_pairs.ours_private)
    assert_error(status, body, 401, "unauthorized")
    status, body = await post_signed(
        api, path, raw, key_pairs.vendor_private, ts=int(api.clock()) - 301
    )
    assert_error(status, body, 401, "unauthorized")
    assert await pool.fetchval("SELECT count(*) FROM statements") == count


BAD_STATEMENTS = {
    "empty": b"",
    "wrong-columns": b"a,b,c\n1,2,3\n",
    "no-code-column": b"grant_id,status\nX,issued\n",
    "row-without-grant-or-code": b"grant_id,code,status,redeemed_at\n,,issued,\n",
    "unknown-status": b"grant_id,code,status,redeemed_at\nX,,used,\n",
    "no-status": b"grant_id,code,status,redeemed_at\nX,,,\n",
    "not-utf8": b"\xff\xfegrant_id,code,status\n",
}


def _today(api: Any) -> str:
    return datetime.fromtimestamp(api.clock(), SHANGHAI).date().isoformat()


async def test_a_bad_statement_is_400_from_staff_and_from_the_vendor(api, pool, key_pairs, sim):
    path = f"/v1/vendors/{SIM}/statements?day={_today(api)}"
    problems = []
    for case, raw in BAD_STATEMENTS.items():
        uploaded = await upload(api, _today(api), raw)
        sent = await post_signed(api, path, raw, key_pairs.vendor_private)
        for route, (status, body) in (("staff", uploaded), ("vendor", sent)):
            if status != 400 or body["error"]["code"] != "invalid_request":
                problems.append((case, route, status, body))
    assert problems == []
    assert await pool.fetchval("SELECT count(*) FROM statements") == 0


async def test_a_statement_with_an_overlong_field_is_refused_not_500(api, pool, key_pairs, sim):
    # Python's csv module raises csv.Error on a field over 128 KiB.
    raw = b"grant_id,code,status,redeemed_at\n" + b"X" * 200_000 + b",,issued,\n"
    path = f"/v1/vendors/{SIM}/statements?day={_today(api)}"
    for status, body in (
        await upload(api, _today(api), raw),
        await post_signed(api, path, raw, key_pairs.vendor_private),
    ):
        assert status in (400, 413), body
        assert body["error"]["code"] in ("invalid_request", "payload_too_large"), body
    assert await pool.fetchval("SELECT count(*) FROM statements") == 0


BAD_DAYS = [
    "",
    "yesterday",
    "2026-13-01",
    "2026-02-30",
    "20260101",
    "2026-01-01x",
    "01/02/2026",
    "2026-01-01 00:00",
]


async def test_a_statement_for_a_bad_day_is_400(api, pool, key_pairs, sim):
    text = statement(("X", "", "issued"))
    raw = text.encode()
    problems = []
    for day in BAD_DAYS:
        status, body = await upload(api, day, text)
        if status != 400 or "day" not in body["error"].get("fields", {}):
            problems.append((day, "staff", status, body))
        path = str(URL(f"/v1/vendors/{SIM}/statements").with_query(day=day))
        status, body = await post_signed(api, path, raw, key_pairs.vendor_private)
        if status != 400 or "day" not in body["error"].get("fields", {}):
            problems.append((day, "vendor", status, body))
    status, body = await post_signed(
        api, f"/v1/vendors/{SIM}/statements", raw, key_pairs.vendor_private
    )
    assert_error(status, body, 400, "invalid_request")
    assert problems == []
    assert await pool.fetchval("SELECT count(*) FROM statements") == 0


async def test_a_day_in_non_ascii_digits_is_400(api, pool, sim):
    # strptime takes any Unicode digit; the report and the audit log would carry this text.
    status, body = await upload(api, "２０２６-01-01", statement(("X", "", "issued")))
    error = assert_error(status, body, 400, "invalid_request")
    assert "day" in error["fields"]
    assert await pool.fetchval("SELECT count(*) FROM statements") == 0


async def test_a_statement_of_a_busy_day_is_reconciled(api, pool, key_pairs, sim):
    """A vendor with a few thousand grants a day sends a statement of a few hundred KiB."""
    ms = int(api.clock() * 1000)
    rows = [(new_grant_id(ms), f"SIM-{i:012d}", "issued") for i in range(5000)]
    text = statement(*rows)
    assert len(text) > 200_000

    status, report = await upload(api, _today(api), text)
    assert status == 201, report
    assert report["rows"] == 5000 and report["summary"]["missing_ours"] == 5000

    path = f"/v1/vendors/{SIM}/statements?day={_today(api)}"
    status, report = await post_signed(api, path, text.encode(), key_pairs.vendor_private)
    assert status == 201, report
    assert report["rows"] == 5000


async def test_statements_need_staff_of_a_known_vendor(api, pool, sim):
    day = datetime.fromtimestamp(api.clock(), SHANGHAI).date().isoformat()
    text = statement(("X", "", "issued"))
    status, body = await upload(api, day, text, vendor_id="ghost")
    assert_error(status, body, 404, "not_found")
    resp = await api.client.post(
        f"/admin/v1/vendors/{SIM}/statements", params={"day": day}, data=text.encode()
    )
    assert resp.status == 401, await resp.text()
    assert await pool.fetchval("SELECT count(*) FROM statements") == 0
