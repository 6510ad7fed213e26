"""Editing drafts: a new definition version, published to the hot path; approved campaigns are frozen."""

from __future__ import annotations

from tests.support.settings import CHANNEL


async def test_a_draft_can_be_edited_and_claims_follow_the_new_definition(api, pool):
    await api.create_right()
    await api.create_right("tea", unit_cost=50)
    created = await api.create_campaign(approve=False)
    assert created["version"] == 1
    body = {
        "name": "edited",
        "branch": "HQ",
        "starts_at": created["starts_at"],
        "ends_at": created["ends_at"],
        "channels": [CHANNEL],
        "rewards": [{"id": "tea", "right_id": "tea", "stock": 3, "per_customer_limit": 2}],
    }
    status, edited = await api.admin("marketer", "PUT", "/admin/v1/campaigns/c1", body)
    assert status == 200, edited
    assert edited["version"] == 2 and edited["name"] == "edited"
    assert [r["id"] for r in edited["rewards"]] == ["tea"]

    # The hot path saw the draft (409, not 404), and after approval claims the new reward.
    status, refused = await api.claim(request_id="q0", campaign_id="c1", customer_id="x")
    assert (status, refused["error"]["code"]) == (409, "campaign_not_active")
    await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/submit")
    await api.admin("approver", "POST", "/admin/v1/campaigns/c1/approve")
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="x")
    assert status == 201 and grant["reward_id"] == "tea" and grant["right_id"] == "tea"
    status, gone = await api.claim(
        request_id="q2", campaign_id="c1", customer_id="x", reward_id="r1"
    )
    assert (status, gone["error"]["code"]) == (404, "reward_not_found")

    status, frozen = await api.admin("marketer", "PUT", "/admin/v1/campaigns/c1", body)
    assert (status, frozen["error"]["code"]) == (409, "invalid_transition")
    actions = [
        r["action"]
        for r in await pool.fetch(
            "SELECT action FROM audit_log WHERE target = 'campaign:c1' ORDER BY id"
        )
    ]
    assert actions == ["campaign.create", "campaign.update", "campaign.submit", "campaign.approve"]


async def test_a_process_with_a_stale_definition_reloads_it(api):
    """Another process edited the draft: this one's cached definition is stale; claim.lua
    notices the version and the claim uses the current definition."""
    await api.create_right()
    created = await api.create_campaign(approve=False)
    status, _ = await api.claim(request_id="q0", campaign_id="c1", customer_id="x")
    assert status == 409  # the draft is now cached at version 1
    body = {
        "name": "edited",
        "branch": "HQ",
        "starts_at": created["starts_at"],
        "ends_at": created["ends_at"],
        "channels": [CHANNEL],
        "rewards": [{"id": "big", "right_id": "coffee", "stock": 10, "per_customer_limit": 1}],
    }
    await api.admin("marketer", "PUT", "/admin/v1/campaigns/c1", body)
    await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/submit")
    await api.admin("approver", "POST", "/admin/v1/campaigns/c1/approve")
    status, grant = await api.claim(
        request_id="q1", campaign_id="c1", customer_id="x", reward_id="big"
    )
    assert status == 201, grant


async def test_editing_a_right_keeps_the_cost_campaigns_were_made_with(api):
    await api.create_right(unit_cost=100)
    await api.create_campaign()
    edit = {"name": "coffee", "kind": "voucher", "face_value": 500, "unit_cost": 400}
    # While the campaign is live its right is frozen (tests/test_maker_checker.py); once it
    # ended, the right may change and the campaign keeps what it was approved with.
    status, refused = await api.admin("marketer", "PUT", "/admin/v1/rights/coffee", edit)
    assert (status, refused["error"]["code"]) == (409, "right_in_use")
    await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/end")
    status, right = await api.admin("marketer", "PUT", "/admin/v1/rights/coffee", edit)
    assert status == 200 and right["unit_cost"] == 400
    status, campaign = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
    assert (campaign["rewards"][0]["unit_cost"], campaign["rewards"][0]["face_value"]) == (100, 200)
    status, missing = await api.admin(
        "marketer",
        "PUT",
        "/admin/v1/rights/nope",
        {"name": "x", "kind": "voucher", "face_value": 1, "unit_cost": 1},
    )
    assert (status, missing["error"]["code"]) == (404, "not_found")
