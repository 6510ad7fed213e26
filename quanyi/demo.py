"""Demo data: a catalog, an approved campaign, staff and a channel. Everything here is DEMO:
the passwords and the channel secret are public and must never reach production."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from redis.asyncio import Redis

from access.channels import create_channel
from access.staff import Staff, create_staff
from campaigns.service import CampaignService
from inventory.keys import Keys
from quanyi.errors import AlreadyExists

DEMO_PASSWORD = "demo-password-not-secret"
DEMO_CHANNEL = "demo-app"
DEMO_CHANNEL_SECRET = "demo-channel-secret-not-for-production"
DEMO_CAMPAIGN = "demo-coffee-week"
DEMO_STAFF = (
    ("demo-marketer", "marketer", "HQ"),
    ("demo-approver", "approver", "HQ"),
    ("demo-admin", "admin", "HQ"),
)


async def load_demo(pool: asyncpg.Pool, redis: Redis, keys: Keys) -> list[str]:
    """Idempotent: what exists already is left as it is. Returns what it created."""
    created = []
    for username, role, branch in DEMO_STAFF:
        try:
            await create_staff(pool, username, DEMO_PASSWORD, role, branch)
            created.append(f"staff {username}")
        except AlreadyExists:
            pass
    await create_channel(pool, DEMO_CHANNEL, DEMO_CHANNEL_SECRET, replace=True)
    marketer = Staff("demo-marketer", "marketer", "HQ")
    approver = Staff("demo-approver", "approver", "HQ")
    service = CampaignService(pool, redis, keys)
    for right in (
        {
            "id": "demo-coffee",
            "name": "DEMO coffee voucher",
            "kind": "voucher",
            "face_value": 3000,
            "unit_cost": 1800,
        },
        {
            "id": "demo-lounge",
            "name": "DEMO airport lounge pass",
            "kind": "lounge_pass",
            "face_value": 20000,
            "unit_cost": 9000,
        },
    ):
        try:
            await service.create_right(marketer, right)
            created.append(f"right {right['id']}")
        except AlreadyExists:
            pass
    now = datetime.now(UTC)
    try:
        await service.create(
            marketer,
            {
                "id": DEMO_CAMPAIGN,
                "name": "DEMO first 10,000 customers get a coffee",
                "branch": "HQ",
                "starts_at": (now - timedelta(hours=1)).isoformat(),
                "ends_at": (now + timedelta(days=30)).isoformat(),
                "channels": [DEMO_CHANNEL],
                "budget": 18_000_000,
                "rewards": [
                    {
                        "id": "coffee",
                        "right_id": "demo-coffee",
                        "stock": 10_000,
                        "daily_stock": 2_000,
                        "per_customer_limit": 1,
                    },
                ],
            },
        )
        await service.transition(marketer, DEMO_CAMPAIGN, "submit")
        await service.transition(approver, DEMO_CAMPAIGN, "approve")
        created.append(f"campaign {DEMO_CAMPAIGN} (approved)")
    except AlreadyExists:
        pass
    return created
