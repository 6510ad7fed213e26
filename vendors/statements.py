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

import asyncio
import csv
import io
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson

from quanyi.access.staff import HEAD_OFFICE, Actor, audit
from quanyi.core.csv_cells import safe_cell
from quanyi.core.errors import InvalidRequest
from quanyi.core.pan import mask_json
from quanyi.core.schemas import check
from quanyi.vendors import queries
from quanyi.vendors.model import StatementQuery


@dataclass(frozen=True)
class VendorActor:
    """A vendor sending its own statement, as the audit log and the statement record name it:
    not a staff member, so it has no role or branch scope anything could check. Statements are
    head office's (staff who upload one must be there), and a vendor's is filed there too."""

    vendor_id: str
    branch: str = HEAD_OFFICE

    @property
    def username(self) -> str:
        return f"vendor:{self.vendor_id}"


# Our status -> what the vendor's statement should say for it.
EXPECTED = {"fulfilled": "issued", "redeemed": "redeemed", "expired": "issued"}


def _safe(entry: dict[str, Any]) -> dict[str, Any]:
    return {safe_cell(k): safe_cell(v) for k, v in entry.items()}


# Rows parsed between two yields to the event loop, about 3 ms of CPU: a 16 MiB statement is
# some 320k rows and half a second of parsing, which would otherwise stall every claim this
# process serves. (A thread would hold the GIL all the same; a process would spend as long
# unpickling the rows back.)
PARSE_CHUNK_ROWS = 2000


async def parse_statement(text: str) -> list[dict[str, str]]:
    if "\x00" in text:
        # csv reads it, PostgreSQL cannot store it (text, jsonb): refuse before anything runs.
        raise InvalidRequest("a statement must not contain NUL bytes", {"body": "NUL byte"})
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
            if line % PARSE_CHUNK_ROWS == 0:
                await asyncio.sleep(0)
            if not (row.get("grant_id") or row.get("code")):
                raise InvalidRequest(f"line {line}: grant_id or code is required")
            if row.get("status") not in ("issued", "redeemed"):
                raise InvalidRequest(f"line {line}: status must be issued or redeemed")
            rows.append({k: (v or "").strip() for k, v in row.items() if k})
    except csv.Error as exc:
        raise InvalidRequest(f"line {reader.line_num}: not CSV: {exc}") from None
    return rows


async def reconcile(
    pool: asyncpg.Pool, actor: Actor, vendor_id: str, day: str, text: str, zone: ZoneInfo
) -> dict[str, Any]:
    """`actor` uploaded the statement of `day` (YYYY-MM-DD): staff, the CLI or the vendor."""
    query = check(StatementQuery, {"day": day}, "day must be YYYY-MM-DD")
    start = datetime.combine(query.start(), time(), zone)
    rows = await parse_statement(text)
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
    # Escaping and masking touch every cell: half a second and more for a 16 MiB statement,
    # so they run in a thread (the loop still gets the GIL every few ms) rather than on it.
    report = await asyncio.to_thread(
        lambda: {bucket: [_safe(e) for e in entries] for bucket, entries in report.items()}
    )
    summary = {k: len(v) for k, v in report.items()}
    result = {"vendor_id": vendor_id, "day": day, "rows": len(rows), "summary": summary, **report}
    stored = await asyncio.to_thread(lambda: orjson.dumps(mask_json(result)).decode())
    billed = Counter(row["status"] for row in rows)
    saved = await pool.fetchrow(
        queries.insert_statement,
        vendor_id,
        actor.username,
        len(rows),
        stored,  # their cells: card numbers masked
        query.start(),
        billed["issued"],
        billed["redeemed"],
        orjson.dumps(summary).decode(),
    )
    await audit(
        pool,
        actor,
        "statement.reconcile",
        f"vendor:{vendor_id}",
        {"day": day, "statement_id": saved["id"], **summary},
    )
    return {"statement_id": saved["id"], **result}
