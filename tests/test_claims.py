"""The claim contract: outcomes, errors and the invariants under concurrency."""

from __future__ import annotations

import asyncio

import pytest

from quanyi.ledger.worker import LedgerWorker

# On the single Redis and on a Redis Cluster: the contract and its counts are the same.
pytestmark = pytest.mark.cluster_too


async def test_claim_grants_then_replays_the_same_grant(api):
    await api.create_right()
    await api.create_campaign()
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201
    # Coffee has no vendor: fulfilled where it is granted.
    assert grant["status"] == "fulfilled" and grant["replayed"] is False
    assert (grant["campaign_id"], grant["reward_id"], grant["right_id"]) == ("c1", "r1", "coffee")
    assert (grant["customer_id"], grant["channel_id"]) == ("cust-1", "app")

    status, again = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 200
    assert again == {**grant, "replayed": True}


async def test_same_request_id_with_another_body_is_a_conflict(api):
    await api.create_right()
    await api.create_campaign()
    await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    status, body = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-2")
    assert status == 409
    assert body["error"]["code"] == "idempotency_conflict"


async def test_concurrent_claims_never_oversell(api, pool, redis, keys):
    """2,000 claims by 500 customers on stock 100, limit 1: exactly 100 grants."""
    await api.create_right()
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 100, "per_customer_limit": 1}]
    )
    sem = asyncio.Semaphore(200)

    async def one(i: int) -> tuple[int, dict]:
        async with sem:
            return await api.claim(
                request_id=f"q{i}", campaign_id="c1", customer_id=f"cust-{i % 500}"
            )

    results = await asyncio.gather(*(one(i) for i in range(2000)))
    granted = [body for status, body in results if status == 201]
    refused = [body["error"]["code"] for status, body in results if status != 201]
    assert len(granted) == 100
    assert len({g["customer_id"] for g in granted}) == 100
    assert set(refused) <= {"out_of_stock", "limit_reached"}
    assert len(refused) == 1900

    persisted = await LedgerWorker(redis, pool, keys).drain()
    assert persisted == 100
    assert await pool.fetchval("SELECT count(*) FROM grants WHERE campaign_id = 'c1'") == 100
    _, campaign = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
    reward = campaign["rewards"][0]
    assert (reward["granted"], reward["remaining"], reward["persisted"]) == (100, 0, 100)


async def test_concurrent_replays_of_one_request_grant_once(api, pool, redis, keys):
    await api.create_right()
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 100, "per_customer_limit": 5}]
    )
    results = await asyncio.gather(
        *(api.claim(request_id="same", campaign_id="c1", customer_id="cust-1") for _ in range(50))
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 49 + [201]
    assert len({body["grant_id"] for _, body in results}) == 1
    await LedgerWorker(redis, pool, keys).drain()
    assert await pool.fetchval("SELECT count(*) FROM grants") == 1
