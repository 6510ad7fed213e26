"""Exactly once at the vendor: under retries against a flaky vendor, a worker killed mid-flight,
a fulfilment repeated after a crash; a code pool hands each code to one grant only.

Against real simulated vendors (HTTP servers), real Redis and real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from quanyi.core.settings import Settings
from quanyi.issuance.lifecycle import grant_from_event
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.outbox import FULFIL_GROUP
from quanyi.vendors.operations import dead_letters, import_codes
from tests.support.cli import store_env
from tests.support.clients import grant_view, statuses
from tests.support.factories import grant_many, setup_vendor
from tests.support.settings import TEST_DATABASE_URL, TEST_PREFIX
from tests.support.stores import ledger_events, ledger_rows
from tests.support.vendors import at_vendor, issue_at_vendor, sim_config, sim_stats
from tests.support.waiting import all_in, running, until

pytestmark = pytest.mark.cluster_too

ROOT = Path(__file__).resolve().parent.parent
FAST_RETRY = {"max_attempts": 50, "backoff_base_ms": 10, "backoff_max_ms": 50}


# retries


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
    assert await redis.hlen(keys.of("c1").fulfil_parked) == 0
    assert await redis.zcard(keys.of("c1").fulfil_retry) == 0
    assert await redis.hlen(keys.of("c1").fulfil_attempts) == 0


# kill -9


def start_fulfil_worker(consumer: str, log_path: Path, settings: Settings) -> subprocess.Popen:
    env = {
        **os.environ,
        "QUANYI_DATABASE_URL": TEST_DATABASE_URL,
        **store_env(settings),
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
    api, pool, redis, keys, settings, start_sim, key_pairs, our_key_file, tmp_path
):
    sim = await start_sim(latency_ms=400)
    await setup_vendor(
        api, key_pairs, our_key_file, sim, vendor_id="slowsim", right_id="lounge", retry=FAST_RETRY
    )
    grant_ids = await grant_many(api, "c1", 40)
    log_path = tmp_path / "workers.log"

    first = start_fulfil_worker("fulfil-a", log_path, settings)
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
    held = await redis.xpending_range(keys.of("c1").outbox, FULFIL_GROUP, "-", "+", 100, "fulfil-a")
    assert held, "the worker was not killed mid-flight"

    second = start_fulfil_worker("fulfil-b", log_path, settings)
    try:
        try:
            await until(all_in(api, grant_ids, "fulfilled"), timeout=40, what="restart")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; worker log:\n{log_path.read_text()[-2000:]}") from None
    finally:
        stop_process(second)

    stats = await sim_stats(sim)
    assert stats["effects"] == {g: 1 for g in grant_ids}
    assert (await redis.xpending(keys.of("c1").outbox, FULFIL_GROUP))["pending"] == 0

    issued = await at_vendor(pool, "slowsim", grant_ids)
    await LedgerWorker(redis, pool, keys).drain()
    rows = await ledger_rows(pool, grant_ids)
    for grant_id in grant_ids:
        assert rows[grant_id]["status"] == "fulfilled"
        assert rows[grant_id]["code"] == issued[grant_id]["code"]


# code pool


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
        assert set(await redis.hkeys(keys.of("c1").fulfil_parked)) == set(waiting)
        assert set(await redis.zrange(keys.of("c1").fulfil_retry, 0, -1)) == set(waiting)
        assert await dead_letters(redis, keys, 10) == []

    assigned = await redis.hgetall(keys.codes_assigned("codes"))
    assert set(assigned) == set(fulfilled)
    assert sorted(assigned.values()) == sorted(imported)
    await LedgerWorker(redis, pool, keys).drain()
    rows = await ledger_rows(pool, grant_ids)
    in_ledger = [r["code"] for r in rows.values() if r["status"] == "fulfilled"]
    assert sorted(in_ledger) == sorted(imported)


# a fulfilment repeated after a crash


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
    reply = await redis.xreadgroup(FULFIL_GROUP, "dead", {keys.of("c1").outbox: ">"}, count=10)
    (_stream, [(_outbox_id, fields)]) = reply[0]
    event = orjson.loads(fields["g"])
    assert event["grant_id"] == grant_id
    crashed = worker_factory()
    issued = await issue_at_vendor(pool, "once", event, face_value=200)
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
            return (await redis.xpending(keys.of("c1").outbox, FULFIL_GROUP))["pending"] == 0

        await until(entry_done, timeout=15, what="the dead worker's entry re-claimed")

    assert (await sim_stats(sim))["effects"] == {grant_id: 1}
    await LedgerWorker(redis, pool, keys).drain()
    assert await ledger_events(pool, grant_id) == ["fulfilled"]
    seen = await grant_view(api, grant_id)
    assert (seen["status"], seen["code"]) == ("fulfilled", issued.code)
    assert [e["event"] for e in seen["timeline"]] == ["granted", "fulfilled"]
