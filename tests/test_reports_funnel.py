"""GET /admin/v1/reports/funnel: one campaign from its audience to redemption: the audience's
members, the customers offered it, those whose card events reached its goal, then its grants."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from quanyi.issuance.api import LIFECYCLE
from quanyi.issuance.exposures import Exposures
from quanyi.issuance.offers_api import OFFERS
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import error_code
from tests.support.events import add_card_channel, event, goal_campaign, send
from tests.support.scratch import free_port
from tests.test_offers import audience, offers

pytestmark = pytest.mark.usefixtures("signed_in")

MEMBERS = [f"M{n}" for n in range(6)]


async def funnel(api: Any, user: str = "marketer", campaign_id: str = "g1") -> tuple[int, Any]:
    return await api.admin(user, "GET", f"/admin/v1/reports/funnel?campaign_id={campaign_id}")


async def test_from_audience_to_redemption(api, redis, pool, keys, settings):
    await audience(api, MEMBERS)
    # Five purchases of 100 yuan or more in the month, for the audience's members only,
    # granted automatically on reaching the goal.
    await goal_campaign(api, audience_id="vip", grant="auto")
    await add_card_channel(api, pool, settings)

    # Four members open their offers (one twice); a stranger sees nothing of it.
    for customer in [*MEMBERS[:4], MEMBERS[0], "stranger"]:
        await offers(api, customer)
    await api.client.app[OFFERS]._exposures.flush()
    # Three reach the goal (one of them with a sixth purchase after), one gets halfway.
    for customer in MEMBERS[:3]:
        await send(api, *(event(api, f"{customer}-{n}", customer) for n in range(6)))
    await send(api, *(event(api, f"{MEMBERS[3]}-{n}", MEMBERS[3]) for n in range(2)))
    await LedgerWorker(redis, pool, keys, tz=settings.tz).drain()
    grants = [r["grant_id"] for r in await pool.fetch("SELECT grant_id FROM grants ORDER BY 1")]
    # All three born fulfilled: the goal's right (lounge) has no vendor.
    assert len(grants) == 3
    assert (await api.client.app[LIFECYCLE].move(grants[0], "redeemed", "vendor:t")).applied
    await LedgerWorker(redis, pool, keys, tz=settings.tz).drain()

    # Kept for reports long after the campaign's own counters go.
    assert await redis.ttl(keys.qualified("g1")) > 365 * 86_400
    assert await redis.ttl(keys.offered("g1")) > 365 * 86_400
    status, body = await funnel(api)
    assert status == 200, body
    assert body == {
        "campaign_id": "g1",
        "audience": 6,
        "eligible": 4,
        "qualified": 3,
        "issued": 3,
        "fulfilled": 3,
        "redeemed": 1,
    }


async def test_a_campaign_without_audience_or_goal(api, c1):
    status, body = await api.claim(request_id="f-1", campaign_id="c1", customer_id="C1")
    assert status == 201, body
    status, body = await funnel(api, campaign_id="c1")
    assert status == 200, body
    assert (body["audience"], body["qualified"], body["eligible"]) == (None, None, 0)
    # Not yet in the ledger: the funnel's grants are the ledger's.
    assert body["issued"] == 0


async def test_scope_and_bad_queries(api, c1):
    status, body = await funnel(api, "sz-marketer", "c1")
    assert error_code(status, body) == (403, "forbidden")
    status, body = await funnel(api, campaign_id="nope")
    assert error_code(status, body) == (404, "campaign_not_found")
    status, body = await api.admin("marketer", "GET", "/admin/v1/reports/funnel")
    assert error_code(status, body) == (400, "invalid_request")
    assert "campaign_id" in body["error"]["fields"]


async def test_exposures_wait_for_redis_and_count_each_customer_once(redis, keys):
    away = Redis(port=free_port(), socket_connect_timeout=0.2)
    exposures = Exposures(away, keys)
    for customer in ("a", "b", "a"):
        exposures.seen("x1", 2_000_000_000_000, customer)
    with pytest.raises(RedisConnectionError):
        await exposures.flush()
    await away.aclose()
    # Kept through the failure, then written by a flush that reaches Redis.
    exposures._redis = redis
    assert await exposures.flush() == 2
    assert await redis.pfcount(keys.offered("x1")) == 2
    assert await exposures.flush() == 0
