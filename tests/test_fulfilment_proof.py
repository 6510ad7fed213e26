"""The fulfilment worker's guarantees, against real simulated vendors (HTTP servers), real Redis
and real PostgreSQL: exactly once at the vendor under retries and crashes, the circuit breaker,
isolation between vendors, code pools, dead letters and redrive, revocation, waiting claims and
expiry."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from issuance.claims import Claim
from issuance.lifecycle import grant_from_event
from ledger.worker import LedgerWorker
from quanyi.app import open_redis
from quanyi.appkeys import CLAIMS
from quanyi.clock import system_clock
from tests.conftest import (
    CHANNEL,
    TEST_DATABASE_URL,
    TEST_PREFIX,
    TEST_REDIS_URL,
    register_vendor,
    sim_config,
    sim_stats,
)
from tests.test_fulfilment import running, status_of, until
from vendors.adapters import HttpAdapter, Order
from vendors.commands import dead_letters, import_codes, redrive
from vendors.fulfil import FULFIL_GROUP, FulfilmentWorker
from vendors.registry import VendorRegistry

ROOT = Path(__file__).resolve().parent.parent
FAST_RETRY = {"max_attempts": 50, "backoff_base_ms": 10, "backoff_max_ms": 50}


# helpers


@pytest.fixture
async def worker_redis(redis, settings) -> AsyncIterator[Redis]:
    """The worker's own Redis client, made as `quanyi worker` makes it (a blocking pool)."""
    client = await open_redis(settings)
    yield client
    await client.aclose()


@pytest.fixture
def worker_factory(worker_redis, pool, keys, settings):
    """A fulfilment worker on the system clock: parked retries fall due as real time passes
    (the frozen test clock would keep every retry waiting)."""

    def make(clock=system_clock, **options: Any) -> FulfilmentWorker:
        options.setdefault("block_ms", 20)
        options.setdefault("breaker_reset_s", 0.5)
        return FulfilmentWorker(worker_redis, pool, keys, settings, clock, **options)

    return make


async def setup_vendor(
    api,
    key_pairs,
    signing_key: str,
    base_url: str | None,
    *,
    vendor_id: str,
    right_id: str,
    campaign_id: str = "c1",
    stock: int = 100,
    **vendor: Any,
) -> None:
    """A vendor, a right it fulfils and an approved campaign with one reward `r1` of it."""
    await register_vendor(api, vendor_id, base_url, key_pairs, signing_key, **vendor)
    await api.create_right(right_id, vendor_id=vendor_id)
    await api.create_campaign(
        campaign_id,
        rewards=[{"id": "r1", "right_id": right_id, "stock": stock, "per_customer_limit": 1}],
    )


async def grant_many(api, campaign_id: str, count: int, first: int = 0) -> list[str]:
    """`count` grants at once, straight through the claim service (one customer each)."""
    claims = api.client.server.app[CLAIMS]
    grants = await asyncio.gather(
        *(
            claims.claim(Claim(CHANNEL, f"{campaign_id}-q{i}", campaign_id, f"cust-{i}", None))
            for i in range(first, first + count)
        )
    )
    return [g.grant_id for g in grants]


async def statuses(api, grant_ids: list[str]) -> dict[str, dict[str, Any]]:
    grants = await asyncio.gather(*(status_of(api, g) for g in grant_ids))
    return dict(zip(grant_ids, grants, strict=True))


def all_in(api, grant_ids: list[str], status: str):
    async def check() -> bool:
        seen = await statuses(api, grant_ids)
        return all(g["status"] == status for g in seen.values())

    return check


async def stock_granted(api, campaign_id: str = "c1", reward_id: str = "r1") -> int:
    """The reward's live `granted` counter as head office sees it."""
    status, campaign = await api.admin("marketer", "GET", f"/admin/v1/campaigns/{campaign_id}")
    assert status == 200, campaign
    return next(r["granted"] for r in campaign["rewards"] if r["id"] == reward_id)


async def at_vendor(pool, vendor_id: str, grant_ids: list[str]) -> dict[str, dict | None]:
    """What the vendor itself holds for each grant, asked with a signed look-up."""
    vendor = await VendorRegistry(pool).get(vendor_id)
    async with aiohttp.ClientSession() as session:
        adapter = HttpAdapter(vendor, session, system_clock)
        found = await asyncio.gather(*(adapter.lookup(g) for g in grant_ids))
    return dict(zip(grant_ids, found, strict=True))


