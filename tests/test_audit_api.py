"""GET /admin/v1/audit: filters, paging, branch scope, who may read it, CSV export with its
cells safe from spreadsheet formulas, and bad filters refused as typed errors."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("signed_in")

# (actor, branch, action, target, at): the log a few admin days left behind, in 2025 so that
# nothing the tests themselves write (at today's time) falls in a date filter.
ROWS = [
    ("marketer", "HQ", "campaign.create", "campaign:c1", "2025-06-01 10:00:00+08"),
    ("approver", "HQ", "campaign.approve", "campaign:c1", "2025-06-02 09:00:00+08"),
    ("sz-marketer", "SZ", "campaign.create", "campaign:c10", "2025-06-02 12:00:00+08"),
    ("admin", "HQ", "vendor.update", "vendor:v1", "2025-06-02 23:59:59.999999+08"),
    ("sz-approver", "SZ", "login.failed", "sz-approver", "2025-06-03 00:00:00+08"),
]


@pytest.fixture
async def log(pool) -> None:
    for actor, branch, action, target, at in ROWS:
        await pool.execute(
            "INSERT INTO audit_log (actor, branch, action, target, at, detail)"
            " VALUES ($1, $2, $3, $4, $5::text::timestamptz, '{\"n\": 1}')",
            actor,
            branch,
            action,
            target,
            at,
        )


async def read(api, query: str, user: str = "admin") -> tuple[int, Any]:
    return await api.admin(user, "GET", f"/admin/v1/audit?{query}")


def seen(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["actor"], e["action"], e["target"]) for e in body["entries"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("actor=approver", [("approver", "campaign.approve", "campaign:c1")]),
        # A record, exactly: campaign:c1 is not campaign:c10.
        (
            "object=campaign:c1",
            [
                ("approver", "campaign.approve", "campaign:c1"),
                ("marketer", "campaign.create", "campaign:c1"),
            ],
        ),
        # A kind: every campaign.
        (
            "object=campaign&action=campaign.create",
            [
                ("sz-marketer", "campaign.create", "campaign:c10"),
                ("marketer", "campaign.create", "campaign:c1"),
            ],
        ),
        # An action's start before a dot: login takes in login.failed, not a "loginx".
        (
            "action=login&from=2025-01-01&to=2025-12-31",
            [("sz-approver", "login.failed", "sz-approver")],
        ),
        ("action=vendor.up", []),
        # A date is a whole day in the service's time zone (Asia/Shanghai), both ends.
        (
            "from=2025-06-02&to=2025-06-02",
            [
                ("admin", "vendor.update", "vendor:v1"),
                ("sz-marketer", "campaign.create", "campaign:c10"),
                ("approver", "campaign.approve", "campaign:c1"),
            ],
        ),
        # A time is exact: from inclusive, to exclusive.
        (
            "from=2025-06-02T01:00:00Z&to=2025-06-02T04:00:00%2B00:00",
            [("approver", "campaign.approve", "campaign:c1")],
        ),
        (
            "from=2025-06-02T04:00:00Z&to=2025-06-02T04:00:00.000001Z",
            [("sz-marketer", "campaign.create", "campaign:c10")],
        ),
    ],
)
async def test_filters(api, log, query, expected):
    status, body = await read(api, query)
    assert status == 200, body
    assert seen(body) == expected
    assert body["next_before"] is None


async def test_an_entry_has_every_field_and_its_chain_hash(api, log, pool):
    status, body = await read(api, "actor=admin&action=vendor")
    assert status == 200, body
    [entry] = body["entries"]
    stored = await pool.fetchrow(
        "SELECT id, encode(hash, 'hex') AS hash FROM audit_log WHERE actor = 'admin'"
    )
    assert entry == {
        "id": stored["id"],
        "at": "2025-06-02T15:59:59.999999+00:00",
        "actor": "admin",
        "branch": "HQ",
        "action": "vendor.update",
        "target": "vendor:v1",
        "detail": {"n": 1},
        "hash": stored["hash"],
    }


async def test_pages_go_newest_first_and_say_where_the_next_starts(api, log):
    status, first = await read(api, "limit=2&from=2025-01-01&to=2025-12-31")
    assert status == 200, first
    assert [e["actor"] for e in first["entries"]] == ["sz-approver", "admin"]
    assert first["next_before"] == first["entries"][-1]["id"]
    status, second = await read(
        api, f"limit=2&from=2025-01-01&to=2025-12-31&before={first['next_before']}"
    )
    assert [e["actor"] for e in second["entries"]] == ["sz-marketer", "approver"]
    status, third = await read(
        api, f"limit=2&from=2025-01-01&to=2025-12-31&before={second['next_before']}"
    )
    assert [e["actor"] for e in third["entries"]] == ["marketer"]
    assert third["next_before"] is None


async def test_branch_staff_see_their_branch_only_head_office_sees_all(api, log):
    status, body = await read(api, "from=2025-01-01&to=2025-12-31", user="sz-admin")
    assert status == 200, body
    assert seen(body) == [
        ("sz-approver", "login.failed", "sz-approver"),
        ("sz-marketer", "campaign.create", "campaign:c10"),
    ]
    status, body = await read(api, "from=2025-01-01&to=2025-12-31&object=campaign:c1", "sz-admin")
    assert (status, body["entries"]) == (200, [])
    status, body = await read(api, "from=2025-01-01&to=2025-12-31", user="auditor")
    assert status == 200, body
    assert len(body["entries"]) == len(ROWS)


@pytest.mark.parametrize("user", ["marketer", "approver", "sz-marketer", "operator"])
async def test_only_admins_and_auditors_read_the_log(api, log, user):
    status, body = await read(api, "", user=user)
    assert (status, body["error"]["code"]) == (403, "forbidden")


async def test_no_token_no_log(api, log):
    resp = await api.client.get("/admin/v1/audit")
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"


async def csv_export(api, query: str, user: str = "admin") -> tuple[int, str, str]:
    token = await api.login(user)
    resp = await api.client.get(
        f"/admin/v1/audit?format=csv&{query}", headers={"Authorization": f"Bearer {token}"}
    )
    return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_csv_export_streams_every_matching_row_oldest_first(api, log, pool):
    # More rows than one batch of the export reads.
    for i in range(1100):
        await pool.execute(
            "INSERT INTO audit_log (actor, branch, action, target, at)"
            " VALUES ('admin', 'HQ', 'bulk', $1, '2025-07-01T00:00:00Z')",
            f"thing:{i}",
        )
    status, media, text = await csv_export(api, "action=bulk")
    assert status == 200, text
    assert media.startswith("text/csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["id", "at", "actor", "branch", "action", "target", "detail", "hash"]
    assert [r[5] for r in rows[1:]] == [f"thing:{i}" for i in range(1100)]
    ids = [int(r[0]) for r in rows[1:]]
    assert ids == sorted(ids)
    exported = await pool.fetch("SELECT actor, detail FROM audit_log WHERE action = 'audit.export'")
    assert [(r["actor"], r["detail"]) for r in exported] == [("admin", '{"action": "bulk"}')]


async def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(api, pool):
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "\tcmd", "\rcmd"]
    for text in hostile:
        await pool.execute(
            "INSERT INTO audit_log (actor, branch, action, target, detail)"
            " VALUES ($1, 'HQ', $1, $1, jsonb_build_object('note', $1::text))",
            text,
        )
    status, _, body = await csv_export(api, "")
    assert status == 200, body
    rows = [r for r in csv.reader(io.StringIO(body))][1:]
    forged = [r for r in rows if r[4] != "audit.export"]
    assert [r[2] for r in forged] == [f"'{t}" for t in hostile]  # actor
    assert [r[4] for r in forged] == [f"'{t}" for t in hostile]  # action
    assert [r[5] for r in forged] == [f"'{t}" for t in hostile]  # target
    for row in rows:
        assert not row[3].startswith(("=", "+", "-", "@")) and row[6].startswith("{")


async def test_csv_export_keeps_to_the_branch_scope(api, log):
    status, _, text = await csv_export(api, "from=2025-01-01&to=2025-12-31", user="sz-admin")
    assert status == 200, text
    branches = {r[3] for r in list(csv.reader(io.StringIO(text)))[1:]}
    assert branches == {"SZ"}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=2025-13-01", "from"),
        ("from=yesterday", "from"),
        ("to=2025-06-01T10:00:00", "to"),  # a time without an offset
        ("from=0001-01-01", "from"),
        ("to=2025-06-01T25:00:00Z", "to"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("before=-1", "before"),
        ("before=99999999999999999999", "before"),
        ("format=xml", "format"),
        ("actor=" + "a" * 201, "actor"),
        ("object=%00", "object"),
        ("from=2025-06-02&to=2025-06-01", "to"),
    ],
)
async def test_a_bad_filter_is_a_400_naming_it(api, log, query, field):
    status, body = await read(api, query)
    assert status == 400, body
    assert body["error"]["code"] == "invalid_request"
    assert field in body["error"]["fields"], body


async def test_the_route_is_documented_with_both_answers(api):
    resp = await api.client.get("/openapi.json")
    operation = (await resp.json())["paths"]["/admin/v1/audit"]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    names = {p["name"] for p in operation["parameters"]}
    assert names == {"actor", "object", "action", "from", "to", "before", "limit", "format"}
