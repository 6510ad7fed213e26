"""Request bodies of rights, campaigns, rewards and vendors, and their creation through the admin
API as staff would do it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from quanyi.issuance.api import CLAIMS
from quanyi.issuance.claims import Claim
from tests.support.settings import CHANNEL

if TYPE_CHECKING:
    from tests.support.clients import Api
    from tests.support.vendors import KeyPairs


def reward(
    reward_id: str = "r1",
    right_id: str = "coffee",
    stock: int = 100,
    per_customer_limit: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    """A reward body; `extra` adds fields (audience_id, goal, grant, claw_back, ...)."""
    return {
        "id": reward_id,
        "right_id": right_id,
        "stock": stock,
        "per_customer_limit": per_customer_limit,
        **extra,
    }


def right_body(right_id: str = "coffee", unit_cost: int = 100, **extra: Any) -> dict[str, Any]:
    """A voucher worth twice what it costs."""
    return {
        "id": right_id,
        "name": f"{right_id} right",
        "kind": "voucher",
        "face_value": unit_cost * 2,
        "unit_cost": unit_cost,
        **extra,
    }


def campaign_body(
    now: float,
    campaign_id: str = "c1",
    rewards: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A head-office campaign open from an hour before `now` for 30 days, on the test channel."""
    start = datetime.fromtimestamp(now, UTC)
    return {
        "id": campaign_id,
        "name": f"campaign {campaign_id}",
        "branch": "HQ",
        "starts_at": (start - timedelta(hours=1)).isoformat(),
        "ends_at": (start + timedelta(days=30)).isoformat(),
        "channels": [CHANNEL],
        "rewards": rewards or [reward()],
        **fields,
    }


def campaign_of_branch(
    api: Api, campaign_id: str = "c1", branch: str = "HQ", **changes: Any
) -> dict[str, Any]:
    """A campaign of `branch` on right `coffee` (stock 10), open from an hour ago for 30 days."""
    return campaign_body(api.clock(), campaign_id, [reward(stock=10)], branch=branch, **changes)


def vendor_body(
    vendor_id: str,
    base_url: str | None,
    key_pairs: KeyPairs,
    signing_key: str,
    adapter: str = "simulated",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": vendor_id,
        "name": f"vendor {vendor_id}",
        "adapter": adapter,
        "public_keys": [key_pairs.vendor_public],
        "signing_key": signing_key,
        **({"base_url": base_url} if base_url else {}),
        **extra,
    }


def http_vendor_body(key_pairs: KeyPairs, signing_key: str, **changes: Any) -> dict[str, Any]:
    """Vendor `lounge-co` over HTTP, every setting given."""
    return {
        "id": "lounge-co",
        "name": "Lounge Co",
        "adapter": "http",
        "base_url": "https://lounge.example/api",
        "timeout_ms": 1500,
        "max_in_flight": 10,
        "retry": {"max_attempts": 3, "backoff_base_ms": 100, "backoff_max_ms": 5000},
        "public_keys": [key_pairs.vendor_public],
        "signing_key": signing_key,
        **changes,
    }


async def create_right(
    api: Api, right_id: str = "coffee", unit_cost: int = 100, *, admit: bool = True, **extra: Any
) -> dict[str, Any]:
    """Right `right_id` proposed by `marketer` and, unless told not, admitted by `approver`
    (a campaign may only name an admitted right)."""
    status, body = await api.admin(
        "marketer", "POST", "/admin/v1/rights", right_body(right_id, unit_cost, **extra)
    )
    assert status == 201, body
    if admit:
        body = await move_right(api, right_id, "admit")
    return body


async def move_right(api: Api, right_id: str, action: str, user: str = "approver") -> Any:
    """POST /admin/v1/rights/{id}/{action} as `user`, which must succeed."""
    status, body = await api.admin(user, "POST", f"/admin/v1/rights/{right_id}/{action}")
    assert status == 200, body
    return body


async def move_vendor(api: Api, vendor_id: str, action: str, user: str = "approver") -> Any:
    """POST /admin/v1/vendors/{id}/{action} as `user`, which must succeed."""
    status, body = await api.admin(user, "POST", f"/admin/v1/vendors/{vendor_id}/{action}")
    assert status == 200, body
    return body


