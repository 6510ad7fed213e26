"""The staff API: login and tokens, roles, maker-checker, the campaign workflow and its effect
on claims, branch scope, the audit log, validation, and the campaign view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ledger.worker import LedgerWorker
from tests.conftest import CHANNEL, PASSWORD
from tests.helpers import audit_rows, sign_in

HQ_USERS = {"marketer": "marketer", "approver": "approver"}
SZ_USERS = {"marketer": "sz-marketer", "approver": "sz-approver"}


@pytest.fixture(autouse=True)
async def _signed_in(api, pool):
    await sign_in(api, pool)


@pytest.fixture
async def coffee(api):
    await api.create_right()


def campaign_body(api, campaign_id: str = "c1", branch: str = "HQ", **changes: Any) -> dict:
    now = datetime.fromtimestamp(api.clock(), UTC)
    return {
        "id": campaign_id,
        "name": f"campaign {campaign_id}",
        "branch": branch,
        "starts_at": (now - timedelta(hours=1)).isoformat(),
        "ends_at": (now + timedelta(days=30)).isoformat(),
        "channels": [CHANNEL],
        "rewards": [{"id": "r1", "right_id": "coffee", "stock": 10, "per_customer_limit": 1}],
        **changes,
    }


async def act(api, user: str, campaign_id: str, action: str) -> tuple[int, Any]:
    return await api.admin(user, "POST", f"/admin/v1/campaigns/{campaign_id}/{action}")


async def campaign_in(
    api, state: str, campaign_id: str = "c1", branch: str = "HQ"
) -> dict[str, Any]:
    """A campaign brought to `state` through the API by that branch's own staff."""
    users = HQ_USERS if branch == "HQ" else SZ_USERS
    status, body = await api.admin(
        users["marketer"], "POST", "/admin/v1/campaigns", campaign_body(api, campaign_id, branch)
    )
    assert status == 201, body
    path = {
        "draft": [],
        "pending": ["submit"],
        "rejected": ["submit", "reject"],
        "approved": ["submit", "approve"],
        "paused": ["submit", "approve", "pause"],
        "ended": ["submit", "approve", "end"],
    }[state]
    for action in path:
        role = "approver" if action in ("approve", "reject") else "marketer"
        status, body = await act(api, users[role], campaign_id, action)
        assert status == 200, body
    assert body["status"] == state
    return body


async def status_of(pool, campaign_id: str = "c1") -> str | None:
    return await pool.fetchval("SELECT status FROM campaigns WHERE id = $1", campaign_id)


def error_code(status: int, body: dict) -> tuple[int, str]:
    return status, body["error"]["code"]


# login and tokens


async def test_login_gives_a_token_that_works_and_is_audited(api, pool):
    resp = await api.client.post(
        "/admin/v1/login", json={"username": "approver", "password": PASSWORD}
    )
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"token", "expires_at"}
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert timedelta(hours=7) < expires_at - datetime.now(UTC) <= timedelta(hours=8)
    resp = await api.client.get(
        "/admin/v1/rights", headers={"Authorization": f"Bearer {body['token']}"}
    )
    assert resp.status == 200
    assert await audit_rows(pool) == [("approver", "HQ", "login", "approver")]


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "marketer", "password": "wrong-password"},
        {"username": "marketer", "password": PASSWORD.upper()},
        {"username": "nobody", "password": PASSWORD},
    ],
    ids=["wrong-password", "wrong-case", "unknown-user"],
)
async def test_login_with_bad_credentials_is_unauthorized(api, pool, credentials):
    sessions = await pool.fetchval("SELECT count(*) FROM staff_sessions")
    resp = await api.client.post("/admin/v1/login", json=credentials)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"
    assert await pool.fetchval("SELECT count(*) FROM staff_sessions") == sessions
    # Only the failure is audited (tests/test_login_security.py covers it in full).
    assert [row[2] for row in await audit_rows(pool)] == ["login.failed"]


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        (b'{"username": "marketer"}', {"password"}),
        (b'{"password": "x"}', {"username"}),
        (b"{}", {"username", "password"}),
        (b'["marketer"]', {"body"}),
    ],
)
async def test_login_with_a_bad_body_is_invalid(api, data, fields):
    resp = await api.client.post(
        "/admin/v1/login", data=data, headers={"Content-Type": "application/json"}
    )
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (400, "invalid_request")
    assert fields <= set(body["error"]["fields"])


async def test_disabled_staff_cannot_log_in_or_use_a_token(api, pool):
    status, _ = await api.admin("marketer", "GET", "/admin/v1/rights")
    assert status == 200
    await pool.execute("UPDATE staff SET disabled = true WHERE username = 'marketer'")
    status, body = await api.admin("marketer", "GET", "/admin/v1/rights")
    assert error_code(status, body) == (401, "unauthorized")
    resp = await api.client.post(
        "/admin/v1/login", json={"username": "marketer", "password": PASSWORD}
    )
    assert resp.status == 401


