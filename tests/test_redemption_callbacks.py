"""Signed redemption callbacks from a vendor, by grant id or by code: the grant is redeemed once,
however often the callback comes; both keys verify during a key rotation.

Grants are fulfilled at a simulated vendor (a real HTTP server) by a fulfilment worker run in
process; callbacks are signed with the vendor's RSA key exactly as a vendor signs them."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.support.clients import assert_error, grant_view
from tests.support.stores import redeemed_events
from tests.support.vendors import (
    CALLBACK,
    SIM,
    post_signed,
    redeem,
    redemption,
    redemption_rows,
)

pytestmark = pytest.mark.cluster_too

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
