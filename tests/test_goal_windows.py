"""Goal windows at their edges, on the tests' clock in Asia/Shanghai: a month ends and a week
begins at local midnight (the period is the event's time, not the time it is processed), the
campaign's own window bounds what counts, a reward is earned again each month up to the
customer's limit, and the daily counters a grant moves are those of the processing day."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from quanyi.core.settings import Settings
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import Keys
from tests.support.clients import Api
from tests.support.clock import SHANGHAI, FakeClock, next_local_midnight
from tests.support.events import (
    add_card_channel,
    campaign_figures,
    event,
    goal_campaign,
    granted,
    local,
    progress,
    send,
    stored_progress,
)
from tests.support.factories import reward

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]

# From the first of December 2026 to the first of April 2027, local time.
SPRING: dict[str, Any] = {
    "starts_at": "2026-12-01T00:00:00+08:00",
    "ends_at": "2027-04-01T00:00:00+08:00",
}


@pytest.fixture
async def core(api: Api, pool: asyncpg.Pool, settings: Settings) -> str:
    return await add_card_channel(api, pool, settings)


def at(clock: FakeClock, text: str) -> None:
    clock.now = local(text).timestamp()


async def test_a_month_ends_at_local_midnight(
    api: Api, core: str, clock: FakeClock, redis: Redis, keys: Keys, pool: asyncpg.Pool
) -> None:
    at(clock, "2027-01-01T00:30:00")  # processed just after the new year began
    await goal_campaign(api, goal={"window": "month", "count": 5}, campaign=SPRING)
    midnight = next_local_midnight(local("2026-12-31T12:00:00").timestamp(), SHANGHAI)
    assert midnight == local("2027-01-01T00:00:00")
    before = [midnight - timedelta(minutes=m) for m in (3, 2, 1)]
    before.append(midnight - timedelta(milliseconds=1))
    results = await send(
        api,
        *(event(api, f"dec-{i}", at=t) for i, t in enumerate(before)),
        event(api, "jan-0", at=midnight),
    )
    assert [r["status"] for r in results] == ["accepted"] * 5
    assert granted(results) == []  # four in December, one in January: two periods
    assert await stored_progress(redis, keys, "M202612") == (4, 48_000, None)
    assert await stored_progress(redis, keys, "M202701") == (1, 12_000, None)
    shown = await progress(api)  # the clock's period: January
    assert (shown["count"], shown["reached"]) == (1, False)

    # A December purchase that reaches the card system late still counts for December.
    late = (await send(api, event(api, "dec-late", at=local("2026-12-31T20:00:00"))))[0]
    assert len(late["granted"]) == 1
    count, _, given = await stored_progress(redis, keys, "M202612")
    # The period is the purchase's; the day the grant counts on is the processing day.
    assert count == 5 and given == f"{late['granted'][0]} 20270101"
    assert (await stored_progress(redis, keys, "M202701"))[0] == 1

    await LedgerWorker(redis, pool, keys).drain()
    rows = await pool.fetch("SELECT event_id, counted FROM card_events")
    periods = {r["event_id"]: [c["period"] for c in orjson.loads(r["counted"])] for r in rows}
    assert periods == {
        **{f"dec-{i}": ["M202612"] for i in range(4)},
        "jan-0": ["M202701"],
        "dec-late": ["M202612"],
    }


async def test_a_week_begins_at_monday_local_midnight(
    api: Api, core: str, clock: FakeClock, redis, keys
) -> None:
    at(clock, "2027-01-04T00:30:00")  # a Monday
    await api.create_right("lounge", 3_000)
    week = reward("r1", "lounge", stock=10, goal={"window": "week", "count": 5})
    month = reward("r2", "lounge", stock=10, goal={"window": "month", "count": 5})
    await api.create_campaign("g1", [week, month], **SPRING)
    monday = next_local_midnight(local("2027-01-03T12:00:00").timestamp(), SHANGHAI)
    assert monday.weekday() == 0
    sunday = [monday - timedelta(seconds=s) for s in (40, 30, 20, 10)]
    results = await send(
        api,
        *(event(api, f"sun-{i}", at=t) for i, t in enumerate(sunday)),
        event(api, "mon-0", at=monday),
    )
    # The month goal (one period) is reached by the fifth; the week goal (two) is not.
    assert len(granted(results)) == 1
    assert await campaign_figures(api) == (0, 3_000)
    assert await stored_progress(redis, keys, "W20261228") == (4, 48_000, None)
    assert await stored_progress(redis, keys, "W20270104") == (1, 12_000, None)
    assert (await stored_progress(redis, keys, "M202701", reward_id="r2"))[0] == 5


async def test_events_outside_the_campaign_window_count_for_nothing(
    api: Api, core: str, clock: FakeClock, redis, keys
) -> None:
    at(clock, "2027-01-01T00:30:00")
    window = {"starts_at": "2027-01-01T00:00:00+08:00", "ends_at": "2027-01-31T00:00:00+08:00"}
    await goal_campaign(api, goal={"window": "campaign", "count": 1}, campaign=window)
    early = await send(api, event(api, "early", at=local("2026-12-31T23:59:59")))
    assert early[0]["status"] == "accepted" and granted(early) == []
    assert await stored_progress(redis, keys, "C") == (0, 0, None)
    first = await send(api, event(api, "inside", at=local("2027-01-01T00:00:00")))
    assert len(granted(first)) == 1
    at(clock, "2027-01-31T00:10:00")  # sent once it happened: after the campaign's end
    late = await send(api, event(api, "late", at=local("2027-01-31T00:00:00")))
    assert late[0]["status"] == "accepted" and granted(late) == []
    assert (await stored_progress(redis, keys, "C"))[0] == 1  # the one inside, alone


async def test_the_reward_is_earned_again_each_month_up_to_the_limit(
    api: Api, core: str, clock: FakeClock, redis, keys
) -> None:
    at(clock, "2027-01-10T12:00:00")
    await goal_campaign(
        api, goal={"window": "month", "count": 2}, per_customer_limit=2, campaign=SPRING
    )
    grants = []
    for month in ("01", "02", "03"):
        at(clock, f"2027-{month}-10T12:00:00")
        results = await send(api, event(api, f"m{month}-a"), event(api, f"m{month}-b"))
        grants.append(granted(results))
    assert [len(g) for g in grants] == [1, 1, 0]  # the third month: the customer's limit
    assert await campaign_figures(api) == (2, 6_000)
    count, _, given = await stored_progress(redis, keys, "M202703")
    assert (count, given) == (2, None)  # reached, not granted
    status, body = await api.channel("GET", "/v1/customers/cust-1/offers")
    assert status == 200, body
    offer = next(o for o in body["offers"] if o["campaign_id"] == "g1")
    assert offer["remaining_for_customer"] == 0


async def test_daily_counters_are_the_processing_days(
    api: Api, core: str, clock: FakeClock
) -> None:
    at(clock, "2027-01-01T00:10:00")
    await goal_campaign(
        api, goal={"window": "month", "count": 1}, daily_stock=1, stock=10, campaign=SPRING
    )
    # Bought on different days, processed on the same: one grant a day.
    first = await send(api, event(api, "a-1", "cust-a", at=local("2026-12-31T23:59:00")))
    second = await send(api, event(api, "b-1", "cust-b", at=local("2027-01-01T00:05:00")))
    assert (len(granted(first)), len(granted(second))) == (1, 0)
    at(clock, "2027-01-02T00:10:00")
    again = await send(api, event(api, "b-2", "cust-b", at=local("2027-01-02T00:01:00")))
    assert len(granted(again)) == 1
    assert (await campaign_figures(api))[0] == 2
