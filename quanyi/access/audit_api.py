"""GET /admin/v1/audit: the audit log in the caller's scope, filtered, a page at a time as
JSON or the whole selection as CSV."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from aiohttp import web
from pydantic import Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from quanyi.access.api import request_staff
from quanyi.access.audit import AuditFilter, audit_export, audit_page
from quanyi.access.staff import audit
from quanyi.core.csv_cells import csv_rows
from quanyi.core.errors import Forbidden, InvalidRequest, Unauthorized, Unavailable
from quanyi.core.http import SETTINGS, json_response
from quanyi.core.schemas import Body, Reply, TextRule, check, endpoint, is_digits
from quanyi.stores.appkeys import POOL

routes = web.RouteTableDef()

MAX_LIMIT = 1000
CSV_COLUMNS = ("id", "at", "actor", "branch", "action", "target", "detail", "hash")
WHEN_RULE = (
    "a date (2026-12-01, a whole day in the service's time zone) or an RFC 3339 time with an"
    " offset (2026-12-01T09:30:00+08:00)"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
)


def _when(value: Any) -> date | datetime:
    """A date, or a date-time with an offset; a date-time without one is refused (whose
    midnight would it be?). Years 1970 to 9998: what every store and conversion takes."""
    if isinstance(value, str) and len(value) <= 40:
        try:
            if _DATE.match(value):
                day = date.fromisoformat(value)
                if 1970 <= day.year <= 9998:
                    return day
            elif _DATETIME.match(value):
                moment = datetime.fromisoformat(value.replace("z", "Z"))
                if moment.tzinfo is not None and 1970 <= moment.astimezone(UTC).year <= 9998:
                    return moment
        except (ValueError, OverflowError):
            pass
    raise PydanticCustomError("when", WHEN_RULE)


def _before(value: Any) -> int:
    if not (isinstance(value, str) and is_digits(value) and len(value) <= 18):
        raise PydanticCustomError("before", "an audit row id (digits)")
    return int(value)


def _limit(value: Any) -> int:
    if isinstance(value, str) and is_digits(value) and len(value) <= 4:
        if 1 <= int(value) <= MAX_LIMIT:
            return int(value)
    raise PydanticCustomError("limit", f"an integer from 1 to {MAX_LIMIT}")


When = Annotated[
    date | datetime,
    PlainValidator(_when),
    WithJsonSchema({"type": "string", "description": WHEN_RULE}),
]
Filter = Annotated[str, TextRule(200)]
BeforeId = Annotated[
    int, PlainValidator(_before), WithJsonSchema({"type": "integer", "minimum": 0})
]
Limit = Annotated[
    int,
    PlainValidator(_limit),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}),
]


class AuditQuery(Body):
    actor: Filter | None = Field(None, description="Rows of this username")
    object: Filter | None = Field(
        None,
        description="Rows about this record (campaign:c1), or about any of a kind (campaign)",
    )
    action: Filter | None = Field(
        None, description="This action (login.failed), or every one it begins (login, campaign)"
    )
    since: When | None = Field(None, alias="from", description=f"From (inclusive): {WHEN_RULE}")
    until: When | None = Field(
        None, alias="to", description="To: a date includes its whole day, a time is exclusive"
    )
    before: BeforeId | None = Field(
        None, description="Rows with an id below this (next_before of a page)"
    )
    limit: Limit = Field(100, description="Rows per page (JSON)")
    format: Literal["json", "csv"] = Field(
        "json", description="csv: every matching row, oldest first, as one text/csv download"
    )

    def filter(self, branches: list[str] | None, zone: tzinfo) -> AuditFilter:
        since = _moment(self.since, zone, "from") if self.since is not None else None
        until = _moment(self.until, zone, "to") if self.until is not None else None
        if since is not None and until is not None and since >= until:
            raise InvalidRequest("from must be before to", {"to": "after from"})
        return AuditFilter(branches, self.actor, self.object, self.action, since, until)


def _moment(when: date | datetime, zone: tzinfo, field: str) -> datetime:
    if isinstance(when, datetime):
        return when
    # A date as `to` takes in its whole day (years stop at 9998: the next day exists).
    day = when + timedelta(days=1) if field == "to" else when
    return datetime.combine(day, time(), zone)


class AuditEntry(Reply):
    id: int = Field(description="Its place in the hash chain")
    at: datetime
    actor: str
    branch: str
    action: str
    target: str
    detail: dict[str, Any]
    hash: str = Field(description="hex SHA-256 of the previous row's hash and this row")


class AuditPageReply(Reply):
    entries: list[AuditEntry]
    next_before: int | None = Field(description="before= for the next (older) page; null: none")


def _entry(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "at": row["at"].astimezone(UTC).isoformat(),
        "actor": row["actor"],
        "branch": row["branch"],
        "action": row["action"],
        "target": row["target"],
        "detail": orjson.loads(row["detail"]),
        "hash": row["hash"].hex(),
    }


def csv_lines(rows: Iterable[asyncpg.Record]) -> bytes:
    return csv_rows(
        [
            r["id"],
            r["at"].astimezone(UTC).isoformat(),
            *(r[name] for name in ("actor", "branch", "action", "target", "detail")),
            r["hash"].hex(),
        ]
        for r in rows
    )


@routes.get("/admin/v1/audit")
@endpoint(
    "The audit log in the caller's branch scope (every branch for head office), for admins and"
    " auditors: newest first a page at a time, or with format=csv every matching row oldest"
    " first as text/csv (the export is itself audited)",
    auth="staff",
    query=AuditQuery,
    responses={200: AuditPageReply},
    response_media="text/csv",
    errors=(InvalidRequest, Unauthorized, Forbidden, Unavailable),
    tags=("audit",),
)
async def get_audit(request: web.Request) -> web.StreamResponse:
    staff = await request_staff(request)
    staff.require_role("auditor")  # admins pass too; nobody else reads the log
    query = check(AuditQuery, request.query, "bad audit filter")
    wanted = query.filter(staff.visible_branches(), request.app[SETTINGS].zone)
    pool = request.app[POOL]
    if query.format == "json":
        rows = await audit_page(pool, wanted, query.limit, query.before)
        next_before = rows[-1]["id"] if len(rows) == query.limit else None
        return json_response({"entries": [_entry(r) for r in rows], "next_before": next_before})
    await audit(pool, staff, "audit.export", "audit", _described(wanted))
    batches = audit_export(pool, wanted)
    # The first batch before the answer starts: PostgreSQL away is still a 503, not a cut-off.
    first: list[asyncpg.Record] = await anext(batches, [])
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="audit.csv"',
        }
    )
    await response.prepare(request)
    await response.write(",".join(CSV_COLUMNS).encode() + b"\r\n")
    await response.write(csv_lines(first))
    async for rows in batches:
        await response.write(csv_lines(rows))
    await response.write_eof()
    return response


def _described(wanted: AuditFilter) -> dict[str, Any]:
    """The export's filters, as its audit row keeps them."""
    named = {
        "actor": wanted.actor,
        "object": wanted.object,
        "action": wanted.action,
        "from": wanted.since.isoformat() if wanted.since else None,
        "to": wanted.until.isoformat() if wanted.until else None,
    }
    return {name: value for name, value in named.items() if value is not None}
