"""Accounts, the vendor, rights and campaigns for a run. Staff and the channel go straight into
the database (the service has no API for them); the vendor, rights and campaigns go through the
admin API, so the run also covers the vendor registry, the maker-checker workflow and the
publication to Redis."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from loadtests.scenario import CampaignPlan, Scenario
from loadtests.stack import SetupError, VendorKeys
from quanyi.access.channels import EVENTS, create_channel
from quanyi.access.staff import create_staff
from quanyi.stores.db import create_pool

MARKETER = "lt-marketer"
APPROVER = "lt-approver"
ADMIN = "lt-admin"  # only an admin may register vendors
CHANNEL_ID = "lt-app"
EVENTS_CHANNEL_ID = "lt-core"  # the card system: sends card events and may call nothing else


async def accounts(database_url: str) -> tuple[dict[str, str], str]:
    """A marketer and an approver (maker-checker needs two people) and an admin, with one-off
    passwords, and a channel with a generated secret. Returns (passwords by username, channel
    secret)."""
    roles = {MARKETER: "marketer", APPROVER: "approver", ADMIN: "admin"}
    passwords = {username: secrets.token_urlsafe(16) for username in roles}
    pool = await create_pool(database_url)
    try:
        for username, role in roles.items():
            await create_staff(pool, username, passwords[username], role, "HQ")
        secret = await create_channel(pool, CHANNEL_ID)
    finally:
        await pool.close()
    return passwords, secret


async def events_channel(database_url: str) -> str:
    """The card system's channel (scope events only), with a generated secret; returns it."""
    pool = await create_pool(database_url)
    try:
        return await create_channel(pool, EVENTS_CHANNEL_ID, scopes=(EVENTS,))
    finally:
        await pool.close()


class Admin:
    """The staff API, logged in as one user."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self._http = http
        self._base_url = base_url
        self._token = token

    @classmethod
    async def login(
        cls, http: aiohttp.ClientSession, base_url: str, username: str, password: str
    ) -> Admin:
        async with http.post(
            f"{base_url}/admin/v1/login", json={"username": username, "password": password}
        ) as resp:
            body = await resp.json()
            if resp.status != 200:
                raise SetupError(f"login {username}: {resp.status} {body}")
        return cls(http, base_url, body["token"])

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        async with self._http.request(
            method,
            f"{self._base_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self._token}"},
        ) as resp:
            data = await resp.json()
            if resp.status != expect:
                raise SetupError(f"{method} {path}: {resp.status} {data}")
        return data

    async def campaign(self, campaign_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/admin/v1/campaigns/{campaign_id}")


def _campaign_body(plan: CampaignPlan, channel_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    r = plan.reward
    goal = {"goal": r.goal, "grant": r.grant} if r.goal is not None else {}
    return {
        "id": plan.id,
        "name": plan.name,
        "branch": "HQ",
        "starts_at": (now - timedelta(minutes=5)).isoformat(),
        "ends_at": (now + timedelta(days=1)).isoformat(),
        "channels": [channel_id],
        "budget": plan.budget,
        "rewards": [
            {
                "id": r.id,
                "right_id": r.right_id,
                "stock": r.stock,
                "per_customer_limit": r.per_customer_limit,
                **goal,
            }
        ],
    }


async def vendor(
    admin: Admin,
    approver: Admin,
    vendor_id: str,
    base_url: str,
    keys: VendorKeys | None,
    max_in_flight: int = 64,
) -> dict[str, Any]:
    """Register a simulated vendor (the admin proposes it, the approver activates it). With `keys`, its public key verifies its callbacks and
    responses and our key (a file reference, never the key itself) signs the calls to it;
    without, nothing is signed. Few attempts with short backoffs, so a vendor that misbehaves
    shows up in the dead-letter stream within the run."""
    body: dict[str, Any] = {
        "id": vendor_id,
        "name": f"Simulated vendor {vendor_id}",
        "adapter": "simulated",
        "base_url": base_url,
        "timeout_ms": 2000,
        "max_in_flight": max_in_flight,
        "retry": {"max_attempts": 3, "backoff_base_ms": 100, "backoff_max_ms": 1000},
    }
    if keys is not None:
        body.update(public_keys=[keys.vendor_public], signing_key=keys.signing_key)
    await admin.call("POST", "/admin/v1/vendors", body, expect=201)
    return await approver.call("POST", f"/admin/v1/vendors/{vendor_id}/activate")


async def campaign(marketer: Admin, approver: Admin, plan: CampaignPlan) -> None:
    """Create the right and the campaign as the marketer; the approver approves."""
    r = plan.reward
    right = {
        "id": r.right_id,
        "name": f"{plan.name}: {r.id}",
        "kind": "voucher",
        "face_value": r.unit_cost * 2,
        "unit_cost": r.unit_cost,
    }
    if r.vendor_id:
        right["vendor_id"] = r.vendor_id
    await marketer.call("POST", "/admin/v1/rights", right, expect=201)
    await approver.call("POST", f"/admin/v1/rights/{r.right_id}/admit")
    await marketer.call("POST", "/admin/v1/campaigns", _campaign_body(plan, CHANNEL_ID), expect=201)
    await marketer.call("POST", f"/admin/v1/campaigns/{plan.id}/submit")
    approved = await approver.call("POST", f"/admin/v1/campaigns/{plan.id}/approve")
    if approved.get("status") != "approved":
        raise SetupError(f"campaign {plan.id} is {approved.get('status')} after approval")


async def campaigns(marketer: Admin, approver: Admin, scenario: Scenario) -> None:
    for plan in scenario.campaigns:
        await campaign(marketer, approver, plan)