async def ledger_rows(pool, grant_ids: list[str]) -> dict[str, Any]:
    rows = await pool.fetch(
        "SELECT grant_id, status, code, vendor_id, expires_at FROM grants"
        " WHERE grant_id = ANY($1::text[])",
        grant_ids,
    )
    return {r["grant_id"]: r for r in rows}


async def ledger_events(pool, grant_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT event FROM grant_events WHERE grant_id = $1"
        " ORDER BY split_part(outbox_id, '-', 1)::bigint, split_part(outbox_id, '-', 2)::bigint",
        grant_id,
    )
    return [r["event"] for r in rows]


def circuit_state(vendor_id: str) -> float | None:
    return REGISTRY.get_sample_value("quanyi_vendor_circuit_state", {"vendor": vendor_id})


# 1. retries


async def test_retries_against_a_flaky_vendor_issue_each_grant_exactly_once(
    api, pool, redis, keys, start_sim, key_pairs, our_key_file, worker_factory
):
    sim = await start_sim(error_rate=0.5)
    await setup_vendor(
        api, key_pairs, our_key_file, sim, vendor_id="flaky", right_id="lounge", retry=FAST_RETRY
    )
    grant_ids = await grant_many(api, "c1", 30)

    async with running(worker_factory(breaker_reset_s=0.2)):
        await until(all_in(api, grant_ids, "fulfilled"), timeout=45, what="every grant fulfilled")

    stats = await sim_stats(sim)
    # Each grant issued once at the vendor, however often it was asked.
    assert stats["effects"] == {g: 1 for g in grant_ids}
    assert set(stats["calls"]) == set(grant_ids)
    # Half the calls failed: with 30 grants, retries certainly happened.
    assert sum(stats["calls"].values()) > len(grant_ids)

    await sim_config(sim, error_rate=0)  # so that the look-ups below are answered
    issued = await at_vendor(pool, "flaky", grant_ids)
    seen = await statuses(api, grant_ids)
    await LedgerWorker(redis, pool, keys).drain()
    rows = await ledger_rows(pool, grant_ids)
    assert len(rows) == len(grant_ids)
    for grant_id in grant_ids:
        code = issued[grant_id]["code"]
        assert seen[grant_id]["code"] == code
        assert (rows[grant_id]["status"], rows[grant_id]["code"]) == ("fulfilled", code)
        assert rows[grant_id]["vendor_id"] == "flaky"
    assert len({r["code"] for r in rows.values()}) == len(grant_ids)
    fulfilments = await pool.fetch(
        "SELECT grant_id, count(*) AS n FROM grant_events WHERE event = 'fulfilled'"
        " GROUP BY grant_id"
    )
    assert {r["grant_id"]: r["n"] for r in fulfilments} == {g: 1 for g in grant_ids}
    # Nothing left parked or counted against a retry budget.
    assert await redis.hlen(keys.fulfil_parked) == 0
    assert await redis.zcard(keys.fulfil_retry) == 0
    assert await redis.hlen(keys.fulfil_attempts) == 0


# 2. kill -9


def start_fulfil_worker(consumer: str, log_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "QUANYI_DATABASE_URL": TEST_DATABASE_URL,
        "QUANYI_REDIS_URL": TEST_REDIS_URL,
        "QUANYI_KEY_PREFIX": TEST_PREFIX,
        # The fulfilment worker re-claims a dead consumer's entries after this idle time.
        "QUANYI_LEDGER_RECLAIM_IDLE_MS": "300",
        "QUANYI_WORKER_METRICS_PORT": "0",
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "quanyi.cli", "worker", "fulfil", "--consumer", consumer],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def test_kill_9_mid_flight_neither_loses_nor_doubles_a_fulfilment(
    api, pool, redis, keys, start_sim, key_pairs, our_key_file, tmp_path
):
    sim = await start_sim(latency_ms=400)
    await setup_vendor(
        api, key_pairs, our_key_file, sim, vendor_id="slowsim", right_id="lounge", retry=FAST_RETRY
    )
    grant_ids = await grant_many(api, "c1", 40)
    log_path = tmp_path / "workers.log"

    first = start_fulfil_worker("fulfil-a", log_path)
    try:

        async def calls_in_flight() -> bool:
            if first.poll() is not None:
                raise AssertionError(f"worker exited: {log_path.read_text()[-2000:]}")
            return (await sim_stats(sim))["in_flight"] > 0

        try:
            await until(calls_in_flight, timeout=20, what="vendor calls in flight")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; worker log:\n{log_path.read_text()[-2000:]}") from None
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(5)

    # The dead worker held outbox entries it never acknowledged.
    held = await redis.xpending_range(keys.outbox, FULFIL_GROUP, "-", "+", 100, "fulfil-a")
    assert held, "the worker was not killed mid-flight"

    second = start_fulfil_worker("fulfil-b", log_path)
    try:
        try:
            await until(all_in(api, grant_ids, "fulfilled"), timeout=40, what="restart")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; worker log:\n{log_path.read_text()[-2000:]}") from None
    finally:
        stop_process(second)

    stats = await sim_stats(sim)
    assert stats["effects"] == {g: 1 for g in grant_ids}
    assert (await redis.xpending(keys.outbox, FULFIL_GROUP))["pending"] == 0

    issued = await at_vendor(pool, "slowsim", grant_ids)
    await LedgerWorker(redis, pool, keys).drain()
    rows = await ledger_rows(pool, grant_ids)
    for grant_id in grant_ids:
        assert rows[grant_id]["status"] == "fulfilled"
        assert rows[grant_id]["code"] == issued[grant_id]["code"]


