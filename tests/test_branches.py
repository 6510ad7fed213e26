"""The branch tree: head office at the root, four levels at most, each staff member scoped to
their own branch and those below it; migration 0010 makes a branch of every label in use."""

from __future__ import annotations

import asyncpg
import pytest

from quanyi.access.secret_box import secret_box
from quanyi.access.staff import Staff
from quanyi.cli.demo import load_demo
from quanyi.stores.db import migrate, migration_files
from tests.support.clients import add_staff, error_code, new_sessions
from tests.support.factories import campaign_of_branch
from tests.support.stores import audit_rows

pytestmark = pytest.mark.usefixtures("signed_in")


def tree(reply: dict) -> list[tuple[str, str | None, int]]:
    return [(b["id"], b["parent_id"], b["depth"]) for b in reply["branches"]]


async def test_head_office_reads_the_whole_tree_parents_first(api):
    status, body = await api.admin("auditor", "GET", "/admin/v1/branches")
    assert status == 200, body
    assert tree(body) == [("HQ", None, 1), ("GZ", "HQ", 2), ("SZ", "HQ", 2), ("SZ01", "SZ", 3)]


@pytest.mark.parametrize("user", ["sz-marketer", "sz-admin"])
async def test_branch_staff_read_their_own_subtree_only(api, user):
    status, body = await api.admin(user, "GET", "/admin/v1/branches")
    assert status == 200, body
    assert tree(body) == [("SZ", "HQ", 2), ("SZ01", "SZ", 3)]


async def test_a_head_office_admin_adds_branches_down_to_the_fourth_level(api, pool):
    status, made = await api.admin(
        "admin",
        "POST",
        "/admin/v1/branches",
        {"id": "SZ0101", "name": "Outlet", "parent_id": "SZ01"},
    )
    assert status == 201, made
    assert (made["id"], made["parent_id"], made["depth"]) == ("SZ0101", "SZ01", 4)
    assert made["name"] == "Outlet"
    assert ("admin", "HQ", "branch.create", "branch:SZ0101") in await audit_rows(pool)
    status, body = await api.admin(
        "admin",
        "POST",
        "/admin/v1/branches",
        {"id": "SZ010101", "name": "x", "parent_id": "SZ0101"},
    )
    assert error_code(status, body) == (400, "invalid_request")
    assert "parent_id" in body["error"]["fields"]
    assert await pool.fetchval("SELECT count(*) FROM branches WHERE id = 'SZ010101'") == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "BJ", "name": "Beijing", "parent_id": "NOWHERE"}, "parent_id"),
        ({"id": "bj/1", "name": "Beijing", "parent_id": "HQ"}, "id"),
        ({"id": "", "name": "Beijing", "parent_id": "HQ"}, "id"),
        ({"id": "BJ", "parent_id": "HQ"}, "name"),
    ],
)
async def test_a_bad_branch_is_refused_and_nothing_is_made(api, pool, body, field):
    before = await pool.fetchval("SELECT count(*) FROM branches")
    status, reply = await api.admin("admin", "POST", "/admin/v1/branches", body)
    assert error_code(status, reply) == (400, "invalid_request")
    assert field in reply["error"]["fields"]
    assert await pool.fetchval("SELECT count(*) FROM branches") == before


async def test_an_existing_branch_id_is_a_conflict(api, pool):
    status, body = await api.admin(
        "admin", "POST", "/admin/v1/branches", {"id": "GZ", "name": "again", "parent_id": "SZ"}
    )
    assert error_code(status, body) == (409, "already_exists")
    assert await pool.fetchval("SELECT parent_id FROM branches WHERE id = 'GZ'") == "HQ"


@pytest.mark.parametrize("user", ["marketer", "approver", "auditor", "operator", "sz-admin"])
async def test_only_head_office_admins_add_branches(api, pool, user):
    status, body = await api.admin(
        user, "POST", "/admin/v1/branches", {"id": "SZ02", "name": "x", "parent_id": "SZ"}
    )
    assert error_code(status, body) == (403, "forbidden")
    assert await pool.fetchval("SELECT count(*) FROM branches WHERE id = 'SZ02'") == 0


async def test_a_new_sub_branch_is_in_scope_of_its_parents_staff_at_once(api):
    status, _ = await api.admin(
        "admin", "POST", "/admin/v1/branches", {"id": "SZ02", "name": "Nanshan", "parent_id": "SZ"}
    )
    assert status == 201
    status, me = await api.admin("sz-marketer", "GET", "/admin/v1/me")
    assert (status, me["branches"]) == (200, ["SZ", "SZ01", "SZ02"])
    body = {"id": "sz02-vip", "name": "Nanshan VIPs", "branch": "SZ02"}
    status, made = await api.admin("sz-marketer", "POST", "/admin/v1/audiences", body)
    assert (status, made["branch"]) == (201, "SZ02")


async def test_branch_staff_act_on_sub_branches_not_on_siblings_or_parents(api, pool):
    for branch, expected in (("SZ01", 201), ("SZ", 201), ("GZ", 403), ("HQ", 403)):
        body = {"id": f"a-{branch.lower()}", "name": "segment", "branch": branch}
        status, reply = await api.admin("sz-marketer", "POST", "/admin/v1/audiences", body)
        assert status == expected, (branch, reply)
    assert sorted(await pool.fetchval("SELECT array_agg(branch) FROM audiences")) == ["SZ", "SZ01"]
    status, reply = await api.admin("sz-marketer", "GET", "/admin/v1/audiences/a-sz01")
    assert (status, reply["branch"]) == (200, "SZ01")


