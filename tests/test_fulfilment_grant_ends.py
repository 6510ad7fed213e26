"""How a grant ends other than fulfilled: failed and dead-lettered (its stock back, redrivable),
revoked (stock back once, the vendor told), expired (and then not revocable)."""

from __future__ import annotations

import asyncio

import pytest

from quanyi.ledger.worker import LedgerWorker
from quanyi.runtime import open_stores
from quanyi.stores.outbox import FULFIL_GROUP
from quanyi.vendors.operations import dead_letters, redrive
from tests.support.clients import grant_view, stock_granted
from tests.support.factories import setup_vendor
from tests.support.stores import ledger_events, ledger_rows
from tests.support.vendors import at_vendor, sim_config, sim_stats
from tests.support.waiting import all_in, running, until

pytestmark = pytest.mark.cluster_too

# failure, dead letter, redrive


async def test_a_failed_grant_is_dead_lettered_returns_stock_and_can_be_redriven(
    api, pool, redis, keys, settings, start_sim, key_pairs, our_key_file, worker_factory
):
    sim = await start_sim(error_rate=1)
    await setup_vendor(
        api,
        key_pairs,
        our_key_file,
        sim,
        vendor_id="broken",
        right_id="lounge",
        retry={"max_attempts": 3, "backoff_base_ms": 10, "backoff_max_ms": 50},
    )
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    grant_id = grant["grant_id"]
    assert await stock_granted(api) == 1

    async with running(worker_factory()):
        await until(all_in(api, [grant_id], "failed"), timeout=15, what="the grant failed")

        stats = await sim_stats(sim)
        assert stats["calls"] == {grant_id: 3}  # exactly its retry budget
        assert stats["effects"] == {}
        dead = await dead_letters(redis, keys, 10)
        assert [(d["grant_id"], d["vendor_id"], d["attempts"]) for d in dead] == [
            (grant_id, "broken", 3)
        ]
        assert "HTTP 500" in dead[0]["error"]
        # The campaign returns the stock of a failed grant (its default).
        assert await stock_granted(api) == 0

        await sim_config(sim, error_rate=0)
        async with open_stores(settings) as stores:  # the lifecycle `quanyi dlq redrive` uses
            redriven = await redrive(pool, redis, keys, stores.lifecycle(), None)
        assert redriven == [(grant_id, "redriven")]
        assert await dead_letters(redis, keys, 10) == []
        await until(all_in(api, [grant_id], "fulfilled"), timeout=15, what="the redriven grant")

    assert await stock_granted(api) == 1
    seen = await grant_view(api, grant_id)
    assert [e["event"] for e in seen["timeline"]] == ["granted", "failed", "redriven", "fulfilled"]
    assert (await sim_stats(sim))["effects"] == {grant_id: 1}
    await LedgerWorker(redis, pool, keys).drain()
    assert await ledger_events(pool, grant_id) == ["failed", "redriven", "fulfilled"]
    assert (await ledger_rows(pool, [grant_id]))[grant_id]["status"] == "fulfilled"


# revocation


async def test_revoking_returns_stock_once_and_tells_the_vendor(
    api, pool, redis, keys, clock, start_sim, key_pairs, our_key_file, worker_factory
):
    sim = await start_sim()
    await setup_vendor(api, key_pairs, our_key_file, sim, vendor_id="rv", right_id="lounge")
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    grant_id = grant["grant_id"]
    path = f"/v1/grants/{grant_id}/revoke"

    # The worker and the API share the test clock, so events are stamped in the order they
    # happen; no retries are needed here.
    async with running(worker_factory(clock=clock)):
        await until(all_in(api, [grant_id], "fulfilled"), what="fulfilment")
        assert await stock_granted(api) == 1
        clock.advance(1)

        # Only the channel that made the grant may revoke it.
        status, body = await api.channel(
            "POST", path, {"reason": "not yours"}, channel="wechat", secret="wechat-secret"
        )
        assert status == 403, body
        assert body["error"]["code"] == "forbidden"
        assert (await grant_view(api, grant_id))["status"] == "fulfilled"

        first, second = await asyncio.gather(
            api.channel("POST", path, {"reason": "customer cancelled"}),
            api.channel("POST", path, {"reason": "customer cancelled"}),
        )
        for status, body in (first, second):
            assert status == 200, body
            assert body["status"] == "revoked"
        assert await stock_granted(api) == 0

        status, body = await api.channel("POST", path)
        assert (status, body["status"]) == (200, "revoked")
        assert await stock_granted(api) == 0

        status, body = await api.channel(
            "POST", path, {"reason": "still not yours"}, channel="wechat", secret="wechat-secret"
        )
        assert status == 403, body

        async def revoked_at_vendor() -> bool:
            held = (await at_vendor(pool, "rv", [grant_id]))[grant_id]
            return held is not None and held["state"] == "revoked"

        await until(revoked_at_vendor, timeout=10, what="the vendor told")

        # ... and is done with the revocation's outbox entry (else the outbox is never trimmed
        # past it).
        async def nothing_pending() -> bool:
            return (await redis.xpending(keys.of("c1").outbox, FULFIL_GROUP))["pending"] == 0

        await until(nothing_pending, timeout=10, what="the revocation acknowledged")

        # The customer's limit came back with the stock: they may claim again.
        status, again = await api.claim(request_id="q2", campaign_id="c1", customer_id="cust-1")
        assert status == 201, again
        assert await stock_granted(api) == 1

    await LedgerWorker(redis, pool, keys).drain()
    assert await ledger_events(pool, grant_id) == ["fulfilled", "revoked"]
    assert (await ledger_rows(pool, [grant_id]))[grant_id]["status"] == "revoked"
    assert (await sim_stats(sim))["effects"][grant_id] == 1


# expiry


async def test_a_fulfilled_grant_expires_and_then_cannot_be_revoked(
    api, pool, redis, keys, clock, start_sim, key_pairs, our_key_file, worker_factory
):
    sim = await start_sim()
    await setup_vendor(api, key_pairs, our_key_file, sim, vendor_id="exp", right_id="lounge")
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    grant_id = grant["grant_id"]
    worker = worker_factory(clock=clock)
    async with running(worker):
        await until(all_in(api, [grant_id], "fulfilled"), what="fulfilment")
    await LedgerWorker(redis, pool, keys).drain()
    assert (await ledger_rows(pool, [grant_id]))[grant_id]["expires_at"] is not None

    assert await worker.expire_due() == 0  # the voucher is valid for 30 days
    clock.advance(365 * 86400)
    assert await worker.expire_due() == 1
    assert await worker.expire_due() == 0  # once only
    assert (await grant_view(api, grant_id))["status"] == "expired"

    status, body = await api.channel("POST", f"/v1/grants/{grant_id}/revoke")
    assert status == 409, body
    assert body["error"]["code"] == "grant_not_live"
    assert await stock_granted(api) == 1  # an expired grant keeps its stock spent

    await LedgerWorker(redis, pool, keys).drain()
    assert await ledger_events(pool, grant_id) == ["fulfilled", "expired"]
    assert (await ledger_rows(pool, [grant_id]))[grant_id]["status"] == "expired"
