"""The claim benchmarks' campaign (`make bench`, `make bench-sustained`): staff, a channel, a
voucher right and an approved campaign, made through the same workflow staff use (each step by
a role that may take it, maker-checker kept), and the signer of the claims sent to it.

Customers are drawn from a pool this large; the limit is far above what a draw can reach, and
the stock far above what a run can grant, so every claim is decided the whole way to a grant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.asyncio import Redis

from loadtests.drivers import ClaimSigner
from quanyi.access.channels import create_channel
from quanyi.access.staff import Staff, create_staff
from quanyi.campaigns.service import CampaignService
from quanyi.stores.keys import Keys

CHANNEL = "bench-app"
CHANNEL_SECRET = "bench-channel-secret-not-for-production"
RIGHT = "bench-voucher"
CAMPAIGN = "bench"
REWARD = "r1"
CUSTOMERS = 1_000_000
PER_CUSTOMER_LIMIT = 1_000
STOCK = 100_000_000
SIGNER = ClaimSigner(CHANNEL, CHANNEL_SECRET, CAMPAIGN, CUSTOMERS)

MARKETER = Staff("bench-marketer", "marketer", "HQ")
APPROVER = Staff("bench-approver", "approver", "HQ")
ADMIN = Staff("bench-admin", "admin", "HQ")  # registers vendors
PASSWORD = "bench-password"


async def create_accounts(pool: asyncpg.Pool) -> None:
    """The marketer, the approver, the admin and the channel the claims come from."""
    for staff in (MARKETER, APPROVER, ADMIN):
        await create_staff(pool, staff.username, PASSWORD, staff.role, staff.branch)
    await create_channel(pool, CHANNEL, CHANNEL_SECRET)


async def create_campaign(
    pool: asyncpg.Pool,
    redis: Redis,
    keys: Keys,
    vendor_id: str | None = None,
    campaigns: Sequence[str] = (CAMPAIGN,),
) -> None:
    """The right (fulfilled by `vendor_id`, an active vendor, or internally) admitted and each
    of `campaigns` (the one claims benchmark campaign unless told; the cluster benchmark spreads
    several over its shards) approved with a reward of it, so they are live in Redis;
    create_accounts first."""
    right: dict[str, object] = {
        "id": RIGHT,
        "name": "bench voucher",
        "kind": "voucher",
        "face_value": 200,
        "unit_cost": 100,
    }
    if vendor_id is not None:
        right["vendor_id"] = vendor_id
    service = CampaignService(pool, redis, keys)
    await service.create_right(MARKETER, right)
    await service.rights.transition(APPROVER, RIGHT, "admit")
    now = datetime.now(UTC)
    for campaign in campaigns:
        await service.create(
            MARKETER,
            {
                "id": campaign,
                "name": "bench campaign" if campaign == CAMPAIGN else f"bench campaign {campaign}",
                "branch": "HQ",
                "starts_at": (now - timedelta(hours=1)).isoformat(),
                "ends_at": (now + timedelta(days=7)).isoformat(),
                "channels": [CHANNEL],
                "rewards": [
                    {
                        "id": REWARD,
                        "right_id": RIGHT,
                        "stock": STOCK,
                        "per_customer_limit": PER_CUSTOMER_LIMIT,
                    }
                ],
            },
        )
        await service.transition(MARKETER, campaign, "submit")
        await service.transition(APPROVER, campaign, "approve")


async def granted_total(redis: Redis, keys: Keys) -> int:
    """Grants of the campaign's reward Redis counted so far."""
    return int(await redis.hget(keys.campaign(CAMPAIGN), f"r:{REWARD}:granted") or 0)
