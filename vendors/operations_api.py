"""The staff routes of vendor operations (head office): each vendor's circuit as the fulfilment
workers publish it, its code-pool levels, and the dead-lettered fulfilments with their redrive,
the same operations `quanyi dlq` runs (quanyi/vendors/operations.py)."""

from __future__ import annotations

from aiohttp import web

from quanyi.access.api import request_staff
from quanyi.core.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from quanyi.core.http import json_response, path_id
from quanyi.core.schemas import check, decode, endpoint
from quanyi.issuance.api import LIFECYCLE
from quanyi.stores.appkeys import KEYS, POOL, REDIS
from quanyi.vendors import code_pools, health
from quanyi.vendors.operations import dead_letters, redrive
from quanyi.vendors.operations_model import (
    CodePoolsReply,
    DeadLettersQuery,
    DeadLettersReply,
    RedriveBody,
    RedriveReply,
    VendorHealthReply,
    VendorsHealthReply,
)
from quanyi.vendors.registry import VendorRegistry

routes = web.RouteTableDef()

# Dead letters and their redrive are the operators' (and admins') job, for every branch.
DEAD_LETTER_ROLES = ("operator",)


@routes.get("/admin/v1/vendor-health")
@endpoint(
    "Every vendor's circuit breaker, as the fulfilment workers publish it (head office)",
    auth="staff",
    responses={200: VendorsHealthReply},
    errors=(Unauthorized, Forbidden),
    tags=("vendors", "staff"),
)
async def get_vendors_health(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    vendors = await VendorRegistry(request.app[POOL]).read_all(staff)
    views = await health.read(request.app[REDIS], request.app[KEYS], [v.id for v in vendors])
    return json_response({"vendors": views})


@routes.get("/admin/v1/vendors/{vendor_id}/health")
@endpoint(
    "A vendor's circuit breaker, as the fulfilment workers publish it (head office)",
    auth="staff",
    responses={200: VendorHealthReply},
    errors=(NotFound, Unauthorized, Forbidden),
    tags=("vendors", "staff"),
)
async def get_vendor_health(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    vendor = await VendorRegistry(request.app[POOL]).read(staff, path_id(request, "vendor_id"))
    [view] = await health.read(request.app[REDIS], request.app[KEYS], [vendor.id])
    return json_response(view)


@routes.get("/admin/v1/vendors/{vendor_id}/code-pools")
@endpoint(
    "A codepool vendor's pools: codes left per right, and what its live campaigns may still"
    " grant (head office)",
    auth="staff",
    responses={200: CodePoolsReply},
    errors=(NotFound, Unauthorized, Forbidden, InvalidRequest),
    tags=("vendors", "staff"),
)
async def get_code_pools(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    pool = request.app[POOL]
    vendor = await VendorRegistry(pool).read(staff, path_id(request, "vendor_id"))
    if vendor.adapter != "codepool":
        raise InvalidRequest(f"vendor {vendor.id} is a {vendor.adapter} vendor: it has no codes")
    levels = await code_pools.levels(
        pool, request.app[REDIS], request.app[KEYS], vendor.id, every_right=True
    )
    return json_response({"vendor_id": vendor.id, "pools": [lv.to_json() for lv in levels]})


@routes.get("/admin/v1/dead-letters")
@endpoint(
    "Dead-lettered fulfilments, oldest first (head-office operators and admins)",
    auth="staff",
    query=DeadLettersQuery,
    responses={200: DeadLettersReply},
    errors=(Unauthorized, Forbidden, InvalidRequest),
    tags=("vendors", "staff"),
)
async def get_dead_letters(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    staff.require_role(*DEAD_LETTER_ROLES)
    staff.require_head_office()
    query = check(DeadLettersQuery, request.query, "bad dead-letter query")
    entries = await dead_letters(
        request.app[REDIS], request.app[KEYS], query.limit, query.vendor_id
    )
    return json_response({"dead_letters": entries})


@routes.post("/admin/v1/dead-letters/redrive")
@endpoint(
    "Put dead-lettered grants back in line for fulfilment (head-office operators and admins);"
    " audited",
    auth="staff",
    body=RedriveBody,
    responses={200: RedriveReply},
    errors=(Unauthorized, Forbidden, InvalidRequest),
    tags=("vendors", "staff"),
)
async def post_redrive(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    staff.require_role(*DEAD_LETTER_ROLES)
    staff.require_head_office()
    wanted = list(dict.fromkeys(decode(RedriveBody, await request.read()).grant_ids))
    done = dict(
        await redrive(
            request.app[POOL],
            request.app[REDIS],
            request.app[KEYS],
            request.app[LIFECYCLE],
            set(wanted),
            staff,
        )
    )
    results = [{"grant_id": g, "outcome": done.get(g, "not dead-lettered")} for g in wanted]
    redriven = sum(1 for r in results if r["outcome"] == "redriven")
    return json_response({"results": results, "redriven": redriven})
