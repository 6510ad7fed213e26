"""The vendor registry through the staff API: roles, validation, partial updates and their audit,
rights that name a vendor; only head office changes vendors and the shared catalog."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from quanyi.vendors import rsa
from quanyi.vendors.registry import key_fingerprint
from tests.support.clients import assert_error
from tests.support.factories import http_vendor_body
from tests.support.stores import audit_rows

pytestmark = pytest.mark.usefixtures("signed_in")


MISSING_ENV = f"QUANYI_TEST_NO_SUCH_KEY_{os.getpid()}"


def as_shown(body: dict[str, Any]) -> dict[str, Any]:
    """A vendor as the API shows it, but for its lifecycle (tests/test_vendor_lifecycle.py):
    what was sent, with defaults for what was not."""
    return {
        "base_url": None,
        "timeout_ms": 2000,
        "max_in_flight": 64,
        "public_keys": [],
        "signing_key": None,
        **body,
        "retry": {
            "max_attempts": 8,
            "backoff_base_ms": 200,
            "backoff_max_ms": 60000,
            **body.get("retry", {}),
        },
    }


def without_lifecycle(vendor: dict[str, Any]) -> dict[str, Any]:
    moves = [
        f"{m}_{k}"
        for m in ("proposed", "activated", "suspended", "offboarded")
        for k in ("by", "at")
    ]
    return {k: v for k, v in vendor.items() if k not in ("state", *moves)}


async def vendor_rows(pool: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await pool.fetch("SELECT id, name, updated_at FROM vendors")]


# --- the registry -------------------------------------------------------------------------


async def test_an_admin_creates_reads_lists_and_patches_vendors(api, pool, key_pairs, our_key_file):
    body = http_vendor_body(key_pairs, our_key_file)
    status, created = await api.admin("admin", "POST", "/admin/v1/vendors", body)
    assert status == 201, created
    assert without_lifecycle(created) == as_shown(body)
    assert (created["state"], created["proposed_by"]) == ("proposed", "admin")

    minimal = {"id": "codes-co", "name": "Codes Co", "adapter": "codepool"}
    status, codes = await api.admin("admin", "POST", "/admin/v1/vendors", minimal)
    assert status == 201, codes
    assert without_lifecycle(codes) == as_shown(minimal)

    # Head-office staff of any role may read the registry (tests/test_branch_scope.py: only they).
    status, listed = await api.admin("marketer", "GET", "/admin/v1/vendors")
    assert status == 200, listed
    assert listed == {"vendors": [codes, created]}  # by id
    status, one = await api.admin("approver", "GET", "/admin/v1/vendors/lounge-co")
    assert (status, one) == (200, created)

    # A partial update changes what it names and keeps the rest, nested retry settings too.
    path = "/admin/v1/vendors/lounge-co"
    status, patched = await api.admin("admin", "PATCH", path, {"timeout_ms": 3000})
    assert status == 200, patched
    assert patched == {**created, "timeout_ms": 3000}
    status, patched = await api.admin("admin", "PATCH", path, {"retry": {"max_attempts": 5}})
    assert status == 200, patched
    expected = {**created, "timeout_ms": 3000, "retry": {**created["retry"], "max_attempts": 5}}
    assert patched == expected
    status, patched = await api.admin(
        "admin",
        "PATCH",
        path,
        {
            "name": "Lounge Company",
            "public_keys": [key_pairs.vendor_public, key_pairs.rotated_public],
        },
    )
    assert status == 200, patched
    expected = {
        **expected,
        "name": "Lounge Company",
        "public_keys": [key_pairs.vendor_public, key_pairs.rotated_public],
    }
    assert patched == expected
    # The id in a body cannot move a vendor.
    status, patched = await api.admin("admin", "PATCH", path, {"id": "renamed", "max_in_flight": 7})
    assert status == 200, patched
    expected = {**expected, "max_in_flight": 7}
    assert patched == expected
    assert (await api.admin("admin", "GET", path)) == (200, expected)
    assert sorted(r[0] for r in await vendor_rows(pool)) == ["codes-co", "lounge-co"]

    assert await audit_rows(pool, "vendor:lounge-co") == [
        ("admin", "HQ", "vendor.create", "vendor:lounge-co"),
        *[("admin", "HQ", "vendor.update", "vendor:lounge-co")] * 4,
    ]
    assert await audit_rows(pool, "vendor:codes-co") == [
        ("admin", "HQ", "vendor.create", "vendor:codes-co")
    ]
    details = [
        orjson.loads(d)
        for d in await pool.fetchval(
            "SELECT array_agg(detail ORDER BY id) FROM audit_log WHERE target = 'vendor:lounge-co'"
        )
    ]
    # An update is audited as what it changed, before and after; keys by fingerprint only.
    fingerprints = [key_fingerprint(rsa.load_key(k)) for k in expected["public_keys"]]
    assert details[0] == created
    assert details[1:] == [
        {"changed": {"timeout_ms": {"before": 1500, "after": 3000}}},
        {"changed": {"max_attempts": {"before": 3, "after": 5}}},
        {
            "changed": {
                "name": {"before": "Lounge Co", "after": "Lounge Company"},
                "public_keys": {"before": fingerprints[:1], "after": fingerprints},
            }
        },
        {"changed": {"max_in_flight": {"before": 10, "after": 7}}},
    ]


async def test_only_an_admin_may_create_or_change_a_vendor(api, pool, key_pairs, our_key_file):
    body = http_vendor_body(key_pairs, our_key_file)
    for user in ("marketer", "approver", "sz-marketer"):
        status, reply = await api.admin(user, "POST", "/admin/v1/vendors", body)
        assert_error(status, reply, 403, "forbidden")
    assert await vendor_rows(pool) == []

    status, created = await api.admin("admin", "POST", "/admin/v1/vendors", body)
    assert status == 201, created
    rows = await vendor_rows(pool)
    for user in ("marketer", "approver", "sz-approver"):
        status, reply = await api.admin(
            user, "PATCH", "/admin/v1/vendors/lounge-co", {"base_url": "https://evil.example"}
        )
        assert_error(status, reply, 403, "forbidden")
    assert await vendor_rows(pool) == rows
    assert (await api.admin("admin", "GET", "/admin/v1/vendors/lounge-co")) == (200, created)
    assert [r[2] for r in await audit_rows(pool, "vendor:lounge-co")] == ["vendor.create"]

    # Without a session: nothing at all.
    for method, path in (
        ("GET", "/admin/v1/vendors"),
        ("GET", "/admin/v1/vendors/lounge-co"),
        ("POST", "/admin/v1/vendors"),
        ("PATCH", "/admin/v1/vendors/lounge-co"),
    ):
        resp = await api.client.request(method, path, json=body)
        assert resp.status == 401, (method, path, await resp.text())


def _bad_vendor_cases(key_pairs: Any, tmp_path: Path) -> dict[str, tuple[dict[str, Any], str]]:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key at all")
    return {
        "unknown-adapter": ({"adapter": "ftp"}, "adapter"),
        "http-without-base-url": ({"base_url": None}, "base_url"),
        "simulated-without-base-url": ({"adapter": "simulated", "base_url": None}, "base_url"),
        "points-without-base-url": ({"adapter": "points", "base_url": None}, "base_url"),
        "private-key-as-public-key": (
            {"public_keys": [key_pairs.vendor_private]},
            "public_keys[0]",
        ),
        "private-key-as-second-public-key": (
            {"public_keys": [key_pairs.vendor_public, key_pairs.rotated_private]},
            "public_keys[1]",
        ),
        "three-public-keys": (
            {
                "public_keys": [
                    key_pairs.vendor_public,
                    key_pairs.rotated_public,
                    key_pairs.ours_public,
                ]
            },
            "public_keys",
        ),
        "public-keys-not-a-list": ({"public_keys": key_pairs.vendor_public}, "public_keys"),
        "public-key-not-pem": ({"public_keys": ["not a pem"]}, "public_keys[0]"),
        "public-key-not-text": ({"public_keys": [42]}, "public_keys"),
        "signing-key-file-missing": (
            {"signing_key": f"file:{tmp_path / 'no-such-key.pem'}"},
            "signing_key",
        ),
        "signing-key-file-is-a-folder": ({"signing_key": f"file:{tmp_path}"}, "signing_key"),
        "signing-key-file-not-a-key": ({"signing_key": f"file:{garbage}"}, "signing_key"),
        "signing-key-env-missing": ({"signing_key": f"env:{MISSING_ENV}"}, "signing_key"),
        "signing-key-unknown-scheme": ({"signing_key": "vault:quanyi/ours"}, "signing_key"),
        "signing-key-the-pem-itself": (
            {"signing_key": key_pairs.ours_private[:400]},
            "signing_key",
        ),
        "id-with-space": ({"id": "lounge co"}, "id"),
        "no-name": ({"name": None}, "name"),
        "timeout-zero": ({"timeout_ms": 0}, "timeout_ms"),
        "max-in-flight-text": ({"max_in_flight": "10"}, "max_in_flight"),
        "retry-not-an-object": ({"retry": "fast"}, "retry"),
        "retry-max-attempts-zero": ({"retry": {"max_attempts": 0}}, "retry.max_attempts"),
    }


async def test_a_bad_vendor_is_400_naming_the_field_and_nothing_is_stored(
    api, pool, key_pairs, our_key_file, tmp_path
):
    assert MISSING_ENV not in os.environ
    problems = []
    for case, (changes, field) in _bad_vendor_cases(key_pairs, tmp_path).items():
        body = {**http_vendor_body(key_pairs, our_key_file), **changes}
        status, reply = await api.admin("admin", "POST", "/admin/v1/vendors", body)
        if (
            status != 400
            or reply["error"]["code"] != "invalid_request"
            or field not in reply["error"].get("fields", {})
        ):
            problems.append((case, status, reply))
    assert problems == []

    for raw in (b"", b"not json", b"[]", b'"vendor"'):
        token = await api.login("admin")
        resp = await api.client.post(
            "/admin/v1/vendors", data=raw, headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 400, (raw, await resp.text())
    assert await vendor_rows(pool) == []
    assert [r for r in await audit_rows(pool) if r[2].startswith("vendor.")] == []


async def test_a_signing_key_must_be_a_private_key(api, pool, key_pairs, our_key_file, tmp_path):
    # Our signing key signs every call to the vendor: a public key there cannot sign anything.
    public_file = tmp_path / "public.pem"
    public_file.write_text(key_pairs.ours_public)
    body = http_vendor_body(key_pairs, f"file:{public_file}")
    status, reply = await api.admin("admin", "POST", "/admin/v1/vendors", body)
    error = assert_error(status, reply, 400, "invalid_request")
    assert "signing_key" in error["fields"]
    assert await vendor_rows(pool) == []


async def test_a_signing_key_may_live_in_an_environment_variable(api, pool, key_pairs, monkeypatch):
    variable = f"QUANYI_TEST_SIGNING_KEY_{os.getpid()}"
    monkeypatch.setenv(variable, key_pairs.ours_private)
    body = http_vendor_body(key_pairs, f"env:{variable}")
    status, created = await api.admin("admin", "POST", "/admin/v1/vendors", body)
    assert status == 201, created
    assert created["signing_key"] == f"env:{variable}"
    # Only the reference is stored, never the key.
    stored = await pool.fetchval("SELECT signing_key FROM vendors WHERE id = 'lounge-co'")
    assert stored == f"env:{variable}"
    assert "PRIVATE KEY" not in orjson.dumps(created).decode()


async def test_a_bad_patch_is_400_and_changes_nothing(api, pool, key_pairs, our_key_file, tmp_path):
    status, created = await api.admin(
        "admin", "POST", "/admin/v1/vendors", http_vendor_body(key_pairs, our_key_file)
    )
    assert status == 201, created
    rows = await vendor_rows(pool)
    path = "/admin/v1/vendors/lounge-co"
    problems = []
    for case, (changes, field) in _bad_vendor_cases(key_pairs, tmp_path).items():
        if case in ("id-with-space", "retry-not-an-object"):
            continue  # an id in the body is ignored; a bad retry has its own test below
        status, reply = await api.admin("admin", "PATCH", path, changes)
        if status != 400 or field not in reply["error"].get("fields", {}):
            problems.append((case, status, reply))
    for body in ([], "x", None):
        status, reply = await api.admin("admin", "PATCH", path, body)
        if status != 400:
            problems.append((repr(body), status, reply))
    assert problems == []
    assert await vendor_rows(pool) == rows
    assert (await api.admin("admin", "GET", path)) == (200, created)
    assert [r[2] for r in await audit_rows(pool, "vendor:lounge-co")] == ["vendor.create"]


async def test_a_patch_with_a_retry_that_is_not_an_object_is_400_not_500(
    api, pool, key_pairs, our_key_file
):
    status, created = await api.admin(
        "admin", "POST", "/admin/v1/vendors", http_vendor_body(key_pairs, our_key_file)
    )
    assert status == 201, created
    rows = await vendor_rows(pool)
    path = "/admin/v1/vendors/lounge-co"
    problems = []
    for retry in ("fast", 5, [1, 2], True):
        status, reply = await api.admin("admin", "PATCH", path, {"retry": retry})
        if status != 400 or "retry" not in reply["error"].get("fields", {}):
            problems.append((retry, status, reply))
    assert problems == []
    assert await vendor_rows(pool) == rows


async def test_a_vendor_id_is_taken_once_and_unknown_ones_are_404(
    api, pool, key_pairs, our_key_file
):
    body = http_vendor_body(key_pairs, our_key_file)
    status, created = await api.admin("admin", "POST", "/admin/v1/vendors", body)
    assert status == 201, created
    rows = await vendor_rows(pool)

    status, reply = await api.admin(
        "admin", "POST", "/admin/v1/vendors", {**body, "name": "Impostor", "adapter": "codepool"}
    )
    assert_error(status, reply, 409, "already_exists")
    assert await vendor_rows(pool) == rows
    assert (await api.admin("admin", "GET", "/admin/v1/vendors/lounge-co")) == (200, created)
    assert [r[2] for r in await audit_rows(pool, "vendor:lounge-co")] == ["vendor.create"]

    for method, body in (("GET", None), ("PATCH", {"name": "Ghost"})):
        status, reply = await api.admin("admin", method, "/admin/v1/vendors/ghost", body)
        assert_error(status, reply, 404, "not_found")
    status, reply = await api.admin("admin", "GET", "/admin/v1/vendors/no%20such")
    assert status == 404, reply
    assert await audit_rows(pool, "vendor:ghost") == []


# --- rights naming a vendor ---------------------------------------------------------------


async def test_a_right_with_an_unknown_vendor_is_400_not_500(api, pool, key_pairs, our_key_file):
    right = {
        "id": "lounge",
        "name": "lounge pass",
        "kind": "lounge_pass",
        "face_value": 300,
        "unit_cost": 150,
        "vendor_id": "ghost",
    }
    status, body = await api.admin("marketer", "POST", "/admin/v1/rights", right)
    error = assert_error(status, body, 400, "invalid_request")
    assert "vendor_id" in error["fields"]
    assert await pool.fetchval("SELECT count(*) FROM rights") == 0

    # Once the vendor exists the same right is fine; moving it to an unknown vendor is not.
    status, vendor = await api.admin(
        "admin",
        "POST",
        "/admin/v1/vendors",
        {**http_vendor_body(key_pairs, our_key_file), "id": "ghost"},
    )
    assert status == 201, vendor
    status, body = await api.admin("marketer", "POST", "/admin/v1/rights", right)
    assert status == 201, body
    status, body = await api.admin(
        "marketer", "PUT", "/admin/v1/rights/lounge", {**right, "vendor_id": "nobody"}
    )
    error = assert_error(status, body, 400, "invalid_request")
    assert "vendor_id" in error["fields"]
    assert await pool.fetchval("SELECT vendor_id FROM rights WHERE id = 'lounge'") == "ghost"


async def test_only_head_office_changes_the_shared_catalog_and_vendors(api, pool):
    """Rights and vendors serve every branch: a branch admin may not change them."""
    status, body = await api.admin(
        "sz-admin",
        "POST",
        "/admin/v1/rights",
        {"id": "tea", "name": "tea", "kind": "voucher", "face_value": 2, "unit_cost": 1},
    )
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await api.admin(
        "sz-admin",
        "POST",
        "/admin/v1/vendors",
        {"id": "v1", "name": "v1", "adapter": "codepool"},
    )
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert await pool.fetchval("SELECT count(*) FROM rights") == 0
    assert await pool.fetchval("SELECT count(*) FROM vendors") == 0
    status, _ = await api.admin(
        "admin", "POST", "/admin/v1/vendors", {"id": "v1", "name": "v1", "adapter": "codepool"}
    )
    assert status == 201
