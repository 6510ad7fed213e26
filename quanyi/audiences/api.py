"""The staff routes of audiences: create one, read it, import its members (CSV or Parquet)."""

from __future__ import annotations

from aiohttp import web

from quanyi.access.api import request_staff
from quanyi.audiences.members import CSV, PARQUET, body_source
from quanyi.audiences.model import AudienceBody, AudienceCreated, AudienceReply, ImportReply
from quanyi.audiences.service import AudienceService
from quanyi.core.errors import (
    AlreadyExists,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from quanyi.core.http import SETTINGS, json_response, path_id, read_limited
from quanyi.core.schemas import decode, endpoint

routes = web.RouteTableDef()
AUDIENCES = web.AppKey("audiences", AudienceService)
TAGS = ("audiences",)


@routes.post("/admin/v1/audiences")
@endpoint(
    "Create an audience (a customer segment) of a branch; its members are imported after",
    auth="staff",
    body=AudienceBody,
    responses={201: AudienceCreated},
    errors=(Unauthorized, Forbidden, InvalidRequest, AlreadyExists),
    tags=TAGS,
)
async def post_audience(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    body = decode(AudienceBody, await request.read())
    audience = await request.app[AUDIENCES].create(staff, body.id, body.name, body.branch)
    return json_response(audience.created_json(), 201)


@routes.get("/admin/v1/audiences/{audience_id}")
@endpoint(
    "One audience: its live version, how many members it holds, who imported them when",
    auth="staff",
    responses={200: AudienceReply},
    errors=(NotFound, Unauthorized, Forbidden, InvalidRequest),
    tags=TAGS,
)
async def get_audience(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    audience = await request.app[AUDIENCES].get(staff, path_id(request, "audience_id"))
    return json_response(audience.to_json())


@routes.put("/admin/v1/audiences/{audience_id}/members")
@endpoint(
    "Replace an audience's members: text/csv (one customer id a line, an optional first line"
    " customer_id) or application/vnd.apache.parquet (a column customer_id). The new members"
    " are live at once when complete; bad lines (card numbers among them) are rejected",
    auth="staff",
    body_media="text/csv",
    responses={200: ImportReply},
    errors=(NotFound, Unauthorized, Forbidden, InvalidRequest, PayloadTooLarge),
    tags=TAGS,
)
async def put_members(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    audiences = request.app[AUDIENCES]
    audience_id = path_id(request, "audience_id")
    if request.content_type not in (CSV, PARQUET):
        raise InvalidRequest(
            f"send the members as {CSV} or {PARQUET}", {"Content-Type": f"{CSV} or {PARQUET}"}
        )
    await audiences.may_import(staff, audience_id)  # before a byte of the body is read
    body = await read_limited(request, request.app[SETTINGS].audience_max_bytes)
    report = await audiences.import_members(
        staff, audience_id, body_source(body, request.content_type)
    )
    return json_response(report.to_json())
