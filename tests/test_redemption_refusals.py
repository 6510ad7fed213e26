"""Redemption callbacks refused: a grant of another vendor, revoked, expired or unknown (the
refusal kept), and signed garbage (a 400, never a 500); a grant staff revoke is revoked at the
vendor too."""

from __future__ import annotations

import orjson
import pytest

from quanyi.core.ids import new_grant_id
from tests.support.clients import assert_error, grant_view
from tests.support.stores import redeemed_events
from tests.support.vendors import (
    CALLBACK,
    SIM,
    assert_untouched,
    post_signed,
    redeem,
    redemption_rows,
    sim_grant,
    sim_stats,
)
from tests.support.waiting import running, until

pytestmark = pytest.mark.cluster_too

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
