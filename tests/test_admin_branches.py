"""Branch scope of the staff API: branch staff run their own branch's campaigns and nothing of head
office's; head office acts on every branch."""

from __future__ import annotations

import pytest

from tests.support.clients import error_code
from tests.support.factories import act, campaign_in, campaign_of_branch
from tests.support.stores import audit_rows, campaign_status

pytestmark = pytest.mark.usefixtures("signed_in")


# branch scope


async def test_branch_staff_cannot_create_for_another_branch(api, pool, coffee):
    status, body = await api.admin(
        "sz-marketer", "POST", "/admin/v1/campaigns", campaign_of_branch(api, "c1", "HQ")
    )
    assert error_code(status, body) == (403, "forbidden")
    status, body = await api.admin(
        "sz-marketer", "POST", "/admin/v1/campaigns", campaign_of_branch(api, "c2", "GZ")
    )
    assert error_code(status, body) == (403, "forbidden")
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0
    assert [r for r in await audit_rows(pool) if r[2] == "campaign.create"] == []


async def test_branch_staff_run_their_own_branch(api, pool, coffee):
    await campaign_in(api, "approved", "s1", "SZ")
    assert await audit_rows(pool, "campaign:s1") == [
        ("sz-marketer", "SZ", "campaign.create", "campaign:s1"),
        ("sz-marketer", "SZ", "campaign.submit", "campaign:s1"),
        ("sz-approver", "SZ", "campaign.approve", "campaign:s1"),
    ]
    status, body = await api.admin("sz-marketer", "GET", "/admin/v1/campaigns/s1")
    assert (status, body["branch"]) == (200, "SZ")
    status, body = await act(api, "sz-marketer", "s1", "pause")
    assert (status, body["status"]) == (200, "paused")


@pytest.mark.parametrize(
    ("user", "state", "action"),
    [
        ("sz-marketer", "draft", "submit"),
        ("sz-approver", "pending", "approve"),
        ("sz-approver", "pending", "reject"),
        ("sz-marketer", "approved", "pause"),
        ("sz-approver", "approved", "end"),
        ("sz-marketer", "paused", "resume"),
    ],
)
async def test_branch_staff_cannot_act_on_head_office_campaigns(
    api, pool, redis, keys, coffee, user, state, action
):
    await campaign_in(api, state, "c1", "HQ")
    audit_before = await audit_rows(pool)
    published_before = await redis.hgetall(keys.campaign("c1"))
    status, body = await act(api, user, "c1", action)
    assert error_code(status, body) == (403, "forbidden")
    assert await campaign_status(pool) == state
    assert await audit_rows(pool) == audit_before
    assert await redis.hgetall(keys.campaign("c1")) == published_before


async def test_branch_staff_cannot_read_head_office_campaigns(api, coffee):
    await campaign_in(api, "approved", "c1", "HQ")
    await campaign_in(api, "approved", "s1", "SZ")
    for user in ("sz-marketer", "sz-approver"):
        status, body = await api.admin(user, "GET", "/admin/v1/campaigns/c1")
        assert error_code(status, body) == (403, "forbidden")
        status, body = await api.admin(user, "GET", "/admin/v1/campaigns")
        assert status == 200
        assert [c["id"] for c in body["campaigns"]] == ["s1"]
    status, body = await api.admin("approver", "GET", "/admin/v1/campaigns")
    assert sorted(c["id"] for c in body["campaigns"]) == ["c1", "s1"]


async def test_head_office_staff_act_on_branch_campaigns(api, pool, coffee):
    status, body = await api.admin(
        "marketer", "POST", "/admin/v1/campaigns", campaign_of_branch(api, "s1", "SZ")
    )
    assert (status, body["branch"]) == (201, "SZ")
    for user, action, state in (
        ("marketer", "submit", "pending"),
        ("approver", "approve", "approved"),
        ("marketer2", "pause", "paused"),
    ):
        status, body = await act(api, user, "s1", action)
        assert (status, body["status"]) == (200, state), body
    status, body = await api.admin("approver", "GET", "/admin/v1/campaigns/s1")
    assert (status, body["status"]) == (200, "paused")
    assert await audit_rows(pool, "campaign:s1") == [
        ("marketer", "HQ", "campaign.create", "campaign:s1"),
        ("marketer", "HQ", "campaign.submit", "campaign:s1"),
        ("approver", "HQ", "campaign.approve", "campaign:s1"),
        ("marketer2", "HQ", "campaign.pause", "campaign:s1"),
    ]
