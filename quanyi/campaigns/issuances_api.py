"""The staff API of bulk issuances: /admin/v1/campaigns/{id}/issuances and /admin/v1/issuances."""

from __future__ import annotations

from aiohttp import web

from quanyi.access.api import request_staff
from quanyi.campaigns.approvals import AlreadyApproved, HeadOfficeApprovalNeeded, MakerMayNotApprove
from quanyi.campaigns.issuances import IssuanceBody, IssuanceReply, IssuanceService
from quanyi.core.errors import (
    AlreadyExists,
    Forbidden,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    RewardNotFound,
    Unauthorized,
    Unavailable,
)
from quanyi.core.http import SETTINGS, json_response, path_id
from quanyi.core.schemas import decode, endpoint
from quanyi.stores.appkeys import KEYS, POOL, REDIS

routes = web.RouteTableDef()
TAGS = ("issuances",)
MOVE_ERRORS = (Unauthorized, Forbidden, NotFound, InvalidTransition)


def _service(request: web.Request) -> IssuanceService:
    app = request.app
    return IssuanceService(
        app[POOL], app[REDIS], app[KEYS], dual_approval_above=app[SETTINGS].dual_approval_above
    )


@routes.post("/admin/v1/campaigns/{campaign_id}/issuances")
@endpoint(
    "Create a bulk issuance: the reward to every member of the audience, once approved"
    " (marketers of the campaign's branch scope)",
    auth="staff",
    body=IssuanceBody,
    responses={201: IssuanceReply},
    errors=(
        Unauthorized,
        Forbidden,
        InvalidRequest,
        NotFound,
        RewardNotFound,
        AlreadyExists,
        InvalidTransition,
    ),
    tags=TAGS,
)
async def post_issuance(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    campaign_id = path_id(request, "campaign_id")
    body = decode(IssuanceBody, await request.read())
    return json_response(await _service(request).create(staff, campaign_id, body), 201)


@routes.get("/admin/v1/issuances/{issuance_id}")
@endpoint(
    "A bulk issuance: its state and progress (issued, skipped by reason, failed)",
    auth="staff",
    responses={200: IssuanceReply},
    errors=(Unauthorized, Forbidden, NotFound),
    tags=TAGS,
)
async def get_issuance(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    job_id = path_id(request, "issuance_id")
    return json_response(await _service(request).get(staff, job_id))


@routes.post("/admin/v1/issuances/{issuance_id}/approve")
@endpoint(
    "Approve a bulk issuance (an approver who did not create it; above the dual-approval"
    " threshold two, one of head office). The last approval freezes the member list and runs it"
    " (200); a first of two answers 202, the job still pending approval",
    auth="staff",
    responses={200: IssuanceReply, 202: IssuanceReply},
    errors=(
        Unauthorized,
        Forbidden,
        MakerMayNotApprove,
        HeadOfficeApprovalNeeded,
        AlreadyApproved,
        NotFound,
        InvalidTransition,
        Unavailable,
    ),
    tags=TAGS,
)
async def post_approve(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    job_id = path_id(request, "issuance_id")
    job = await _service(request).approve(staff, job_id)
    return json_response(job, 202 if job["state"] == "pending_approval" else 200)


@routes.post("/admin/v1/issuances/{issuance_id}/pause")
@endpoint(
    "Pause a running bulk issuance after the batch in flight (marketers and approvers)",
    auth="staff",
    responses={200: IssuanceReply},
    errors=MOVE_ERRORS,
    tags=TAGS,
)
async def post_pause(request: web.Request) -> web.Response:
    return await _move(request, "pause")


@routes.post("/admin/v1/issuances/{issuance_id}/resume")
@endpoint(
    "Resume a paused bulk issuance where it stopped (marketers and approvers)",
    auth="staff",
    responses={200: IssuanceReply},
    errors=MOVE_ERRORS,
    tags=TAGS,
)
async def post_resume(request: web.Request) -> web.Response:
    return await _move(request, "resume")


@routes.post("/admin/v1/issuances/{issuance_id}/cancel")
@endpoint(
    "Cancel a bulk issuance: nobody more is issued; what was issued stays (marketers and"
    " approvers)",
    auth="staff",
    responses={200: IssuanceReply},
    errors=MOVE_ERRORS,
    tags=TAGS,
)
async def post_cancel(request: web.Request) -> web.Response:
    return await _move(request, "cancel")


async def _move(request: web.Request, action: str) -> web.Response:
    staff = await request_staff(request)
    job_id = path_id(request, "issuance_id")
    return json_response(await _service(request).move(staff, job_id, action))
