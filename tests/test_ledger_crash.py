"""The ledger under crashes: kill -9 of the worker mid-batch, PostgreSQL restarting.
Every grant reaches the ledger exactly once and no unpersisted outbox entry is trimmed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from quanyi.issuance.api import CLAIMS
from quanyi.issuance.claims import Claim
from quanyi.stores.outbox import FULFIL_GROUP, LEDGER_GROUP
from tests.support.scratch import ScratchPostgres, free_port, postgres_available
from tests.support.scratch_api import scratch_api
from tests.support.settings import TEST_DATABASE_URL, TEST_PREFIX, TEST_REDIS_URL
from tests.support.waiting import until

ROOT = Path(__file__).resolve().parent.parent


def start_worker(
    consumer: str, database_url: str = TEST_DATABASE_URL, metrics_port: int = 0
) -> subprocess.Popen:
    env = {
        **os.environ,
        "QUANYI_DATABASE_URL": database_url,
        "QUANYI_REDIS_URL": TEST_REDIS_URL,
        "QUANYI_KEY_PREFIX": TEST_PREFIX,
        "QUANYI_LEDGER_BATCH_SIZE": "250",
        "QUANYI_LEDGER_RECLAIM_IDLE_MS": "300",
        "QUANYI_WORKER_METRICS_PORT": str(metrics_port),
        "QUANYI_HTTP_HOST": "127.0.0.1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "quanyi.cli", "worker", "ledger", "--consumer", consumer],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def grant_many(api, first: int, count: int, campaign: str = "c1") -> list[str]:
    claims = api.client.server.app[CLAIMS]
    grants = await asyncio.gather(
        *(
            claims.claim(Claim("app", f"q{i}", campaign, f"cust-{i}", None))
            for i in range(first, first + count)
        )
    )
    return [g.grant_id for g in grants]


async def ledger_count(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM grants")


async def test_kill_9_mid_batch_loses_nothing_and_writes_nothing_twice(api, pool, redis, keys):
    await api.create_right()
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 100_000, "per_customer_limit": 1}]
    )
    first = await grant_many(api, 0, 1500)
    worker = start_worker("ledger-a")
    try:
        await until(
            lambda: _equals(ledger_count(pool), 1500), what="first grants persisted", timeout=30.0
        )

        # Hold the ledger table so the worker blocks inside its next insert with the batch
        # delivered to it but not acknowledged, then kill it there.
        blocker = await asyncpg.connect(TEST_DATABASE_URL)
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE grants IN EXCLUSIVE MODE")
        second = await grant_many(api, 1500, 1500)

        async def worker_holds_entries() -> bool:
            info = await redis.xpending(keys.outbox, LEDGER_GROUP)
            return info["pending"] > 0

        await until(worker_holds_entries, what="a batch in flight", timeout=30.0)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        await tx.rollback()
        await blocker.close()
    finally:
        if worker.poll() is None:
            worker.kill()

    # The dead worker's entries are still pending, and the outbox still holds every grant the
    # ledger does not: nothing unpersisted was trimmed.
    assert (await redis.xpending(keys.outbox, LEDGER_GROUP))["pending"] > 0
    persisted = {r["grant_id"] for r in await pool.fetch("SELECT grant_id FROM grants")}
    assert persisted == set(first)
    in_outbox = {_grant_id(fields) for _id, fields in await redis.xrange(keys.outbox, "-", "+")}
    assert set(second) <= in_outbox

    await grant_many(api, 3000, 500)  # more arrive while no worker runs
    worker = start_worker("ledger-b")
    try:
        await until(
            lambda: _equals(ledger_count(pool), 3500), what="ledger caught up", timeout=30.0
        )
        await asyncio.sleep(1.5)  # a late duplicate insert, or a trim, would happen now
        # The fulfilment group has not read anything: the outbox keeps every entry for it.
        assert await redis.xlen(keys.outbox) == 3500
        await acknowledge_all(redis, keys, FULFIL_GROUP)

        async def trimmed() -> bool:
            return await redis.xlen(keys.outbox) <= 1

        await until(trimmed, timeout=5, what="the outbox trimmed once every group is done")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0, worker.stderr.read().decode()[-2000:]

    assert await ledger_count(pool) == 3500
    assert await pool.fetchval("SELECT count(DISTINCT grant_id) FROM grants") == 3500
    granted = int(await redis.hget(keys.campaign("c1"), "r:r1:granted"))
    assert granted == 3500
    assert (await redis.xpending(keys.outbox, LEDGER_GROUP))["pending"] == 0
    assert await redis.hlen(keys.pending) == 0


async def acknowledge_all(redis, keys, group: str) -> None:
    """Stand in for another consumer group that has done its part."""
    while True:
        reply = await redis.xreadgroup(group, "stand-in", {keys.outbox: ">"}, count=1000)
        ids = [outbox_id for _s, messages in reply or [] for outbox_id, _f in messages]
        if not ids:
            return
        await redis.xack(keys.outbox, group, *ids)


def _grant_id(fields: dict) -> str:
    import orjson

    return orjson.loads(fields["g"])["grant_id"]


async def _equals(value, expected) -> bool:
    return await value == expected


async def worker_up(metrics_port: int) -> float | None:
    """quanyi_worker_up{worker="ledger"} as a standalone worker serves it."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp,
        ):
            text = await resp.text()
    except aiohttp.ClientError:
        return None
    for line in text.splitlines():
        if line.startswith('quanyi_worker_up{worker="ledger"} '):
            return float(line.split()[-1])
    return None


@pytest.mark.skipif(not postgres_available(), reason="needs initdb and pg_ctl")
async def test_postgres_restart_while_claims_continue(aiohttp_client, clock, redis, keys, tmp_path):
    """Claims never touch PostgreSQL; the ledger retries until it is back, then catches up.
    The cluster restarted is the test's own, never the machine's."""
    with ScratchPostgres(tmp_path) as pg:
        database_url = pg.url("quanyi")
        async with scratch_api(aiohttp_client, clock, database_url=database_url) as (api, _app):
            await api.create_right()
            await api.create_campaign(
                rewards=[
                    {"id": "r1", "right_id": "coffee", "stock": 100_000, "per_customer_limit": 1}
                ]
            )
            pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
            metrics_port = free_port()
            await grant_many(api, 0, 500)
            worker = start_worker("ledger-pg", database_url, metrics_port)
            try:
                await until(
                    lambda: _equals(ledger_count(pool), 500),
                    what="first grants persisted",
                    timeout=30.0,
                )
                assert await worker_up(metrics_port) == 1.0
                await asyncio.to_thread(pg.stop)
                try:
                    # The hot path keeps granting while the database is down.
                    await grant_many(api, 500, 1000)
                    await asyncio.sleep(1.0)
                    assert await redis.hlen(keys.pending) == 1000
                    assert await worker_up(metrics_port) == 1.0  # retrying, not dead
                finally:
                    await asyncio.to_thread(pg.start)

                async def caught_up() -> bool:
                    try:
                        return await ledger_count(pool) == 1500
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                        return False

                await until(caught_up, timeout=60, what="ledger caught up after the restart")
                assert await worker_up(metrics_port) == 1.0
                assert await pool.fetchval("SELECT count(DISTINCT grant_id) FROM grants") == 1500
            finally:
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(15) == 0, worker.stderr.read().decode()[-2000:]
                await pool.close()
            assert int(await redis.hget(keys.campaign("c1"), "r:r1:granted")) == 1500
