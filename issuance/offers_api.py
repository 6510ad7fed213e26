"""The channel routes that show a customer what they can have now and how far they are towards
each goal, every request signed by its channel."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import Field

from quanyi.access.api import CHANNELS
from quanyi.core.errors import (
    CampaignNotFound,
    ChannelNotAllowed,
    InvalidRequest,
    StoreNotReady,
    Unauthorized,
    Unavailable,
)
from quanyi.core.http import json_response, path_id
from quanyi.core.schemas import Body, Ident, Reply, check, endpoint
from quanyi.issuance.model import CustomerPath
from quanyi.issuance.offers import OfferService

routes = web.RouteTableDef()
OFFERS = web.AppKey("offers", OfferService)
AWAY = (Unavailable, StoreNotReady)

Reason = Literal[
    "not_started",
    "ended",
    "right_suspended",
    "automatic",
    "limit_reached",
    "goal_not_met",
    "out_of_stock",
    "budget_exhausted",
]


class GoalView(Reply):
    window: Literal["campaign", "month", "week"]
    count: int | None = None
    amount: int | None = None
    min_amount: int | None = None
    mcc_in: list[str] | None = None
    mcc_not_in: list[str] | None = None


class Progress(Reply):
    """A customer's qualifying card transactions in the goal's current period."""

    count: int
    amount: int = Field(description="fen")
    goal: GoalView
    reached: bool
    window_ends_at: datetime = Field(
        description="When the period ends (or the campaign, when that comes first)"
    )


class Offer(Reply):
    campaign_id: str
    reward_id: str
    right_id: str
    name: str = Field(description="The campaign's name")
    claimable: bool = Field(description="A claim now would be granted (advice: the claim decides)")
    reason: Reason | None = Field(
        None, description="Why not claimable; automatic: granted on reaching the goal"
    )
    remaining_for_customer: int = Field(
        description="How many more the customer may have, at most what is left in stock"
    )
    progress: Progress | None = Field(None, description="For a reward with a goal")


class OffersReply(Reply):
    offers: list[Offer]


class RewardProgress(Progress):
    reward_id: str


class ProgressReply(Reply):
    campaign_id: str
    rewards: list[RewardProgress]


class ProgressQuery(Body):
    campaign_id: Ident


@routes.get("/v1/customers/{customer_id}/offers")
@endpoint(
    "What the customer can have now on this channel, and why not where not",
    auth="channel",
    path=CustomerPath,
    responses={200: OffersReply},
    errors=(InvalidRequest, Unauthorized, *AWAY),
    tags=("offers",),
)
async def get_offers(request: web.Request) -> web.Response:
    channel_id, _ = await request.app[CHANNELS].authenticate(request)
    customer_id = path_id(request, "customer_id", InvalidRequest)
    offers = await request.app[OFFERS].offers(channel_id, customer_id)
    return json_response({"offers": offers})


@routes.get("/v1/customers/{customer_id}/progress")
@endpoint(
    "The customer's progress towards each goal of a campaign, this period",
    auth="channel",
    path=CustomerPath,
    query=ProgressQuery,
    responses={200: ProgressReply},
    errors=(InvalidRequest, Unauthorized, ChannelNotAllowed, CampaignNotFound, *AWAY),
    tags=("offers",),
)
async def get_progress(request: web.Request) -> web.Response:
    channel_id, _ = await request.app[CHANNELS].authenticate(request)
    customer_id = path_id(request, "customer_id", InvalidRequest)
    campaign_id = check(ProgressQuery, request.query, "campaign_id is required").campaign_id
    rewards = await request.app[OFFERS].progress(channel_id, customer_id, campaign_id)
    return json_response({"campaign_id": campaign_id, "rewards": rewards})
