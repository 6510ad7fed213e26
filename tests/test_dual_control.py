"""Dual control on money: above QUANYI_DUAL_APPROVAL_ABOVE a campaign needs two distinct
approvers, one of them at head office, neither a maker; below it one approver, as always. The
amount is the budget, else stock x unit cost."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from quanyi.access.staff import Staff
from quanyi.campaigns.approvals import (
    AlreadyApproved,
    Approval,
    HeadOfficeApprovalNeeded,
    MakerMayNotApprove,
    check_approver,
    money_of,
    required_approvals,
)
from quanyi.core.settings import Settings
from tests.support.clients import add_staff, assert_error, claim, sign_in
from tests.support.factories import act, campaign_body, reward
from tests.support.settings import settings_for_tests
from tests.support.stores import audit_rows

# Fen: a campaign of coffee (unit cost 100) needs two approvers above 500 units of stock.
THRESHOLD = 50_000
LARGE = [reward(stock=1_000)]  # 100,000 fen
SMALL = [reward(stock=100)]  # 10,000 fen

pytestmark = pytest.mark.usefixtures("signed_in")


@pytest.fixture
def settings() -> Settings:
    return settings_for_tests(dual_approval_above=THRESHOLD)


@pytest.fixture(autouse=True)
async def more_approvers(api, pool, signed_in) -> None:
    """A second head-office approver and a second Shenzhen one."""
    await add_staff(pool, {"approver2": ("approver", "HQ"), "sz-approver2": ("approver", "SZ")})
    await sign_in(api, pool, "approver2", "sz-approver2")


async def pending(api, rewards: list[dict[str, Any]], campaign_id: str = "c1", **fields) -> None:
    await api.create_right()
    await api.create_campaign(campaign_id, rewards, approve=False, **fields)
    status, body = await act(api, "marketer", campaign_id, "submit")
    assert status == 200, body


async def sz_pending(api, stock: int, campaign_id: str = "s1") -> None:
    await api.create_right()
    body = campaign_body(api.clock(), campaign_id, [reward(stock=stock)], branch="SZ")
    status, created = await api.admin("sz-marketer", "POST", "/admin/v1/campaigns", body)
    assert status == 201, created
    status, created = await act(api, "sz-marketer", campaign_id, "submit")
    assert status == 200, created


def approvers(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["approver"], a["branch"]) for a in body["approvals"]]


# --- the rule, as every approval uses it ----------------------------------------------------


def test_the_money_is_the_budget_else_stock_at_unit_cost():
    assert money_of(None, [(1_000, 100), (10, 3_000)]) == 130_000
    assert money_of(20_000, [(1_000, 100)]) == 20_000
    assert money_of(0, [(1_000, 100)]) == 0


def test_two_approvals_only_above_the_threshold_and_never_when_it_is_off():
    assert required_approvals(50_000, 50_000) == 1
    assert required_approvals(50_001, 50_000) == 2
    assert required_approvals(10**12, 0) == 1


def test_who_may_approve():
    hq, hq2 = Staff("a", "approver", "HQ"), Staff("b", "approver", "HQ")
    sz, sz2 = Staff("s", "approver", "SZ"), Staff("t", "approver", "SZ")
    at = datetime.now(UTC)
    first_hq, first_sz = [Approval("a", "HQ", at)], [Approval("s", "SZ", at)]
    check_approver(hq, ["m"], [], 2)
    check_approver(sz, ["m"], [], 2)  # a first approval from a branch is fine
    check_approver(hq2, ["m"], first_hq, 2)
    check_approver(sz, ["m"], first_hq, 2)
    check_approver(hq, ["m"], first_sz, 2)
    with pytest.raises(HeadOfficeApprovalNeeded):
        check_approver(sz2, ["m"], first_sz, 2)
    with pytest.raises(AlreadyApproved):
        check_approver(hq, ["m"], first_hq, 2)
    with pytest.raises(MakerMayNotApprove):
        check_approver(hq, ["a"], [], 1)


def test_the_threshold_is_a_setting_in_fen():
    assert Settings().dual_approval_above == 5_000_000
    settings = Settings.from_env({"QUANYI_DUAL_APPROVAL_ABOVE": "1000"})
    assert settings.dual_approval_above == 1000
    with pytest.raises(ValueError, match="dual_approval_above"):
        Settings.from_env({"QUANYI_DUAL_APPROVAL_ABOVE": "-1"})


# --- campaigns --------------------------------------------------------------------------


async def test_a_small_campaign_needs_one_approver(api):
    await pending(api, SMALL)
    status, body = await act(api, "approver", "c1", "approve")
    assert status == 200, body
    assert body["status"] == "approved"
    assert approvers(body) == [("approver", "HQ")]
    assert body["approvals_needed"] == 1


async def test_a_large_campaign_waits_for_a_second_approver(api, pool):
    await pending(api, LARGE)
    status, body = await act(api, "approver", "c1", "approve")
    assert status == 202, body
    assert body["status"] == "pending"
    assert approvers(body) == [("approver", "HQ")]
    assert body["approvals_needed"] == 2
    assert body["approved_by"] is None
    # Half approved is not approved: nothing can be claimed.
    status, refused = await claim(api, "q1", "cust-1")
    assert_error(status, refused, 409, "campaign_not_active")

    status, body = await act(api, "approver2", "c1", "approve")
    assert status == 200, body
    assert body["status"] == "approved"
    assert approvers(body) == [("approver", "HQ"), ("approver2", "HQ")]
    assert body["approved_by"] == "approver2"
    status, granted = await claim(api, "q1", "cust-1")
    assert status == 201, granted
    actions = [(actor, action) for actor, _b, action, _t in await audit_rows(pool, "campaign:c1")]
    assert ("approver", "campaign.approve.first") in actions
    assert ("approver2", "campaign.approve") in actions


async def test_the_same_approver_twice_is_refused(api):
    await pending(api, LARGE)
    status, body = await act(api, "approver", "c1", "approve")
    assert status == 202, body
    status, body = await act(api, "approver", "c1", "approve")
    error = assert_error(status, body, 409, "already_approved")
    assert error["approvals_needed"] == 2
    status, body = await api.admin("marketer", "GET", "/admin/v1/campaigns/c1")
    assert body["status"] == "pending" and approvers(body) == [("approver", "HQ")]


async def test_two_branch_approvers_are_not_enough(api):
    await sz_pending(api, stock=1_000)
    status, body = await act(api, "sz-approver", "s1", "approve")
    assert status == 202, body
    status, body = await act(api, "sz-approver2", "s1", "approve")
    error = assert_error(status, body, 403, "head_office_approval_needed")
    assert "head-office" in error["message"]
    status, body = await api.admin("sz-marketer", "GET", "/admin/v1/campaigns/s1")
    assert body["status"] == "pending" and approvers(body) == [("sz-approver", "SZ")]
    # Head office completes it.
    status, body = await act(api, "approver", "s1", "approve")
    assert status == 200, body
    assert body["status"] == "approved"
    assert approvers(body) == [("sz-approver", "SZ"), ("approver", "HQ")]


async def test_a_small_branch_campaign_needs_no_head_office(api):
    await sz_pending(api, stock=100)
    status, body = await act(api, "sz-approver", "s1", "approve")
    assert status == 200, body
    assert body["status"] == "approved"


async def test_a_maker_is_never_one_of_the_two(api):
    # Drafted by an admin (who may approve), submitted by a marketer.
    await api.create_right()
    body = campaign_body(api.clock(), "c1", LARGE)
    status, created = await api.admin("admin", "POST", "/admin/v1/campaigns", body)
    assert status == 201, created
    status, created = await act(api, "marketer", "c1", "submit")
    assert status == 200, created
    status, body = await act(api, "approver", "c1", "approve")
    assert status == 202, body
    status, body = await act(api, "admin", "c1", "approve")
    assert_error(status, body, 403, "forbidden")
    status, body = await act(api, "approver2", "c1", "approve")
    assert status == 200 and body["status"] == "approved", body


async def test_a_budget_bounds_the_money(api):
    # 100,000 fen of stock, but a budget of 10,000: one approver.
    await pending(api, LARGE, budget=10_000)
    status, body = await act(api, "approver", "c1", "approve")
    assert status == 200 and body["status"] == "approved", body


async def test_a_budget_above_the_threshold_needs_two(api):
    await pending(api, SMALL, budget=THRESHOLD + 1)
    status, body = await act(api, "approver", "c1", "approve")
    assert status == 202 and body["approvals_needed"] == 2, body


async def test_a_new_submission_starts_a_new_round(api):
    await pending(api, LARGE)
    status, body = await act(api, "approver", "c1", "approve")
    assert status == 202, body
    status, body = await act(api, "approver2", "c1", "reject")
    assert status == 200 and body["status"] == "rejected", body
    status, body = await act(api, "marketer", "c1", "submit")
    assert status == 200 and body["approvals"] == [], body
    # The approval before the rejection does not count: this is one of two again.
    status, body = await act(api, "approver2", "c1", "approve")
    assert status == 202 and approvers(body) == [("approver2", "HQ")], body
    status, body = await act(api, "approver", "c1", "approve")
    assert status == 200 and body["status"] == "approved", body
