"""The store-ready marker: an emptied Redis decides no claim and no transition until
`quanyi rebuild-redis` restored it, whoever notices first (a claim, a start-up, a worker).

Losing Redis's data is played by deleting every key of the test prefix (the conftest fixture
does the same between tests); the shared Redis itself is never flushed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from quanyi.campaigns.service import CampaignService
from quanyi.core.errors import StoreNotReady, Unavailable
from quanyi.inventory.readiness import mark_store_ready, unmark_store_ready
from quanyi.issuance.claims import Claim, ClaimService
from quanyi.ledger.rebuild import Rebuild
from quanyi.ledger.worker import LedgerWorker
from quanyi.web.app import create_app
from tests.support.clients import Api
from tests.support.settings import CHANNEL
from tests.support.stores import delete_test_keys
from tests.support.waiting import until
from tests.support.workers import fulfilment_worker


async def readyz(api: Api) -> tuple[int, dict[str, str]]:
    resp = await api.client.get("/readyz")
    return resp.status, (await resp.json())["checks"]


async def test_a_fresh_install_marks_its_store_ready_at_start(api, redis, keys):
    marker = orjson.loads(await redis.get(keys.store_ready))
    assert marker["reason"].startswith("fresh") and marker["at"].endswith("Z")
    assert await readyz(api) == (200, {"redis": "ok", "postgresql": "ok", "redis_data": "ok"})


async def test_an_api_restarted_on_an_emptied_redis_serves_no_claim_and_says_why(
    api, aiohttp_client, pool, redis, keys, settings, clock, caplog
):
    await api.create_right()
    await api.create_campaign()
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201
    await LedgerWorker(redis, pool, keys).drain()

    await delete_test_keys(redis)  # Redis lost its data; the ledger holds a grant
    with caplog.at_level(logging.ERROR, logger="quanyi.app"):
        restarted = Api(await aiohttp_client(create_app(settings, clock)), clock)
    assert any(
        r.levelno == logging.ERROR and "quanyi rebuild-redis" in r.getMessage()
        for r in caplog.records
    ), caplog.text
    # A retry of the granted request and a new one of the same customer (limit 1): neither is
    # decided, and start-up published nothing into the emptied store.
    for request_id in ("q1", "q2"):
        status, body = await restarted.claim(
            request_id=request_id, campaign_id="c1", customer_id="cust-1"
        )
        assert (status, body["error"]["code"], body["error"]["reason"]) == (
            503,
            "unavailable",
            "store_not_ready",
        ), body
    assert not await redis.exists(keys.campaign_definition("c1"), keys.campaign("c1"))
    status, checks = await readyz(restarted)
    assert (status, checks["redis_data"]) == (503, "lost: run quanyi rebuild-redis")

    # rebuild-redis, with the API still running: no restart needed.
    await Rebuild(pool, redis, keys, settings, clock).run()
    assert (await readyz(restarted))[0] == 200
    status, replay = await restarted.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert (status, replay["grant_id"]) == (200, grant["grant_id"])
    status, body = await restarted.claim(request_id="q2", campaign_id="c1", customer_id="cust-1")
    assert (status, body["error"]["code"]) == (409, "limit_reached")


async def test_an_upgrade_that_kept_redis_is_marked_ready_without_a_rebuild(
    api, aiohttp_client, pool, redis, keys, settings, clock
):
    """A deployment from before the marker: Redis kept its data, there is just no marker. The
    newest grant's idempotency entry is still there, so the API opens the store by itself."""
    await api.create_right()
    await api.create_campaign()
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201
    await LedgerWorker(redis, pool, keys).drain()
    await unmark_store_ready(redis, keys)

    restarted = Api(await aiohttp_client(create_app(settings, clock)), clock)
    marker = orjson.loads(await redis.get(keys.store_ready))
    assert marker["reason"].startswith("kept"), marker
    status, replay = await restarted.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert (status, replay["grant_id"]) == (200, grant["grant_id"])
    status, body = await restarted.claim(request_id="q2", campaign_id="c1", customer_id="cust-1")
    assert (status, body["error"]["code"]) == (409, "limit_reached")


