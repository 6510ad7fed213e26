"""Redis losing its data: a flush under claims (nothing is decided until rebuild-redis), a lost
definition (republished), kill -9 with AOF, grants the ledger refused.

Every test here runs against a Redis server of its own (tests/support/scratch.py), never the
shared one: flushing and killing it touches nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from quanyi.campaigns.api import CAMPAIGNS
from quanyi.core.errors import CampaignNotFound, StoreNotReady, Unavailable
from quanyi.inventory.hot_campaigns import HotCampaigns
from quanyi.issuance.api import LIFECYCLE
from quanyi.issuance.claims import CampaignCache, Claim, ClaimService
from quanyi.ledger.rebuild import Rebuild
from quanyi.ledger.reconcile import Reconcile, drifted
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.outbox import LEDGER_GROUP, outbox_lag
from quanyi.stores.redis import open_redis
from tests.support.clients import Api, claim, not_ready
from tests.support.factories import register_vendor
from tests.support.lost_stores import lost_store_redis, lost_store_settings
from tests.support.scratch import ScratchRedis, redis_available
from tests.support.settings import CHANNEL
from tests.support.vendors import sim_stats
from tests.support.waiting import until
from tests.support.workers import fulfilment_worker

pytestmark = [
    pytest.mark.skipif(not redis_available(), reason="needs redis-server"),
    pytest.mark.cluster_too,
]


@pytest.fixture
def scratch(tmp_path: Any, request: Any) -> Iterator[ScratchRedis]:
    """A Redis of the test's own; parametrised with an appendfsync policy, with AOF on."""
    fsync = getattr(request, "param", None)
    with ScratchRedis(
        tmp_path, appendonly=fsync is not None, appendfsync=fsync or "everysec"
    ) as server:
        yield server


settings = pytest.fixture(name="settings")(lost_store_settings)
redis = pytest.fixture(name="redis")(lost_store_redis)


async def test_a_flush_under_claims_grants_nothing_twice_and_claims_resume_after_rebuild(
    api, pool, redis, keys, settings, clock
):
    """40 customers hold a grant (limit 1). A stream of retries of their request ids, new
    request ids of theirs and new customers meets a FLUSHDB: no retry answers 201, no customer
    gets a second grant, nothing is republished into the emptied store; after rebuild-redis the
    retries replay the original grants and new customers are served again."""
    await api.create_right()
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 1000, "per_customer_limit": 1}]
    )
    original = {}
    for i, (status, body) in enumerate(
        await asyncio.gather(*(claim(api, f"a{i}", f"a{i}") for i in range(40)))
    ):
        assert status == 201
        original[f"a{i}"] = body["grant_id"]
    await LedgerWorker(redis, pool, keys).drain()
    granted_to: dict[str, set[str]] = {f"a{i}": {original[f"a{i}"]} for i in range(40)}

    async def flush_midway() -> None:
        await asyncio.sleep(0.02)
        await redis.flushdb()

    stream = []
    for i in range(40):  # retry, a new request of a customer at the limit, new customers
        stream += [("retry", f"a{i}", f"a{i}"), ("again", f"x{i}", f"a{i}")]
        stream += [("new", f"b{i}-{n}", f"b{i}-{n}") for n in range(3)]
    replies = await asyncio.gather(
        *(claim(api, request_id, customer) for _, request_id, customer in stream), flush_midway()
    )
    refused = 0
    for (kind, request_id, customer), (status, body) in zip(stream, replies[:-1], strict=True):
        refused += not_ready(status, body)
        if status == 201:
            granted_to.setdefault(customer, set()).add(body["grant_id"])
        if kind == "retry":
            assert not_ready(status, body) or (status, body["grant_id"]) == (
                200,
                original[request_id],
            ), (request_id, status, body)
        elif kind == "again":
            assert not_ready(status, body) or body["error"]["code"] == "limit_reached", body
        else:
            assert status == 201 or not_ready(status, body), body
    assert refused > 0, "the flush came after the stream: it proved nothing"
    assert max(len(g) for g in granted_to.values()) == 1
    # Still refused until the rebuild, and nothing was written into the emptied store.
    status, body = await claim(api, "late", "late")
    assert not_ready(status, body), body
    assert "retry" in body["error"]["message"] and "ledger" in body["error"]["message"]
    emptied = [
        *(s.outbox for s in keys.shards),
        keys.campaign_definition("c1"),
        keys.campaign("c1"),
    ]
    assert not any([await redis.exists(key) for key in emptied])  # each alone: slots differ

    await Rebuild(pool, redis, keys, settings, clock).run()
    for i in range(40):
        status, body = await claim(api, f"a{i}", f"a{i}")
        assert (status, body["grant_id"]) == (200, original[f"a{i}"])
        status, body = await claim(api, f"y{i}", f"a{i}")
        assert (status, body["error"]["code"]) == (409, "limit_reached")
    later = await asyncio.gather(*(claim(api, f"c{i}", f"c{i}") for i in range(20)))
    assert [s for s, _ in later] == [201] * 20
    # The counter is the ledger's live grants plus the new ones (grants answered 201 between
    # the drain and the flush were in the outbox only: gone with it, see AOF below).
    assert int(await redis.hget(keys.campaign("c1"), "r:r1:granted")) == 40 + 20
    assert await pool.fetchval("SELECT count(*) FROM grants") == 40


