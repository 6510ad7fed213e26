"""Vendors' daily statements, uploaded by staff or sent signed by the vendor: the reconciliation
report, the statements and days refused, and the three-way view of issued, redeemed and billed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from yarl import URL

from quanyi.core.ids import new_grant_id
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import assert_error, error_code, send
from tests.support.clock import SHANGHAI
from tests.support.stores import audit_rows
from tests.support.vendors import (
    SIM,
    post_signed,
    redeem,
    statement,
    today,
    upload,
)

# --- statements ---------------------------------------------------------------------------


@pytest.fixture
async def a_day_at_the_vendor(api, redis, pool, keys, key_pairs, fulfilled):
    """Five grants of today at `sim`: g1 redeemed, g2..g5 fulfilled, then g4 revoked; the
    ledger has it all. Returns (local day, grants)."""
    grants = await fulfilled(5)
    g1, _g2, _g3, g4, _g5 = (g["grant_id"] for g in grants)
    status, body = await redeem(api, key_pairs, "st-rd-1", g1)
    assert status == 200, body
    status, body = await api.channel("POST", f"/v1/grants/{g4}/revoke", {"reason": "closed"})
    assert status == 200, body
    await LedgerWorker(redis, pool, keys).drain()
    statuses = dict(await pool.fetch("SELECT grant_id, status FROM grants"))
    assert sorted(statuses.values()) == [
        "fulfilled",
        "fulfilled",
        "fulfilled",
        "redeemed",
        "revoked",
    ]
    day = datetime.fromtimestamp(api.clock(), SHANGHAI).date().isoformat()
    return day, grants


def _their_statement(grants: list[dict[str, Any]], stranger: str) -> str:
    g1, g2, g3, g4, _g5 = grants
    return statement(
        (g1["grant_id"], g1["code"], "redeemed"),  # matched
        ("", g2["code"], "issued"),  # matched, by code only
        (g3["grant_id"], "", "redeemed"),  # mismatched: ours fulfilled
        (g4["grant_id"], g4["code"], "issued"),  # mismatched: ours revoked
        (stranger, "SIM-STRANGER", "issued"),  # missing_ours
    )  # g5 is not on it: missing_theirs


def _check_report(report: dict[str, Any], day: str, grants: list[dict[str, Any]], stranger: str):
    g1, g2, g3, g4, g5 = grants
    assert report["vendor_id"] == SIM and report["day"] == day and report["rows"] == 5
    assert report["summary"] == {
        "matched": 2,
        "mismatched": 2,
        "missing_ours": 1,
        "missing_theirs": 1,
    }
    assert sorted(report["matched"], key=lambda e: e["grant_id"]) == sorted(
        [
            {
                "grant_id": g1["grant_id"],
                "code": g1["code"],
                "ours": "redeemed",
                "theirs": "redeemed",
            },
            {
                "grant_id": g2["grant_id"],
                "code": g2["code"],
                "ours": "fulfilled",
                "theirs": "issued",
            },
        ],
        key=lambda e: e["grant_id"],
    )
    assert sorted(report["mismatched"], key=lambda e: e["grant_id"]) == sorted(
        [
            {
                "grant_id": g3["grant_id"],
                "code": g3["code"],
                "ours": "fulfilled",
                "theirs": "redeemed",
            },
            {"grant_id": g4["grant_id"], "code": g4["code"], "ours": "revoked", "theirs": "issued"},
        ],
        key=lambda e: e["grant_id"],
    )
    [missing] = report["missing_ours"]
    assert (missing["grant_id"], missing["code"], missing["status"]) == (
        stranger,
        "SIM-STRANGER",
        "issued",
    )
    assert report["missing_theirs"] == [
        {"grant_id": g5["grant_id"], "code": g5["code"], "ours": "fulfilled"}
    ]


async def test_staff_upload_a_statement_and_get_the_reconciliation(api, pool, a_day_at_the_vendor):
    day, grants = a_day_at_the_vendor
    stranger = new_grant_id(int(api.clock() * 1000))

    status, report = await upload(api, day, _their_statement(grants, stranger))
    assert status == 201, report
    _check_report(report, day, grants, stranger)

    saved = await pool.fetchrow("SELECT * FROM statements WHERE id = $1", report["statement_id"])
    assert (saved["vendor_id"], saved["uploaded_by"], saved["rows"]) == (SIM, "approver", 5)
    assert orjson.loads(saved["report"])["summary"] == report["summary"]
    assert ("approver", "HQ", "statement.reconcile", f"vendor:{SIM}") in await audit_rows(pool)

    # Another day has none of these grants: every row is missing on our side.
    next_day = (datetime.fromisoformat(day) + timedelta(days=1)).date().isoformat()
    status, other = await upload(api, next_day, _their_statement(grants, stranger))
    assert status == 201, other
    assert other["summary"] == {
        "matched": 0,
        "mismatched": 0,
        "missing_ours": 5,
        "missing_theirs": 0,
    }


async def test_a_vendor_sends_its_signed_statement_itself(
    api, pool, key_pairs, a_day_at_the_vendor
):
    day, grants = a_day_at_the_vendor
    stranger = new_grant_id(int(api.clock() * 1000))
    raw = _their_statement(grants, stranger).encode()
    path = f"/v1/vendors/{SIM}/statements?day={day}"

    status, report = await post_signed(api, path, raw, key_pairs.vendor_private)
    assert status == 201, report
    _check_report(report, day, grants, stranger)
    assert (
        await pool.fetchval(
            "SELECT uploaded_by FROM statements WHERE id = $1", report["statement_id"]
        )
        == f"vendor:{SIM}"
    )

    # Unsigned, signed by another key, or stale: refused, nothing saved.
    count = await pool.fetchval("SELECT count(*) FROM statements")
    status, body = await send(api, "POST", path, raw, headers={"Content-Type": "text/csv"})
    assert_error(status, body, 401, "unauthorized")
    status, body = await post_signed(api, path, raw, key_pairs.ours_private)
    assert_error(status, body, 401, "unauthorized")
    status, body = await post_signed(
        api, path, raw, key_pairs.vendor_private, ts=int(api.clock()) - 301
    )
    assert_error(status, body, 401, "unauthorized")
    assert await pool.fetchval("SELECT count(*) FROM statements") == count


BAD_STATEMENTS = {
    "empty": b"",
    "wrong-columns": b"a,b,c\n1,2,3\n",
    "no-code-column": b"grant_id,status\nX,issued\n",
    "row-without-grant-or-code": b"grant_id,code,status,redeemed_at\n,,issued,\n",
    "unknown-status": b"grant_id,code,status,redeemed_at\nX,,used,\n",
    "no-status": b"grant_id,code,status,redeemed_at\nX,,,\n",
    "not-utf8": b"\xff\xfegrant_id,code,status\n",
}


async def test_a_bad_statement_is_400_from_staff_and_from_the_vendor(api, pool, key_pairs, sim):
    path = f"/v1/vendors/{SIM}/statements?day={today(api)}"
    problems = []
    for case, raw in BAD_STATEMENTS.items():
        uploaded = await upload(api, today(api), raw)
        sent = await post_signed(api, path, raw, key_pairs.vendor_private)
        for route, (status, body) in (("staff", uploaded), ("vendor", sent)):
            if status != 400 or body["error"]["code"] != "invalid_request":
                problems.append((case, route, status, body))
    assert problems == []
    assert await pool.fetchval("SELECT count(*) FROM statements") == 0


async def test_a_statement_with_an_overlong_field_is_refused_not_500(api, pool, key_pairs, sim):
    # Python's csv module raises csv.Error on a field over 128 KiB.
    raw = b"grant_id,code,status,redeemed_at\n" + b"X" * 200_000 + b",,issued,\n"
    path = f"/v1/vendors/{SIM}/statements?day={today(api)}"
    for status, body in (
        await upload(api, today(api), raw),
        await post_signed(api, path, raw, key_pairs.vendor_private),
    ):
        assert status in (400, 413), body
        assert body["error"]["code"] in ("invalid_request", "payload_too_large"), body
    assert await pool.fetchval("SELECT count(*) FROM statements") == 0


BAD_DAYS = [
    "",
    "yesterday",
    "2026-13-01",
    "2026-02-30",
    "20260101",
    "2026-01-01x",
    "01/02/2026",
    "2026-01-01 00:00",
]


async def test_a_statement_for_a_bad_day_is_400(api, pool, key_pairs, sim):
    text = statement(("X", "", "issued"))
    raw = text.encode()
    problems = []
    for day in BAD_DAYS:
        status, body = await upload(api, day, text)
        if status != 400 or "day" not in body["error"].get("fields", {}):
            problems.append((day, "staff", status, body))
        path = str(URL(f"/v1/vendors/{SIM}/statements").with_query(day=day))
        status, body = await post_signed(api, path, raw, key_pairs.vendor_private)
        if status != 400 or "day" not in body["error"].get("fields", {}):
            problems.append((day, "vendor", status, body))
    status, body = await post_signed(
        api, f"/v1/vendors/{SIM}/statements", raw, key_pairs.vendor_private
    )
    assert_error(status, body, 400, "invalid_request")
    assert problems == []
    assert await pool.fetchval("SELECT count(*) FROM statements") == 0


async def test_a_day_in_non_ascii_digits_is_400(api, pool, sim):
    # strptime takes any Unicode digit; the report and the audit log would carry this text.
    status, body = await upload(api, "２０２６-01-01", statement(("X", "", "issued")))
    error = assert_error(status, body, 400, "invalid_request")
    assert "day" in error["fields"]
    assert await pool.fetchval("SELECT count(*) FROM statements") == 0


async def test_a_statement_of_a_busy_day_is_reconciled(api, pool, key_pairs, sim):
    """A vendor with a few thousand grants a day sends a statement of a few hundred KiB."""
    ms = int(api.clock() * 1000)
    rows = [(new_grant_id(ms), f"SIM-{i:012d}", "issued") for i in range(5000)]
    text = statement(*rows)
    assert len(text) > 200_000

    status, report = await upload(api, today(api), text)
    assert status == 201, report
    assert report["rows"] == 5000 and report["summary"]["missing_ours"] == 5000

    path = f"/v1/vendors/{SIM}/statements?day={today(api)}"
    status, report = await post_signed(api, path, text.encode(), key_pairs.vendor_private)
    assert status == 201, report
    assert report["rows"] == 5000


async def test_statements_need_staff_of_a_known_vendor(api, pool, sim):
    day = datetime.fromtimestamp(api.clock(), SHANGHAI).date().isoformat()
    text = statement(("X", "", "issued"))
    status, body = await upload(api, day, text, vendor_id="ghost")
    assert_error(status, body, 404, "not_found")
    resp = await api.client.post(
        f"/admin/v1/vendors/{SIM}/statements", params={"day": day}, data=text.encode()
    )
    assert resp.status == 401, await resp.text()
    assert await pool.fetchval("SELECT count(*) FROM statements") == 0


# --- the vendor three-way view (GET /admin/v1/reports/vendors) ------------------------------


async def vendor_days(api: Any, user: str = "approver", **query: str) -> tuple[int, Any]:
    text = "&".join(f"{k}={v}" for k, v in query.items())
    return await api.admin(user, "GET", f"/admin/v1/reports/vendors?{text}")


async def test_issued_redeemed_and_billed_side_by_side(api, a_day_at_the_vendor):
    day, grants = a_day_at_the_vendor

    status, body = await vendor_days(api, vendor_id=SIM, **{"from": day, "to": day})
    assert status == 200, body
    [row] = body["rows"]
    assert (row["vendor_id"], row["day"], row["statement"]) == (SIM, day, None)
    assert (row["issued"], row["redeemed_by_callback"]) == (5, 1)
    assert (row["billed_minus_issued"], row["billed_redeemed_minus_callbacks"]) == (None, None)

    status, report = await upload(api, day, _their_statement(grants, "stranger-1"))
    assert status == 201, report
    status, body = await vendor_days(api, vendor_id=SIM, **{"from": day, "to": day})
    [row] = body["rows"]
    assert row["statement"] == {
        "statement_id": report["statement_id"],
        "rows": 5,
        "billed_issued": 3,
        "billed_redeemed": 2,
        "summary": {"matched": 2, "mismatched": 2, "missing_ours": 1, "missing_theirs": 1},
    }
    # Five billed for five issued; two billed as redeemed against one callback.
    assert (row["billed_minus_issued"], row["billed_redeemed_minus_callbacks"]) == (0, 1)
    assert row["cost"] == 5 * 100  # the fixture's right costs 100 a grant

    # A corrected statement for the day replaces the first in the view.
    g1 = grants[0]
    status, second = await upload(api, day, statement((g1["grant_id"], g1["code"], "redeemed")))
    assert status == 201, second
    status, body = await vendor_days(api, vendor_id=SIM, **{"from": day, "to": day})
    [row] = body["rows"]
    assert row["statement"]["statement_id"] == second["statement_id"]
    assert (row["statement"]["rows"], row["billed_minus_issued"]) == (1, -4)


async def test_head_office_only_and_a_bad_range_is_refused(api):
    status, body = await vendor_days(api, "sz-approver")
    assert error_code(status, body) == (403, "forbidden")
    status, body = await vendor_days(api, **{"from": "2026-12-02", "to": "2026-12-01"})
    assert error_code(status, body) == (400, "invalid_request")
    status, body = await vendor_days(api)
    assert (status, body["rows"]) == (200, [])
