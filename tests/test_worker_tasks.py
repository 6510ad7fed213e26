"""Workers' side tasks: housekeeping runs as named tasks beside the read loop, lives as long as
the worker, and rides out its store going away while the read loop goes on; the fulfilment
worker's tunables are settings."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from quanyi.core.settings import Settings
from quanyi.core.side_tasks import SideTask, SideTasks
from quanyi.fulfilment.tunables import FulfilmentTunables
from quanyi.fulfilment.worker import FulfilmentWorker
from quanyi.ledger.worker import LedgerWorker
from quanyi.runtime import Stores
from quanyi.stores.outbox import LEDGER_GROUP
from quanyi.stores.scripts import Scripts
from tests.support.scratch import ScratchRedis, redis_available
from tests.support.waiting import until

# Side tasks run per shard's streams on a cluster as on one Redis; only those that need a Redis
# of their own to kill, or read settings alone, stay on the single Redis.
pytestmark = pytest.mark.cluster_too

FULFIL_SIDE_TASKS = {
    "fulfil-retries",
    "fulfil-reclaim",
    "fulfil-vendors",
    "fulfil-code-pools",
    "fulfil-expiry",
}
LEDGER_SIDE_TASKS = {"ledger-reclaim", "ledger-trim"}


def task_names() -> set[str]:
    return {task.get_name() for task in asyncio.all_tasks()}


async def runs_then_stops(worker: FulfilmentWorker | LedgerWorker, names: set[str]) -> None:
    """While the worker runs, each of `names` is a task of its own; once run() returned, none is
    left."""
    run = asyncio.create_task(worker.run())

    async def started() -> bool:
        return names <= task_names()

    await until(started, what="the side tasks started")
    assert set(worker.side_tasks) == names
    await asyncio.sleep(0.3)  # a few rounds of the quick ones
    assert names <= task_names() and not run.done()
    worker.stop()
    await asyncio.wait_for(run, 15)
    assert not names & task_names()
    assert worker.side_tasks == []


async def test_the_fulfilment_worker_runs_its_side_tasks_as_named_tasks_until_it_stops(
    redis, pool, keys, settings, clock
):
    stores = Stores(settings, clock, keys, redis, pool, Scripts(redis))
    await runs_then_stops(stores.fulfilment_worker(), FULFIL_SIDE_TASKS)


async def test_the_ledger_worker_runs_reclaim_and_trim_as_named_tasks_until_it_stops(
    redis, pool, keys, settings, clock
):
    stores = Stores(settings, clock, keys, redis, pool, Scripts(redis))
    await runs_then_stops(stores.ledger_worker(), LEDGER_SIDE_TASKS)


async def test_the_ledger_worker_reclaims_a_dead_consumers_entries_from_its_side_task(
    api, redis, pool, keys
):
    """Entries another consumer read and never acknowledged reach the ledger all the same, by
    the reclaim task, while the read loop has nothing new to read."""
    await api.create_right()
    await api.create_campaign()
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201
    outbox = keys.of("c1").outbox  # the campaign's shard (the only one with one shard)
    await redis.xreadgroup(LEDGER_GROUP, "dead-one", {outbox: ">"})  # and then it died
    worker = LedgerWorker(redis, pool, keys, block_ms=20, reclaim_idle_ms=200)
    run = asyncio.create_task(worker.run())
    try:

        async def in_ledger() -> bool:
            found = await pool.fetchval(
                "SELECT count(*) FROM grants WHERE grant_id = $1", grant["grant_id"]
            )
            return found == 1

        await until(in_ledger, what="the dead consumer's grant in the ledger")
    finally:
        worker.stop()
        await asyncio.wait_for(run, 15)


async def status_of(api: Any, grant_id: str) -> str:
    status, grant = await api.channel("GET", f"/v1/grants/{grant_id}")
    assert status == 200, grant
    return grant["status"]


@pytest.mark.skipif(not redis_available(), reason="needs redis-server")
@pytest.mark.single_redis("kills and restarts a Redis server of its own, a single one")
async def test_a_side_task_whose_store_goes_away_keeps_running_and_fulfilment_goes_on(
    api, redis, pool, keys, settings, clock, tmp_path, caplog
):
    """The retries task leases parked grants through scripts on a Redis of its own here; that
    Redis is killed: the task logs, keeps running and works again once it is back, while the
    read loop (on the service's Redis) fulfils every new grant meanwhile."""
    caplog.set_level(logging.WARNING, logger="quanyi.core.side_tasks")
    await api.create_right()
    await api.create_campaign()
    stores = Stores(settings, clock, keys, redis, pool, Scripts(redis))
    with ScratchRedis(tmp_path) as scratch:
        away = Redis.from_url(scratch.url(), decode_responses=True)
        tunables = FulfilmentTunables(block_ms=20, retries_every_s=0.05)
        worker = FulfilmentWorker(
            redis,
            pool,
            keys,
            clock,
            scripts=Scripts(away),
            lifecycle=stores.lifecycle(),
            tunables=tunables,
        )
        run = asyncio.create_task(worker.run(grace_s=2))
        try:
            scratch.kill()

            def failures() -> int:
                return sum(r.message.startswith("fulfil-retries put off (") for r in caplog.records)

            async def failed_twice() -> bool:
                return failures() >= 2

            await until(failed_twice, what="the retries task meeting the dead Redis twice")
            for n in range(3):
                status, grant = await api.claim(
                    request_id=f"q{n}", campaign_id="c1", customer_id=f"cust-{n}"
                )
                assert status == 201, grant

                async def fulfilled(grant_id: str = grant["grant_id"]) -> bool:
                    return await status_of(api, grant_id) == "fulfilled"

                await until(fulfilled, what="a grant fulfilled while the side task fails")
            assert "fulfil-retries" in worker.side_tasks and not run.done()
            assert failures() >= 2

            scratch.start()  # the same port, empty: a due grant of its own to lease

            async def due_one_added() -> bool:
                try:
                    return await away.zadd(keys.fulfil_retry, {"g-due": 0}) == 1
                except RedisConnectionError:  # a connection from before the kill
                    return False

            await until(due_one_added, what="the scratch Redis back")

            async def leased() -> bool:
                return await away.zscore(keys.fulfil_retry, "g-due") == (
                    int(clock() * 1000) + tunables.lease_ms
                )

            await until(leased, what="the retries task at work again", timeout=20)
            assert set(worker.side_tasks) == FULFIL_SIDE_TASKS
        finally:
            worker.stop()
            await asyncio.wait_for(run, 15)
            await away.aclose()
    assert not FULFIL_SIDE_TASKS & task_names()


async def test_a_side_task_that_fails_unexpectedly_is_logged_and_runs_again(caplog):
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError(f"bug {calls}")

    tasks = SideTasks(transient=lambda exc: False)
    tasks.start([SideTask("flaky", 0.01, flaky)])

    async def recovered() -> bool:
        return calls >= 4

    await until(recovered, timeout=10, what="runs after two failures")
    assert tasks.running == ["flaky"]
    await tasks.stop()
    assert tasks.running == [] and "flaky" not in task_names()
    logged = [r for r in caplog.records if r.name == "quanyi.core.side_tasks"]
    assert [(r.levelname, r.message) for r in logged] == [
        ("ERROR", "flaky failed; again in 0.5 s"),
        ("ERROR", "flaky failed; again in 1.0 s"),
    ]
    assert "RuntimeError: bug 1" in caplog.text and "RuntimeError: bug 2" in caplog.text


FULFIL_ENV = {
    "QUANYI_FULFIL_BATCH_SIZE": "50",
    "QUANYI_FULFIL_BLOCK_MS": "25",
    "QUANYI_FULFIL_RECLAIM_IDLE_MS": "4000",
    "QUANYI_FULFIL_BREAKER_THRESHOLD": "3",
    "QUANYI_FULFIL_BREAKER_RESET_S": "2.5",
    "QUANYI_FULFIL_MAX_TASKS": "300",
    "QUANYI_FULFIL_LEASE_MS": "90000",
    "QUANYI_FULFIL_RETRIES_EVERY_S": "0.2",
    "QUANYI_FULFIL_RECLAIM_EVERY_S": "2",
    "QUANYI_FULFIL_VENDORS_EVERY_S": "20",
    "QUANYI_FULFIL_CODE_POOLS_EVERY_S": "15",
    "QUANYI_FULFIL_EXPIRY_EVERY_S": "60",
}


@pytest.mark.single_redis("tunables are read from settings alone: no Redis differs")
async def test_the_fulfilment_workers_tunables_are_read_from_quanyi_fulfil_settings(
    redis, pool, keys, clock
):
    settings = Settings.from_env(FULFIL_ENV)
    worker = Stores(settings, clock, keys, redis, pool, Scripts(redis)).fulfilment_worker()
    assert worker.tunables == FulfilmentTunables(
        batch_size=50,
        block_ms=25,
        reclaim_idle_ms=4000,
        breaker_threshold=3,
        breaker_reset_s=2.5,
        max_tasks=300,
        lease_ms=90_000,
        retries_every_s=0.2,
        reclaim_every_s=2.0,
        vendors_every_s=20.0,
        code_pools_every_s=15.0,
        expiry_every_s=60.0,
    )


@pytest.mark.single_redis("tunables are read from settings alone: no Redis differs")
async def test_the_fulfilment_reclaim_idle_is_the_ledgers_unless_set(redis, pool, keys, clock):
    def reclaim_idle_ms(env: dict[str, str]) -> int:
        stores = Stores(Settings.from_env(env), clock, keys, redis, pool, Scripts(redis))
        return stores.fulfilment_worker().tunables.reclaim_idle_ms

    assert reclaim_idle_ms({}) == Settings().ledger_reclaim_idle_ms == 30_000
    assert reclaim_idle_ms({"QUANYI_LEDGER_RECLAIM_IDLE_MS": "700"}) == 700
    both = {"QUANYI_LEDGER_RECLAIM_IDLE_MS": "700", "QUANYI_FULFIL_RECLAIM_IDLE_MS": "900"}
    assert reclaim_idle_ms(both) == 900