async def test_an_unknown_campaign_is_looked_up_once_not_on_every_claim(
    api, pool, redis, keys, settings, clock
):
    """The negative cache and the single flight: 300 claims for an id PostgreSQL does not know
    ask PostgreSQL once; a campaign that exists is republished once for a burst of 50."""
    await api.create_right()
    await api.create_campaign()
    app = api.client.server.app
    calls: list[str] = []

    async def counting(campaign_id: str) -> bool:
        calls.append(campaign_id)
        return await app[CAMPAIGNS].publish_one(campaign_id)

    service = ClaimService(redis, keys, settings, clock, republish=counting)
    await service.start()
    try:
        outcomes = []
        for round_ in range(6):  # bursts of 50, one after another, within the negative cache
            outcomes += await asyncio.gather(
                *(
                    service.claim(Claim(CHANNEL, f"n{round_}-{i}", "nope", f"n{i}", None))
                    for i in range(50)
                ),
                return_exceptions=True,
            )
        assert len(outcomes) == 300
        assert all(isinstance(o, CampaignNotFound) for o in outcomes), {repr(o) for o in outcomes}
        assert calls == ["nope"]

        # A lost write: the definition is gone, the rest of Redis (and its marker) is there.
        await redis.delete(keys.campaign("c1"), keys.campaign_definition("c1"))
        grants = await asyncio.gather(
            *(service.claim(Claim(CHANNEL, f"y{i}", "c1", f"y{i}", None)) for i in range(50))
        )
        assert len({g.grant_id for g in grants}) == 50
        assert calls == ["nope", "c1"]
    finally:
        await service.close()


async def test_a_lost_campaign_is_503_while_postgresql_cannot_republish_it(
    api, pool, redis, keys, settings, clock
):
    await api.create_right()
    await api.create_campaign()

    async def postgresql_away(campaign_id: str) -> bool:
        raise ConnectionRefusedError(111, "Connect call failed")

    service = ClaimService(redis, keys, settings, clock, republish=postgresql_away)
    await service.start()
    try:
        grant = await service.claim(Claim(CHANNEL, "q1", "c1", "cust-1", None))
        await redis.delete(keys.campaign("c1"), keys.campaign_definition("c1"))  # a lost write
        for cached in (True, False):  # a definition at hand, and one read from Redis
            if not cached:
                service.campaigns = CampaignCache(HotCampaigns(redis, keys), postgresql_away)
            with pytest.raises(Unavailable) as refused:
                await service.claim(Claim(CHANNEL, "q2", "c1", "cust-2", None))
            assert not isinstance(refused.value, StoreNotReady)
        assert grant.grant_id
        assert not await redis.exists(keys.campaign("c1"), keys.campaign_definition("c1"))
    finally:
        await service.close()