async def test_a_sub_branch_staff_member_does_not_reach_up(api, pool):
    await add_staff(pool, {"sz01-marketer": ("marketer", "SZ01")})
    [token] = (await new_sessions(pool, "sz01-marketer")).values()
    api.use_session("sz01-marketer", token)
    status, me = await api.admin("sz01-marketer", "GET", "/admin/v1/me")
    assert (status, me["branch"], me["branches"]) == (200, "SZ01", ["SZ01"])
    body = {"id": "a-sz", "name": "segment", "branch": "SZ"}
    status, reply = await api.admin("sz01-marketer", "POST", "/admin/v1/audiences", body)
    assert error_code(status, reply) == (403, "forbidden")


async def test_an_unknown_branch_is_a_typed_400_for_records_that_name_one(api, pool, coffee):
    status, body = await api.admin(
        "marketer", "POST", "/admin/v1/campaigns", campaign_of_branch(api, "c1", "NOWHERE")
    )
    assert error_code(status, body) == (400, "invalid_request")
    assert body["error"]["fields"] == {"branch": "no such branch: create it first"}
    body = {"id": "a1", "name": "segment", "branch": "NOWHERE"}
    status, reply = await api.admin("marketer", "POST", "/admin/v1/audiences", body)
    assert error_code(status, reply) == (400, "invalid_request")
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0
    assert await pool.fetchval("SELECT count(*) FROM audiences") == 0


def test_staff_made_in_code_know_their_own_branch_only():
    branch_staff = Staff("x", "marketer", "SZ")
    assert branch_staff.visible_branches() == ["SZ"]
    branch_staff.require_branch("SZ")
    with pytest.raises(Exception, match="may not act on branch SZ01"):
        branch_staff.require_branch("SZ01")
    assert Staff("y", "marketer", "HQ").visible_branches() is None


# --- the demo -----------------------------------------------------------------------------


async def test_the_demo_has_a_small_tree_and_staff_of_every_role(
    pool, redis, keys, settings, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the demo's keys are made under the working directory
    await pool.execute("TRUNCATE staff, branches CASCADE")
    await pool.execute(
        "INSERT INTO branches (id, name, parent_id, depth) VALUES ('HQ', 'Head office', NULL, 1)"
    )
    created = await load_demo(pool, redis, keys, secret_box(settings))
    assert {"branch SZ", "branch SZ01", "branch GZ", "staff demo-auditor"} <= set(created)
    rows = await pool.fetch("SELECT id, parent_id FROM branches ORDER BY depth, id")
    assert [tuple(r) for r in rows] == [("HQ", None), ("GZ", "HQ"), ("SZ", "HQ"), ("SZ01", "SZ")]
    roles = {r["role"] for r in await pool.fetch("SELECT role FROM staff")}
    assert roles == {"marketer", "approver", "admin", "auditor", "operator"}
    assert await pool.fetchval("SELECT count(DISTINCT branch) FROM staff") == 4
    again = await load_demo(pool, redis, keys, secret_box(settings))
    assert not [c for c in again if c.startswith(("branch", "staff"))]


# --- migration 0010 -----------------------------------------------------------------------


@pytest.fixture
async def database_before_0010(database):
    """A database of its own with every migration before 0010 applied."""
    url = f"{database}_before_0010"
    admin = await asyncpg.connect(database.rsplit("/", 1)[0] + "/postgres")
    name = url.rsplit("/", 1)[1]
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, path in migration_files():
            if version >= 10:
                break
            await conn.execute(path.read_text())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, path.name
            )
        yield url, conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_the_migration_makes_a_branch_of_every_label_in_use(database_before_0010):
    url, conn = database_before_0010
    await conn.execute(
        "INSERT INTO staff (username, password_hash, role, branch) VALUES"
        " ('a', 'x', 'admin', 'HQ'), ('b', 'x', 'marketer', 'SZ')"
    )
    await conn.execute(
        "INSERT INTO campaigns (id, name, branch, starts_at, ends_at, channels, created_by)"
        " VALUES ('c1', 'c1', 'GZ', now(), now() + interval '1 day', '{app}', 'b')"
    )
    await conn.execute(
        "INSERT INTO audiences (id, name, branch, created_by) VALUES ('a1', 'a1', 'SZ', 'b')"
    )
    applied = await migrate(url)
    assert "0010_branches_staff.sql" in applied
    rows = await conn.fetch("SELECT id, parent_id, depth FROM branches ORDER BY depth, id")
    assert [tuple(r) for r in rows] == [("HQ", None, 1), ("GZ", "HQ", 2), ("SZ", "HQ", 2)]
    assert await conn.fetchval("SELECT bool_or(must_change_password) FROM staff") is False
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute(
            "INSERT INTO staff (username, password_hash, role, branch)"
            " VALUES ('c', 'x', 'auditor', 'NOWHERE')"
        )
    await conn.execute(
        "INSERT INTO staff (username, password_hash, role, branch)"
        " VALUES ('d', 'x', 'operator', 'GZ'), ('e', 'x', 'auditor', 'HQ')"
    )
