"""The staff API of branch budgets under /admin/v1/branches/{branch_id}/budget."""

from __future__ import annotations

from aiohttp import web

from quanyi.access.api import request_staff
from quanyi.campaigns.budgets import (
    AllocationBody,
    BudgetQuery,
    BudgetRules,
    BudgetService,
    ReclaimBody,
)
from quanyi.core.errors import (
    BudgetExceeded,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthorized,
)
from quanyi.core.http import SETTINGS, json_response, path_id
from quanyi.core.schemas import Reply, check, endpoint
from quanyi.stores.appkeys import KEYS, POOL, REDIS

routes = web.RouteTableDef()
TAGS = ("budgets",)


class BudgetReply(Reply):
    """A branch's budget for a period, in fen: available = allocated - given - reserved - spent."""

    branch: str
    period: str
    # Received from its parent, net of reclaims (head office: its own budget).
    allocated: int
    # Given to its children, net of reclaims.
    given: int
    # Reserved by its live campaigns and not spent yet.
    reserved: int
    # What its campaigns granted at cost: live ones so far, ended ones in all.
    spent: int
    available: int


def _service(request: web.Request) -> BudgetService:
    # Holds nothing of its own: made per request from the app's stores and settings.
    app = request.app
    return BudgetService(app[POOL], app[REDIS], app[KEYS], BudgetRules.of(app[SETTINGS]))


@routes.post("/admin/v1/branches/{branch_id}/budget/allocations")
@endpoint(
    "Give the branch part of its parent's unallocated budget for a year (`from`: the parent;"
    " approvers and admins of the parent or above). Head office's own budget for a year:"
    " no `from`, head-office admins only",
    auth="staff",
    body=AllocationBody,
    responses={200: BudgetReply},
    errors=(Unauthorized, Forbidden, InvalidRequest, NotFound, BudgetExceeded),
    tags=TAGS,
)
async def post_allocation(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    branch_id = path_id(request, "branch_id")
    return json_response(await _service(request).allocate(staff, branch_id, await request.read()))


@routes.post("/admin/v1/branches/{branch_id}/budget/reclaim")
@endpoint(
    "Take unreserved budget of a year back from the branch to its parent (approvers and admins"
    " of the parent or above); for head office, lower its own budget (its admins)",
    auth="staff",
    body=ReclaimBody,
    responses={200: BudgetReply},
    errors=(Unauthorized, Forbidden, InvalidRequest, NotFound, BudgetExceeded),
    tags=TAGS,
)
async def post_reclaim(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    branch_id = path_id(request, "branch_id")
    return json_response(await _service(request).reclaim(staff, branch_id, await request.read()))


@routes.get("/admin/v1/branches/{branch_id}/budget")
@endpoint(
    "A branch's budget for a year: allocated, given to children, reserved, spent, available",
    auth="staff",
    query=BudgetQuery,
    responses={200: BudgetReply},
    errors=(Unauthorized, Forbidden, InvalidRequest, NotFound),
    tags=TAGS,
)
async def get_budget(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    branch_id = path_id(request, "branch_id")
    query = check(BudgetQuery, request.query)
    return json_response(await _service(request).read(staff, branch_id, query.period))