async def test_counters_rebuilt_from_the_ledger_leave_out_revoked_and_failed_grants(
    api, pool, redis, keys, settings, clock
):
    """Stock 4: four grants, one revoked and one failed (the campaign gives stock back on
    failure) leave two live. After the loss the counter is 2 and two more may be granted."""
    await api.create_right()
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 4, "per_customer_limit": 1}]
    )
    grants = [(await claim(api, f"q{i}", f"cust-{i}"))[1]["grant_id"] for i in range(4)]
    status, _ = await api.channel("POST", f"/v1/grants/{grants[0]}/revoke", {})
    assert status == 200
    lifecycle = api.client.server.app[LIFECYCLE]
    assert (await lifecycle.move(grants[1], "failed", "system:test")).applied
    await LedgerWorker(redis, pool, keys).drain()
    statuses = await pool.fetch("SELECT status FROM grants ORDER BY grant_id")
    assert sorted(r["status"] for r in statuses) == ["failed", "fulfilled", "fulfilled", "revoked"]

    await redis.flushdb()
    assert not_ready(*await claim(api, "new-1", "new-1"))
    await Rebuild(pool, redis, keys, settings, clock).run()
    assert int(await redis.hget(keys.campaign("c1"), "r:r1:granted")) == 2
    status, _ = await claim(api, "new-1", "new-1")
    assert status == 201
    assert int(await redis.hget(keys.campaign("c1"), "r:r1:granted")) == 3
    status, _ = await claim(api, "new-2", "new-2")
    assert status == 201
    status, body = await claim(api, "new-3", "new-3")
    assert (status, body["error"]["code"]) == (409, "out_of_stock")


async def test_a_replay_and_the_customer_list_report_a_revoke_at_once(api, pool, redis, keys):
    await api.create_right()
    await api.create_campaign()
    status, grant = await claim(api, "q1", "cust-1")
    assert status == 201 and grant["status"] == "fulfilled"  # coffee has no vendor
    status, _ = await api.channel("POST", f"/v1/grants/{grant['grant_id']}/revoke", {})
    assert status == 200

    async def seen() -> tuple[str, list[str]]:
        status, replay = await claim(api, "q1", "cust-1")
        assert status == 200 and replay["replayed"] is True
        assert replay["grant_id"] == grant["grant_id"]
        status, listed = await api.channel("GET", "/v1/customers/cust-1/grants")
        assert status == 200
        return replay["status"], [g["status"] for g in listed["grants"]]

    # Before the ledger has the grant, after it has the grant but not yet the revoke, after both.
    assert await seen() == ("revoked", ["revoked"])
    worker = LedgerWorker(redis, pool, keys)
    events = await redis.xrange(keys.of("c1").outbox)
    await worker.drain()
    assert len(events) == 2 and await pool.fetchval("SELECT status FROM grants") == "revoked"
    assert await seen() == ("revoked", ["revoked"])


async def test_a_replay_of_a_persisted_live_grant_reports_its_status(api, pool, redis, keys):
    await api.create_right()
    await api.create_campaign()
    status, _ = await claim(api, "q1", "cust-1")
    assert status == 201
    await LedgerWorker(redis, pool, keys).drain()
    status, replay = await claim(api, "q1", "cust-1")
    assert (status, replay["status"], replay["replayed"]) == (200, "fulfilled", True)


async def claim_again_after_a_loss(api: Api, redis: Redis, keys: Any, first: dict) -> dict:
    """The loss: what claim.lua wrote for request q1 and cust-1 (the request id, the customer's
    count) is gone. The retry of q1 gets a new grant, counted on top of the first."""
    idem_key, idem_field = keys.of("c1").idempotency(CHANNEL, "q1")
    assert await redis.hdel(idem_key, idem_field) == 1
    if keys.sharded:  # and the record of the shard q1 was decided in (quanyi/stores/shards.py)
        route_key, route_field = keys.idempotency_route(CHANNEL, "q1")
        assert await redis.hdel(route_key, route_field) == 1
    for key in [k async for k in redis.scan_iter(match=f"{keys.campaign('c1')}:cu:*")]:
        await redis.delete(key)
    status, second = await claim(api, "q1", "cust-1")
    assert status == 201 and second["grant_id"] != first["grant_id"]
    assert int(await redis.hget(keys.campaign("c1"), "r:r1:granted")) == 2
    return second


