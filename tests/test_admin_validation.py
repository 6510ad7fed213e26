"""Creating rights and campaigns: each invalid field named in the refusal, duplicate ids
refused, ids that cannot exist not found."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.support.clients import error_code
from tests.support.factories import act, campaign_in, campaign_of_branch
from tests.support.settings import CHANNEL
from tests.support.stores import audit_rows, campaign_status

pytestmark = pytest.mark.usefixtures("signed_in")


# creating rights and campaigns


def _naive(time: str) -> str:
    return datetime.fromisoformat(time).replace(tzinfo=None).isoformat()


def _rewards(*changes: dict) -> dict:
    base = {"id": "r1", "right_id": "coffee", "stock": 1, "per_customer_limit": 1}
    return {"rewards": [{**base, **c} for c in changes]}


def _invalid(case_id: str, change, *fields: str):
    """change: the campaign body -> the fields to replace in it."""
    return pytest.param(change, set(fields), id=case_id)


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        _invalid(
            "ends-before-starts",
            lambda b: {"starts_at": b["ends_at"], "ends_at": b["starts_at"]},
            "ends_at",
        ),
        _invalid("ends-at-starts", lambda b: {"ends_at": b["starts_at"]}, "ends_at"),
        _invalid(
            "starts-without-offset", lambda b: {"starts_at": _naive(b["starts_at"])}, "starts_at"
        ),
        _invalid(
            "times-without-offset",
            lambda b: {"starts_at": _naive(b["starts_at"]), "ends_at": _naive(b["ends_at"])},
            "starts_at",
            "ends_at",
        ),
        _invalid("not-a-time", lambda b: {"starts_at": "tomorrow"}, "starts_at"),
        # Valid RFC 3339 that falls outside the representable range once in UTC.
        _invalid(
            "starts-before-year-1-utc",
            lambda b: {"starts_at": "0001-01-01T00:00:00+08:00"},
            "starts_at",
        ),
        _invalid(
            "ends-after-year-9999-utc",
            lambda b: {"ends_at": "9999-12-31T23:59:59-08:00"},
            "ends_at",
        ),
        _invalid("unknown-right", lambda b: _rewards({"right_id": "nope"}), "rewards[0].right_id"),
        _invalid("duplicate-reward-ids", lambda b: _rewards({}, {"stock": 2}), "rewards"),
        _invalid("negative-stock", lambda b: _rewards({"stock": -1}), "rewards[0].stock"),
        _invalid(
            "zero-limit",
            lambda b: _rewards({"per_customer_limit": 0}),
            "rewards[0].per_customer_limit",
        ),
        _invalid(
            "zero-daily-stock", lambda b: _rewards({"daily_stock": 0}), "rewards[0].daily_stock"
        ),
        _invalid("no-rewards", lambda b: {"rewards": []}, "rewards"),
        _invalid("no-channels", lambda b: {"channels": []}, "channels"),
        _invalid("repeated-channel", lambda b: {"channels": [CHANNEL, CHANNEL]}, "channels"),
        _invalid("negative-budget", lambda b: {"budget": -1}, "budget"),
        _invalid("bad-id", lambda b: {"id": "c 1"}, "id"),
        _invalid("empty-name", lambda b: {"name": ""}, "name"),
        _invalid("nul-in-name", lambda b: {"name": "coffee\u0000week"}, "name"),
    ],
)
async def test_invalid_campaigns_are_refused_with_their_fields(
    api, pool, redis, keys, coffee, change, fields
):
    body = campaign_of_branch(api)
    body.update(change(body))
    status, resp = await api.admin("marketer", "POST", "/admin/v1/campaigns", body)
    assert error_code(status, resp) == (400, "invalid_request")
    assert set(resp["error"]["fields"]) == fields
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0
    assert [r for r in await audit_rows(pool) if r[2] == "campaign.create"] == []
    assert await redis.exists(keys.campaign("c1"), keys.campaign_definition("c1")) == 0


async def test_body_that_is_not_an_object_is_refused(api, pool, coffee):
    for body in ([], "c1", 1):
        status, resp = await api.admin("marketer", "POST", "/admin/v1/campaigns", body)
        assert error_code(status, resp) == (400, "invalid_request")
        assert "body" in resp["error"]["fields"]
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_duplicate_campaign_id_already_exists(api, pool, redis, keys, coffee):
    await campaign_in(api, "approved")
    published_before = await redis.hgetall(keys.campaign("c1"))
    for user, branch in (("marketer2", "HQ"), ("sz-marketer", "SZ")):
        body = campaign_of_branch(api, "c1", branch, name="another")
        status, resp = await api.admin(user, "POST", "/admin/v1/campaigns", body)
        assert error_code(status, resp) == (409, "already_exists")
    row = await pool.fetchrow("SELECT name, branch, status FROM campaigns WHERE id = 'c1'")
    assert tuple(row) == ("campaign c1", "HQ", "approved")
    assert await redis.hgetall(keys.campaign("c1")) == published_before


async def test_duplicate_right_id_already_exists(api, pool, coffee):
    status, resp = await api.admin(
        "marketer2",
        "POST",
        "/admin/v1/rights",
        {"id": "coffee", "name": "again", "kind": "voucher", "face_value": 1, "unit_cost": 1},
    )
    assert error_code(status, resp) == (409, "already_exists")
    assert await pool.fetchval("SELECT unit_cost FROM rights WHERE id = 'coffee'") == 100


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"kind": "gold"}, {"kind"}),
        ({"unit_cost": -1}, {"unit_cost"}),
        ({"face_value": "10"}, {"face_value"}),
        ({"id": None}, {"id"}),
        ({"vendor_id": "v 1"}, {"vendor_id"}),
        ({"name": "tea\u0000"}, {"name"}),
    ],
    ids=["unknown-kind", "negative-cost", "face-value-as-string", "no-id", "bad-vendor", "nul"],
)
async def test_invalid_rights_are_refused_with_their_fields(api, pool, change, fields):
    body = {"id": "tea", "name": "tea", "kind": "voucher", "face_value": 10, "unit_cost": 5}
    status, resp = await api.admin("marketer", "POST", "/admin/v1/rights", {**body, **change})
    assert error_code(status, resp) == (400, "invalid_request")
    assert set(resp["error"]["fields"]) == fields
    assert await pool.fetchval("SELECT count(*) FROM rights") == 0


@pytest.mark.parametrize("campaign_id", ["%00", "c1%00", "c1%0A"])
async def test_campaign_ids_that_cannot_exist_are_not_found(api, pool, coffee, campaign_id):
    await campaign_in(api, "approved")
    status, body = await api.admin("approver", "GET", f"/admin/v1/campaigns/{campaign_id}")
    assert error_code(status, body) == (404, "campaign_not_found")
    status, body = await act(api, "marketer", campaign_id, "pause")
    assert error_code(status, body) == (404, "campaign_not_found")
    assert await campaign_status(pool) == "approved"