# 3. circuit breaker


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
        assert await redis.hlen(keys.fulfil_parked) == len(grant_ids)

        await sim_config(sim, outage=False)
        await until(all_in(api, grant_ids, "fulfilled"), timeout=30, what="recovery")

    assert circuit_state("down") == 0
    stats = await sim_stats(sim)
    assert stats["effects"] == {g: 1 for g in grant_ids}
    assert all(g["status"] == "fulfilled" for g in (await statuses(api, grant_ids)).values())


# 4. isolation


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


# 5. code pool


async def test_a_code_pool_hands_each_code_to_one_grant_only(
    api, pool, redis, keys, key_pairs, our_key_file, worker_factory, tmp_path
):
    await setup_vendor(
        api,
        key_pairs,
        our_key_file,
        None,
        vendor_id="codes",
        right_id="movie",
        stock=150,
        adapter="codepool",
        retry={"max_attempts": 100, "backoff_base_ms": 50, "backoff_max_ms": 200},
    )
    imported = [f"MOVIE-{i:04d}" for i in range(100)]
    csv_file = tmp_path / "codes.csv"
    csv_file.write_text("code\n" + "\n".join(imported) + "\n")
    report = await import_codes(pool, redis, keys, "codes", "movie", csv_file)
    assert (report["added"], report["pool"]) == (100, 100)

    grant_ids = await grant_many(api, "c1", 150)
    assert len(set(grant_ids)) == 150

    async with running(worker_factory()):

        async def all_codes_out() -> bool:
            return await redis.hlen(keys.codes_assigned("codes")) >= 100

        await until(all_codes_out, timeout=20, what="every code handed out")

        async def hundred_fulfilled() -> bool:
            seen = await statuses(api, grant_ids)
            return sum(g["status"] == "fulfilled" for g in seen.values()) >= 100

        await until(hundred_fulfilled, timeout=20, what="100 grants fulfilled")

        # The same file again: every code is a duplicate, none reaches the pool.
        again = await import_codes(pool, redis, keys, "codes", "movie", csv_file)
        assert (again["added"], again["duplicates"], again["pool"]) == (0, 100, 0)

        await asyncio.sleep(1.0)  # the rest keep retrying, and keep finding the pool empty
        seen = await statuses(api, grant_ids)
        fulfilled = {g: s for g, s in seen.items() if s["status"] == "fulfilled"}
        waiting = {g: s for g, s in seen.items() if s["status"] != "fulfilled"}
        assert len(fulfilled) == 100
        assert {s["status"] for s in waiting.values()} == {"granted"}
        codes = [s["code"] for s in fulfilled.values()]
        assert sorted(codes) == sorted(imported)
        assert set(await redis.hkeys(keys.fulfil_parked)) == set(waiting)
        assert set(await redis.zrange(keys.fulfil_retry, 0, -1)) == set(waiting)
        assert await dead_letters(redis, keys, 10) == []

    assigned = await redis.hgetall(keys.codes_assigned("codes"))
    assert set(assigned) == set(fulfilled)
    assert sorted(assigned.values()) == sorted(imported)
    await LedgerWorker(redis, pool, keys).drain()
    rows = await ledger_rows(pool, grant_ids)
    in_ledger = [r["code"] for r in rows.values() if r["status"] == "fulfilled"]
    assert sorted(in_ledger) == sorted(imported)