async def test_the_fulfilment_worker_never_issues_a_grant_the_ledger_refused(
    api, pool, redis, keys, settings, clock, start_sim, key_pairs, our_key_file
):
    """Redis loses the request id and the customer's count; the retry gets a new grant id for
    a request the ledger already holds. The vendor issues the first grant only."""
    sim = await start_sim()
    await register_vendor(api, "sim", sim, key_pairs, our_key_file)
    await api.create_right("lounge", vendor_id="sim")
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "lounge", "stock": 10, "per_customer_limit": 1}]
    )
    status, first = await claim(api, "q1", "cust-1")
    assert status == 201
    ledger = LedgerWorker(redis, pool, keys)
    await ledger.drain()

    second = await claim_again_after_a_loss(api, redis, keys, first)

    worker = fulfilment_worker(redis, pool, keys, settings, clock, block_ms=20)
    task = asyncio.create_task(worker.run(grace_s=2))
    try:

        async def settled() -> bool:
            state = await redis.hget(keys.grant_states("c1"), second["grant_id"])
            effects = (await sim_stats(sim))["effects"]
            return state == "failed" and first["grant_id"] in effects

        await until(settled, what="the first fulfilled, the duplicate refused")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)
    assert (await sim_stats(sim))["effects"] == {first["grant_id"]: 1}
    dead = [f for _id, f in await redis.xrange(keys.of("c1").fulfil_dead)]
    assert len(dead) == 1 and "duplicate request" in dead[0]["error"]
    assert first["grant_id"] in dead[0]["error"]
    # Its stock came back: Redis counts what the ledger holds.
    assert int(await redis.hget(keys.campaign("c1"), "r:r1:granted")) == 1
    await ledger.drain()
    assert await pool.fetchval("SELECT count(*) FROM grants") == 1


async def customer_total(redis: Redis, keys: Any) -> int:
    """cust-1's count of r1 in c1, over the customer total buckets."""
    totals = [k async for k in redis.scan_iter(match=f"{keys.campaign('c1')}:cu:*")]
    return sum([int(await redis.hget(k, "r1|cust-1") or 0) for k in totals])


async def test_a_duplicate_born_fulfilled_is_failed_by_the_ledger_and_gives_its_stock_back(
    api, pool, redis, keys, settings, clock
):
    """The same loss for a right with no vendor: the second grant is born fulfilled, and no
    fulfilment worker looks at it. The ledger sets it aside without writing its `fulfilled`
    event, and fails it, giving back what it took, once however often it is delivered."""
    await api.create_right()  # coffee: no vendor
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 10, "per_customer_limit": 1}]
    )
    status, first = await claim(api, "q1", "cust-1")
    assert status == 201 and first["status"] == "fulfilled"
    ledger = LedgerWorker(redis, pool, keys)
    await ledger.drain()

    second = await claim_again_after_a_loss(api, redis, keys, first)
    assert second["status"] == "fulfilled"
    assert await customer_total(redis, keys) == 1
    [entry] = [
        m for m in await redis.xrange(keys.of("c1").outbox) if second["grant_id"] in str(m[1])
    ]

    await ledger.drain()
    assert await pool.fetchval("SELECT count(*) FROM grants") == 1
    fulfilled = "SELECT count(*) FROM grant_events WHERE grant_id = $1 AND event = 'fulfilled'"
    assert await pool.fetchval(fulfilled, second["grant_id"]) == 0
    assert await redis.hget(keys.grant_states("c1"), second["grant_id"]) == "failed"
    assert int(await redis.hget(keys.campaign("c1"), "r:r1:granted")) == 1
    dead = [f for _id, f in await redis.xrange(keys.of("c1").outbox_dead)]
    assert len(dead) == 1 and second["grant_id"] in dead[0]["g"]
    failed = await pool.fetchval(
        "SELECT detail FROM grant_events WHERE grant_id = $1 AND event = 'failed'",
        second["grant_id"],
    )
    assert failed is not None and f'"duplicate_of": "{first["grant_id"]}"' in failed

    # Delivered again (a worker died before its XACK): refused again, nothing given back twice.
    await ledger._persist([entry], keys.of("c1"))
    assert int(await redis.hget(keys.campaign("c1"), "r:r1:granted")) == 1
    assert await pool.fetchval(fulfilled, second["grant_id"]) == 0
    # The customer's limit came back too (the loss had emptied it; the duplicate took one).
    assert await customer_total(redis, keys) == 0