async def test_definitions_back_without_the_rest_decide_no_claim(api, pool, redis, keys):
    """Mid-rebuild (or after anything that republishes definitions alone into an emptied
    store): the definition is there, the idempotency entries and customer totals are not. The
    script itself refuses, for every claim of the batch, and writes nothing."""
    await api.create_right()
    await api.create_campaign()
    status, _ = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201
    await LedgerWorker(redis, pool, keys).drain()
    await delete_test_keys(redis)
    await CampaignService(pool, redis, keys).publish_all()
    before = sorted([k async for k in redis.scan_iter(match=f"{keys.prefix}:*")])
    replies = await asyncio.gather(
        *(
            api.claim(request_id=rid, campaign_id="c1", customer_id=cust)
            for rid, cust in (("q1", "cust-1"), ("q2", "cust-1"), ("q3", "cust-3"))
        )
    )
    assert [(s, b["error"]["reason"]) for s, b in replies] == [(503, "store_not_ready")] * 3
    assert sorted([k async for k in redis.scan_iter(match=f"{keys.prefix}:*")]) == before
    assert int(await redis.hget(keys.campaign("c1"), "r:r1:granted")) == 1


async def test_a_revoke_on_an_emptied_store_is_503_and_gives_nothing_back(
    api, pool, redis, keys, settings, clock
):
    await api.create_right()
    await api.create_campaign()
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201
    await LedgerWorker(redis, pool, keys).drain()
    await delete_test_keys(redis)
    status, body = await api.channel("POST", f"/v1/grants/{grant['grant_id']}/revoke", {})
    assert (status, body["error"]["reason"]) == (503, "store_not_ready"), body
    assert [k async for k in redis.scan_iter(match=f"{keys.prefix}:*")] == []

    await Rebuild(pool, redis, keys, settings, clock).run()
    status, _ = await api.channel("POST", f"/v1/grants/{grant['grant_id']}/revoke", {})
    assert status == 200
    assert int(await redis.hget(keys.campaign("c1"), "r:r1:granted")) == 0


async def test_a_fulfilment_recorded_while_the_store_is_not_ready_is_parked_not_failed(
    api, pool, redis, keys, settings, clock, sim
):
    # At a vendor: a grant of a right with no vendor is fulfilled as it is granted.
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201
    grant_id = grant["grant_id"]
    await unmark_store_ready(redis, keys)  # as a flush would, the outbox entry left to read
    worker = fulfilment_worker(redis, pool, keys, settings, clock, block_ms=20)
    task = asyncio.create_task(worker.run(grace_s=2))
    try:

        async def parked() -> bool:
            return bool(await redis.hexists(keys.fulfil_parked, grant_id))

        await until(parked, what="the grant parked", timeout=10.0, every=0.02)
        assert await redis.hget(keys.grant_states("c1"), grant_id) is None  # not failed
        assert await redis.hget(keys.fulfil_attempts, grant_id) is None  # no attempt spent
        assert await redis.xlen(keys.fulfil_dead) == 0

        await mark_store_ready(redis, keys, "test", clock())
        clock.advance(10)  # past the parking delay

        async def fulfilled() -> bool:
            return bool(await redis.hexists(keys.pending_events, f"{grant_id}:fulfilled"))

        await until(
            fulfilled,
            what="the grant fulfilled after the store came back",
            timeout=10.0,
            every=0.02,
        )

        async def unparked() -> bool:
            return not await parked()

        # The transition is recorded first, then the task cleans its retry state up.
        await until(unparked, what="the parked copy removed", timeout=10.0, every=0.02)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


async def test_republishing_is_bounded_in_concurrency_and_in_time(
    api, redis, keys, settings, clock
):
    """Claims for 30 unknown campaign ids while PostgreSQL hangs: at most 2 look-ups at once,
    and every claim answers 503 within about a second instead of waiting for PostgreSQL."""
    in_flight, peak = 0, 0
    release = asyncio.Event()

    async def hanging(campaign_id: str) -> bool:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await release.wait()
            return False
        finally:
            in_flight -= 1

    service = ClaimService(redis, keys, settings, clock, republish=hanging)
    await service.start()
    try:
        started = time.monotonic()
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(
                    service.claim(Claim(CHANNEL, f"u{i}", f"unknown-{i}", f"u{i}", None))
                    for i in range(30)
                ),
                return_exceptions=True,
            ),
            10,
        )
        elapsed = time.monotonic() - started
        assert all(
            isinstance(o, Unavailable) and not isinstance(o, StoreNotReady) for o in outcomes
        ), {repr(o) for o in outcomes}
        assert elapsed < 2.5
        assert peak == 2
    finally:
        release.set()
        await service.close()