async def create_campaign(
    api: Api,
    campaign_id: str = "c1",
    rewards: list[dict[str, Any]] | None = None,
    *,
    approve: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """Campaign `campaign_id` (see `campaign_body`), submitted and approved unless told not."""
    body = campaign_body(api.clock(), campaign_id, rewards, **fields)
    status, created = await api.admin("marketer", "POST", "/admin/v1/campaigns", body)
    assert status == 201, created
    if approve:
        status, created = await api.admin(
            "marketer", "POST", f"/admin/v1/campaigns/{campaign_id}/submit"
        )
        assert status == 200, created
        status, created = await api.admin(
            "approver", "POST", f"/admin/v1/campaigns/{campaign_id}/approve"
        )
        assert status == 200, created
    return created


async def register_vendor(
    api: Api,
    vendor_id: str,
    base_url: str | None,
    key_pairs: KeyPairs,
    signing_key: str,
    adapter: str = "simulated",
    activate: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Vendor `vendor_id` proposed by `admin` and, unless told not, activated by `approver`."""
    body = vendor_body(vendor_id, base_url, key_pairs, signing_key, adapter, **extra)
    status, vendor = await api.admin("admin", "POST", "/admin/v1/vendors", body)
    assert status == 201, vendor
    if activate:
        vendor = await move_vendor(api, vendor_id, "activate")
    return vendor


async def bring_to(api: Api, state: str, campaign_id: str = "c1", right_id: str = "coffee") -> None:
    """A head-office campaign on `right_id`, made by `marketer`, brought to `state`."""
    rewards = [{"id": "r1", "right_id": right_id, "stock": 10, "per_customer_limit": 1}]
    await api.create_campaign(campaign_id, rewards, approve=False)
    steps = {
        "draft": [],
        "pending": [("marketer", "submit")],
        "rejected": [("marketer", "submit"), ("approver", "reject")],
        "approved": [("marketer", "submit"), ("approver", "approve")],
        "paused": [("marketer", "submit"), ("approver", "approve"), ("marketer", "pause")],
        "ended": [("marketer", "submit"), ("approver", "approve"), ("marketer", "end")],
    }[state]
    for user, action in steps:
        status, body = await api.admin(user, "POST", f"/admin/v1/campaigns/{campaign_id}/{action}")
        assert status == 200, body


# Who makes and who checks, per branch.
HQ_USERS = {"marketer": "marketer", "approver": "approver"}
SZ_USERS = {"marketer": "sz-marketer", "approver": "sz-approver"}


async def act(api: Api, user: str, campaign_id: str, action: str) -> tuple[int, Any]:
    """POST /admin/v1/campaigns/{id}/{action} as `user`."""
    return await api.admin(user, "POST", f"/admin/v1/campaigns/{campaign_id}/{action}")


async def campaign_in(
    api: Api, state: str, campaign_id: str = "c1", branch: str = "HQ"
) -> dict[str, Any]:
    """A campaign brought to `state` through the API by that branch's own staff."""
    users = HQ_USERS if branch == "HQ" else SZ_USERS
    status, body = await api.admin(
        users["marketer"],
        "POST",
        "/admin/v1/campaigns",
        campaign_of_branch(api, campaign_id, branch),
    )
    assert status == 201, body
    path = {
        "draft": [],
        "pending": ["submit"],
        "rejected": ["submit", "reject"],
        "approved": ["submit", "approve"],
        "paused": ["submit", "approve", "pause"],
        "ended": ["submit", "approve", "end"],
    }[state]
    for action in path:
        role = "approver" if action in ("approve", "reject") else "marketer"
        status, body = await act(api, users[role], campaign_id, action)
        assert status == 200, body
    assert body["status"] == state
    return body


async def setup_vendor(
    api: Api,
    key_pairs: KeyPairs,
    signing_key: str,
    base_url: str | None,
    *,
    vendor_id: str,
    right_id: str,
    campaign_id: str = "c1",
    stock: int = 100,
    **vendor: Any,
) -> None:
    """A vendor, a right it fulfils and an approved campaign with one reward `r1` of it."""
    await register_vendor(api, vendor_id, base_url, key_pairs, signing_key, **vendor)
    await api.create_right(right_id, vendor_id=vendor_id)
    await api.create_campaign(
        campaign_id,
        rewards=[{"id": "r1", "right_id": right_id, "stock": stock, "per_customer_limit": 1}],
    )


async def grant_many(api: Api, campaign_id: str, count: int, first: int = 0) -> list[str]:
    """`count` grants at once, straight through the claim service (one customer each)."""
    claims = api.client.server.app[CLAIMS]
    grants = await asyncio.gather(
        *(
            claims.claim(Claim(CHANNEL, f"{campaign_id}-q{i}", campaign_id, f"cust-{i}", None))
            for i in range(first, first + count)
        )
    )
    return [g.grant_id for g in grants]
