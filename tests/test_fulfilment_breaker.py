"""The circuit breaker stops calls to a vendor that is down and lets them through once it is
back; a hanging vendor does not hold up another."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from quanyi.issuance.api import CLAIMS
from quanyi.issuance.claims import Claim
from quanyi.vendors.operations import dead_letters
from tests.support.clients import statuses
from tests.support.factories import grant_many, setup_vendor
from tests.support.settings import CHANNEL
from tests.support.vendors import sim_config, sim_stats
from tests.support.waiting import all_in, running, until

pytestmark = pytest.mark.cluster_too


def circuit_state(vendor_id: str) -> float | None:
    return REGISTRY.get_sample_value("quanyi_vendor_circuit_state", {"vendor": vendor_id})


# circuit breaker


async def test_the_breaker_stops_calls_to_a_vendor_that_is_down_and_recovers(
    api, pool, redis, keys, start_sim, key_pairs, our_key_file, worker_factory
):
    sim = await start_sim(outage=True)
    # One call at a time, so the breaker sees every failure before the next call is decided.
    await setup_vendor(
        api,
        key_pairs,
        our_key_file,
        sim,
        vendor_id="down",
        right_id="lounge",
        max_in_flight=1,
        retry={"max_attempts": 100, "backoff_base_ms": 10, "backoff_max_ms": 50},
    )
    grant_ids = await grant_many(api, "c1", 20)
    threshold, reset_s = 5, 1.0

    async def total_calls() -> int:
        return sum((await sim_stats(sim))["calls"].values())

    started = time.monotonic()
    async with running(worker_factory(breaker_threshold=threshold, breaker_reset_s=reset_s)):

        async def opened() -> bool:
            return circuit_state("down") == 2

        await until(opened, timeout=15, what="the breaker open")
        at_open = await total_calls()
        await asyncio.sleep(2.0)
        later = await total_calls()
        elapsed = time.monotonic() - started
        assert circuit_state("down") == 2

        # Open after `threshold` failures in a row; from then on one probe per reset period
        # (a failed probe opens it again). So however long it has been open, at most
        # threshold + elapsed / reset_s + 1 calls. Without the breaker the 20 grants would each
        # retry every 5-50 ms: hundreds of calls in these seconds, 2000 before giving up.
        assert threshold <= at_open <= later
        assert later <= threshold + elapsed / reset_s + 1, (later, elapsed)
        assert later - at_open <= 2.0 / reset_s + 2
        # Parked while open, a grant spends none of its retry budget: none has failed.
        assert {g["status"] for g in (await statuses(api, grant_ids)).values()} == {"granted"}
        assert await dead_letters(redis, keys, 10) == []
        assert await redis.hlen(keys.of("c1").fulfil_parked) == len(grant_ids)

        await sim_config(sim, outage=False)
        await until(all_in(api, grant_ids, "fulfilled"), timeout=30, what="recovery")

    assert circuit_state("down") == 0
    stats = await sim_stats(sim)
    assert stats["effects"] == {g: 1 for g in grant_ids}
    assert all(g["status"] == "fulfilled" for g in (await statuses(api, grant_ids)).values())


# isolation


async def test_a_hanging_vendor_does_not_hold_up_another(
    api, pool, redis, keys, start_sim, key_pairs, our_key_file, worker_factory
):
    hanging = await start_sim(timeout_rate=1, hang_s=5)
    healthy = await start_sim(latency_ms=5)
    await setup_vendor(
        api,
        key_pairs,
        our_key_file,
        hanging,
        vendor_id="hangs",
        right_id="spa",
        campaign_id="ca",
        timeout_ms=300,
        max_in_flight=4,
        retry={"max_attempts": 100, "backoff_base_ms": 50, "backoff_max_ms": 200},
    )
    await setup_vendor(
        api, key_pairs, our_key_file, healthy, vendor_id="ok", right_id="gym", campaign_id="cb"
    )
    claims = api.client.server.app[CLAIMS]
    interleaved = await asyncio.gather(
        *(
            claims.claim(Claim(CHANNEL, f"q{i}", "ca" if i % 2 else "cb", f"cust-{i}", None))
            for i in range(40)
        )
    )
    a_ids = [g.grant_id for i, g in enumerate(interleaved) if i % 2]
    b_ids = [g.grant_id for i, g in enumerate(interleaved) if not i % 2]

    async with running(worker_factory()):
        await until(all_in(api, b_ids, "fulfilled"), timeout=8, what="the healthy vendor's grants")
        a_seen = await statuses(api, a_ids)
        assert {g["status"] for g in a_seen.values()} == {"granted"}
        a_stats = await sim_stats(hanging)
        assert a_stats["calls"], "the hanging vendor was never called"
        assert a_stats["effects"] == {}
    assert (await sim_stats(healthy))["effects"] == {g: 1 for g in b_ids}


@pytest.mark.cluster_only("one outbox never repeats an entry id")
async def test_entries_of_two_shards_with_the_same_id_are_each_fulfilled(
    api, pool, redis, keys, start_sim, key_pairs, our_key_file, worker_factory
):
    # An entry id is unique in its own stream only: two shards' outboxes written in the same
    # millisecond give out the same ids. Here they are given the same ids on purpose, so every
    # entry of one shard has a twin in another, all read in one batch.
    first, second = "ca", next(c for c in ("cb", "cc", "cd", "ce") if keys.of(c) != keys.of("ca"))
    sim = await start_sim(latency_ms=5)
    for vendor_id, right_id, campaign_id in (("v1", "spa", first), ("v2", "gym", second)):
        await setup_vendor(
            api,
            key_pairs,
            our_key_file,
            sim,
            vendor_id=vendor_id,
            right_id=right_id,
            campaign_id=campaign_id,
        )
    grant_ids = await grant_many(api, first, 5) + await grant_many(api, second, 5, first=5)
    outboxes = [keys.of(first).outbox, keys.of(second).outbox]
    entries = {outbox: await redis.xrange(outbox) for outbox in outboxes}
    assert all(len(found) == 5 for found in entries.values())
    after_ms = max(int(found[-1][0].split("-")[0]) for found in entries.values()) + 1
    for outbox, found in entries.items():
        await redis.xdel(outbox, *(entry_id for entry_id, _ in found))
        for seq, (_, fields) in enumerate(found):
            await redis.xadd(outbox, fields, id=f"{after_ms}-{seq}")

    # Re-claiming (after 30 s idle) would pick up an entry skipped as another's twin: not here.
    async with running(worker_factory()):
        await until(all_in(api, grant_ids, "fulfilled"), timeout=10, what="every grant fulfilled")
    assert (await sim_stats(sim))["effects"] == {g: 1 for g in grant_ids}
