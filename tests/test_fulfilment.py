"""Fulfilment at vendors: the simulated vendor is a real HTTP server."""

from __future__ import annotations

import pytest

from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import grant_view
from tests.support.factories import register_vendor
from tests.support.vendors import sim_stats
from tests.support.waiting import running, until

pytestmark = pytest.mark.cluster_too


async def test_a_grant_is_fulfilled_at_its_vendor_and_the_ledger_records_it(
    api, pool, redis, keys, start_sim, key_pairs, our_key_file, make_worker
):
    sim = await start_sim()
    await register_vendor(api, "sim", sim, key_pairs, our_key_file)
    await api.create_right("lounge", vendor_id="sim")
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "lounge", "stock": 10, "per_customer_limit": 1}]
    )
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201
    async with running(make_worker()):

        async def fulfilled() -> bool:
            return (await grant_view(api, grant["grant_id"]))["status"] == "fulfilled"

        await until(fulfilled, what="fulfilment")
    seen = await grant_view(api, grant["grant_id"])
    assert seen["code"].startswith("SIM-") and seen["vendor_id"] == "sim"
    assert [e["event"] for e in seen["timeline"]] == ["granted", "fulfilled"]
    stats = await sim_stats(sim)
    assert stats["effects"] == {grant["grant_id"]: 1}

    await LedgerWorker(redis, pool, keys).drain()
    row = await pool.fetchrow(
        "SELECT status, code, vendor_id FROM grants WHERE grant_id = $1", grant["grant_id"]
    )
    assert (row["status"], row["code"], row["vendor_id"]) == ("fulfilled", seen["code"], "sim")
    persisted = await grant_view(api, grant["grant_id"])
    assert persisted["persisted"] is True and persisted["code"] == seen["code"]
