"""What the campaigns API answers: rights, campaigns with their counts, and the forecast of a
dry run (with the query it takes)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from quanyi.campaigns.model import GoalBody
from quanyi.core.schemas import Body, Ident, Reply

CampaignStatus = Literal["draft", "pending", "approved", "rejected", "paused", "ended"]
CampaignPhase = Literal["scheduled", "running", "ended"]


RightState = Literal["proposed", "admitted", "suspended", "retired"]


class RightReply(Reply):
    """A right of the catalog, with its lifecycle: who last moved it into each state, when."""

    id: str
    name: str
    kind: str
    face_value: int
    unit_cost: int
    vendor_id: str | None
    created_by: str
    created_at: datetime
    state: RightState
    proposed_by: str
    proposed_at: datetime
    # Who proposed or edited this version since it was last admitted: none of them admits it.
    proposers: list[str]
    admitted_by: str | None
    admitted_at: datetime | None
    suspended_by: str | None
    suspended_at: datetime | None
    retired_by: str | None
    retired_at: datetime | None


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
    # Stock reserved per channel (README "Channel quotas"), and what each channel of the
    # campaign, and goal grants ("goal"), granted of it: present only with quotas.
    channel_quota: dict[str, int] | None = None
    channel_granted: dict[str, int] | None = None


class RewardLedgerView(RewardView):
    """A reward of one campaign's view: also what the ledger counts."""

    persisted: int
    revoked: int
    failed: int


class LedgerLag(Reply):
    entries: int
    seconds: float


class ApprovalView(Reply):
    approver: str
    branch: str
    at: datetime


class RewardResult(Reply):
    """A reward's figures when its campaign ended (quanyi/campaigns/ending.py)."""

    reward_id: str
    granted: int
    redeemed: int
    cost: int
    persisted: int
    ledger_lag_entries: int
    ended_at: datetime


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
    stock_parts: int
    status: CampaignStatus
    version: int
    created_by: str
    submitted_by: str | None
    approved_by: str | None
    approved_at: datetime | None
    makers: list[str]
    # Where an approved campaign stands in its window, kept by the scheduler; null before.
    phase: CampaignPhase | None
    phase_changed_at: datetime | None
    spent: int
    rewards: list[RewardView]
    ledger_lag: LedgerLag
    # The approvals of its last submission, and how many its amount needs
    # (quanyi/campaigns/approvals.py): a pending campaign with one of two is half approved.
    approvals: list[ApprovalView]
    approvals_needed: int
    # Its figures at the end (quanyi/campaigns/ending.py), once ended; null before.
    results: list[RewardResult] | None


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
