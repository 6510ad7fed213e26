"""Cloning a campaign: a new draft of the caller's with the source's name, branch, rewards
(audiences and goals included), channels and budget, under a new id and window; the source is
left as it was and the two count apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.clients import assert_error, claim
from tests.support.factories import act, reward
from tests.support.stores import audit_rows

pytestmark = pytest.mark.usefixtures("signed_in")

GOAL = {"window": "month", "count": 3, "min_amount": 1_000}
DEFINITION = (
    "name",
    "branch",
    "channels",
    "budget",
    "return_stock_on_failure",
)
REWARD = (
    "id",
    "right_id",
    "face_value",
    "unit_cost",
    "stock",
    "daily_stock",
    "per_customer_limit",
    "per_customer_daily_limit",
    "audience_id",
    "goal",
    "grant",
    "claw_back",
)


def window(api, days_from_now: int, days: int) -> dict[str, str]:
    start = datetime.fromtimestamp(api.clock(), UTC) + timedelta(days=days_from_now)
    return {"starts_at": start.isoformat(), "ends_at": (start + timedelta(days=days)).isoformat()}


async def clone(api, body: dict[str, Any], user: str = "marketer2", source: str = "c1"):
    return await api.admin(user, "POST", f"/admin/v1/campaigns/{source}/clone", body)


@pytest.fixture
async def source(api) -> dict[str, Any]:
    """Approved campaign c1 with a budget, a daily stock, an audience's reward and a goal's."""
    status, body = await api.admin(
        "marketer", "POST", "/admin/v1/audiences", {"id": "vip", "name": "VIP", "branch": "HQ"}
    )
    assert status == 201, body
    await api.create_right()
    return await api.create_campaign(
        "c1",
        [
            reward("r1", stock=10, daily_stock=5, per_customer_daily_limit=1),
            reward("r2", stock=20, audience_id="vip", per_customer_limit=2),
            reward("r3", stock=30, goal=GOAL, grant="auto", claw_back=True),
        ],
        budget=4_000,
        channels=["app", "wechat"],
    )


async def test_a_clone_is_a_new_draft_of_the_callers(api, pool, source):
    when = window(api, 40, 10)
    status, copy = await clone(api, {"id": "c2", **when})
    assert status == 201, copy
    assert copy["id"] == "c2" and copy["status"] == "draft"
    assert copy["created_by"] == "marketer2" and copy["makers"] == ["marketer2"]
    assert copy["submitted_by"] is None and copy["approved_by"] is None
    assert datetime.fromisoformat(copy["starts_at"]) == datetime.fromisoformat(when["starts_at"])
    assert datetime.fromisoformat(copy["ends_at"]) == datetime.fromisoformat(when["ends_at"])
    for field in DEFINITION:
        assert copy[field] == source[field], field
    assert [{k: r[k] for k in REWARD} for r in copy["rewards"]] == [
        {k: r[k] for k in REWARD} for r in source["rewards"]
    ]
    assert copy["rewards"][2]["goal"] == GOAL
    assert [r["granted"] for r in copy["rewards"]] == [0, 0, 0]
    assert ("marketer2", "HQ", "campaign.clone", "campaign:c2") in await audit_rows(
        pool, "campaign:c2"
    )
    # The source is as it was.
    status, after = await api.admin("marketer", "GET", "/admin/v1/campaigns/c1")
    assert after["status"] == "approved" and after["version"] == source["version"]


async def test_a_clone_goes_its_own_way(api, source):
    status, copy = await clone(api, {"id": "c2", **window(api, -1, 10)})
    assert status == 201, copy
    for user, action in (("marketer2", "submit"), ("approver", "approve")):
        status, body = await act(api, user, "c2", action)
        assert status == 200, body
    status, granted = await api.claim(
        request_id="q1", campaign_id="c2", reward_id="r1", customer_id="cust-1"
    )
    assert status == 201, granted
    status, body = await api.admin("marketer", "GET", "/admin/v1/campaigns/c1")
    assert body["rewards"][0]["granted"] == 0
    status, granted = await claim(api, "q2", "cust-1", reward_id="r1")
    assert status == 201, granted  # c1 counts its own


async def test_a_draft_is_cloned_too(api):
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=10)], approve=False)
    status, copy = await clone(api, {"id": "c2", **window(api, 1, 5)}, user="marketer")
    assert status == 201 and copy["status"] == "draft", copy


async def test_an_existing_id_is_refused(api, pool, source):
    status, body = await clone(api, {"id": "c1", **window(api, 1, 5)})
    assert_error(status, body, 409, "already_exists")
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"ends_at": "2027-01-01T00:00:00+08:00", "starts_at": "2027-02-01T00:00:00+08:00"},
            "ends_at",
        ),
        (
            {"starts_at": "2027-02-01T00:00:00+08:00", "ends_at": "2027-02-01T00:00:00+08:00"},
            "ends_at",
        ),
        ({"starts_at": "soon", "ends_at": "2027-02-01T00:00:00+08:00"}, "starts_at"),
        ({"starts_at": "2027-01-01T00:00:00+08:00"}, "ends_at"),
    ],
)
async def test_a_bad_window_is_refused(api, pool, source, body, field):
    status, refused = await clone(api, {"id": "c2", **body})
    error = assert_error(status, refused, 400, "invalid_request")
    assert field in error["fields"], error
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 1


async def test_a_bad_or_missing_id_is_refused(api, source):
    status, body = await clone(api, window(api, 1, 5))
    assert "id" in assert_error(status, body, 400, "invalid_request")["fields"]
    status, body = await clone(api, {"id": "not ok!", **window(api, 1, 5)})
    assert "id" in assert_error(status, body, 400, "invalid_request")["fields"]


async def test_an_unknown_source_is_not_found(api, source):
    status, body = await clone(api, {"id": "c2", **window(api, 1, 5)}, source="nope")
    assert_error(status, body, 404, "campaign_not_found")


async def test_who_may_clone(api, pool, source):
    # An approver makes no drafts; a branch does not copy head office's campaign.
    for user in ("approver", "sz-marketer"):
        status, body = await clone(api, {"id": "c2", **window(api, 1, 5)}, user=user)
        assert_error(status, body, 403, "forbidden")
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 1
