"""The staff API under /admin/v1: login, rights, campaigns and their workflow."""

from __future__ import annotations

from aiohttp import web

from access.staff import login, logout
from campaigns.model import TRANSITIONS
from quanyi.appkeys import CAMPAIGNS, POOL, SETTINGS
from quanyi.errors import CampaignNotFound, NotFound
from quanyi.validation import Fields, parse_json
from quanyi.web import json_response, path_id, request_staff

routes = web.RouteTableDef()


@routes.post("/admin/v1/login")
async def post_login(request: web.Request) -> web.Response:
    body = parse_json(await request.read())
    f = Fields(body)
    username = f.text("username", 64)
    f.text("password", 256)
    f.check()
    # The password as typed: text fields come back with card-number-like runs masked, which
    # is right for what is kept, and a password is only ever hashed.
    password = body["password"]
    token, expires_at = await login(
        request.app[POOL], username, password, request.app[SETTINGS].staff_session_ttl_s
    )
    return json_response({"token": token, "expires_at": expires_at.isoformat()})


@routes.post("/admin/v1/logout")
async def post_logout(request: web.Request) -> web.Response:
    """Ends the caller's session: its token stops working at once."""
    staff = await logout(request.app[POOL], request.headers.get("Authorization", ""))
    return json_response({"username": staff.username, "logged_out": True})


@routes.post("/admin/v1/rights")
async def post_right(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    body = parse_json(await request.read())
    return json_response(await request.app[CAMPAIGNS].create_right(staff, body), 201)


@routes.put("/admin/v1/rights/{right_id}")
async def put_right(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    body = parse_json(await request.read())
    right_id = path_id(request, "right_id")
    return json_response(await request.app[CAMPAIGNS].update_right(staff, right_id, body))


@routes.get("/admin/v1/rights")
async def get_rights(request: web.Request) -> web.Response:
    await request_staff(request)
    return json_response({"rights": await request.app[CAMPAIGNS].list_rights()})


@routes.post("/admin/v1/campaigns")
async def post_campaign(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    body = parse_json(await request.read())
    campaign = await request.app[CAMPAIGNS].create(staff, body)
    return json_response(await request.app[CAMPAIGNS].get(staff, campaign.id), 201)


@routes.get("/admin/v1/campaigns")
async def get_campaigns(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    return json_response({"campaigns": await request.app[CAMPAIGNS].list(staff)})


@routes.get("/admin/v1/campaigns/{campaign_id}")
async def get_campaign(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    return json_response(
        await request.app[CAMPAIGNS].get(staff, path_id(request, "campaign_id", CampaignNotFound))
    )


@routes.put("/admin/v1/campaigns/{campaign_id}")
async def put_campaign(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    body = parse_json(await request.read())
    campaign_id = path_id(request, "campaign_id", CampaignNotFound)
    await request.app[CAMPAIGNS].update(staff, campaign_id, body)
    return json_response(await request.app[CAMPAIGNS].get(staff, campaign_id))


@routes.post("/admin/v1/campaigns/{campaign_id}/{action}")
async def post_transition(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in TRANSITIONS:
        raise NotFound(f"no action {action!r}")  # repr: the path may hold a line break
    staff = await request_staff(request)
    campaign_id = path_id(request, "campaign_id", CampaignNotFound)
    service = request.app[CAMPAIGNS]
    await service.transition(staff, campaign_id, action)
    return json_response(await service.get(staff, campaign_id))
