"""What the fulfilment benchmark runs against: its scratch stores, the vendors' latency,
the sizes of a run and how long a phase may take."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from loadtests import scratch
from loadtests.procs import HOST
from loadtests.scenario import CampaignPlan, RewardPlan
from loadtests.stack import SetupError
from quanyi.core.settings import Settings

DATABASE_URL = "postgresql://127.0.0.1:5432/quanyi_benchfulfil"
REDIS_URL = "redis://127.0.0.1:6379/12"
KEY_PREFIX = "qybf"
LOCK_PATH = Path(tempfile.gettempdir()) / "quanyi-benchfulfil.lock"

THROUGHPUT_LATENCY_MS = 50.0
MAX_IN_FLIGHT = 256
WAIT_LATENCY_MS = 20.0
WAIT_MS = 800
TARGET_PER_S = 2_000.0
# Phases that overrun these are reported as they stand rather than waited for, so a broken
# worker cannot stretch the run past a couple of minutes.
DRAIN_TIMEOUT_S = 40.0
LEDGER_TIMEOUT_S = 20.0
WAIT_PHASE_MAX_S = 30.0
POLL_S = 0.05
CLAIM_CHUNK = 2_000


@dataclass(frozen=True)
class Options:
    grants: int
    signed_grants: int
    claims: int
    concurrency: int
    internal_grants: int = 20_000


@dataclass(frozen=True)
class Lane:
    """One vendor the benchmark sends grants to: its simulator, its campaign."""

    name: str
    vendor_id: str
    sim_url: str
    plan: CampaignPlan
    signed: bool


def settings() -> Settings:
    return Settings(redis_url=REDIS_URL, database_url=DATABASE_URL, key_prefix=KEY_PREFIX)


def campaign_plan(campaign_id: str, vendor_id: str | None) -> CampaignPlan:
    """Stock and budget nobody exhausts; one grant per customer, each claim a new customer.
    `vendor_id` None: a right fulfilled internally."""
    reward = RewardPlan(
        "r1", f"{campaign_id}-voucher", 10, 10_000_000, per_customer_limit=1, vendor_id=vendor_id
    )
    return CampaignPlan(
        id=campaign_id,
        name=f"Fulfilment benchmark {campaign_id}",
        reward=reward,
        budget=reward.unit_cost * reward.stock,
        customers=reward.stock,
        customer_prefix=f"{campaign_id}-c-",
    )


async def clear_prefix(url: str, prefix: str) -> None:
    """Delete this benchmark's keys only: db 12 is shared with `make bench`."""
    if not url.startswith(f"redis://{HOST}:") or prefix != KEY_PREFIX:
        raise SetupError(f"refusing to clear {prefix}:* at {url}")
    redis = Redis.from_url(url)
    try:
        await scratch.clear_prefix(redis, prefix)
    finally:
        await redis.aclose()
