"""What the campaigns API answers: rights, campaigns with their counts, and the forecast of a
dry run (with the query it takes)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from quanyi.campaigns.model import GoalBody
from quanyi.core.schemas import Body, Ident, Reply

CampaignStatus = Literal["draft", "pending", "approved", "rejected", "paused", "ended"]


class RightReply(Reply):
    id: str
    name: str
    kind: str
    face_value: int
    unit_cost: int
    vendor_id: str | None
    created_by: str
    created_at: datetime


class RightsReply(Reply):
    rights: list[RightReply]


class RewardView(Reply):
    """A reward with its counts in Redis (quanyi/campaigns/view.py)."""

    id: str
    right_id: str
    face_value: int
    unit_cost: int
    vendor_id: str | None
    stock: int
    daily_stock: int | None
    per_customer_limit: int
    per_customer_daily_limit: int | None
    audience_id: str | None
    goal: GoalBody | None
    grant: str
    claw_back: bool
    granted: int
    remaining: int


class RewardLedgerView(RewardView):
    """A reward of one campaign's view: also what the ledger counts."""

    persisted: int
    revoked: int
    failed: int


class LedgerLag(Reply):
    entries: int
    seconds: float


class CampaignView(Reply):
    """A campaign as a list shows it."""

    id: str
    name: str
    branch: str
    starts_at: datetime
    ends_at: datetime
    channels: list[str]
    budget: int | None
    return_stock_on_failure: bool
    status: CampaignStatus
    version: int
    created_by: str
    submitted_by: str | None
    approved_by: str | None
    approved_at: datetime | None
    makers: list[str]
    spent: int
    rewards: list[RewardView]
    ledger_lag: LedgerLag


class CampaignReply(CampaignView):
    """One campaign, its rewards with the ledger's counts."""

    rewards: list[RewardLedgerView]  # type: ignore[assignment]


class CampaignsReply(Reply):
    campaigns: list[CampaignView]


# the dry run (quanyi/campaigns/dry_run.py)


class SimulateQuery(Body):
    # Only this audience's members' transactions count.
    audience_id: Ident | None = None


class RewardForecast(Reply):
    reward_id: str
    qualified: int
    grants: int
    cost: int
    stock_exhausted_at: str | None


class ForecastReply(Reply):
    """What a campaign would have granted over a file of past transactions."""

    customers: int
    qualified: int
    grants: int
    cost: int
    stock_exhausted_at: str | None
    by_reward: list[RewardForecast]
