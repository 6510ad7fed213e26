"""The customer H5 page's API: `POST /v1/h5/sessions`, signed by a channel with the claims
scope (a session claims and reads grants for the channel, what that scope already allows), and
the routes the page calls under /h5/api/, authenticated by the session's token alone
(`Authorization: Bearer`, never a cookie: no other site's page can send it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from aiohttp import web
from pydantic import ConfigDict, Field

from quanyi.access.api import CHANNELS
from quanyi.access.channels import CLAIMS as CLAIMS_SCOPE
from quanyi.core.errors import (
    BudgetExhausted,
    CampaignNotActive,
    CampaignNotFound,
    ChannelNotAllowed,
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
from quanyi.core.http import CLOCK, SETTINGS, json_response
from quanyi.core.schemas import Body, Ident, Reply, decode, endpoint
from quanyi.issuance.api import CLAIMS, GRANTS
from quanyi.issuance.h5 import (
    CustomerPage,
    Session,
    SessionExpired,
    SessionTokens,
    expires_iso,
    previous_session_key,
    session_key,
)
from quanyi.issuance.model import ClaimReply, CustomerPath, GrantStatus
from quanyi.issuance.offers_api import OFFERS, OffersReply

routes = web.RouteTableDef()
TOKENS = web.AppKey("h5_tokens", SessionTokens)
PAGE = web.AppKey("h5_page", CustomerPage)
AWAY = (Unavailable, StoreNotReady)
SESSION_ERRORS = (Unauthorized, SessionExpired)


class SessionBody(CustomerPath):
    """`POST /v1/h5/sessions`: the customer the channel's backend has signed in."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"customer_id": "cust-1"}]})


class SessionReply(Reply):
    token: str = Field(description="Bearer token of the page's calls; bound to channel, customer")
    url: str = Field(description="The page for this customer: /h5/?t=TOKEN (absolute if set)")
    expires_at: datetime


class PageClaimBody(Body):
    """A tap on the claim button: the page makes `request_id` once per tap, so the same tap
    sent twice is granted once."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"request_id": "tap-7f3a9c", "campaign_id": "c1", "reward_id": "r1"}]
        }
    )

    request_id: Ident
    campaign_id: Ident
    reward_id: Ident


class Right(Reply):
    grant_id: str
    campaign_id: str
    reward_id: str
    right_id: str
    status: GrantStatus
    granted_at: datetime
    code: str | None = Field(None, description="The vendor's code, once fulfilled")
    expires_at: str | None = Field(None, description="When the code expires, once fulfilled")


class RightsReply(Reply):
    rights: list[Right] = Field(description="Newest first, at most 50")


class PageOffersReply(OffersReply):
    customer_id: str
    expires_at: datetime = Field(description="When the session ends")


CLAIM_ERRORS = (
    InvalidRequest,
    *SESSION_ERRORS,
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
)


def install(app: web.Application) -> None:
    """The routes, and the token key read when the app starts (a bad key stops the start)."""
    app.add_routes(routes)

    async def page(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        app[TOKENS] = SessionTokens(
            session_key(settings),
            app[CLOCK],
            settings.h5_session_ttl_s,
            previous_session_key(settings),
        )
        app[PAGE] = CustomerPage(app[OFFERS], app[CLAIMS], app[GRANTS])
        yield

    app.cleanup_ctx.append(page)


def session_of(request: web.Request) -> Session:
    """The session of the page's call, from its bearer token; its channel still active and
    still holding the claims scope."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("Authorization: Bearer <session token> is required")
    session = request.app[TOKENS].check(token.strip())
    channel = request.app[CHANNELS].known(session.channel_id)
    if channel is None or CLAIMS_SCOPE not in channel.scopes:
        raise Unauthorized("not a valid session: open the page again from the app")
    return session


@routes.post("/v1/h5/sessions")
@endpoint(
    "A 15-minute session of the customer H5 page for a customer the channel signed in",
    auth="channel",
    body=SessionBody,
    responses={201: SessionReply},
    errors=(InvalidRequest, Unauthorized, *AWAY),
    tags=("h5",),
)
async def post_session(request: web.Request) -> web.Response:
    channel_id, body = await request.app[CHANNELS].authenticate(request, CLAIMS_SCOPE)
    customer_id = decode(SessionBody, body).customer_id
    token, session = request.app[TOKENS].issue(channel_id, customer_id)
    url = f"{request.app[SETTINGS].h5_base_url.rstrip('/')}/h5/?t={token}"
    return json_response(
        {"token": token, "url": url, "expires_at": expires_iso(session)}, status=201
    )


@routes.get("/h5/api/offers")
@endpoint(
    "The session customer's offers, with progress towards each goal",
    auth="customer",
    responses={200: PageOffersReply},
    errors=(*SESSION_ERRORS, *AWAY),
    tags=("h5",),
)
async def get_offers(request: web.Request) -> web.Response:
    session = session_of(request)
    offers = await request.app[PAGE].offers(session)
    return json_response(
        {
            "customer_id": session.customer_id,
            "expires_at": expires_iso(session),
            "offers": offers,
        }
    )


@routes.post("/h5/api/claims")
@endpoint(
    "Claim a reward for the session customer",
    auth="customer",
    body=PageClaimBody,
    responses={201: ClaimReply, 200: ClaimReply},
    errors=CLAIM_ERRORS,
    tags=("h5",),
)
async def post_claim(request: web.Request) -> web.Response:
    session = session_of(request)  # before the body is read
    tap = decode(PageClaimBody, await request.read())
    grant = await request.app[PAGE].claim(session, tap.request_id, tap.campaign_id, tap.reward_id)
    return json_response(grant.to_json(), status=200 if grant.replayed else 201)


@routes.get("/h5/api/rights")
@endpoint(
    "The session customer's rights (我的权益), newest first, with codes and expiry",
    auth="customer",
    responses={200: RightsReply},
    errors=(*SESSION_ERRORS, *AWAY),
    tags=("h5",),
)
async def get_rights(request: web.Request) -> web.Response:
    session = session_of(request)
    return json_response({"rights": await request.app[PAGE].rights(session)})
