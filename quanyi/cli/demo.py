"""`quanyi demo`, and its data: a catalog, approved campaigns, staff, an app channel, a card
system channel (scope events only) and a simulated vendor.
Everything here is DEMO: the passwords and the channel secrets are public, the RSA keys and the
secrets key (when QUANYI_SECRETS_KEY is not set) are made on the spot under var/demo-keys (never
committed); none of it may reach production."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from quanyi.access.branches import create_branch
from quanyi.access.channels import EVENTS, create_channel
from quanyi.access.secret_box import SecretBox, secret_box
from quanyi.access.staff import HEAD_OFFICE, Staff, create_staff
from quanyi.campaigns.service import CampaignService
from quanyi.cli.command import Commands, add_command
from quanyi.core.errors import AlreadyExists
from quanyi.core.settings import Settings
from quanyi.runtime import open_stores
from quanyi.stores.keys import Keys
from quanyi.vendors.lifecycle import VendorLifecycle
from quanyi.vendors.operations import keygen
from quanyi.vendors.registry import VendorRegistry

DEMO_PASSWORD = "demo-password-not-secret"
DEMO_CHANNEL = "demo-app"
DEMO_CHANNEL_SECRET = "demo-channel-secret-not-for-production"
# The card system: it sends card events (POST /v1/events) and may call nothing else.
DEMO_CARD_CHANNEL = "core"
DEMO_CARD_CHANNEL_SECRET = "demo-card-system-secret-not-for-production"
DEMO_CAMPAIGN = "demo-coffee-week"
DEMO_VENDOR_CAMPAIGN = "demo-lounge-month"
DEMO_VENDOR = "demo-sim"
DEMO_VENDOR_HOST, DEMO_VENDOR_PORT = "127.0.0.1", 8099  # `quanyi run --demo-vendor-sim`
DEMO_VENDOR_URL = f"http://{DEMO_VENDOR_HOST}:{DEMO_VENDOR_PORT}"
# Under the working directory (the checkout for `make run`), never inside the installed package.
DEMO_KEYS = Path("var") / "demo-keys"


def demo_keys() -> dict[str, Path]:
    """The simulated vendor's key pair and ours, made once."""
    paths = {
        "vendor_private": DEMO_KEYS / "vendor" / "private.pem",
        "vendor_public": DEMO_KEYS / "vendor" / "public.pem",
        "ours_private": DEMO_KEYS / "ours" / "private.pem",
        "ours_public": DEMO_KEYS / "ours" / "public.pem",
    }
    for side in ("vendor", "ours"):
        if not paths[f"{side}_private"].exists():
            keygen(DEMO_KEYS / side)
    return paths


def register(commands: Commands) -> None:
    add_command(commands, "demo", demo)


async def demo(settings: Settings, args: argparse.Namespace) -> int:
    box = secret_box(settings)  # the channel secrets are sealed at rest
    async with open_stores(settings) as stores:
        created = await load_demo(stores.pool, stores.redis, stores.keys, box)
    print("DEMO data " + ("loaded: " + ", ".join(created) if created else "already present"))
    names = " / ".join(f"{u} ({r}, {b})" for u, r, b in DEMO_STAFF)
    print(f"  DEMO staff {names}, password {DEMO_PASSWORD}")
    print(f"  DEMO channel {DEMO_CHANNEL}, secret {DEMO_CHANNEL_SECRET}")
    print(
        f"  DEMO card system channel {DEMO_CARD_CHANNEL} (scope {EVENTS}),"
        f" secret {DEMO_CARD_CHANNEL_SECRET}"
    )
    return 0


# A small DEMO organisation: head office, Shenzhen with one sub-branch, Guangzhou.
DEMO_BRANCHES = (
    ("SZ", "DEMO Shenzhen branch", "HQ"),
    ("SZ01", "DEMO Futian sub-branch", "SZ"),
    ("GZ", "DEMO Guangzhou branch", "HQ"),
)
DEMO_STAFF = (
    ("demo-marketer", "marketer", "HQ"),
    ("demo-approver", "approver", "HQ"),
    ("demo-admin", "admin", "HQ"),
    ("demo-auditor", "auditor", "HQ"),
    ("demo-operator", "operator", "HQ"),
    ("demo-sz-admin", "admin", "SZ"),
    ("demo-sz-marketer", "marketer", "SZ"),
    ("demo-sz01-approver", "approver", "SZ01"),
    ("demo-gz-marketer", "marketer", "GZ"),
)


