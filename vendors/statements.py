"""Reconciling a vendor's daily statement against our own ledger.

A statement is CSV with a header: `grant_id,code,status,redeemed_at` (grant_id or code may be
empty; status is issued or redeemed). Each of our grants at the vendor for that day, and each
statement row, ends up in one bucket:

- matched: both sides have it, in the same state
- mismatched: both have it, in different states (they say redeemed, we say fulfilled, ...)
- missing_ours: on their statement, not in our ledger
- missing_theirs: in our ledger, not on their statement
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson

from access.staff import Staff, audit
from quanyi.errors import InvalidRequest
from vendors import queries

# Our status -> what the vendor's statement should say for it.
EXPECTED = {"fulfilled": "issued", "redeemed": "redeemed", "expired": "issued"}


def parse_statement(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        reader.fieldnames  # noqa: B018 - reads the header line
    except csv.Error as exc:
        raise InvalidRequest(f"not CSV: {exc}") from None
    if not reader.fieldnames or not {"grant_id", "code", "status"} <= set(reader.fieldnames):
        raise InvalidRequest("a statement is CSV with columns grant_id,code,status,redeemed_at")
    rows = []
    try:
        for line, row in enumerate(reader, start=2):
            if not (row.get("grant_id") or row.get("code")):
                raise InvalidRequest(f"line {line}: grant_id or code is required")
            if row.get("status") not in ("issued", "redeemed"):
                raise InvalidRequest(f"line {line}: status must be issued or redeemed")
            rows.append({k: (v or "").strip() for k, v in row.items() if k})
    except csv.Error as exc:
        raise InvalidRequest(f"line {reader.line_num}: not CSV: {exc}") from None
    return rows


async def reconcile(
    pool: asyncpg.Pool, staff: Staff, vendor_id: str, day: str, text: str, zone: ZoneInfo
) -> dict[str, Any]:
    try:
        if not day.isascii():
            raise ValueError(day)
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=zone)
    except ValueError:
        raise InvalidRequest("day must be YYYY-MM-DD", {"day": "YYYY-MM-DD"}) from None
    rows = parse_statement(text)
    ours = {
        r["grant_id"]: r
        for r in await pool.fetch(
            queries.vendor_grants, vendor_id, start, start + timedelta(days=1)
        )
    }
    by_code = {r["code"]: gid for gid, r in ours.items() if r["code"]}
    report: dict[str, list[dict[str, Any]]] = {
        "matched": [],
        "mismatched": [],
        "missing_ours": [],
        "missing_theirs": [],
    }
    seen = set()
    for row in rows:
        grant_id = row.get("grant_id") or by_code.get(row.get("code", ""))
        mine = ours.get(grant_id or "")
        if mine is None:
            report["missing_ours"].append(row)
            continue
        seen.add(grant_id)
        expected = EXPECTED.get(mine["status"], mine["status"])
        entry = {
            "grant_id": grant_id,
            "code": mine["code"],
            "ours": mine["status"],
            "theirs": row["status"],
        }
        report["matched" if expected == row["status"] else "mismatched"].append(entry)
    for grant_id, mine in ours.items():
        if grant_id not in seen and mine["status"] in EXPECTED:
            report["missing_theirs"].append(
                {"grant_id": grant_id, "code": mine["code"], "ours": mine["status"]}
            )
    summary = {k: len(v) for k, v in report.items()}
    result = {"vendor_id": vendor_id, "day": day, "rows": len(rows), "summary": summary, **report}
    saved = await pool.fetchrow(
        queries.insert_statement,
        vendor_id,
        staff.username,
        len(rows),
        orjson.dumps(result).decode(),
    )
    await audit(
        pool,
        staff,
        "statement.reconcile",
        f"vendor:{vendor_id}",
        {"day": day, "statement_id": saved["id"], **summary},
    )
    return {"statement_id": saved["id"], **result}
