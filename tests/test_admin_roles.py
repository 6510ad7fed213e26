"""Roles and maker-checker: who may create, submit, approve, pause, resume and end a campaign; nobody
approves what they made or submitted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.clients import error_code
from tests.support.factories import act, campaign_in, campaign_of_branch
from tests.support.stores import audit_rows, campaign_status

pytestmark = pytest.mark.usefixtures("signed_in")


# roles


async def test_marketer_cannot_approve_or_reject(api, pool, coffee):
    await campaign_in(api, "pending")
    for action in ("approve", "reject"):
        status, body = await act(api, "marketer2", "c1", action)
        assert error_code(status, body) == (403, "forbidden")
    assert await campaign_status(pool) == "pending"


async def test_approver_cannot_create_rights_or_campaigns_or_submit(api, pool, coffee):
    status, body = await api.admin(
        "approver", "POST", "/admin/v1/campaigns", campaign_of_branch(api)
    )
    assert error_code(status, body) == (403, "forbidden")
    assert await campaign_status(pool) is None
    status, body = await api.admin(
        "approver",
        "POST",
        "/admin/v1/rights",
        {"id": "tea", "name": "tea", "kind": "voucher", "face_value": 1, "unit_cost": 1},
    )
    assert error_code(status, body) == (403, "forbidden")
    assert await pool.fetchval("SELECT count(*) FROM rights WHERE id = 'tea'") == 0
    await campaign_in(api, "draft")
    status, body = await act(api, "approver", "c1", "submit")
    assert error_code(status, body) == (403, "forbidden")
    assert await campaign_status(pool) == "draft"


async def test_submitter_cannot_approve_their_own_campaign_even_as_admin(api, pool, coffee):
    status, body = await api.admin("admin", "POST", "/admin/v1/campaigns", campaign_of_branch(api))
    assert status == 201, body
    status, body = await act(api, "admin", "c1", "submit")
    assert status == 200, body
    assert body["submitted_by"] == "admin"
    status, body = await act(api, "admin", "c1", "approve")
    assert error_code(status, body) == (403, "forbidden")
    assert await campaign_status(pool) == "pending"
    assert ("admin", "HQ", "campaign.approve", "campaign:c1") not in await audit_rows(pool)

    status, body = await act(api, "approver", "c1", "approve")
    assert status == 200, body
    assert (body["status"], body["approved_by"]) == ("approved", "approver")


async def test_resubmitted_campaign_is_checked_against_its_latest_submitter(api, pool, coffee):
    await campaign_in(api, "rejected")
    status, body = await act(api, "admin", "c1", "submit")
    assert (status, body["submitted_by"]) == (200, "admin")
    status, body = await act(api, "admin", "c1", "approve")
    assert error_code(status, body) == (403, "forbidden")
    status, body = await act(api, "approver", "c1", "approve")
    assert (status, body["status"]) == (200, "approved")


@pytest.mark.parametrize("user", ["marketer2", "approver", "admin"])
async def test_marketers_approvers_and_admins_may_pause_resume_and_end(api, user, coffee):
    await campaign_in(api, "approved")
    for action, state in (("pause", "paused"), ("resume", "approved"), ("end", "ended")):
        status, body = await act(api, user, "c1", action)
        assert (status, body["status"]) == (200, state), body


async def test_the_creator_may_not_approve_even_when_someone_else_submitted(api, coffee):
    """Maker-checker covers whoever made the campaign, not only whoever submitted it."""
    now = datetime.fromtimestamp(api.clock(), UTC)
    body = {
        "id": "c9",
        "name": "made by an admin",
        "branch": "HQ",
        "starts_at": (now - timedelta(hours=1)).isoformat(),
        "ends_at": (now + timedelta(days=1)).isoformat(),
        "channels": ["app"],
        "rewards": [{"id": "r1", "right_id": "coffee", "stock": 5, "per_customer_limit": 1}],
    }
    status, created = await api.admin("admin", "POST", "/admin/v1/campaigns", body)
    assert status == 201, created
    status, _ = await api.admin("marketer2", "POST", "/admin/v1/campaigns/c9/submit")
    assert status == 200
    status, refused = await api.admin("admin", "POST", "/admin/v1/campaigns/c9/approve")
    assert (status, refused["error"]["code"]) == (403, "forbidden")
    status, approved = await api.admin("approver", "POST", "/admin/v1/campaigns/c9/approve")
    assert (status, approved["status"]) == (200, "approved")
