"""Staff login and tokens: a token that works and is audited, bad credentials and bodies refused,
disabled staff and expired tokens shut out, a token never taken for a channel signature."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.clients import error_code
from tests.support.factories import campaign_in
from tests.support.settings import PASSWORD
from tests.support.stores import audit_rows, campaign_status

pytestmark = pytest.mark.usefixtures("signed_in")


# login and tokens


async def test_login_gives_a_token_that_works_and_is_audited(api, pool):
    resp = await api.client.post(
        "/admin/v1/login", json={"username": "approver", "password": PASSWORD}
    )
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"token", "expires_at", "must_change_password"}
    assert body["must_change_password"] is False
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
    assert await campaign_status(pool) == "pending"
    assert await audit_rows(pool) == audit_before


async def test_a_token_is_not_a_channel_signature_and_a_signature_is_not_a_token(api, coffee):
    await api.create_campaign()
    token = await api.login("approver")
    resp = await api.client.get(
        "/v1/customers/cust-1/grants", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"
    status, body = await api.channel("GET", "/admin/v1/campaigns/c1")
    assert error_code(status, body) == (401, "unauthorized")


async def test_login_with_a_nul_in_the_username_is_invalid(api):
    resp = await api.client.post(
        "/admin/v1/login", json={"username": "market\u0000er", "password": PASSWORD}
    )
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_request" and "username" in error["fields"]
