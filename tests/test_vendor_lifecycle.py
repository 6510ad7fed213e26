"""A vendor's onboarding: proposed by an admin, activated by an approver who did not propose it,
suspended and resumed, offboarded once no admitted or suspended right names it. Only rights on
an active vendor are admitted; a suspended vendor's fulfilments wait and go through once it is
resumed, never dead-lettered for it."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.support.clients import Api, assert_error, grant_view
from tests.support.factories import move_right, move_vendor, register_vendor
from tests.support.stores import audit_rows
from tests.support.vendors import sim_stats
from tests.support.waiting import running, until

pytestmark = pytest.mark.usefixtures("signed_in")

CODES = {"id": "codes", "name": "Codes Co", "adapter": "codepool"}


async def act(api: Api, user: str, vendor_id: str, action: str) -> tuple[int, Any]:
    return await api.admin(user, "POST", f"/admin/v1/vendors/{vendor_id}/{action}")


async def vendor_state(pool: asyncpg.Pool, vendor_id: str = "codes") -> str:
    return str(await pool.fetchval("SELECT state FROM vendors WHERE id = $1", vendor_id))


async def propose(api: Api, user: str = "admin") -> dict[str, Any]:
    status, vendor = await api.admin(user, "POST", "/admin/v1/vendors", CODES)
    assert status == 201, vendor
    return vendor


async def test_a_vendor_is_proposed_then_activated_by_someone_else(api, pool):
    proposed = await propose(api)
    assert (proposed["state"], proposed["proposed_by"], proposed["activated_by"]) == (
        "proposed",
        "admin",
        None,
    )
    status, body = await act(api, "admin", "codes", "activate")  # its proposer
    assert_error(status, body, 403, "forbidden")
    assert await vendor_state(pool) == "proposed"
    for user in ("marketer", "sz-approver"):
        status, body = await act(api, user, "codes", "activate")
        assert_error(status, body, 403, "forbidden")

    status, active = await act(api, "approver", "codes", "activate")
    assert (status, active["state"], active["activated_by"]) == (200, "active", "approver")
    assert active["activated_at"] is not None
    status, shown = await api.admin("approver", "GET", "/admin/v1/vendors/codes")
    assert (status, shown) == (200, active)
    assert await audit_rows(pool, "vendor:codes") == [
        ("admin", "HQ", "vendor.create", "vendor:codes"),
        ("approver", "HQ", "vendor.activate", "vendor:codes"),
    ]


PATHS = {
    "proposed": [],
    "active": ["activate"],
    "suspended": ["activate", "suspend"],
    "offboarded": ["activate", "offboard"],
}
LEGAL = {
    ("proposed", "activate"),
    ("proposed", "offboard"),
    ("active", "suspend"),
    ("active", "offboard"),
    ("suspended", "resume"),
    ("suspended", "offboard"),
}
TARGET = {
    "activate": "active",
    "suspend": "suspended",
    "resume": "active",
    "offboard": "offboarded",
}


async def vendor_in(api: Api, state: str) -> None:
    await propose(api)
    for action in PATHS[state]:
        await move_vendor(api, "codes", action)


@pytest.mark.parametrize(
    ("state", "action"),
    [(s, a) for s in PATHS for a in TARGET if (s, a) not in LEGAL],
)
async def test_an_illegal_move_is_409_naming_the_state(api, pool, state, action):
    await vendor_in(api, state)
    before = await audit_rows(pool, "vendor:codes")
    status, body = await act(api, "approver", "codes", action)
    error = assert_error(status, body, 409, "invalid_transition")
    assert error["state"] == state
    assert await vendor_state(pool) == state
    assert await audit_rows(pool, "vendor:codes") == before


@pytest.mark.parametrize(("state", "action"), sorted(LEGAL))
async def test_each_legal_move(api, pool, state, action):
    await vendor_in(api, state)
    status, body = await act(api, "approver", "codes", action)
    assert (status, body["state"]) == (200, TARGET[action]), body
    assert await vendor_state(pool) == TARGET[action]
    by = {"active": "activated_by", "suspended": "suspended_by", "offboarded": "offboarded_by"}
    assert body[by[TARGET[action]]] == "approver"
    assert ("approver", "HQ", f"vendor.{action}", "vendor:codes") in await audit_rows(
        pool, "vendor:codes"
    )


async def test_unknown_vendors_and_actions_are_404(api):
    status, body = await act(api, "approver", "nope", "activate")
    assert_error(status, body, 404, "not_found")
    await propose(api)
    status, body = await act(api, "approver", "codes", "approve")
    assert_error(status, body, 404, "not_found")


@pytest.mark.parametrize("state", ["proposed", "suspended", "offboarded"])
async def test_a_right_on_a_vendor_that_is_not_active_is_not_admitted(api, pool, state):
    await vendor_in(api, "proposed")
    await api.create_right("codes-right", vendor_id="codes", admit=False)
    for action in PATHS[state]:
        await move_vendor(api, "codes", action)
    status, body = await api.admin("approver", "POST", "/admin/v1/rights/codes-right/admit")
    error = assert_error(status, body, 409, "vendor_not_active")
    assert (error["vendor_id"], error["state"]) == ("codes", state)
    assert await pool.fetchval("SELECT state FROM rights WHERE id = 'codes-right'") == "proposed"


async def test_a_right_is_not_resumed_while_its_vendor_is_suspended(api, pool):
    await vendor_in(api, "active")
    await api.create_right("codes-right", vendor_id="codes")
    await move_right(api, "codes-right", "suspend")
    await move_vendor(api, "codes", "suspend")
    status, body = await api.admin("approver", "POST", "/admin/v1/rights/codes-right/resume")
    assert_error(status, body, 409, "vendor_not_active")
    await move_vendor(api, "codes", "resume")
    await move_right(api, "codes-right", "resume")


@pytest.mark.parametrize("right_state", ["admitted", "suspended"])
async def test_a_vendor_is_offboarded_once_no_right_it_fulfils_may_be_paid_out(
    api, pool, right_state
):
    await vendor_in(api, "active")
    await api.create_right("codes-right", vendor_id="codes")
    await api.create_right("drafted", vendor_id="codes", admit=False)  # a proposal holds nothing
    if right_state == "suspended":
        await move_right(api, "codes-right", "suspend")
    status, body = await act(api, "approver", "codes", "offboard")
    error = assert_error(status, body, 409, "vendor_in_use")
    assert error["rights"] == [{"right_id": "codes-right", "state": right_state}]
    assert await vendor_state(pool) == "active"
    await move_right(api, "codes-right", "retire")
    status, body = await act(api, "approver", "codes", "offboard")
    assert (status, body["state"], body["offboarded_by"]) == (200, "offboarded", "approver")


async def test_a_suspended_vendors_fulfilments_wait_and_go_through_once_resumed(
    api, pool, redis, keys, start_sim, key_pairs, our_key_file, worker_factory
):
    sim = await start_sim()
    await register_vendor(api, "sim", sim, key_pairs, our_key_file)
    await api.create_right("lounge", vendor_id="sim")
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "lounge", "stock": 10, "per_customer_limit": 1}]
    )
    await move_vendor(api, "sim", "suspend")
    # Claims go on being granted (suspending the right is what stops them).
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    grant_id = grant["grant_id"]

    # The worker sees vendor changes every 0.2 s; a suspended vendor's grant waits as long.
    async with running(worker_factory(vendors_every_s=0.2, retries_every_s=0.05)):

        async def parked() -> bool:
            return await redis.zscore(keys.fulfil_retry, grant_id) is not None

        await until(parked, what="the grant parked")
        await asyncio.sleep(1.0)  # several rounds of retries while suspended
        assert (await grant_view(api, grant_id))["status"] == "granted"
        assert (await sim_stats(sim))["effects"] == {}
        assert await redis.hget(keys.fulfil_attempts, grant_id) is None  # no attempt spent
        assert await redis.xlen(keys.fulfil_dead) == 0

        await move_vendor(api, "sim", "resume")

        async def fulfilled() -> bool:
            return (await grant_view(api, grant_id))["status"] == "fulfilled"

        await until(fulfilled, what="fulfilment after the vendor was resumed")
    assert (await sim_stats(sim))["effects"] == {grant_id: 1}
    assert await redis.xlen(keys.fulfil_dead) == 0
