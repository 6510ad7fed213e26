"""The channel API: `POST /v1/claims` and grant reads, every request signed by its channel; and
the staff revoke of a grant (`/admin/v1/grants/{grant_id}/revoke`)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from quanyi.access.api import CHANNELS, request_staff
from quanyi.access.staff import audit
from quanyi.core.errors import (
    BudgetExhausted,
    CampaignNotActive,
    CampaignNotFound,
    ChannelNotAllowed,
    Forbidden,
    GrantNotFound,
    GrantNotLive,
    IdempotencyConflict,
    InvalidRequest,
    LimitReached,
    NotEligible,
    OutOfStock,
    RewardNotFound,
    StoreNotReady,
    Unauthorized,
    Unavailable,
)
from quanyi.core.http import json_response
from quanyi.core.ids import is_grant_id
from quanyi.core.schemas import check, decode, endpoint
from quanyi.issuance import queries
from quanyi.issuance.claims import Claim, ClaimService
from quanyi.issuance.grants import GrantReader, public
from quanyi.issuance.lifecycle import GrantLifecycle
from quanyi.issuance.model import (
    ClaimBody,
    ClaimReply,
    CustomerGrantsQuery,
    CustomerGrantsReply,
    CustomerPath,
    GrantPath,
    GrantReply,
    RevokeBody,
)
from quanyi.issuance.outcomes import OutcomeWaiter
from quanyi.stores.appkeys import POOL

routes = web.RouteTableDef()
CLAIMS = web.AppKey("claims", ClaimService)
GRANTS = web.AppKey("grants", GrantReader)
LIFECYCLE = web.AppKey("lifecycle", GrantLifecycle)
OUTCOMES = web.AppKey("outcomes", OutcomeWaiter)

# Redis or PostgreSQL away, or Redis not restored yet: nothing was decided, retry.
AWAY = (Unavailable, StoreNotReady)
GRANT_ID_RULE = "26 characters, Crockford base32"


@routes.post("/v1/claims")
@endpoint(
    "Claim a reward for a customer",
    auth="channel",
    body=ClaimBody,
    responses={201: ClaimReply, 200: ClaimReply},
    errors=(
        InvalidRequest,
        Unauthorized,
        ChannelNotAllowed,
        CampaignNotFound,
        RewardNotFound,
        IdempotencyConflict,
        CampaignNotActive,
        NotEligible,
        OutOfStock,
        LimitReached,
        BudgetExhausted,
        *AWAY,
    ),
    tags=("claims",),
)
async def post_claim(request: web.Request) -> web.Response:
    app = request.app
    channel_id, body = await app[CHANNELS].authenticate(request)
    claimed = decode(ClaimBody, body)
    claim = Claim(
        channel_id=channel_id,
        request_id=claimed.request_id,
        campaign_id=claimed.campaign_id,
        customer_id=claimed.customer_id,
        reward_id=claimed.reward_id,
    )
    grant = await app[CLAIMS].claim(claim)
    reply = grant.to_json()
    if claimed.wait_ms and not grant.replayed:
        reply.update(await _fulfilment(request.app, grant.grant_id, claimed.wait_ms / 1000))
    return json_response(reply, status=200 if grant.replayed else 201)


async def _fulfilment(app: web.Application, grant_id: str, wait_s: float) -> dict[str, Any]:
    """The fulfilment outcome if it arrives within `wait_s`, else nothing (still granted)."""
    waiter = app[OUTCOMES]
    arrived = waiter.expect(grant_id)
    try:
        # It may have happened before we started listening: look once, then wait.
        grant = await app[GRANTS].get(grant_id)
        if grant["status"] != "granted":
            outcome = grant
        else:
            try:
                outcome = await asyncio.wait_for(asyncio.shield(arrived), wait_s)
            except TimeoutError:
                return {}
    finally:
        waiter.forget(grant_id)
    return {
        k: outcome.get(k) for k in ("status", "code", "reference", "expires_at") if outcome.get(k)
    }


@routes.get("/v1/grants/{grant_id}")
@endpoint(
    "Read a grant: its status, fulfilment and timeline",
    auth="channel",
    path=GrantPath,
    responses={200: GrantReply},
    errors=(InvalidRequest, Unauthorized, GrantNotFound, *AWAY),
    tags=("grants",),
)
async def get_grant(request: web.Request) -> web.Response:
    await request.app[CHANNELS].authenticate(request)
    return json_response(public(await request.app[GRANTS].get(_grant_id(request))))


def _grant_id(request: web.Request) -> str:
    grant_id = request.match_info["grant_id"]
    if not is_grant_id(grant_id):
        raise InvalidRequest("not a grant id", {"grant_id": GRANT_ID_RULE})
    return grant_id


@routes.post("/v1/grants/{grant_id}/revoke")
@endpoint(
    "Revoke a grant the channel made: stock and the customer's limit come back",
    auth="channel",
    path=GrantPath,
    body=RevokeBody,
    responses={200: GrantReply},
    errors=(InvalidRequest, Unauthorized, Forbidden, GrantNotFound, GrantNotLive, *AWAY),
    tags=("grants",),
)
async def revoke_grant(request: web.Request) -> web.Response:
    channel_id, body = await request.app[CHANNELS].authenticate(request)
    grant_id = _grant_id(request)
    reason = (decode(RevokeBody, body).reason or "") if body else ""
    grant = await request.app[GRANTS].get(grant_id)
    if grant["channel_id"] != channel_id:
        raise Forbidden(f"grant {grant_id} was not made by channel {channel_id}")
    await request.app[LIFECYCLE].revoke(grant_id, f"channel:{channel_id}", reason)
    return json_response(public(await request.app[GRANTS].get(grant_id)))


@routes.get("/v1/customers/{customer_id}/grants")
@endpoint(
    "A customer's grants, newest first",
    auth="channel",
    path=CustomerPath,
    query=CustomerGrantsQuery,
    responses={200: CustomerGrantsReply},
    errors=(InvalidRequest, Unauthorized, *AWAY),
    tags=("grants",),
)
async def get_customer_grants(request: web.Request) -> web.Response:
    await request.app[CHANNELS].authenticate(request)
    customer_id = check(CustomerPath, request.match_info, "not a customer id").customer_id
    limit = check(CustomerGrantsQuery, request.query, "bad limit").limit
    grants = await request.app[GRANTS].of_customer(customer_id, limit)
    return json_response({"customer_id": customer_id, "grants": grants})


@routes.post("/admin/v1/grants/{grant_id}/revoke")
@endpoint(
    "Staff revoke a grant of a campaign of their branch; audited",
    auth="staff",
    path=GrantPath,
    body=RevokeBody,
    responses={200: GrantReply},
    errors=(
        InvalidRequest,
        Unauthorized,
        Forbidden,
        GrantNotFound,
        CampaignNotFound,
        GrantNotLive,
        *AWAY,
    ),
    tags=("grants", "staff"),
)
async def staff_revoke(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    staff.require_role("marketer", "approver")
    grant_id = request.match_info["grant_id"]
    if not is_grant_id(grant_id):  # never repeated: it may be anything, a card number too
        raise GrantNotFound(f"no such grant: grant_id must be {GRANT_ID_RULE}")
    grant = await request.app[GRANTS].get(grant_id)
    branch = await request.app[POOL].fetchval(queries.campaign_branch, grant["campaign_id"])
    if branch is None:
        raise CampaignNotFound(f"no campaign {grant['campaign_id']}")
    staff.require_branch(branch)
    body = await request.read()
    reason = (decode(RevokeBody, body).reason or "") if body else ""
    await request.app[LIFECYCLE].revoke(grant_id, f"staff:{staff.username}", reason)
    await audit(
        request.app[POOL],
        staff,
        "grant.revoke",
        f"grant:{grant_id}",
        {"campaign": grant["campaign_id"], "reason": reason},
    )
    return json_response(public(await request.app[GRANTS].get(grant_id)))
