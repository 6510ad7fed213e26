"""The staff reads of grants: one by its id, or a customer's newest, each as the channel API
shows it plus its campaign's branch. Staff see the grants of their branch subtree only; a grant
of another branch is not found, so an id never tells whether it exists elsewhere. The revoke is
in issuance/api.py."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from quanyi.access.api import request_staff
from quanyi.access.staff import Staff
from quanyi.core.errors import Forbidden, GrantNotFound, InvalidRequest, Unauthorized
from quanyi.core.http import json_response
from quanyi.core.ids import is_grant_id
from quanyi.core.schemas import Reply, check, endpoint
from quanyi.issuance import queries
from quanyi.issuance.api import AWAY, GRANT_ID_RULE, GRANTS
from quanyi.issuance.grants import public
from quanyi.issuance.model import (
    CustomerGrantsQuery,
    CustomerPath,
    GrantPath,
    GrantReply,
    GrantSummary,
)
from quanyi.stores.appkeys import POOL

routes = web.RouteTableDef()

# Grants are money: no operator.
READERS = ("marketer", "approver")


class StaffGrantsQuery(CustomerPath, CustomerGrantsQuery):
    pass


class StaffGrantReply(GrantReply):
    branch: str = Field(description="the branch of the grant's campaign")


class StaffGrantSummary(GrantSummary):
    branch: str


class StaffGrantsReply(Reply):
    customer_id: str
    grants: list[StaffGrantSummary]


@routes.get("/admin/v1/grants/{grant_id}")
@endpoint(
    "Read a grant of a campaign of the staff member's branch subtree: status, fulfilment and"
    " timeline",
    auth="staff",
    path=GrantPath,
    responses={200: StaffGrantReply},
    errors=(InvalidRequest, Unauthorized, Forbidden, GrantNotFound, *AWAY),
    tags=("grants", "staff"),
)
async def get_staff_grant(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    staff.require_reader(*READERS)
    grant_id = request.match_info["grant_id"]
    if not is_grant_id(grant_id):  # never repeated: it may be anything, a card number too
        raise InvalidRequest("not a grant id", {"grant_id": GRANT_ID_RULE})
    [shown] = await _in_scope(request, staff, [await request.app[GRANTS].get(grant_id)])
    if shown is None:
        # What an id no grant has answers (grants.py), word for word.
        raise GrantNotFound(f"no grant {grant_id}")
    return json_response(public(shown))


@routes.get("/admin/v1/grants")
@endpoint(
    "A customer's grants of campaigns of the staff member's branch subtree, newest first",
    auth="staff",
    query=StaffGrantsQuery,
    responses={200: StaffGrantsReply},
    errors=(InvalidRequest, Unauthorized, Forbidden, *AWAY),
    tags=("grants", "staff"),
)
async def get_staff_grants(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    staff.require_reader(*READERS)
    query = check(StaffGrantsQuery, request.query, "bad grants query")
    grants = await request.app[GRANTS].of_customer(query.customer_id, query.limit)
    shown = [g for g in await _in_scope(request, staff, grants) if g is not None]
    return json_response({"customer_id": query.customer_id, "grants": shown})


async def _in_scope(
    request: web.Request, staff: Staff, grants: list[dict[str, Any]]
) -> list[dict[str, Any] | None]:
    """Each grant with its campaign's branch, or None where that is outside the staff
    member's subtree."""
    if not grants:
        return []
    campaigns = sorted({g["campaign_id"] for g in grants})
    rows = await request.app[POOL].fetch(queries.campaign_branches, campaigns)
    branches = {r["id"]: r["branch"] for r in rows}
    visible = staff.visible_branches()
    out: list[dict[str, Any] | None] = []
    for grant in grants:
        branch = branches.get(grant["campaign_id"])
        if branch is None or (visible is not None and branch not in visible):
            out.append(None)
        else:
            out.append({**grant, "branch": branch})
    return out