# kill -9 with AOF


async def fire(api: Api, prefix: str, acknowledged: list[tuple[float, str]], stop: Any) -> None:
    """Claims one after another until told to stop; notes each 201 with when it came."""
    i = 0
    while not stop.is_set():
        i += 1
        status, body = await claim(api, f"{prefix}-{i}", f"{prefix}-{i}")
        if status == 201:
            acknowledged.append((time.monotonic(), body["grant_id"]))
        elif status == 503:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("scratch", ["always", "everysec"], indirect=True)
@pytest.mark.single_redis("kill -9 of a Redis server of its own, restarted from its AOF")
async def test_kill_9_of_redis_with_aof_loses_no_acknowledged_grant(
    api, pool, redis, keys, settings, clock, scratch, record_property
):
    """Claims flow, the ledger worker drains, Redis is killed with kill -9 and restarted from
    its AOF. Every grant answered 201 reaches the ledger (always), or all but those of the last
    moment (everysec; measured and recorded), and reconcile finds Redis and the ledger agree."""
    await api.create_right()
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 100_000, "per_customer_limit": 1}]
    )
    worker_redis = await open_redis(settings)

    def ledger_worker() -> LedgerWorker:
        return LedgerWorker(worker_redis, pool, keys, block_ms=20, reclaim_idle_ms=500)

    worker = ledger_worker()
    ledger = asyncio.create_task(worker.run())
    try:
        acknowledged: list[tuple[float, str]] = []
        stop = asyncio.Event()
        senders = [asyncio.create_task(fire(api, f"s{n}", acknowledged, stop)) for n in range(8)]
        await until(lambda: _at_least(acknowledged, 400), what="claims under way")
        # The ledger stops while claims go on: at the kill, the last grants are only in Redis
        # and its AOF, whatever the pace of this machine.
        worker.stop()
        await asyncio.wait_for(ledger, 15)
        granted_before = len(acknowledged)
        await until(lambda: _at_least(acknowledged, granted_before + 100), what="more claims")
        scratch.kill()
        killed_at = time.monotonic()
        await asyncio.sleep(0.3)  # the senders meet a dead Redis: 503s
        stop.set()
        await asyncio.gather(*senders)
        stored_at_kill = await pool.fetchval("SELECT count(*) FROM grants")
        only_in_redis = len(acknowledged) - stored_at_kill
        assert only_in_redis >= 100, "the grants made since the ledger stopped are only in Redis"
        scratch.start()
        worker = ledger_worker()
        ledger = asyncio.create_task(worker.run())

        async def caught_up() -> bool:
            try:
                lag = await outbox_lag(redis, keys, LEDGER_GROUP)
                return lag.entries == 0 and not await redis.hlen(keys.pending)
            except RedisConnectionError:
                return False

        await until(caught_up, timeout=30, what="the ledger caught up after the restart")
        stored = {r["grant_id"] for r in await pool.fetch("SELECT grant_id FROM grants")}
        lost = [g for _t, g in acknowledged if g not in stored]
        recent = sum(1 for t, _g in acknowledged if t >= killed_at - 2.0)
        record_property("acknowledged", len(acknowledged))
        record_property("only_in_redis_at_kill", only_in_redis)
        record_property("lost", len(lost))
        print(
            f"appendfsync {scratch.appendfsync}: {len(acknowledged)} acknowledged,"
            f" {only_in_redis} only in redis at the kill, {len(lost)} lost"
        )
        if scratch.appendfsync == "always":
            assert lost == []
        else:
            # everysec writes the file before each reply and fsyncs once a second: a killed
            # process loses at most what was answered while a slow fsync held writes back
            # (Redis postpones them up to 2 s).
            assert len(lost) <= recent
        findings = await Reconcile(pool, redis, keys, settings, clock).run()
        assert drifted(findings) == []
    finally:
        worker.stop()
        await asyncio.wait_for(ledger, 15)
        await worker_redis.aclose()


async def _at_least(items: list, n: int) -> bool:
    return len(items) >= n
