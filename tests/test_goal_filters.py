"""What counts toward a goal: a purchase of at least `min_amount`, at a merchant category in
`mcc_in` and not in `mcc_not_in`; others are taken but count for nothing. A goal of an amount
is reached by the sum of the qualifying purchases, a goal of both by both."""

from __future__ import annotations

import asyncpg
import pytest
from redis.asyncio import Redis

from quanyi.core.settings import Settings
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import Keys
from tests.support.clients import Api
from tests.support.events import (
    add_card_channel,
    campaign_figures,
    event,
    goal_campaign,
    granted,
    progress,
    send,
)

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]


@pytest.fixture
async def core(api: Api, pool: asyncpg.Pool, settings: Settings) -> str:
    return await add_card_channel(api, pool, settings)


async def test_min_amount_and_excluded_categories_do_not_count(
    api: Api, core: str, redis: Redis, pool: asyncpg.Pool, keys: Keys
) -> None:
    goal = {"window": "campaign", "count": 3, "min_amount": 10_000, "mcc_not_in": ["4829", "6011"]}
    await goal_campaign(api, goal=goal)
    ignored = await send(
        api,
        event(api, "small", amount=9_999),
        event(api, "wire", amount=50_000, mcc="4829"),
        event(api, "cash", amount=50_000, mcc="6011"),
    )
    assert [r["status"] for r in ignored] == ["accepted"] * 3
    shown = await progress(api)
    assert (shown["count"], shown["amount"]) == (0, 0)
    counted = await send(
        api, event(api, "dinner", amount=10_000), event(api, "grocery", mcc="5411")
    )
    assert granted(counted) == []
    assert ((await progress(api))["count"], (await progress(api))["amount"]) == (2, 22_000)
    assert granted(await send(api, event(api, "small-2", amount=9_000))) == []
    assert len(granted(await send(api, event(api, "third", amount=10_000)))) == 1
    assert await campaign_figures(api) == (1, 3_000)

    await LedgerWorker(redis, pool, keys).drain()
    outcomes = dict(await pool.fetch("SELECT event_id, outcome FROM card_events"))
    assert outcomes == {
        "small": "uncounted",
        "wire": "uncounted",
        "cash": "uncounted",
        "dinner": "counted",
        "grocery": "counted",
        "small-2": "uncounted",
        "third": "counted",
    }


async def test_only_the_purchases_of_audience_members_count(api: Api, core: str) -> None:
    status, body = await api.admin(
        "marketer", "POST", "/admin/v1/audiences", {"id": "vip", "name": "VIP", "branch": "HQ"}
    )
    assert status == 201, body
    token = await api.login("marketer")
    resp = await api.client.put(
        "/admin/v1/audiences/vip/members",
        data=b"customer_id\nmember\n",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    assert resp.status == 200, await resp.text()
    await goal_campaign(api, goal={"window": "campaign", "count": 2}, audience_id="vip")
    results = await send(
        api, *(event(api, f"tx-{c}-{i}", c) for i in range(3) for c in ("member", "outsider"))
    )
    assert [r["status"] for r in results] == ["accepted"] * 6
    assert [r["event_id"] for r in results if "granted" in r] == ["tx-member-1"]
    assert (await progress(api, "outsider"))["count"] == 0
    assert (await progress(api, "member"))["count"] == 3


async def test_only_the_listed_categories_count(api: Api, core: str) -> None:
    await goal_campaign(api, goal={"window": "campaign", "count": 2, "mcc_in": ["5812", "5814"]})
    assert granted(await send(api, event(api, "grocery", mcc="5411"), event(api, "cafe"))) == []
    assert (await progress(api))["count"] == 1
    assert len(granted(await send(api, event(api, "fast-food", mcc="5814")))) == 1


async def test_a_goal_of_an_amount_is_the_sum_of_the_qualifying_purchases(
    api: Api, core: str
) -> None:
    await goal_campaign(api, goal={"window": "month", "amount": 50_000, "min_amount": 1_000})
    first = await send(
        api,
        event(api, "tx-0", amount=20_000),
        event(api, "tip", amount=999),
        event(api, "tx-1", amount=20_000),
    )
    assert granted(first) == []
    shown = await progress(api)
    assert (shown["count"], shown["amount"], shown["reached"]) == (2, 40_000, False)
    assert len(granted(await send(api, event(api, "tx-2", amount=10_000)))) == 1
    assert (await progress(api))["amount"] == 50_000


async def test_a_goal_of_a_count_and_an_amount_needs_both(api: Api, core: str) -> None:
    await goal_campaign(api, goal={"window": "month", "count": 2, "amount": 50_000})
    assert granted(await send(api, event(api, "tx-0", amount=10_000))) == []
    assert granted(await send(api, event(api, "tx-1", amount=10_000))) == []  # count only
    assert len(granted(await send(api, event(api, "tx-2", amount=30_000)))) == 1