async def load_demo(
    pool: asyncpg.Pool, redis: Redis, keys: Keys, box: SecretBox | None = None
) -> list[str]:
    """Idempotent: what exists already is left as it is. Returns what it created. The demo
    channels' secrets are sealed with `box` (default: the DEMO secrets key, made under
    var/demo-keys/ when QUANYI_SECRETS_KEY is not set)."""
    created = []
    organiser = Staff("demo-admin", "admin", HEAD_OFFICE)
    for branch_id, name, parent in DEMO_BRANCHES:
        try:
            await create_branch(pool, organiser, branch_id, name, parent)
            created.append(f"branch {branch_id}")
        except AlreadyExists:
            pass
    for username, role, branch in DEMO_STAFF:
        try:
            await create_staff(pool, username, DEMO_PASSWORD, role, branch)
            created.append(f"staff {username}")
        except AlreadyExists:
            pass
    await create_channel(pool, DEMO_CHANNEL, DEMO_CHANNEL_SECRET, replace=True, box=box)
    await create_channel(
        pool, DEMO_CARD_CHANNEL, DEMO_CARD_CHANNEL_SECRET, replace=True, box=box, scopes=(EVENTS,)
    )
    marketer = Staff("demo-marketer", "marketer", "HQ")
    approver = Staff("demo-approver", "approver", "HQ")
    service = CampaignService(pool, redis, keys)
    keys_on_disk = demo_keys()
    vendor = {
        "id": DEMO_VENDOR,
        "name": "DEMO simulated vendor (quanyi run --demo-vendor-sim)",
        "adapter": "simulated",
        "base_url": DEMO_VENDOR_URL,
        "public_keys": [keys_on_disk["vendor_public"].read_text()],
        "signing_key": f"file:{keys_on_disk['ours_private']}",
    }
    registry, demo_admin = VendorRegistry(pool), Staff("demo-admin", "admin", "HQ")
    try:
        registered = await registry.create(demo_admin, vendor)
        created.append(f"vendor {DEMO_VENDOR}")
    except AlreadyExists:
        # Another checkout made other demo keys: the vendor follows the ones here.
        registered = await registry.update(demo_admin, DEMO_VENDOR, vendor)
    if registered.state == "proposed":
        # Onboarded by a second person: whoever proposed a vendor may not activate it.
        await VendorLifecycle(pool).transition(approver, DEMO_VENDOR, "activate")
    for right in (
        {
            "id": "demo-coffee",
            "name": "DEMO coffee voucher (fulfilled internally)",
            "kind": "voucher",
            "face_value": 3000,
            "unit_cost": 1800,
        },
        {
            "id": "demo-lounge-pass",
            "name": "DEMO lounge pass (fulfilled by the simulated vendor)",
            "kind": "lounge_pass",
            "face_value": 20000,
            "unit_cost": 9000,
            "vendor_id": DEMO_VENDOR,
        },
    ):
        try:
            proposed = await service.create_right(marketer, right)
            created.append(f"right {right['id']}")
        except AlreadyExists:
            continue
        if proposed["state"] == "proposed":
            # Admitted by the approver: whoever proposed a right may not admit it.
            await service.rights.transition(approver, str(right["id"]), "admit")
    now = datetime.now(UTC)
    campaigns = (
        (
            DEMO_CAMPAIGN,
            "DEMO first 10,000 customers get a coffee",
            18_000_000,
            {
                "id": "coffee",
                "right_id": "demo-coffee",
                "stock": 10_000,
                "daily_stock": 2_000,
                "per_customer_limit": 1,
            },
        ),
        (
            DEMO_VENDOR_CAMPAIGN,
            "DEMO spend this month, get a lounge pass",
            None,
            {"id": "lounge", "right_id": "demo-lounge-pass", "stock": 500, "per_customer_limit": 1},
        ),
    )
    for campaign_id, name, budget, reward in campaigns:
        try:
            await service.create(
                marketer,
                {
                    "id": campaign_id,
                    "name": name,
                    "branch": "HQ",
                    "starts_at": (now - timedelta(hours=1)).isoformat(),
                    "ends_at": (now + timedelta(days=30)).isoformat(),
                    "channels": [DEMO_CHANNEL],
                    "budget": budget,
                    "rewards": [reward],
                },
            )
        except AlreadyExists:
            continue
        await service.transition(marketer, campaign_id, "submit")
        await service.transition(approver, campaign_id, "approve")
        created.append(f"campaign {campaign_id} (approved)")
    return created
