"""Accounts, rights and campaigns for a run. Staff and the channel go straight into the
database (the service has no API for them); rights and campaigns go through the admin API, so
the run also covers the maker-checker workflow and the publication to Redis."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from access.channels import create_channel
from access.staff import create_staff
from loadtests.scenario import CampaignPlan, Scenario
from loadtests.stack import SetupError
from quanyi.db import create_pool

MARKETER = "lt-marketer"
APPROVER = "lt-approver"
CHANNEL_ID = "lt-app"


async def accounts(database_url: str) -> tuple[dict[str, str], str]:
    """A marketer and an approver (maker-checker needs two people) with one-off passwords, and
    a channel with a generated secret. Returns (passwords by username, channel secret)."""
    passwords = {MARKETER: secrets.token_urlsafe(16), APPROVER: secrets.token_urlsafe(16)}
    pool = await create_pool(database_url)
    try:
        await create_staff(pool, MARKETER, passwords[MARKETER], "marketer", "HQ")
        await create_staff(pool, APPROVER, passwords[APPROVER], "approver", "HQ")
        secret = await create_channel(pool, CHANNEL_ID)
    finally:
        await pool.close()
    return passwords, secret


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
            }
        ],
    }


async def campaigns(marketer: Admin, approver: Admin, scenario: Scenario) -> None:
    """Create each right and campaign as the marketer; the approver approves."""
    for plan in scenario.campaigns:
        r = plan.reward
        right = {
            "id": r.right_id,
            "name": f"{plan.name}: {r.id}",
            "kind": "voucher",
            "face_value": r.unit_cost * 2,
            "unit_cost": r.unit_cost,
        }
        await marketer.call("POST", "/admin/v1/rights", right, expect=201)
        await marketer.call(
            "POST", "/admin/v1/campaigns", _campaign_body(plan, CHANNEL_ID), expect=201
        )
        await marketer.call("POST", f"/admin/v1/campaigns/{plan.id}/submit")
        approved = await approver.call("POST", f"/admin/v1/campaigns/{plan.id}/approve")
        if approved.get("status") != "approved":
            raise SetupError(f"campaign {plan.id} is {approved.get('status')} after approval")