async def test_expired_token_is_unauthorized(api, pool):
    status, _ = await api.admin("marketer", "GET", "/admin/v1/rights")
    assert status == 200
    await pool.execute(
        "UPDATE staff_sessions SET expires_at = now() - interval '1 second'"
        " WHERE username = 'marketer'"
    )
    status, body = await api.admin("marketer", "GET", "/admin/v1/rights")
    assert error_code(status, body) == (401, "unauthorized")


ADMIN_ENDPOINTS = [
    ("GET", "/admin/v1/rights"),
    ("POST", "/admin/v1/rights"),
    ("GET", "/admin/v1/campaigns"),
    ("POST", "/admin/v1/campaigns"),
    ("GET", "/admin/v1/campaigns/c1"),
    ("POST", "/admin/v1/campaigns/c1/approve"),
]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer not-a-token", "Basic bWFya2V0ZXI6eA==", "token"],
)
async def test_admin_endpoints_need_a_valid_token(api, pool, coffee, authorization):
    await campaign_in(api, "pending")
    audit_before = await audit_rows(pool)
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in ADMIN_ENDPOINTS:
        resp = await api.client.request(method, path, json={}, headers=headers)
        body = await resp.json()
        assert (resp.status, body["error"]["code"]) == (401, "unauthorized"), (method, path)
    assert await status_of(pool) == "pending"
    assert await audit_rows(pool) == audit_before


async def test_a_token_is_not_a_channel_signature_and_a_signature_is_not_a_token(api, coffee):
    await api.create_campaign()
    token = api._tokens["approver"]
    resp = await api.client.get(
        "/v1/customers/cust-1/grants", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"
    status, body = await api.channel("GET", "/admin/v1/campaigns/c1")
    assert error_code(status, body) == (401, "unauthorized")


# roles


async def test_marketer_cannot_approve_or_reject(api, pool, coffee):
    await campaign_in(api, "pending")
    for action in ("approve", "reject"):
        status, body = await act(api, "marketer2", "c1", action)
        assert error_code(status, body) == (403, "forbidden")
    assert await status_of(pool) == "pending"


async def test_approver_cannot_create_rights_or_campaigns_or_submit(api, pool, coffee):
    status, body = await api.admin("approver", "POST", "/admin/v1/campaigns", campaign_body(api))
    assert error_code(status, body) == (403, "forbidden")
    assert await status_of(pool) is None
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
    assert await status_of(pool) == "draft"


async def test_submitter_cannot_approve_their_own_campaign_even_as_admin(api, pool, coffee):
    status, body = await api.admin("admin", "POST", "/admin/v1/campaigns", campaign_body(api))
    assert status == 201, body
    status, body = await act(api, "admin", "c1", "submit")
    assert status == 200, body
    assert body["submitted_by"] == "admin"
    status, body = await act(api, "admin", "c1", "approve")
    assert error_code(status, body) == (403, "forbidden")
    assert await status_of(pool) == "pending"
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
    assert await status_of(pool) == state
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
    status, body = await api.admin("marketer", "POST", "/admin/v1/campaigns", campaign_body(api))
    assert (status, body["status"], body["created_by"]) == (201, "draft", "marketer")
    for user, action, state in steps:
        status, body = await act(api, user, "c1", action)
        assert (status, body["status"]) == (200, state), body
    assert await audit_rows(pool, "campaign:c1") == [
        ("marketer", "HQ", "campaign.create", "campaign:c1"),
        *((user, "HQ", f"campaign.{action}", "campaign:c1") for user, action, _ in steps),
    ]
    assert await audit_rows(pool, "right:coffee") == [
        ("marketer", "HQ", "right.create", "right:coffee")
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


# branch scope


async def test_branch_staff_cannot_create_for_another_branch(api, pool, coffee):
    status, body = await api.admin(
        "sz-marketer", "POST", "/admin/v1/campaigns", campaign_body(api, "c1", "HQ")
    )
    assert error_code(status, body) == (403, "forbidden")
    status, body = await api.admin(
        "sz-marketer", "POST", "/admin/v1/campaigns", campaign_body(api, "c2", "GZ")
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
    assert await status_of(pool) == state
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
        "marketer", "POST", "/admin/v1/campaigns", campaign_body(api, "s1", "SZ")
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
    body = campaign_body(api)
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
        body = campaign_body(api, "c1", branch, name="another")
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
    assert await status_of(pool) == "approved"


async def test_login_with_a_nul_in_the_username_is_invalid(api):
    resp = await api.client.post(
        "/admin/v1/login", json={"username": "market\u0000er", "password": PASSWORD}
    )
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_request" and "username" in error["fields"]


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
