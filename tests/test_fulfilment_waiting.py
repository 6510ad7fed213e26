"""A claim may wait for its fulfilment within the channel's SLA."""

from __future__ import annotations

import time

import pytest

from tests.support.clients import grant_view, stock_granted
from tests.support.factories import setup_vendor
from tests.support.vendors import sim_config
from tests.support.waiting import all_in, running, until

pytestmark = pytest.mark.cluster_too

# waiting for fulfilment


async def test_a_claim_may_wait_for_its_fulfilment_within_the_channel_sla(
    api, pool, redis, keys, start_sim, key_pairs, our_key_file, worker_factory
):
    sim = await start_sim(latency_ms=20)
    await setup_vendor(
        api, key_pairs, our_key_file, sim, vendor_id="quick", right_id="lounge", timeout_ms=5000
    )

    async with running(worker_factory()):
        # Warm up: the worker has loaded its vendors and routes, the API listens for outcomes.
        status, warm = await api.claim(request_id="q0", campaign_id="c1", customer_id="cust-0")
        assert status == 201, warm
        await until(all_in(api, [warm["grant_id"]], "fulfilled"), what="warm-up fulfilment")

        started = time.monotonic()
        status, body = await api.claim(
            request_id="q1", campaign_id="c1", customer_id="cust-1", wait_ms=800
        )
        elapsed = time.monotonic() - started
        assert status == 201, body
        assert body["status"] == "fulfilled"
        assert body["code"].startswith("SIM-")
        assert elapsed < 2.0
        seen = await grant_view(api, body["grant_id"])
        assert (seen["status"], seen["code"]) == ("fulfilled", body["code"])

        await sim_config(sim, latency_ms=2000)
        started = time.monotonic()
        status, slow = await api.claim(
            request_id="q2", campaign_id="c1", customer_id="cust-2", wait_ms=100
        )
        elapsed = time.monotonic() - started
        assert status == 201, slow
        assert slow["status"] == "granted"
        assert "code" not in slow or slow["code"] is None
        assert 0.09 <= elapsed < 1.0, elapsed
        # It is fulfilled later all the same.
        await until(all_in(api, [slow["grant_id"]], "fulfilled"), timeout=15, what="late one")

        before = await stock_granted(api)
        status, body = await api.claim(
            request_id="q3", campaign_id="c1", customer_id="cust-3", wait_ms=801
        )
        assert status == 400, body
        assert "wait_ms" in body["error"]["fields"]
        assert await stock_granted(api) == before
