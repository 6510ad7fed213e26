"""The staff API of revisions of approved campaigns (quanyi/campaigns/revisions.py).

Registered before the campaigns API: its workflow route /campaigns/{id}/{action} would take
"revisions" for an action."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from quanyi.access.api import request_staff
from quanyi.campaigns.api import CAMPAIGNS
from quanyi.campaigns.approvals import (
    AlreadyApproved,
    HeadOfficeApprovalNeeded,
    MakerMayNotApprove,
)
from quanyi.campaigns.replies import ApprovalView
from quanyi.campaigns.revise_refusals import (
    BudgetBelowSpent,
    CampaignSplit,
    QuotaBelowGranted,
    StockBelowGranted,
    StockBelowQuotas,
)
from quanyi.campaigns.revision_model import RevisionBody
from quanyi.campaigns.revisions import RevisionNotFound, RevisionOpen
from quanyi.core.errors import (
    CampaignNotFound,
    Forbidden,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    StoreNotReady,
    Unauthorized,
    Unavailable,
)
from quanyi.core.http import json_response, path_id
from quanyi.core.schemas import Reply, endpoint, is_digits

routes = web.RouteTableDef()
ACTIONS = ("submit", "approve", "reject")


class RevisionReply(Reply):
    id: int
    campaign_id: str
    status: str
    # What it changes, and those figures as they were when it was made.
    changes: dict[str, Any]
    before: dict[str, Any]
    created_by: str
    created_at: datetime
    submitted_by: str | None
    submitted_at: datetime | None
    rejected_by: str | None
    decided_at: datetime | None
    applied_at: datetime | None
    approvals: list[ApprovalView]
    approvals_needed: int


class RevisionsReply(Reply):
    revisions: list[RevisionReply]


def _revision_id(request: web.Request) -> int:
    value = request.match_info["revision_id"]
    if not is_digits(value) or len(value) > 18:
        raise RevisionNotFound("no such revision: revision_id is a number")
    return int(value)


@routes.post("/admin/v1/campaigns/{campaign_id}/revisions")
@endpoint(
    "Draft a revision of an approved or paused campaign: the reward stock, daily stock,"
    " limits and channel quotas (quota moved between channels), ends_at, budget or channels it"
    " changes (only those fields; null takes a daily figure or the budget away)",
    auth="staff",
    body=RevisionBody,
    responses={201: RevisionReply},
    errors=(
        Unauthorized,
        Forbidden,
        InvalidRequest,
        CampaignNotFound,
        InvalidTransition,
        RevisionOpen,
        CampaignSplit,
    ),
)
async def post_revision(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    campaign_id = path_id(request, "campaign_id", CampaignNotFound)
    body = await request.read()
    revision = await request.app[CAMPAIGNS].revisions.create(staff, campaign_id, body)
    return json_response(revision, 201)


@routes.get("/admin/v1/campaigns/{campaign_id}/revisions")
@endpoint(
    "The revisions of a campaign, oldest first: what each changed, who made, submitted,"
    " approved or rejected it and when",
    auth="staff",
    responses={200: RevisionsReply},
    errors=(Unauthorized, Forbidden, CampaignNotFound),
)
async def get_revisions(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    campaign_id = path_id(request, "campaign_id", CampaignNotFound)
    revisions = await request.app[CAMPAIGNS].revisions.list(staff, campaign_id)
    return json_response({"revisions": revisions})


@routes.post("/admin/v1/campaigns/{campaign_id}/revisions/{revision_id}/{action}")
@endpoint(
    f"Move a revision through its workflow; action is one of {', '.join(ACTIONS)}. The last"
    " approval it needs applies it to the running campaign at once (counters kept); an"
    " approval that still needs a second approver answers 202",
    auth="staff",
    responses={200: RevisionReply, 202: RevisionReply},
    errors=(
        NotFound,
        Unauthorized,
        Forbidden,
        MakerMayNotApprove,
        HeadOfficeApprovalNeeded,
        CampaignNotFound,
        RevisionNotFound,
        InvalidTransition,
        AlreadyApproved,
        StockBelowGranted,
        StockBelowQuotas,
        QuotaBelowGranted,
        BudgetBelowSpent,
        CampaignSplit,
        InvalidRequest,
        Unavailable,
        StoreNotReady,
    ),
)
async def post_revision_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise NotFound(f"no such action: action is one of {', '.join(ACTIONS)}")
    staff = await request_staff(request)
    campaign_id = path_id(request, "campaign_id", CampaignNotFound)
    revision_id = _revision_id(request)
    revisions = request.app[CAMPAIGNS].revisions
    step = {"submit": revisions.submit, "approve": revisions.approve, "reject": revisions.reject}
    revision = await step[action](staff, campaign_id, revision_id)
    waiting = action == "approve" and revision["status"] == "pending"
    return json_response(revision, 202 if waiting else 200)
