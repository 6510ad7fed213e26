"""The list of bulk issuances, GET /admin/v1/issuances: newest first, of one campaign and one
state if asked, only those of campaigns in the caller's branch subtree (the scope of reading one
job, issuances_api.py). Each job as GET of one answers it, approvals included."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from quanyi.access.api import request_staff
from quanyi.campaigns.approvals import Approval
from quanyi.campaigns.issuances import IssuanceReply, job_json
from quanyi.core.errors import Forbidden, InvalidRequest, Unauthorized
from quanyi.core.http import json_response
from quanyi.core.schemas import Body, Ident, Reply, check, endpoint, is_digits
from quanyi.stores.appkeys import POOL
from quanyi.stores.db import load_queries

routes = web.RouteTableDef()
queries = load_queries("quanyi.campaigns", "issuances_list.sql")

MAX_LIMIT = 200
State = Literal["pending_approval", "running", "paused", "done", "cancelled"]


def _limit(value: Any) -> int:
    # A query string's value is text: digits only, so "1e3", "-1" and " 5" get the rule.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not (isinstance(value, str) and is_digits(value) and len(value) <= 3):
        raise PydanticCustomError("limit", f"an integer from 1 to {MAX_LIMIT}")
    number = int(value)
    if not 1 <= number <= MAX_LIMIT:
        raise PydanticCustomError("limit", f"an integer from 1 to {MAX_LIMIT}")
    return number


Limit = Annotated[
    int,
    BeforeValidator(_limit),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}),
]


class IssuancesQuery(Body):
    campaign_id: Ident | None = Field(None, description="Only the jobs of this campaign")
    state: State | None = Field(None, description="Only the jobs in this state")
    limit: Limit = Field(50, description="How many jobs, newest first")


class IssuancesReply(Reply):
    issuances: list[IssuanceReply]


@routes.get("/admin/v1/issuances")
@endpoint(
    "Bulk issuances of campaigns of the staff member's branch subtree, newest first, by"
    " campaign and state",
    auth="staff",
    query=IssuancesQuery,
    responses={200: IssuancesReply},
    errors=(InvalidRequest, Unauthorized, Forbidden),
    tags=("issuances",),
)
async def get_issuances(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    staff.require_reader("marketer", "approver")
    query = check(IssuancesQuery, request.query, "bad issuances query")
    pool = request.app[POOL]
    rows = await pool.fetch(
        queries.list_jobs, query.campaign_id, query.state, staff.visible_branches(), query.limit
    )
    approvals: dict[str, list[Approval]] = {}
    if rows:
        for r in await pool.fetch(queries.approvals_of_jobs, [row["id"] for row in rows]):
            approvals.setdefault(r["job_id"], []).append(Approval.from_row(r))
    jobs: list[dict[str, Any]] = [job_json(row, approvals.get(row["id"], [])) for row in rows]
    return json_response({"issuances": jobs})
