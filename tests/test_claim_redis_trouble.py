"""Redis trouble on the claim path: a flushed script cache is reloaded, an unreachable Redis is a
503 (never a 500) and claims resume once it is back."""

from __future__ import annotations

import hashlib

import pytest
from redis.asyncio import ConnectionPool

from quanyi.stores.appkeys import REDIS
from quanyi.stores.scripts import lua_source
from tests.support.clients import CLAIM, assert_only_error, closed_port
from tests.support.stores import audit_rows, granted, ledger_count

pytestmark = pytest.mark.usefixtures("signed_in")


# the script cache


async def test_claims_survive_a_script_cache_flush(api, c1, redis, keys):
    sha = hashlib.sha1(lua_source("claim").encode()).hexdigest()
    status, first = await api.claim(**CLAIM)
    assert status == 201
    assert await redis.script_exists(sha) == [True]
    await redis.script_flush()
    assert await redis.script_exists(sha) == [False]
    status, second = await api.claim(**{**CLAIM, "request_id": "q2", "customer_id": "cust-2"})
    assert status == 201, second
    await redis.script_flush()
    status, again = await api.claim(**CLAIM)
    assert (status, again["grant_id"]) == (200, first["grant_id"])
    await redis.script_flush()
    status, resp = await api.claim(**{**CLAIM, "request_id": "q3"})
    assert (status, resp["error"]["code"]) == (409, "limit_reached")
    assert await granted(redis, keys) == 2
    assert await redis.script_exists(sha) == [True]


# Redis unreachable


async def test_redis_unreachable_is_503_and_service_recovers(api, c1, redis, pool, keys):
    await api.create_campaign("c2")
    status, first = await api.claim(**CLAIM)  # c1's definition is now cached by the app
    assert status == 201
    # Point the app's Redis client at a port nothing listens on, then put it back.
    app_redis = api.client.server.app[REDIS]
    reachable = app_redis.connection_pool
    app_redis.connection_pool = ConnectionPool.from_url(
        f"redis://127.0.0.1:{closed_port()}/9", socket_connect_timeout=2
    )
    try:
        status, resp = await api.claim(**{**CLAIM, "request_id": "q2", "customer_id": "cust-2"})
        assert_only_error(status, resp, 503, "unavailable")
        status, resp = await api.claim(**{**CLAIM, "request_id": "q3", "campaign_id": "c2"})
        assert_only_error(status, resp, 503, "unavailable")
        status, resp = await api.channel("GET", f"/v1/grants/{first['grant_id']}")
        assert_only_error(status, resp, 503, "unavailable")
        status, resp = await api.channel("GET", "/v1/customers/cust-1/grants")
        assert_only_error(status, resp, 503, "unavailable")
        status, resp = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
        assert_only_error(status, resp, 503, "unavailable")
        # A change Redis did not take is rolled back in PostgreSQL.
        status, resp = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/pause")
        assert_only_error(status, resp, 503, "unavailable")
        assert await pool.fetchval("SELECT status FROM campaigns WHERE id = 'c1'") == "approved"
        assert [r[2] for r in await audit_rows(pool, "campaign:c1")] == [
            "campaign.create",
            "campaign.submit",
            "campaign.approve",
        ]
    finally:
        unreachable, app_redis.connection_pool = app_redis.connection_pool, reachable
        await unreachable.aclose()
    assert await granted(redis, keys, "c1") == 1
    assert await granted(redis, keys, "c2") == 0
    status, second = await api.claim(**{**CLAIM, "request_id": "q2", "customer_id": "cust-2"})
    assert status == 201, second
    status, _ = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/pause")
    assert status == 200
    assert await ledger_count(redis, pool, keys) == 2
