"""The staff routes of vendors: the vendor registry and the statements staff upload.

The routes vendors call themselves (signed) are in vendors/callbacks.py."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from quanyi.access.api import request_staff
from quanyi.access.staff import Actor
from quanyi.core.errors import (
    AlreadyExists,
    Forbidden,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    VendorInUse,
)
from quanyi.core.http import SETTINGS, json_response, path_id, read_limited
from quanyi.core.schemas import endpoint
from quanyi.stores.appkeys import POOL
from quanyi.vendors.directory import VendorDirectory
from quanyi.vendors.lifecycle import VENDOR_ACTIONS, VendorLifecycle
from quanyi.vendors.model import (
    StatementQuery,
    StatementReport,
    VendorBody,
    VendorPatch,
    VendorReply,
    VendorsReply,
)
from quanyi.vendors.registry import VendorRegistry
from quanyi.vendors.statements import reconcile
from quanyi.vendors.upload_slots import upload_slots

routes = web.RouteTableDef()
VENDORS = web.AppKey("vendors", VendorDirectory)

STATEMENT_MAX_BYTES = 16 * 1024 * 1024


# the registry: it checks a body once it knows the caller may change vendors


@routes.post("/admin/v1/vendors")
@endpoint(
    "Register a vendor",
    auth="staff",
    body=VendorBody,
    responses={201: VendorReply},
    errors=(Unauthorized, Forbidden, InvalidRequest, AlreadyExists),
)
async def post_vendor(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    vendor = await VendorRegistry(request.app[POOL]).create(staff, await request.read())
    await request.app[VENDORS].refresh()
    return json_response(vendor.to_json(), 201)


@routes.get("/admin/v1/vendors")
@endpoint(
    "The vendor registry (head office)",
    auth="staff",
    responses={200: VendorsReply},
    errors=(Unauthorized, Forbidden),
)
async def get_vendors(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    vendors = await VendorRegistry(request.app[POOL]).read_all(staff)
    return json_response({"vendors": [v.to_json() for v in vendors]})


@routes.get("/admin/v1/vendors/{vendor_id}")
@endpoint(
    "One vendor (head office)",
    auth="staff",
    responses={200: VendorReply},
    errors=(NotFound, Unauthorized, Forbidden),
)
async def get_vendor(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    vendor = await VendorRegistry(request.app[POOL]).read(staff, path_id(request, "vendor_id"))
    return json_response(vendor.to_json())


@routes.patch("/admin/v1/vendors/{vendor_id}")
@endpoint(
    "Change a vendor; where and how it is reached stays put while live campaigns route to it",
    auth="staff",
    body=VendorPatch,
    responses={200: VendorReply},
    errors=(NotFound, Unauthorized, Forbidden, InvalidRequest, VendorInUse),
)
async def patch_vendor(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    vendor = await VendorRegistry(request.app[POOL]).update(
        staff, path_id(request, "vendor_id"), await request.read()
    )
    await request.app[VENDORS].refresh()
    return json_response(vendor.to_json())


# statements


@routes.post("/admin/v1/vendors/{vendor_id}/statements")
@endpoint(
    "Upload a vendor's daily statement (CSV: grant_id,code,status,redeemed_at) for reconciling",
    auth="staff",
    query=StatementQuery,
    body_media="text/csv",
    responses={201: StatementReport},
    errors=(NotFound, Unauthorized, Forbidden, TooManyRequests, PayloadTooLarge, InvalidRequest),
)
async def post_statement(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    staff.require_role("approver", "marketer")
    # A statement is reconciled against every grant of the vendor, of every branch.
    staff.require_head_office()
    vendor_id = path_id(request, "vendor_id")
    await VendorRegistry(request.app[POOL]).get(vendor_id)
    with upload_slots(request.app).hold(vendor_id):  # before a byte of the body is read
        body = await read_limited(request, STATEMENT_MAX_BYTES)
        return await reconciled(request, staff, vendor_id, body)


# After the statements route, which the lifecycle's /{action} would otherwise take.
@routes.post("/admin/v1/vendors/{vendor_id}/{action}")
@endpoint(
    "Move a vendor through its onboarding (head-office approver; activate: not whoever proposed"
    f" it); action is one of {', '.join(VENDOR_ACTIONS)}",
    auth="staff",
    responses={200: VendorReply},
    errors=(NotFound, Unauthorized, Forbidden, InvalidTransition, VendorInUse),
)
async def post_vendor_transition(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in VENDOR_ACTIONS:
        # Never repeated: the path may hold anything, a card number included.
        raise NotFound(f"no such action: action is one of {', '.join(VENDOR_ACTIONS)}")
    staff = await request_staff(request)
    vendor_id = path_id(request, "vendor_id")
    vendor = await VendorLifecycle(request.app[POOL]).transition(staff, vendor_id, action)
    await request.app[VENDORS].refresh()
    return json_response(vendor.to_json())


async def reconciled(
    request: web.Request, actor: Actor, vendor_id: str, body: bytes
) -> web.Response:
    """The report of a statement `actor` uploaded (staff, or the vendor itself)."""
    try:
        text = body.decode("utf-8-sig")  # spreadsheet exports start with a BOM
    except UnicodeDecodeError:
        raise InvalidRequest("a statement is UTF-8 CSV") from None
    day = request.query.get("day", "")
    report = await reconcile(
        request.app[POOL], actor, vendor_id, day, text, request.app[SETTINGS].zone
    )
    # A report lists every row of a statement of up to 16 MB: encoded off the event loop.
    body = await asyncio.to_thread(orjson.dumps, report)
    return web.Response(body=body, status=201, content_type="application/json")
