"""Fulfilment at vendors: the simulated vendor is a real HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ledger.worker import LedgerWorker
from tests.conftest import register_vendor, sim_stats
from vendors.fulfil import FulfilmentWorker


@contextlib.asynccontextmanager
async def running(worker: FulfilmentWorker) -> AsyncIterator[FulfilmentWorker]:
    task = asyncio.create_task(worker.run(grace_s=2))
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


@pytest.fixture
def make_worker(redis, pool, keys, settings, clock):
    def make(**options: Any) -> FulfilmentWorker:
        options.setdefault("block_ms", 20)
        options.setdefault("breaker_reset_s", 0.5)
        return FulfilmentWorker(redis, pool, keys, settings, clock, **options)

    return make


async def until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def status_of(api, grant_id: str) -> dict[str, Any]:
    status, grant = await api.channel("GET", f"/v1/grants/{grant_id}")
    assert status == 200, grant
    return grant


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
            return (await status_of(api, grant["grant_id"]))["status"] == "fulfilled"

        await until(fulfilled, what="fulfilment")
    seen = await status_of(api, grant["grant_id"])
    assert seen["code"].startswith("SIM-") and seen["vendor_id"] == "sim"
    assert [e["event"] for e in seen["timeline"]] == ["granted", "fulfilled"]
    stats = await sim_stats(sim)
    assert stats["effects"] == {grant["grant_id"]: 1}

    await LedgerWorker(redis, pool, keys).drain()
    row = await pool.fetchrow(
        "SELECT status, code, vendor_id FROM grants WHERE grant_id = $1", grant["grant_id"]
    )
    assert (row["status"], row["code"], row["vendor_id"]) == ("fulfilled", seen["code"], "sim")
    persisted = await status_of(api, grant["grant_id"])
    assert persisted["persisted"] is True and persisted["code"] == seen["code"]
