"""The load-test scenario, shared by the orchestrator (which creates it) and the locustfile
(which drives it): campaign ids, stock and limits, customer pools, the simulated vendor and the
environment variables that carry them into the Locust process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ENV_CHANNEL_ID = "LOADTEST_CHANNEL_ID"
ENV_CHANNEL_SECRET = "LOADTEST_CHANNEL_SECRET"
ENV_FLASH_CAMPAIGN = "LOADTEST_FLASH_CAMPAIGN"
ENV_FLASH_CUSTOMERS = "LOADTEST_FLASH_CUSTOMERS"
ENV_STEADY_CAMPAIGN = "LOADTEST_STEADY_CAMPAIGN"
ENV_STEADY_REWARD = "LOADTEST_STEADY_REWARD"
ENV_STEADY_CUSTOMERS = "LOADTEST_STEADY_CUSTOMERS"
ENV_GOAL_CAMPAIGN = "LOADTEST_GOAL_CAMPAIGN"
ENV_GOAL_CUSTOMERS = "LOADTEST_GOAL_CUSTOMERS"
# The card system's channel (scope events only) that streams card events in.
ENV_EVENTS_CHANNEL_ID = "LOADTEST_EVENTS_CHANNEL_ID"
ENV_EVENTS_CHANNEL_SECRET = "LOADTEST_EVENTS_CHANNEL_SECRET"
ENV_P99_MS = "LOADTEST_P99_MS"
ENV_SIM_URL = "LOADTEST_SIM_URL"
ENV_VENDOR_ID = "LOADTEST_VENDOR_ID"
ENV_WAIT_MS = "LOADTEST_WAIT_MS"
# The simulated vendor's private key (the statement uploads sign with it) and their size.
ENV_VENDOR_KEY_FILE = "LOADTEST_VENDOR_KEY_FILE"
ENV_STATEMENT_MIB = "LOADTEST_STATEMENT_MIB"
DEFAULT_STATEMENT_MIB = 4.0
# Where the locustfile writes what its clients saw, for the orchestrator's audit.
ENV_SUMMARY = "LOADTEST_SUMMARY"

# "Channel response < 1 s" from the requirements, read as a p99.
DEFAULT_P99_MS = 1000.0

# Refusals the service answers by design; a client seeing them is not a failed request.
BUSINESS_REFUSALS = frozenset(
    {"out_of_stock", "limit_reached", "budget_exhausted", "campaign_not_active"}
)

# The simulated vendor the steady campaign's right is fulfilled at, and how long it takes.
VENDOR_ID = "lt-sim"
SIM_LATENCY_MS = 20.0
# How long a claim may wait for its fulfilment: well above the vendor's latency, so nearly all
# come back fulfilled, and well below the SLA, so waiting never breaks it.
DEFAULT_WAIT_MS = 300

FLASH_PREFIX = "lt-f-"
STEADY_PREFIX = "lt-s-"
GOAL_PREFIX = "lt-g-"
# The goal: 5 card purchases of at least 100 yuan this month, granted the moment it is met.
GOAL = {"window": "month", "count": 5, "min_amount": 10_000}


def customer_id(prefix: str, n: int) -> str:
    # Not all digits, so it can never look like a card number to the API.
    return f"{prefix}{n:07d}"


@dataclass(frozen=True)
class RewardPlan:
    id: str
    right_id: str
    unit_cost: int
    stock: int
    per_customer_limit: int
    vendor_id: str | None = None  # None: fulfilled internally, no vendor call
    goal: dict[str, Any] | None = None  # a spending goal (rewards.goal); None: claimed
    grant: str | None = None  # "auto": granted by card events reaching the goal


@dataclass(frozen=True)
class CampaignPlan:
    id: str
    name: str
    reward: RewardPlan
    budget: int
    customers: int  # size of the pool the users draw customer ids from
    customer_prefix: str


@dataclass(frozen=True)
class Scenario:
    flash: CampaignPlan
    steady: CampaignPlan
    goal: CampaignPlan

    @property
    def campaigns(self) -> tuple[CampaignPlan, ...]:
        return (self.flash, self.steady, self.goal)

    @property
    def vendor_campaigns(self) -> tuple[CampaignPlan, ...]:
        return tuple(plan for plan in self.campaigns if plan.reward.vendor_id)


def scenario(short: bool) -> Scenario:
    """Flash: demand far above stock, and a pool small enough that customers come back and hit
    their limit before the stock runs out. Its budget pays for exactly the stock, so the audit
    also covers spending at the edge; its right needs no vendor. Steady: stock nobody
    exhausts, so claims keep granting, each fulfilled at the simulated vendor. Goal: granted by
    the card event stream, never claimed; more of its pool reaches the goal within the run than
    its stock can serve, so the audit covers goal grants capped by stock."""
    flash_stock = 1_000 if short else 5_000
    coffee = RewardPlan("coffee", "lt-coffee", 1_800, flash_stock, per_customer_limit=2)
    points = RewardPlan(
        "points", "lt-points", 50, 10_000_000, per_customer_limit=5, vendor_id=VENDOR_ID
    )
    goal_stock, goal_customers = (300, 1_500) if short else (2_000, 10_000)
    lounge = RewardPlan(
        "lounge", "lt-lounge", 900, goal_stock, per_customer_limit=1, goal=GOAL, grant="auto"
    )
    return Scenario(
        flash=CampaignPlan(
            id="lt-flash",
            name="Load test flash sale",
            reward=coffee,
            budget=coffee.unit_cost * coffee.stock,
            customers=flash_stock,
            customer_prefix=FLASH_PREFIX,
        ),
        steady=CampaignPlan(
            id="lt-steady",
            name="Load test steady issuance",
            reward=points,
            budget=points.unit_cost * points.stock,
            customers=50_000,
            customer_prefix=STEADY_PREFIX,
        ),
        goal=CampaignPlan(
            id="lt-goal",
            name="Load test spend 5 x 100 yuan this month, get a lounge pass",
            reward=lounge,
            budget=lounge.unit_cost * lounge.stock,
            customers=goal_customers,
            customer_prefix=GOAL_PREFIX,
        ),
    )