# 6. failure, dead letter, redrive


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
        assert await redrive(pool, redis, keys, settings, None) == [(grant_id, "redriven")]
        assert await dead_letters(redis, keys, 10) == []
        await until(all_in(api, [grant_id], "fulfilled"), timeout=15, what="the redriven grant")

    assert await stock_granted(api) == 1
    seen = await status_of(api, grant_id)
    assert [e["event"] for e in seen["timeline"]] == ["granted", "failed", "redriven", "fulfilled"]
    assert (await sim_stats(sim))["effects"] == {grant_id: 1}
    await LedgerWorker(redis, pool, keys).drain()
    assert await ledger_events(pool, grant_id) == ["failed", "redriven", "fulfilled"]
    assert (await ledger_rows(pool, [grant_id]))[grant_id]["status"] == "fulfilled"


# 7. revocation


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
        assert (await status_of(api, grant_id))["status"] == "fulfilled"

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
            return (await redis.xpending(keys.outbox, FULFIL_GROUP))["pending"] == 0

        await until(nothing_pending, timeout=10, what="the revocation acknowledged")

        # The customer's limit came back with the stock: they may claim again.
        status, again = await api.claim(request_id="q2", campaign_id="c1", customer_id="cust-1")
        assert status == 201, again
        assert await stock_granted(api) == 1

    await LedgerWorker(redis, pool, keys).drain()
    assert await ledger_events(pool, grant_id) == ["fulfilled", "revoked"]
    assert (await ledger_rows(pool, [grant_id]))[grant_id]["status"] == "revoked"
    assert (await sim_stats(sim))["effects"][grant_id] == 1


# 8. waiting for fulfilment


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
        seen = await status_of(api, body["grant_id"])
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


# 9. expiry


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
    assert (await status_of(api, grant_id))["status"] == "expired"

    status, body = await api.channel("POST", f"/v1/grants/{grant_id}/revoke")
    assert status == 409, body
    assert body["error"]["code"] == "grant_not_live"
    assert await stock_granted(api) == 1  # an expired grant keeps its stock spent

    await LedgerWorker(redis, pool, keys).drain()
    assert await ledger_events(pool, grant_id) == ["fulfilled", "expired"]
    assert (await ledger_rows(pool, [grant_id]))[grant_id]["status"] == "expired"


# 10. a fulfilment repeated after a crash


async def test_a_fulfilment_repeated_after_a_crash_is_recorded_once(
    api, pool, redis, keys, start_sim, key_pairs, our_key_file, worker_factory
):
    """A worker that recorded a fulfilment and died before acknowledging its outbox entry:
    the next worker re-claims the entry and asks the vendor again (the same code comes back);
    the grant must still have one fulfilment, not two."""
    sim = await start_sim()
    await setup_vendor(api, key_pairs, our_key_file, sim, vendor_id="once", right_id="lounge")
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    grant_id = grant["grant_id"]

    # What the dead worker did: took the entry, had the vendor issue, recorded the outcome.
    reply = await redis.xreadgroup(FULFIL_GROUP, "dead", {keys.outbox: ">"}, count=10)
    (_stream, [(_outbox_id, fields)]) = reply[0]
    event = orjson.loads(fields["g"])
    assert event["grant_id"] == grant_id
    crashed = worker_factory()
    vendor = await VendorRegistry(pool).get("once")
    async with aiohttp.ClientSession() as session:
        issued = await HttpAdapter(vendor, session, system_clock).issue(
            Order(
                grant_id=grant_id,
                campaign_id="c1",
                reward_id="r1",
                right_id="lounge",
                customer_id="cust-1",
                face_value=200,
            )
        )
    moved = await crashed.lifecycle.move(
        grant_id,
        "fulfilled",
        "vendor:once",
        {"vendor_id": "once", "code": issued.code, "reference": issued.reference},
        grant=grant_from_event(event),
    )
    assert moved.applied

    async with running(worker_factory(reclaim_idle_ms=300)):

        async def entry_done() -> bool:
            return (await redis.xpending(keys.outbox, FULFIL_GROUP))["pending"] == 0

        await until(entry_done, timeout=15, what="the dead worker's entry re-claimed")

    assert (await sim_stats(sim))["effects"] == {grant_id: 1}
    await LedgerWorker(redis, pool, keys).drain()
    assert await ledger_events(pool, grant_id) == ["fulfilled"]
    seen = await status_of(api, grant_id)
    assert (seen["status"], seen["code"]) == ("fulfilled", issued.code)
    assert [e["event"] for e in seen["timeline"]] == ["granted", "fulfilled"]
