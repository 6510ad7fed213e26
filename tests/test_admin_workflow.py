"""The campaign workflow and what it does to claims: transitions allowed and refused, every step
audited, pause and end seen by claims; the campaign view's live and persisted counters."""

from __future__ import annotations

import pytest

from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import error_code
from tests.support.factories import act, campaign_in, campaign_of_branch
from tests.support.stores import audit_rows, campaign_status

pytestmark = pytest.mark.usefixtures("signed_in")


# the workflow


@pytest.mark.parametrize(
    ("state", "action", "user"),
    [
        ("draft", "approve", "approver"),
        ("draft", "reject", "approver"),
        ("draft", "pause", "marketer"),
        ("draft", "resume", "marketer"),
        ("draft", "end", "marketer"),
        ("pending", "submit", "marketer"),
        ("pending", "pause", "marketer"),
        ("pending", "end", "marketer"),
        ("rejected", "approve", "approver"),
        ("rejected", "pause", "marketer"),
        ("approved", "submit", "marketer"),
        ("approved", "approve", "approver"),
        ("approved", "reject", "approver"),
        ("approved", "resume", "marketer"),
        ("paused", "pause", "marketer"),
        ("paused", "approve", "approver"),
        ("paused", "submit", "marketer"),
        ("ended", "resume", "marketer"),
        ("ended", "pause", "marketer"),
        ("ended", "end", "marketer"),
        ("ended", "submit", "marketer"),
        ("ended", "approve", "approver"),
    ],
)
async def test_invalid_transitions_are_refused_and_change_nothing(
    api, pool, redis, keys, coffee, state, action, user
):
    await campaign_in(api, state)
    audit_before = await audit_rows(pool, "campaign:c1")
    published_before = await redis.hgetall(keys.campaign("c1"))
    status, body = await act(api, user, "c1", action)
    assert error_code(status, body) == (409, "invalid_transition")
    assert body["error"]["state"] == state
    assert await campaign_status(pool) == state
    assert await audit_rows(pool, "campaign:c1") == audit_before
    assert await redis.hgetall(keys.campaign("c1")) == published_before


async def test_the_whole_workflow_is_audited_step_by_step(api, pool, coffee):
    steps = [
        ("marketer", "submit", "pending"),
        ("approver", "reject", "rejected"),
        ("marketer2", "submit", "pending"),
        ("approver", "approve", "approved"),
        ("marketer", "pause", "paused"),
        ("approver", "resume", "approved"),
        ("admin", "end", "ended"),
    ]
    status, body = await api.admin(
        "marketer", "POST", "/admin/v1/campaigns", campaign_of_branch(api)
    )
    assert (status, body["status"], body["created_by"]) == (201, "draft", "marketer")
    for user, action, state in steps:
        status, body = await act(api, user, "c1", action)
        assert (status, body["status"]) == (200, state), body
    assert await audit_rows(pool, "campaign:c1") == [
        ("marketer", "HQ", "campaign.create", "campaign:c1"),
        *((user, "HQ", f"campaign.{action}", "campaign:c1") for user, action, _ in steps),
    ]
    assert await audit_rows(pool, "right:coffee") == [
        ("marketer", "HQ", "right.create", "right:coffee"),
        ("approver", "HQ", "right.admit", "right:coffee"),
    ]


async def test_pause_stops_claims_resume_restores_them_end_is_final(api, pool, coffee):
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 10, "per_customer_limit": 5}]
    )

    async def claim(n: int) -> tuple[int, dict]:
        return await api.claim(request_id=f"q{n}", campaign_id="c1", customer_id="cust-1")

    status, _ = await claim(1)
    assert status == 201
    assert (await act(api, "marketer", "c1", "pause"))[0] == 200
    status, body = await claim(2)
    assert (*error_code(status, body), body["error"]["state"]) == (
        409,
        "campaign_not_active",
        "paused",
    )
    assert (await act(api, "marketer", "c1", "resume"))[0] == 200
    status, _ = await claim(2)
    assert status == 201
    assert (await act(api, "approver", "c1", "end"))[0] == 200
    status, body = await claim(3)
    assert (*error_code(status, body), body["error"]["state"]) == (
        409,
        "campaign_not_active",
        "ended",
    )
    for action, user in (("resume", "marketer"), ("approve", "approver"), ("submit", "marketer")):
        status, body = await act(api, user, "c1", action)
        assert error_code(status, body) == (409, "invalid_transition")
    status, body = await claim(3)
    assert (status, body["error"]["code"]) == (409, "campaign_not_active")
    status, campaign = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
    assert (campaign["status"], campaign["rewards"][0]["granted"]) == ("ended", 2)


async def test_unknown_campaign_and_action(api, coffee):
    status, body = await api.admin("approver", "GET", "/admin/v1/campaigns/nope")
    assert error_code(status, body) == (404, "campaign_not_found")
    status, body = await act(api, "marketer", "nope", "pause")
    assert error_code(status, body) == (404, "campaign_not_found")
    await campaign_in(api, "approved")
    status, body = await act(api, "marketer", "c1", "launch")
    assert error_code(status, body) == (404, "not_found")


# the campaign view


async def test_campaign_view_shows_live_and_persisted_counters(api, redis, pool, keys, coffee):
    await api.create_right("lounge", 500)
    await api.create_campaign(
        rewards=[
            {"id": "r1", "right_id": "coffee", "stock": 10, "per_customer_limit": 5},
            {
                "id": "r2",
                "right_id": "lounge",
                "stock": 2,
                "daily_stock": 1,
                "per_customer_limit": 1,
            },
        ]
    )
    for i in range(3):
        status, _ = await api.claim(
            request_id=f"q{i}", campaign_id="c1", customer_id="cust-1", reward_id="r1"
        )
        assert status == 201
    status, _ = await api.claim(
        request_id="q9", campaign_id="c1", customer_id="cust-1", reward_id="r2"
    )
    assert status == 201

    status, view = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
    assert status == 200, view
    r1, r2 = view["rewards"]
    assert (r1["id"], r1["right_id"], r1["unit_cost"]) == ("r1", "coffee", 100)
    assert (r1["stock"], r1["granted"], r1["remaining"], r1["persisted"]) == (10, 3, 7, 0)
    assert (r2["stock"], r2["daily_stock"], r2["granted"], r2["remaining"]) == (2, 1, 1, 1)
    assert r2["persisted"] == 0
    assert view["spent"] == 3 * 100 + 500
    assert view["ledger_lag"]["entries"] == 4
    assert view["ledger_lag"]["seconds"] >= 0

    assert await LedgerWorker(redis, pool, keys).drain() == 4
    status, view = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
    r1, r2 = view["rewards"]
    assert (r1["granted"], r1["remaining"], r1["persisted"]) == (3, 7, 3)
    assert (r2["granted"], r2["remaining"], r2["persisted"]) == (1, 1, 1)
    assert view["ledger_lag"] == {"entries": 0, "seconds": 0.0}
    assert (view["status"], view["version"], view["approved_by"]) == ("approved", 1, "approver")
