"""Workers that never die: the ledger and fulfilment workers of `quanyi run` ride through a
PostgreSQL restart and a Redis flush under a stream of claims, a worker that crashes anyway is
restarted by its supervisor, and /readyz and quanyi_worker_up{worker} say so meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from quanyi.core.clock import system_clock
from quanyi.core.http import SETTINGS
from quanyi.issuance.api import CLAIMS
from quanyi.issuance.claims import Claim
from quanyi.ledger.rebuild import Rebuild
from quanyi.stores.appkeys import KEYS, POOL
from quanyi.web.app import WORKERS, create_app
from tests.support.scratch import ScratchPostgres, ScratchRedis, postgres_available, redis_available
from tests.support.scratch_api import metric, scratch_api
from tests.support.settings import CHANNEL, settings_for_tests
from tests.support.waiting import until

needs_scratch_stores = pytest.mark.skipif(
    not (postgres_available() and redis_available()), reason="needs initdb/pg_ctl and redis-server"
)
STORE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class ClaimStream:
    """Claims for fresh customers, about 100 a second, until stopped; remembers each grant with
    the sequence number of the claim that got it."""

    def __init__(self, app: Any, campaign_id: str) -> None:
        self._claims = app[CLAIMS]
        self._campaign_id = campaign_id
        self.sent = 0
        self.grants: list[tuple[int, str]] = []
        self._task: asyncio.Task | None = None
        # Stopped between rounds, never cancelled mid-claim: a claim decided in Redis whose
        # answer was cancelled would be a grant the stream does not know of.
        self.stopping = asyncio.Event()

    async def _one(self, seq: int) -> None:
        customer = f"{self._campaign_id}-cust-{seq}"
        claim = Claim(CHANNEL, f"{self._campaign_id}-q{seq}", self._campaign_id, customer, None)
        with contextlib.suppress(Exception):  # refused (the campaign gone with a flush)
            self.grants.append((seq, (await self._claims.claim(claim)).grant_id))

    async def _run(self) -> None:
        while not self.stopping.is_set():
            first, self.sent = self.sent, self.sent + 5
            await asyncio.gather(*(self._one(seq) for seq in range(first, self.sent)))
            await asyncio.sleep(0.05)

    def granted_since(self, seq: int = 0) -> list[str]:
        return [grant_id for s, grant_id in self.grants if s >= seq]

    async def until_granted(self, count: int) -> None:
        async def enough() -> bool:
            return len(self.grants) >= count

        await until(enough, what=f"{count} grants", timeout=30.0)


@contextlib.asynccontextmanager
async def claims_of(app: Any, campaign_id: str) -> AsyncIterator[ClaimStream]:
    stream = ClaimStream(app, campaign_id)
    task = asyncio.create_task(stream._run())
    try:
        yield stream
    finally:
        stream.stopping.set()
        await task


async def all_fulfilled_in_ledger(database_url: str, grant_ids: list[str]) -> bool:
    """Every grant is in the ledger, and so is its fulfilment (by the fulfilment worker)."""
    try:
        conn = await asyncpg.connect(database_url, timeout=2)
        try:
            rows = await conn.fetch("SELECT status FROM grants WHERE grant_id = ANY($1)", grant_ids)
        finally:
            await conn.close()
    except STORE_ERRORS:
        return False
    return len(rows) == len(grant_ids) and {r["status"] for r in rows} == {"fulfilled"}


async def coffee_campaign(api: Any, campaign_id: str = "c1") -> None:
    """Fulfilled internally (no vendor): the fulfilment worker still handles every grant."""
    await api.create_campaign(
        campaign_id,
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 1_000_000, "per_customer_limit": 1}],
    )


async def readyz(client: Any) -> tuple[int, dict[str, str]]:
    resp = await client.get("/readyz")
    return resp.status, (await resp.json())["checks"]


async def assert_never_died(client: Any) -> None:
    for name in ("ledger", "fulfil"):
        supervisor = client.server.app[WORKERS][name]
        assert supervisor.up and supervisor.restarts == 0, (name, supervisor.health())
        assert await metric(client, "quanyi_worker_up", {"worker": name}) == 1.0
    status, checks = await readyz(client)
    assert status == 200, checks


@needs_scratch_stores
async def test_both_workers_ride_through_a_postgresql_restart_under_claims(
    aiohttp_client, tmp_path
):
    with ScratchPostgres(tmp_path) as pg:
        database_url = pg.url("quanyi")
        # Real time: parked fulfilments come due only as time passes.
        async with scratch_api(
            aiohttp_client, system_clock, database_url=database_url, workers=True
        ) as (
            api,
            app,
        ):
            await api.create_right()
            await coffee_campaign(api, "c1")
            # Its grants reach the fulfilment worker only while PostgreSQL is down.
            await coffee_campaign(api, "c2")
            async with claims_of(app, "c1") as steady:
                await steady.until_granted(100)
                await until(
                    lambda: all_fulfilled_in_ledger(database_url, steady.granted_since()[:50]),
                    what="both workers at work before the outage",
                    timeout=30.0,
                )
                await asyncio.to_thread(pg.stop)
                try:
                    async with claims_of(app, "c2") as during:
                        # Long enough for each worker's periodic PostgreSQL work to meet the
                        # outage, while claims go on being granted from Redis.
                        await asyncio.sleep(app[SETTINGS].fulfil_vendors_every_s + 1)
                        assert len(during.grants) > 100
                finally:
                    await asyncio.to_thread(pg.start)
                await steady.until_granted(len(steady.grants) + 50)  # and after it

            everything = steady.granted_since() + during.granted_since()
            await until(
                lambda: all_fulfilled_in_ledger(database_url, everything),
                what="the ledger caught up with every grant, each one fulfilled",
                timeout=30.0,
            )
            await assert_never_died(api.client)
            conn = await asyncpg.connect(database_url)
            try:
                assert await conn.fetchval("SELECT count(*) FROM grants") == len(everything)
            finally:
                await conn.close()


@needs_scratch_stores
async def test_both_workers_ride_through_a_redis_flush_under_claims(aiohttp_client, tmp_path):
    with ScratchPostgres(tmp_path) as pg, ScratchRedis(tmp_path) as scratch_redis:
        database_url = pg.url("quanyi")
        async with scratch_api(
            aiohttp_client,
            system_clock,
            database_url=database_url,
            redis_url=scratch_redis.url(0),
            workers=True,
        ) as (api, app):
            await api.create_right()
            await coffee_campaign(api)
            outbox = app[KEYS].outbox
            raw = Redis.from_url(scratch_redis.url(0), decode_responses=True)

            async def groups() -> set[str]:
                try:
                    return {g["name"] for g in await raw.xinfo_groups(outbox)}
                except ResponseError:  # no outbox at all
                    return set()

            async def groups_back() -> bool:
                return await groups() == {"ledger", "fulfil"}

            try:
                async with claims_of(app, "c1") as stream:
                    await stream.until_granted(100)
                    await raw.flushdb()  # the outbox, its groups, the definitions, the marker
                    at_flush = stream.sent
                    # The API creates groups only at start: the workers must re-create them.
                    await until(groups_back, timeout=10, what="the consumer groups re-created")

                    async def sent_more() -> bool:
                        return stream.sent >= at_flush + 25

                    await until(sent_more, what="claims sent after the flush", timeout=30.0)
                    # An emptied store decides nothing until it is rebuilt from the ledger.
                    assert stream.granted_since(at_flush) == []
                    await Rebuild(app[POOL], raw, app[KEYS], app[SETTINGS], system_clock).run()
                    after_flush = stream.sent
                    await stream.until_granted(len(stream.grants) + 200)
                new_grants = stream.granted_since(after_flush)
                assert len(new_grants) >= 150

                await until(
                    lambda: all_fulfilled_in_ledger(database_url, new_grants),
                    what="every grant made after the flush persisted and fulfilled",
                    timeout=30.0,
                )

                async def trimmed() -> bool:
                    return await raw.xlen(outbox) <= 1

                await until(
                    trimmed, what="the outbox trimmed again below both groups", timeout=30.0
                )
            finally:
                await raw.aclose()
            await assert_never_died(api.client)


@pytest.fixture
async def with_workers(aiohttp_client, pool, redis):
    """Another process of the service on the test stores, this one running both workers."""

    async def start(**settings: Any) -> Any:
        app = create_app(settings_for_tests(**settings), system_clock, workers=True)
        return await aiohttp_client(app)

    return start


async def test_a_crashed_worker_is_restarted_and_reported_meanwhile(
    api, with_workers, redis, keys, pool, caplog
):
    await api.create_right()
    await coffee_campaign(api)
    client = await with_workers()
    supervisor = client.server.app[WORKERS]["ledger"]

    async def ready() -> bool:
        return (await readyz(client))[0] == 200

    await until(ready, what="ready with both workers", timeout=30.0)
    assert await metric(client, "quanyi_worker_up", {"worker": "ledger"}) == 1.0

    # A fault no worker retries: the outbox is not a stream any more.
    await redis.delete(keys.outbox)
    await redis.set(keys.outbox, "not a stream")

    async def reported_down() -> bool:
        status, checks = await readyz(client)
        return status == 503 and checks["ledger_worker"].startswith("down")

    await until(reported_down, timeout=10, what="/readyz to report the dead ledger worker")
    assert await metric(client, "quanyi_worker_up", {"worker": "ledger"}) == 0.0
    assert any("worker ledger died" in r.getMessage() for r in caplog.records)

    await redis.delete(keys.outbox)  # repaired: the next start re-creates the stream and groups
    await until(ready, timeout=10, what="ready again after the restart")
    _status, checks = await readyz(client)
    assert checks["ledger_worker"] == "ok" and checks["fulfil_worker"] == "ok", checks
    assert supervisor.up and supervisor.restarts >= 1
    assert await metric(client, "quanyi_worker_up", {"worker": "ledger"}) == 1.0

    # The restarted worker does its job.
    status, grant = await api.claim(request_id="after", campaign_id="c1", customer_id="cust-9")
    assert status == 201, grant

    async def persisted() -> bool:
        query = "SELECT count(*) FROM grants WHERE grant_id = $1"
        return await pool.fetchval(query, grant["grant_id"]) == 1

    await until(persisted, timeout=10, what="the restarted ledger worker to persist a grant")


async def test_readyz_answers_503_while_the_ledger_is_too_far_behind(api, with_workers, pool):
    await api.create_right()
    await coffee_campaign(api)
    client = await with_workers(ready_max_lag_s=1.0)

    async def ready() -> bool:
        return (await readyz(client))[0] == 200

    await until(ready, what="ready", timeout=30.0)
    # Hold the ledger table: the worker's next insert waits, its batch stays unacknowledged.
    blocker = await pool.acquire()
    tx = blocker.transaction()
    await tx.start()
    try:
        await blocker.execute("LOCK TABLE grants IN EXCLUSIVE MODE")
        status, _grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
        assert status == 201

        async def behind() -> bool:
            status, checks = await readyz(client)
            return status == 503 and checks["ledger_lag"] != "ok"

        await until(behind, timeout=10, what="/readyz to report the ledger lag")
        _status, checks = await readyz(client)
        assert checks["ledger_worker"] == "ok", checks  # alive, only behind
        assert "behind" in checks["ledger_lag"], checks
    finally:
        await tx.rollback()
        await pool.release(blocker)
    await until(ready, timeout=10, what="ready again once the ledger caught up")
    assert await pool.fetchval("SELECT count(*) FROM grants") == 1
