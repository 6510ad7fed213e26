"""Daily stock and daily customer limits roll over at local midnight in the configured zone
(Asia/Shanghai by default), while total stock and total customer limits keep holding."""

from __future__ import annotations

import time
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import buckets_for, customer_bucket
from tests.support.clock import SHANGHAI, next_local_midnight
from tests.support.settings import settings_for_tests

pytestmark = pytest.mark.usefixtures("signed_in")


async def claim(api, request_id: str, customer_id: str) -> tuple[int, dict]:
    return await api.claim(request_id=request_id, campaign_id="c1", customer_id=customer_id)


def outcome(status: int, body: dict) -> tuple[int, str | None, str | None]:
    if status == 201:
        return status, None, None
    return status, body["error"]["code"], body["error"].get("scope")


async def test_daily_stock_rolls_over_at_shanghai_midnight(api, redis, pool, keys):
    midnight = next_local_midnight(time.time(), SHANGHAI)
    api.clock.now = midnight.timestamp() - 10  # 23:59:50 in Shanghai
    await api.create_right()
    await api.create_campaign(
        rewards=[
            {
                "id": "r1",
                "right_id": "coffee",
                "stock": 3,
                "daily_stock": 2,
                "per_customer_limit": 1,
            }
        ]
    )
    assert outcome(*await claim(api, "q1", "cust-1")) == (201, None, None)
    assert outcome(*await claim(api, "q2", "cust-2")) == (201, None, None)
    assert outcome(*await claim(api, "q3", "cust-3")) == (409, "out_of_stock", "daily")

    api.clock.advance(20)  # 00:00:10 the next day
    assert outcome(*await claim(api, "q4", "cust-3")) == (201, None, None)
    # Total stock (3) still holds across days.
    assert outcome(*await claim(api, "q5", "cust-4")) == (409, "out_of_stock", "total")
    api.clock.advance(86_400)
    assert outcome(*await claim(api, "q6", "cust-5")) == (409, "out_of_stock", "total")

    assert await LedgerWorker(redis, pool, keys).drain() == 3
    assert await pool.fetchval("SELECT count(*) FROM grants") == 3


async def test_customer_daily_limit_rolls_over_while_the_total_limit_holds(api, redis, keys):
    midnight = next_local_midnight(time.time(), SHANGHAI)
    api.clock.now = midnight.timestamp() - 10
    await api.create_right()
    await api.create_campaign(
        rewards=[
            {
                "id": "r1",
                "right_id": "coffee",
                "stock": 10,
                "per_customer_limit": 2,
                "per_customer_daily_limit": 1,
            }
        ]
    )
    assert outcome(*await claim(api, "q1", "cust-1")) == (201, None, None)
    assert outcome(*await claim(api, "q2", "cust-1")) == (409, "limit_reached", "customer_daily")

    api.clock.advance(20)
    assert outcome(*await claim(api, "q3", "cust-1")) == (201, None, None)
    assert outcome(*await claim(api, "q4", "cust-1")) == (409, "limit_reached", "customer")
    api.clock.advance(86_400)
    assert outcome(*await claim(api, "q5", "cust-1")) == (409, "limit_reached", "customer")
    assert outcome(*await claim(api, "q6", "cust-2")) == (201, None, None)
    assert int(await redis.hget(keys.campaign("c1"), "r:r1:granted")) == 3


async def test_utc_midnight_is_not_a_day_boundary_in_shanghai(api):
    eight_am = next_local_midnight(time.time(), SHANGHAI) + timedelta(hours=8)  # 00:00 UTC
    api.clock.now = eight_am.timestamp() - 10
    await api.create_right()
    await api.create_campaign(
        rewards=[
            {
                "id": "r1",
                "right_id": "coffee",
                "stock": 10,
                "daily_stock": 1,
                "per_customer_limit": 1,
            }
        ]
    )
    assert outcome(*await claim(api, "q1", "cust-1")) == (201, None, None)
    api.clock.advance(20)  # past UTC midnight, still the same day in Shanghai
    assert outcome(*await claim(api, "q2", "cust-2")) == (409, "out_of_stock", "daily")
    api.clock.now = next_local_midnight(api.clock.now, SHANGHAI).timestamp() - 1
    assert outcome(*await claim(api, "q3", "cust-2")) == (409, "out_of_stock", "daily")
    api.clock.advance(1)  # exactly midnight in Shanghai
    assert outcome(*await claim(api, "q4", "cust-2")) == (201, None, None)


async def test_daily_counters_expire_a_day_after_their_day(api, redis, keys):
    """Daily keys are not kept forever: they go one day after the local day they count."""
    midnight = next_local_midnight(time.time(), SHANGHAI)
    api.clock.now = midnight.timestamp() - 10
    await api.create_right()
    await api.create_campaign(
        rewards=[
            {
                "id": "r1",
                "right_id": "coffee",
                "stock": 10,
                "daily_stock": 5,
                "per_customer_limit": 2,
                "per_customer_daily_limit": 1,
            }
        ]
    )
    assert outcome(*await claim(api, "q1", "cust-1")) == (201, None, None)
    day = (midnight - timedelta(days=1)).strftime("%Y%m%d")
    expected = int(midnight.timestamp()) + 86_400
    bucket = customer_bucket("cust-1", buckets_for(10))
    assert await redis.expiretime(keys.reward_daily("c1", day)) == expected
    assert await redis.expiretime(keys.customer_daily("c1", day, bucket)) == expected


class TestAnotherZone:
    """The zone comes from Settings.tz: with America/New_York, New York midnight is the
    boundary and Shanghai midnight is not."""

    ZONE = ZoneInfo("America/New_York")

    @pytest.fixture
    def settings(self):
        return settings_for_tests(tz="America/New_York")

    async def test_daily_stock_rolls_over_at_the_configured_zones_midnight(self, api):
        ny_midnight = next_local_midnight(time.time(), self.ZONE)
        shanghai_midnight = next_local_midnight(ny_midnight.timestamp(), SHANGHAI)
        api.clock.now = shanghai_midnight.timestamp() - 10
        await api.create_right()
        await api.create_campaign(
            rewards=[
                {
                    "id": "r1",
                    "right_id": "coffee",
                    "stock": 10,
                    "daily_stock": 1,
                    "per_customer_limit": 1,
                }
            ]
        )
        assert outcome(*await claim(api, "q1", "cust-1")) == (201, None, None)
        api.clock.advance(20)  # Shanghai's midnight: no boundary in New York
        assert outcome(*await claim(api, "q2", "cust-2")) == (409, "out_of_stock", "daily")
        api.clock.now = next_local_midnight(api.clock.now, self.ZONE).timestamp() + 10
        assert outcome(*await claim(api, "q3", "cust-2")) == (201, None, None)
