"""Card events as the card system sends them (POST /v1/events, signed by a channel with the
events scope), goal campaigns to count them toward, and the customer's progress as a channel
reads it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis

from quanyi.access.api import CHANNELS
from quanyi.access.channels import create_channel
from quanyi.access.secret_box import secret_box
from quanyi.core.settings import Settings
from quanyi.stores.keys import PROGRESS_BUCKETS, Keys, customer_bucket, parse_progress
from tests.support.clients import Api
from tests.support.clock import SHANGHAI
from tests.support.factories import reward

CORE, CORE_SECRET = "core", "core-secret"
# Five purchases of at least 100 yuan in a calendar month.
FIVE_OF_100 = {"window": "month", "count": 5, "min_amount": 10_000}


async def add_card_channel(
    api: Api,
    pool: asyncpg.Pool,
    settings: Settings,
    channel_id: str = CORE,
    secret: str = CORE_SECRET,
    scopes: tuple[str, ...] = ("events",),
) -> str:
    """The card system's channel (events only by default), known to the running API at once."""
    await create_channel(pool, channel_id, secret, box=secret_box(settings), scopes=scopes)
    await api.client.app[CHANNELS].refresh()
    return channel_id


def local(text: str) -> datetime:
    """A wall-clock time in Asia/Shanghai (QUANYI_TZ of the tests), "2026-12-31T23:59:00"."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def event(
    api: Api,
    event_id: str,
    customer: str = "cust-1",
    amount: int = 12_000,
    *,
    mcc: str = "5812",
    at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A card transaction (or, with reversal_of=..., a reversal) that occurred at `at`, by
    default a minute before the app's clock."""
    occurred = at if at is not None else datetime.fromtimestamp(api.clock() - 60, SHANGHAI)
    return {
        "event_id": event_id,
        "type": "card_transaction",
        "customer_id": customer,
        "amount": amount,
        "mcc": mcc,
        "occurred_at": occurred.isoformat(),
        **extra,
    }


def refund(
    api: Api,
    event_id: str,
    original: str,
    customer: str = "cust-1",
    amount: int = 12_000,
    **extra: Any,
) -> dict[str, Any]:
    """A reversal of `original`: a reversal has its original's customer and amount."""
    return event(api, event_id, customer, amount, reversal_of=original, **extra)


async def post_events(
    api: Api, events: list[Any], channel: str = CORE, secret: str = CORE_SECRET
) -> tuple[int, Any]:
    """POST /v1/events with these events, signed by `channel`."""
    return await api.channel(
        "POST", "/v1/events", {"events": events}, channel=channel, secret=secret
    )


async def send(api: Api, *events: Any) -> list[dict[str, Any]]:
    """The results of these events (dicts, or anything to see refused), which the API must
    take (200)."""
    status, body = await post_events(api, list(events))
    assert status == 200, body
    results: list[dict[str, Any]] = body["results"]
    return results


def granted(results: list[dict[str, Any]]) -> list[str]:
    """Every grant these results made."""
    return [g for r in results for g in r.get("granted", ())]


async def goal_campaign(
    api: Api,
    campaign_id: str = "g1",
    *,
    right_id: str = "lounge",
    unit_cost: int = 3_000,
    new_right: bool = True,
    campaign: dict[str, Any] | None = None,
    **reward_fields: Any,
) -> dict[str, Any]:
    """Approved campaign `campaign_id` with one reward `r1` of `right_id` (stock 10, limit 1,
    goal FIVE_OF_100 unless `reward_fields` say otherwise); `campaign` adds campaign fields
    (starts_at, ends_at, budget, ...)."""
    if new_right:
        await api.create_right(right_id, unit_cost)
    fields = {"stock": 10, "goal": FIVE_OF_100, **reward_fields}
    return await api.create_campaign(
        campaign_id, [reward("r1", right_id, **fields)], **(campaign or {})
    )


async def progress(
    api: Api, customer: str = "cust-1", campaign_id: str = "g1", reward_id: str = "r1"
) -> dict[str, Any]:
    """The customer's progress toward the reward's goal in the period of the app's clock, as
    GET /v1/customers/{id}/progress shows it."""
    status, body = await api.channel(
        "GET", f"/v1/customers/{customer}/progress?campaign_id={campaign_id}"
    )
    assert status == 200, body
    found: dict[str, Any] = next(r for r in body["rewards"] if r["reward_id"] == reward_id)
    return found


async def campaign_figures(api: Api, campaign_id: str = "g1") -> tuple[int, int]:
    """(stock granted of reward r1, budget spent) as head office sees them."""
    status, body = await api.admin("marketer", "GET", f"/admin/v1/campaigns/{campaign_id}")
    assert status == 200, body
    r1 = next(r for r in body["rewards"] if r["id"] == "r1")
    return r1["granted"], body["spent"]


async def stored_progress(
    redis: Redis,
    keys: Keys,
    period: str,
    customer: str = "cust-1",
    campaign_id: str = "g1",
    reward_id: str = "r1",
) -> tuple[int, int, str | None]:
    """(count, amount, "<grant id> <day>" or None) of one period ("M202612", "W20261228", "C")
    as Redis holds them (quanyi/stores/keys.py Keys.progress), for periods the clock is not in."""
    key = keys.progress(campaign_id, customer_bucket(customer, PROGRESS_BUCKETS))
    return parse_progress(await redis.hget(key, f"{reward_id}|{customer}|{period}"))
