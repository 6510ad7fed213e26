"""The staff API under /admin/v1: rights, campaigns and their workflow."""

from __future__ import annotations

from aiohttp import web

from quanyi.access.api import request_staff
from quanyi.campaigns.approvals import AlreadyApproved, HeadOfficeApprovalNeeded
from quanyi.campaigns.model import (
    RIGHT_ACTIONS,
    TRANSITIONS,
    CampaignBody,
    CampaignChange,
    CloneBody,
    RightBody,
    RightChange,
)
from quanyi.campaigns.replies import (
    CampaignReply,
    CampaignsReply,
    ForecastReply,
    RightReply,
    RightsReply,
    SimulateQuery,
)
from quanyi.campaigns.service import CampaignService
from quanyi.core.errors import (
    AlreadyExists,
    CampaignNotFound,
    Forbidden,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    RightInUse,
    RightNotAdmitted,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    VendorNotActive,
)
from quanyi.core.http import SETTINGS, json_response, path_id, read_limited
from quanyi.core.schemas import check, endpoint

routes = web.RouteTableDef()
CAMPAIGNS = web.AppKey("campaigns", CampaignService)


# The service checks the body once it knows the caller may act: a role that may not create
# rights learns that, not what a right's body must hold.


@routes.post("/admin/v1/rights")
@endpoint(
    "Add a right to the catalog",
    auth="staff",
    body=RightBody,
    responses={201: RightReply},
    errors=(Unauthorized, Forbidden, InvalidRequest, AlreadyExists),
)
async def post_right(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    body = await request.read()
    return json_response(await request.app[CAMPAIGNS].create_right(staff, body), 201)


@routes.put("/admin/v1/rights/{right_id}")
@endpoint(
    "Change a right no live campaign pays out (proposed or admitted); it is proposed again",
    auth="staff",
    body=RightChange,
    responses={200: RightReply},
    errors=(Unauthorized, Forbidden, InvalidRequest, NotFound, RightInUse, InvalidTransition),
)
async def put_right(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    body = await request.read()
    right_id = path_id(request, "right_id")
    return json_response(await request.app[CAMPAIGNS].update_right(staff, right_id, body))


@routes.post("/admin/v1/rights/{right_id}/{action}")
@endpoint(
    "Move a right through its lifecycle (head-office approver; admit: not whoever proposed or"
    f" edited it); action is one of {', '.join(RIGHT_ACTIONS)}",
    auth="staff",
    responses={200: RightReply},
    errors=(
        NotFound,
        Unauthorized,
        Forbidden,
        InvalidTransition,
        RightInUse,
        VendorNotActive,
        Unavailable,
    ),
)
async def post_right_transition(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in RIGHT_ACTIONS:
        # Never repeated: the path may hold anything, a card number included.
        raise NotFound(f"no such action: action is one of {', '.join(RIGHT_ACTIONS)}")
    staff = await request_staff(request)
    right_id = path_id(request, "right_id")
    return json_response(await request.app[CAMPAIGNS].rights.transition(staff, right_id, action))


@routes.get("/admin/v1/rights")
@endpoint(
    "The rights catalog",
    auth="staff",
    responses={200: RightsReply},
    errors=(Unauthorized, Forbidden),
)
async def get_rights(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    staff.require_reader("marketer", "approver")  # costs are money: not an operator's
    return json_response({"rights": await request.app[CAMPAIGNS].list_rights()})


@routes.post("/admin/v1/campaigns")
@endpoint(
    "Draft a campaign",
    auth="staff",
    body=CampaignBody,
    responses={201: CampaignReply},
    errors=(Unauthorized, Forbidden, InvalidRequest, AlreadyExists, RightNotAdmitted),
)
async def post_campaign(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    campaign = await request.app[CAMPAIGNS].create(staff, await request.read())
    return json_response(await request.app[CAMPAIGNS].get(staff, campaign.id), 201)


@routes.get("/admin/v1/campaigns")
@endpoint(
    "The campaigns of the caller's branch and those below it (every branch for head office)",
    auth="staff",
    responses={200: CampaignsReply},
    errors=(Unauthorized, Forbidden),
)
async def get_campaigns(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    return json_response({"campaigns": await request.app[CAMPAIGNS].list(staff)})


@routes.get("/admin/v1/campaigns/{campaign_id}")
@endpoint(
    "One campaign with its counts in Redis and the ledger",
    auth="staff",
    responses={200: CampaignReply},
    errors=(Unauthorized, Forbidden, CampaignNotFound),
)
async def get_campaign(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    return json_response(
        await request.app[CAMPAIGNS].get(staff, path_id(request, "campaign_id", CampaignNotFound))
    )


@routes.put("/admin/v1/campaigns/{campaign_id}")
@endpoint(
    "Replace the definition of a draft or rejected campaign",
    auth="staff",
    body=CampaignChange,
    responses={200: CampaignReply},
    errors=(
        Unauthorized,
        Forbidden,
        InvalidRequest,
        CampaignNotFound,
        InvalidTransition,
        RightNotAdmitted,
    ),
)
async def put_campaign(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    body = await request.read()
    campaign_id = path_id(request, "campaign_id", CampaignNotFound)
    await request.app[CAMPAIGNS].update(staff, campaign_id, body)
    return json_response(await request.app[CAMPAIGNS].get(staff, campaign_id))


# Before the workflow's /{action}, which would take "clone" for an action.
@routes.post("/admin/v1/campaigns/{campaign_id}/clone")
@endpoint(
    "Copy a campaign (rewards, audiences, goals, channels, budget) into a new draft of the"
    " caller's, with a new id and window",
    auth="staff",
    body=CloneBody,
    responses={201: CampaignReply},
    errors=(
        Unauthorized,
        Forbidden,
        InvalidRequest,
        CampaignNotFound,
        AlreadyExists,
        RightNotAdmitted,
    ),
)
async def post_clone(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    campaign_id = path_id(request, "campaign_id", CampaignNotFound)
    service = request.app[CAMPAIGNS]
    campaign = await service.clone(staff, campaign_id, await request.read())
    return json_response(await service.get(staff, campaign.id), 201)


# Before the workflow's /{action}, which would take "simulate" for an action.
@routes.post("/admin/v1/campaigns/{campaign_id}/simulate")
@endpoint(
    "Dry run of a draft or pending campaign over past card transactions (text/csv, one a line:"
    " customer_id,amount,mcc,occurred_at[,event_id,reversal_of], amount in fen, occurred_at"
    " RFC 3339, an optional header line): what it would have granted and cost, per reward."
    " Changes nothing; a file with bad lines is refused as a whole, naming them",
    auth="staff",
    query=SimulateQuery,
    body_media="text/csv",
    responses={200: ForecastReply},
    errors=(
        Unauthorized,
        Forbidden,
        InvalidRequest,
        CampaignNotFound,
        InvalidTransition,
        PayloadTooLarge,
        TooManyRequests,
        Unavailable,
    ),
)
async def post_simulate(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    campaign_id = path_id(request, "campaign_id", CampaignNotFound)
    query = check(SimulateQuery, request.query)
    dry_runs = request.app[CAMPAIGNS].dry_runs
    settings = request.app[SETTINGS]
    # Before a byte of the body is read.
    await dry_runs.may_simulate(staff, campaign_id, query.audience_id)
    async with dry_runs.slot():
        body = await read_limited(request, settings.simulate_max_bytes)
        forecast = await dry_runs.simulate(staff, campaign_id, body, settings.tz, query.audience_id)
    return json_response(forecast)


@routes.post("/admin/v1/campaigns/{campaign_id}/{action}")
@endpoint(
    f"Move a campaign through its workflow; action is one of {', '.join(TRANSITIONS)}. An"
    " approval of an amount above the dual-approval threshold that still needs a second"
    " approver answers 202 with the campaign pending and its approvals so far",
    auth="staff",
    responses={200: CampaignReply, 202: CampaignReply},
    errors=(
        NotFound,
        Unauthorized,
        Forbidden,
        CampaignNotFound,
        InvalidTransition,
        RightNotAdmitted,
        AlreadyApproved,
        HeadOfficeApprovalNeeded,
    ),
)
async def post_transition(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in TRANSITIONS:
        # Never repeated: the path may hold anything, a card number included.
        raise NotFound(f"no such action: action is one of {', '.join(TRANSITIONS)}")
    staff = await request_staff(request)
    campaign_id = path_id(request, "campaign_id", CampaignNotFound)
    service = request.app[CAMPAIGNS]
    campaign = await service.transition(staff, campaign_id, action)
    # An approval recorded while the campaign waits for a second approver.
    waiting = action == "approve" and campaign.status == "pending"
    return json_response(await service.get(staff, campaign_id), 202 if waiting else 200)
