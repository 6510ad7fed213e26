"""Staff accounts through the API and the command line: create, change role, move branch,
disable, reset a password (set anew at the next login), who one is; every change audited and
ending the account's sessions."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.support.cli import quanyi
from tests.support.clients import error_code
from tests.support.settings import PASSWORD
from tests.support.stores import audit_rows

pytestmark = pytest.mark.usefixtures("signed_in")

NEW = {"username": "new-marketer", "password": "first-password-1", "role": "marketer"}


async def login(api: Any, username: str, password: str) -> tuple[int, Any]:
    resp = await api.client.post(
        "/admin/v1/login", json={"username": username, "password": password}
    )
    return resp.status, await resp.json()


async def as_token(
    api: Any, token: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    resp = await api.client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {token}"}
    )
    return resp.status, await resp.json()


async def staff_row(pool: Any, username: str) -> tuple[Any, ...] | None:
    row = await pool.fetchrow(
        "SELECT role, branch, disabled, must_change_password FROM staff WHERE username = $1",
        username,
    )
    return tuple(row) if row else None


async def sessions_of(pool: Any, username: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM staff_sessions WHERE username = $1", username)


# --- who one is -----------------------------------------------------------------------------


async def test_me_names_role_branch_and_subtree(api):
    status, me = await api.admin("sz-approver", "GET", "/admin/v1/me")
    assert status == 200
    assert me == {
        "username": "sz-approver",
        "role": "approver",
        "branch": "SZ",
        "branches": ["SZ", "SZ01"],
        "must_change_password": False,
    }
    status, me = await api.admin("auditor", "GET", "/admin/v1/me")
    assert (status, me["branches"]) == (200, ["GZ", "HQ", "SZ", "SZ01"])


# --- create ---------------------------------------------------------------------------------


async def test_an_account_made_by_an_admin_sets_its_own_password_first(api, pool):
    status, made = await api.admin("admin", "POST", "/admin/v1/staff", {**NEW, "branch": "SZ"})
    assert status == 201, made
    assert (made["username"], made["role"], made["branch"]) == ("new-marketer", "marketer", "SZ")
    assert made["must_change_password"] is True and made["disabled"] is False
    assert ("admin", "HQ", "staff.create", "staff:new-marketer") in await audit_rows(pool)
    assert "first-password-1" not in str(await pool.fetch("SELECT detail FROM audit_log"))

    status, session = await login(api, "new-marketer", "first-password-1")
    assert (status, session["must_change_password"]) == (200, True)
    token = session["token"]
    for method, path in (("GET", "/admin/v1/campaigns"), ("GET", "/admin/v1/branches")):
        status, body = await as_token(api, token, method, path)
        assert error_code(status, body) == (403, "password_change_required")
    status, me = await as_token(api, token, "GET", "/admin/v1/me")
    assert (status, me["must_change_password"]) == (200, True)

    status, body = await as_token(
        api, token, "POST", "/admin/v1/password", {"old": "wrong-one-1", "new": "my-own-password"}
    )
    assert error_code(status, body) == (400, "invalid_request")
    assert body["error"]["fields"] == {"old": "not the current password"}
    status, body = await as_token(
        api, token, "POST", "/admin/v1/password", {"old": "first-password-1", "new": "short"}
    )
    assert error_code(status, body) == (400, "invalid_request")
    assert await staff_row(pool, "new-marketer") == ("marketer", "SZ", False, True)

    status, body = await as_token(
        api,
        token,
        "POST",
        "/admin/v1/password",
        {"old": "first-password-1", "new": "my-own-password"},
    )
    assert (status, body) == (200, {"username": "new-marketer", "changed": True})
    status, body = await as_token(api, token, "GET", "/admin/v1/campaigns")
    assert (status, body["campaigns"]) == (200, [])
    assert (await login(api, "new-marketer", "first-password-1"))[0] == 401
    status, session = await login(api, "new-marketer", "my-own-password")
    assert (status, session["must_change_password"]) == (200, False)
    assert ("new-marketer", "SZ", "staff.password", "staff:new-marketer") in await audit_rows(pool)


async def test_setting_a_password_ends_the_other_sessions_only(api, pool):
    _, first = await login(api, "sz-marketer", PASSWORD)
    _, second = await login(api, "sz-marketer", PASSWORD)
    status, _ = await as_token(
        api, first["token"], "POST", "/admin/v1/password", {"old": PASSWORD, "new": "another-pw-1"}
    )
    assert status == 200
    assert (await as_token(api, first["token"], "GET", "/admin/v1/me"))[0] == 200
    assert (await as_token(api, second["token"], "GET", "/admin/v1/me"))[0] == 401


async def test_a_branch_admin_creates_accounts_in_its_subtree_only(api, pool):
    for branch, expected in (("SZ01", 201), ("SZ", 201), ("GZ", 403), ("HQ", 403)):
        body = {**NEW, "username": f"n-{branch.lower()}", "branch": branch}
        status, reply = await api.admin("sz-admin", "POST", "/admin/v1/staff", body)
        assert status == expected, (branch, reply)
    assert await staff_row(pool, "n-gz") is None and await staff_row(pool, "n-hq") is None
    assert await staff_row(pool, "n-sz01") == ("marketer", "SZ01", False, True)


@pytest.mark.parametrize("user", ["marketer", "approver", "auditor", "operator", "sz-marketer"])
async def test_only_admins_create_accounts(api, pool, user):
    status, body = await api.admin(user, "POST", "/admin/v1/staff", {**NEW, "branch": "SZ"})
    assert error_code(status, body) == (403, "forbidden")
    assert await staff_row(pool, "new-marketer") is None


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"branch": "NOWHERE"}, 400, "branch"),
        ({"role": "superuser", "branch": "SZ"}, 400, "role"),
        ({"password": "short", "branch": "SZ"}, 400, "password"),
        ({"username": "marketer", "branch": "SZ"}, 409, None),
        ({"username": "4111 1111 1111 1111", "branch": "SZ"}, 400, "username"),
    ],
)
async def test_a_bad_account_is_refused(api, pool, change, code, field):
    before = await pool.fetchval("SELECT count(*) FROM staff")
    status, body = await api.admin("admin", "POST", "/admin/v1/staff", {**NEW, **change})
    assert status == code, body
    if field:
        assert field in body["error"]["fields"]
    assert await pool.fetchval("SELECT count(*) FROM staff") == before
    assert await staff_row(pool, "marketer") == ("marketer", "HQ", False, False)


# --- change ---------------------------------------------------------------------------------


async def test_changing_a_role_ends_the_accounts_sessions(api, pool):
    token = await api.login("sz-marketer")
    status, changed = await api.admin(
        "admin", "PATCH", "/admin/v1/staff/sz-marketer", {"role": "auditor"}
    )
    assert (status, changed["role"], changed["branch"]) == (200, "auditor", "SZ")
    assert await sessions_of(pool, "sz-marketer") == 0
    assert error_code(*await as_token(api, token, "GET", "/admin/v1/me")) == (401, "unauthorized")
    [detail] = [
        orjson.loads(r["detail"])
        for r in await pool.fetch("SELECT detail FROM audit_log WHERE action = 'staff.update'")
    ]
    assert detail == {"role": {"from": "marketer", "to": "auditor"}, "sessions_ended": 1}
    _, session = await login(api, "sz-marketer", PASSWORD)
    status, body = await as_token(
        api,
        session["token"],
        "POST",
        "/admin/v1/audiences",
        {"id": "a1", "name": "x", "branch": "SZ"},
    )
    assert error_code(status, body) == (403, "forbidden")  # an auditor changes nothing


async def test_moving_an_account_changes_what_it_reaches(api, pool):
    status, moved = await api.admin(
        "admin", "PATCH", "/admin/v1/staff/sz-marketer", {"branch": "GZ"}
    )
    assert (status, moved["branch"]) == (200, "GZ")
    _, session = await login(api, "sz-marketer", PASSWORD)
    status, me = await as_token(api, session["token"], "GET", "/admin/v1/me")
    assert me["branches"] == ["GZ"]
    assert ("admin", "HQ", "staff.update", "staff:sz-marketer") in await audit_rows(pool)


async def test_a_branch_admin_moves_staff_within_its_subtree_only(api, pool):
    status, body = await api.admin(
        "sz-admin", "PATCH", "/admin/v1/staff/sz-marketer", {"branch": "GZ"}
    )
    assert error_code(status, body) == (403, "forbidden")
    assert await staff_row(pool, "sz-marketer") == ("marketer", "SZ", False, False)
    status, body = await api.admin(
        "sz-admin", "PATCH", "/admin/v1/staff/marketer", {"role": "approver"}
    )
    assert error_code(status, body) == (403, "forbidden")
    assert await staff_row(pool, "marketer") == ("marketer", "HQ", False, False)
    status, body = await api.admin(
        "sz-admin", "PATCH", "/admin/v1/staff/sz-marketer", {"branch": "SZ01"}
    )
    assert (status, body["branch"]) == (200, "SZ01")


async def test_disabling_an_account_shuts_it_out_at_once(api, pool):
    token = await api.login("sz-approver")
    status, body = await api.admin(
        "sz-admin", "PATCH", "/admin/v1/staff/sz-approver", {"disabled": True}
    )
    assert (status, body["disabled"]) == (200, True)
    assert error_code(*await as_token(api, token, "GET", "/admin/v1/me")) == (401, "unauthorized")
    assert (await login(api, "sz-approver", PASSWORD))[0] == 401
    status, body = await api.admin(
        "sz-admin", "PATCH", "/admin/v1/staff/sz-approver", {"disabled": False}
    )
    assert (status, body["disabled"]) == (200, False)
    assert (await login(api, "sz-approver", PASSWORD))[0] == 200


async def test_nobody_changes_their_own_account(api, pool):
    for change in ({"role": "marketer"}, {"branch": "SZ"}, {"disabled": True}):
        status, body = await api.admin("admin", "PATCH", "/admin/v1/staff/admin", change)
        assert error_code(status, body) == (403, "forbidden")
    status, body = await api.admin("admin", "POST", "/admin/v1/staff/admin/reset-password")
    assert error_code(status, body) == (403, "forbidden")
    assert await staff_row(pool, "admin") == ("admin", "HQ", False, False)
    assert await sessions_of(pool, "admin") == 1


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/admin/v1/staff/nobody", {"role": "marketer"}, (404, "not_found")),
        ("/admin/v1/staff/sz-marketer", {}, (400, "invalid_request")),
        ("/admin/v1/staff/sz-marketer", {"role": "root"}, (400, "invalid_request")),
        ("/admin/v1/staff/sz-marketer", {"branch": "NOWHERE"}, (400, "invalid_request")),
        ("/admin/v1/staff/sz-marketer", {"disabled": "yes"}, (400, "invalid_request")),
    ],
)
async def test_a_bad_change_changes_nothing(api, pool, path, body, expected):
    audit_before = await audit_rows(pool)
    status, reply = await api.admin("admin", "PATCH", path, body)
    assert error_code(status, reply) == expected
    assert await staff_row(pool, "sz-marketer") == ("marketer", "SZ", False, False)
    assert await sessions_of(pool, "sz-marketer") == 1
    assert await audit_rows(pool) == audit_before


# --- reset ----------------------------------------------------------------------------------


async def test_a_reset_password_works_once_and_must_be_replaced(api, pool):
    token = await api.login("sz-marketer")
    status, reply = await api.admin(
        "sz-admin", "POST", "/admin/v1/staff/sz-marketer/reset-password"
    )
    assert status == 200, reply
    temporary = reply["temporary_password"]
    assert len(temporary) >= 16 and reply["username"] == "sz-marketer"
    assert temporary not in str(await pool.fetch("SELECT * FROM audit_log"))
    assert temporary not in await pool.fetchval(
        "SELECT password_hash FROM staff WHERE username = 'sz-marketer'"
    )
    assert error_code(*await as_token(api, token, "GET", "/admin/v1/me")) == (401, "unauthorized")
    assert (await login(api, "sz-marketer", PASSWORD))[0] == 401
    status, session = await login(api, "sz-marketer", temporary)
    assert (status, session["must_change_password"]) == (200, True)
    status, body = await as_token(api, session["token"], "GET", "/admin/v1/campaigns")
    assert error_code(status, body) == (403, "password_change_required")
    status, _ = await as_token(
        api,
        session["token"],
        "POST",
        "/admin/v1/password",
        {"old": temporary, "new": "brand-new-pw"},
    )
    assert status == 200
    assert (await as_token(api, session["token"], "GET", "/admin/v1/campaigns"))[0] == 200
    assert ("sz-admin", "SZ", "staff.reset_password", "staff:sz-marketer") in await audit_rows(pool)


@pytest.mark.parametrize("user", ["sz-admin", "auditor", "marketer"])
async def test_a_reset_out_of_reach_changes_nothing(api, pool, user):
    stored = await pool.fetchval("SELECT password_hash FROM staff WHERE username = 'approver'")
    status, body = await api.admin(user, "POST", "/admin/v1/staff/approver/reset-password")
    assert error_code(status, body) == (403, "forbidden")
    assert (
        await pool.fetchval("SELECT password_hash FROM staff WHERE username = 'approver'") == stored
    )


# --- list -----------------------------------------------------------------------------------


async def test_the_staff_list_is_scoped_and_for_admins_and_auditors(api):
    status, body = await api.admin("sz-admin", "GET", "/admin/v1/staff")
    assert status == 200
    assert {s["username"] for s in body["staff"]} == {"sz-marketer", "sz-approver", "sz-admin"}
    status, body = await api.admin("auditor", "GET", "/admin/v1/staff")
    assert {"marketer", "sz-admin", "operator"} <= {s["username"] for s in body["staff"]}
    assert all("password_hash" not in s for s in body["staff"])
    for user in ("marketer", "operator", "sz-marketer"):
        status, body = await api.admin(user, "GET", "/admin/v1/staff")
        assert error_code(status, body) == (403, "forbidden")


# --- the command line -----------------------------------------------------------------------


async def cli(*argv: str, stdin: str = "") -> Any:
    return await asyncio.to_thread(quanyi, *argv, stdin=stdin)


async def test_the_cli_changes_accounts_as_a_head_office_admin(api, pool):
    done = await cli("staff", "role", "--username", "sz-marketer", "--role", "approver")
    assert (done.returncode, done.stdout) == (0, "staff sz-marketer is now approver\n"), done.stderr
    done = await cli("staff", "move", "--username", "sz-marketer", "--branch", "SZ01")
    assert (done.returncode, done.stdout) == (0, "staff sz-marketer is now at branch SZ01\n")
    assert await staff_row(pool, "sz-marketer") == ("approver", "SZ01", False, False)
    done = await cli("staff", "disable", "--username", "sz-marketer")
    assert done.returncode == 0 and await staff_row(pool, "sz-marketer") == (
        "approver",
        "SZ01",
        True,
        False,
    )
    done = await cli("staff", "enable", "--username", "sz-marketer")
    assert done.returncode == 0
    done = await cli("staff", "reset-password", "--username", "sz-marketer")
    assert done.returncode == 0, done.stderr
    temporary = done.stdout.strip().rsplit(" ", 1)[1]
    status, session = await login(api, "sz-marketer", temporary)
    assert (status, session["must_change_password"]) == (200, True)
    actions = [
        a
        for actor, _b, a, t in await audit_rows(pool, "staff:sz-marketer")
        if actor.startswith("cli:")
    ]
    assert actions == ["staff.update"] * 4 + ["staff.reset_password"]


async def test_the_cli_refuses_an_unknown_branch_or_account_in_one_line(api, pool):
    done = await cli("staff", "move", "--username", "sz-marketer", "--branch", "NOWHERE")
    assert done.returncode == 1
    assert done.stderr.strip() == "quanyi: no such branch (branch: no such branch: create it first)"
    done = await cli("staff", "role", "--username", "nobody", "--role", "auditor")
    assert (done.returncode, done.stderr.strip()) == (1, "quanyi: no staff nobody")
    done = await cli(
        "staff",
        "create",
        "--username",
        "x1",
        "--role",
        "operator",
        "--branch",
        "NOWHERE",
        "--password-stdin",
        stdin="long-enough-1\n",
    )
    assert done.returncode == 1 and await staff_row(pool, "x1") is None


async def test_the_cli_adds_and_lists_branches(api, pool):
    done = await cli("branch", "create", "--id", "GZ01", "--name", "Tianhe", "--parent", "GZ")
    assert (done.returncode, done.stdout) == (0, "branch GZ01 created under GZ (level 3)\n")
    done = await cli("branch", "list")
    assert done.stdout.splitlines() == [
        "HQ\tHQ",
        "  GZ\tGZ",
        "  SZ\tSZ",
        "    GZ01\tTianhe",
        "    SZ01\tSZ01",
    ]
    done = await cli(
        "staff",
        "create",
        "--username",
        "gz01-op",
        "--role",
        "operator",
        "--branch",
        "GZ01",
        "--password-stdin",
        stdin="long-enough-1\n",
    )
    assert done.returncode == 0, done.stderr
    assert await staff_row(pool, "gz01-op") == ("operator", "GZ01", False, False)


async def test_the_api_document_names_the_pending_password_refusal(api):
    resp = await api.client.get("/openapi.json")
    paths = (await resp.json())["paths"]

    def codes(path: str, method: str) -> str:
        return orjson.dumps(paths[path][method]["responses"].get("403", {})).decode()

    assert "password_change_required" in codes("/admin/v1/campaigns", "get")
    assert "password_change_required" in codes("/admin/v1/staff", "post")
    assert "password_change_required" not in codes("/admin/v1/login", "post")
