"""Goals under load: copies of a customer's events arriving at once and out of order grant once
and count once; a thousand customers reaching a goal at once get exactly the stock, or exactly
what the budget pays for, and the ledger holds those grants and every event."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest
from redis.asyncio import Redis

from quanyi.core.settings import Settings
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import Keys
from tests.support.clients import Api, grant_view
from tests.support.events import (
    add_card_channel,
    campaign_figures,
    event,
    goal_campaign,
    granted,
    post_events,
    progress,
    send,
)

pytestmark = pytest.mark.usefixtures("signed_in")


@pytest.fixture
async def core(api: Api, pool: asyncpg.Pool, settings: Settings) -> str:
    return await add_card_channel(api, pool, settings)


async def test_200_shuffled_copies_of_five_events_grant_exactly_once(api: Api, core: str) -> None:
    await goal_campaign(api)
    purchases = [event(api, f"tx-{i}") for i in range(5)]
    rng = random.Random(8)
    # 200 requests: each of the five events 40 times, in a random order, one or two a request.
    copies = [p for p in purchases for _ in range(40)]
    rng.shuffle(copies)
    requests: list[list[dict]] = []
    while copies:
        take = rng.choice((1, 2))
        requests.append(copies[:take])
        copies = copies[take:]
    replies = await asyncio.gather(*(post_events(api, r) for r in requests))
    assert all(status == 200 for status, _ in replies), replies
    results = [r for _, body in replies for r in body["results"]]
    assert len(results) == 200
    accepted = [r["event_id"] for r in results if r["status"] == "accepted"]
    assert sorted(accepted) == [f"tx-{i}" for i in range(5)]  # each counted once
    assert sum(r["status"] == "duplicate" for r in results) == 195
    grants = granted(results)
    assert len(grants) == 1
    assert await campaign_figures(api) == (1, 3_000)
    shown = await progress(api)
    assert (shown["count"], shown["amount"], shown["reached"]) == (5, 60_000, True)
    # Born fulfilled: the goal's right (lounge) has no vendor.
    assert (await grant_view(api, grants[0]))["status"] == "fulfilled"
    # Later purchases of the month count, but the goal gave its grant for this month.
    assert granted(await send(api, event(api, "tx-5"))) == []
    assert (await progress(api))["count"] == 6


@pytest.mark.cluster_too
async def test_1000_customers_reaching_the_goal_get_exactly_the_stock(
    api: Api, core: str, redis: Redis, pool: asyncpg.Pool, keys: Keys
) -> None:
    await goal_campaign(api, stock=100)
    customers = [f"cust-{n}" for n in range(1000)]
    purchases = [event(api, f"tx-{c}-{i}", c) for i in range(5) for c in customers]
    batches = [purchases[i : i + 1000] for i in range(0, len(purchases), 1000)]
    replies = await asyncio.gather(*(post_events(api, b) for b in batches))
    assert all(status == 200 for status, _ in replies)
    results = [r for _, body in replies for r in body["results"]]
    assert [r["status"] for r in results] == ["accepted"] * 5000
    grants = granted(results)
    assert len(grants) == len(set(grants)) == 100
    assert await campaign_figures(api) == (100, 300_000)

    await LedgerWorker(redis, pool, keys).drain()
    rows = await pool.fetch(
        "SELECT grant_id, channel_id, customer_id, request_id FROM grants WHERE campaign_id = 'g1'"
    )
    assert sorted(r["grant_id"] for r in rows) == sorted(grants)
    assert {r["channel_id"] for r in rows} == {"goal"}
    assert len({r["customer_id"] for r in rows}) == 100  # one each
    assert all(r["request_id"].startswith("core/tx-") for r in rows)
    events = await pool.fetch("SELECT event_id, outcome, grants FROM card_events")
    assert len(events) == 5000
    assert {r["outcome"] for r in events} == {"counted"}
    assert sum(r["grants"] != "[]" for r in events) == 100


@pytest.mark.cluster_too
async def test_auto_grants_stop_at_the_budget(api: Api, core: str) -> None:
    # Each lounge visit costs 3,000: the budget pays for three.
    await goal_campaign(api, stock=10, campaign={"budget": 9_000})
    purchases = [event(api, f"tx-{c}-{i}", f"cust-{c}") for i in range(5) for c in range(5)]
    results = await send(api, *purchases)
    assert len(granted(results)) == 3
    assert await campaign_figures(api) == (3, 9_000)
    # A sixth purchase of a customer left out does not grant either: the budget is spent.
    last = [r["event_id"] for r in results if "granted" in r]
    left_out = next(c for c in range(5) if f"tx-{c}-4" not in last)
    assert granted(await send(api, event(api, "tx-late", f"cust-{left_out}"))) == []
    assert await campaign_figures(api) == (3, 9_000)
