"""`quanyi rebuild-redis` and `quanyi reconcile` of a campaign split into stock parts.

Redis here is a server of the test's own (tests/support/scratch.py), or the suite's scratch
cluster (every shard): it is flushed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from quanyi.inventory.hot_campaigns import HotCampaigns
from quanyi.inventory.readiness import store_ready, unmark_store_ready
from quanyi.inventory.stock_parts import MOVE_FIELD, read_parts, sums
from quanyi.ledger.rebuild import Rebuild, open_store_at_startup
from quanyi.ledger.reconcile import Finding, Reconcile, drifted
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import Keys, customer_bucket, part_ids, part_of
from quanyi.stores.scripts import Scripts, run_script
from tests.support.factories import reward
from tests.support.lost_stores import lost_store_redis, lost_store_settings
from tests.support.lost_stores import quanyi_on as quanyi
from tests.support.scratch import ScratchRedis, redis_available

pytestmark = [
    pytest.mark.skipif(not redis_available(), reason="needs redis-server"),
    pytest.mark.cluster_too,
]

CAMPAIGN, PARTS, STOCK = "hot", 4, 40
PARTS_IDS = part_ids(CAMPAIGN, PARTS)


@pytest.fixture
def scratch(tmp_path: Any) -> Iterator[ScratchRedis]:
    with ScratchRedis(tmp_path) as server:
        yield server


settings = pytest.fixture(name="settings")(lost_store_settings)
redis = pytest.fixture(name="redis")(lost_store_redis)


def customers_of(part: str, n: int, tag: str) -> list[str]:
    """`n` customer ids whose claims are decided in `part`."""
    found: list[str] = []
    i = 0
    while len(found) < n:
        customer = f"{tag}-{i}"
        if part_of(CAMPAIGN, PARTS, customer) == part:
            found.append(customer)
        i += 1
    return found


async def create_hot(api: Any) -> None:
    await api.create_right()
    await api.create_campaign(CAMPAIGN, [reward("r1", "coffee", stock=STOCK)], stock_parts=PARTS)


async def claim_hot(api: Any, request_id: str, customer: str) -> tuple[int, Any]:
    return await api.claim(request_id=request_id, campaign_id=CAMPAIGN, customer_id=customer)


async def parts(redis: Redis, keys: Keys) -> list[dict[str, str]]:
    return await read_parts(redis, keys, CAMPAIGN, PARTS)


async def stock_over_parts(redis: Redis, keys: Keys) -> int:
    return sum(int(h["r:r1:stock"]) for h in await parts(redis, keys))


async def live_grants(pool: Any) -> list[Any]:
    return await pool.fetch(
        "SELECT grant_id, customer_id FROM grants WHERE campaign_id = $1 AND status <> 'revoked'",
        CAMPAIGN,
    )


def found(findings: list[Finding], subject: str) -> Finding:
    return next(f for f in findings if f.subject == subject)


async def test_rebuild_writes_every_part_and_claims_then_sell_exactly_what_is_left(
    api, pool, redis, keys, settings, clock
):
    await create_hot(api)
    # 15 customers of part 1 (its own share is 10: it takes stock from the others), and 2
    # of each other part.
    crowd = customers_of("hot~1", 15, "crowd")
    others = [
        c for j, p in enumerate(PARTS_IDS) if p != "hot~1" for c in customers_of(p, 2, f"few{j}")
    ]
    replies = await asyncio.gather(*(claim_hot(api, f"q-{c}", c) for c in crowd + others))
    assert [status for status, _ in replies] == [201] * 21
    grants = {c: body["grant_id"] for c, (_, body) in zip(crowd + others, replies, strict=True)}
    assert int((await parts(redis, keys))[1]["r:r1:stock"]) > 10  # stock was moved into it
    revoked = crowd[0]
    status, _ = await api.channel("POST", f"/v1/grants/{grants[revoked]}/revoke", {})
    assert status == 200
    await LedgerWorker(redis, pool, keys).drain()
    assert drifted(await Reconcile(pool, redis, keys, settings, clock).run()) == []

    await redis.flushdb()
    await Rebuild(pool, redis, keys, settings, clock).run()

    ledger = await live_grants(pool)
    assert len(ledger) == 20
    hashes = await parts(redis, keys)
    # Each part holds its customers' grants, and the parts hold the reward's stock.
    for pid, h in zip(PARTS_IDS, hashes, strict=True):
        mine = sum(1 for g in ledger if part_of(CAMPAIGN, PARTS, g["customer_id"]) == pid)
        assert int(h["r:r1:granted"]) == mine
        assert int(h["spent"]) == 100 * mine
        assert h["state"] == "active" and int(h["r:r1:limit"]) == 1
        assert not [name for name in h if name.startswith(MOVE_FIELD)]
    granted, spent, moving = await sums(redis, keys, CAMPAIGN, PARTS, ["r1"])
    assert (granted, spent, moving) == ({"r1": 20}, 2000, {"r1": 0})
    assert await stock_over_parts(redis, keys) == STOCK
    # The revoked grant's final state is in its customer's part, where a transition looks.
    held = await redis.hget(keys.grant_states("hot~1"), grants[revoked])
    assert held == "revoked"
    # A second run changes nothing of it.
    await Rebuild(pool, redis, keys, settings, clock).run()
    assert await parts(redis, keys) == hashes
    run = quanyi(settings, "reconcile")
    assert run.returncode == 0 and "in agreement" in run.stdout, run.stdout + run.stderr
    assert "stock moves completed" in run.stdout

    # A customer at the limit is still refused; a retry replays the grant from its part.
    status, body = await claim_hot(api, "again", crowd[1])
    assert (status, body["error"]["code"]) == (409, "limit_reached")
    status, body = await claim_hot(api, f"q-{others[0]}", others[0])
    assert (status, body["replayed"], body["grant_id"]) == (200, True, grants[others[0]])
    # New customers get exactly the 20 left, whichever parts they claim in.
    fresh = [f"fresh-{i}" for i in range(30)]
    replies = await asyncio.gather(*(claim_hot(api, f"n-{c}", c) for c in fresh))
    statuses = [status for status, _ in replies]
    assert statuses.count(201) == 20 and statuses.count(409) == 10
    assert {body["error"]["code"] for status, body in replies if status == 409} == {"out_of_stock"}
    granted, _spent, moving = await sums(redis, keys, CAMPAIGN, PARTS, ["r1"])
    assert (granted, moving) == ({"r1": STOCK}, {"r1": 0})
    assert await stock_over_parts(redis, keys) == STOCK
    await LedgerWorker(redis, pool, keys).drain()
    assert len(await live_grants(pool)) == STOCK
    assert drifted(await Reconcile(pool, redis, keys, settings, clock).run()) == []


async def test_reconcile_completes_a_stranded_move_and_checks_the_parts(
    api, pool, redis, keys, settings, clock
):
    await create_hot(api)
    customers = [c for j, p in enumerate(PARTS_IDS) for c in customers_of(p, 3, f"c{j}")]
    for c in customers:
        status, _ = await claim_hot(api, f"q-{c}", c)
        assert status == 201
    await LedgerWorker(redis, pool, keys).drain()
    findings = await Reconcile(pool, redis, keys, settings, clock).run()
    assert drifted(findings) == []
    assert found(findings, "hot: stock moves completed").redis == 0
    assert found(findings, "hot/r1: stock over the parts").redis == STOCK
    # A start-up that finds no marker tells a kept Redis by the newest grant's request id,
    # looked for in the shard of its customer's part (the last customers are part 3's).
    await unmark_store_ready(redis, keys)
    assert await open_store_at_startup(redis, pool, keys, clock, logging.getLogger(__name__))
    assert await store_ready(redis, keys)

    # A move stranded between its two steps: taken from part 2, never given to part 0.
    scripts = Scripts(redis)
    taken, _budget = await run_script(
        redis,
        scripts.take_stock,
        [keys.campaign("hot~2"), keys.of("hot~2").store_ready],
        ["r1", "stranded", "hot", "stock"],
    )
    assert int(taken) == 4  # half of the 7 part 2 has left, rounded up
    assert await stock_over_parts(redis, keys) == STOCK - 4
    before = int((await parts(redis, keys))[0]["r:r1:stock"])

    findings = await Reconcile(pool, redis, keys, settings, clock).run()
    assert drifted(findings) == []
    assert found(findings, "hot: stock moves completed").redis == 1
    assert found(findings, "hot/r1: stock over the parts").redis == STOCK
    hashes = await parts(redis, keys)
    assert int(hashes[0]["r:r1:stock"]) == before + 4
    assert not [name for h in hashes for name in h if name.startswith(MOVE_FIELD)]
    assert await stock_over_parts(redis, keys) == STOCK
    # Completed once: a second run moves nothing again.
    findings = await Reconcile(pool, redis, keys, settings, clock).run()
    assert found(findings, "hot: stock moves completed").redis == 0
    assert await stock_over_parts(redis, keys) == STOCK

    # A customer's total counted in another part than the customer's is drift.
    customer = customers[0]
    own = part_of(CAMPAIGN, PARTS, customer)
    other = next(p for p in PARTS_IDS if p != own)
    definition = await HotCampaigns(redis, keys).definition(CAMPAIGN)
    assert definition is not None
    bucket = customer_bucket(customer, definition.buckets)
    assert await redis.hget(keys.customer_totals(own, bucket), f"r1|{customer}") == "1"
    await redis.hdel(keys.customer_totals(own, bucket), f"r1|{customer}")
    await redis.hset(keys.customer_totals(other, bucket), f"r1|{customer}", 1)
    drift = drifted(await Reconcile(pool, redis, keys, settings, clock).run())
    assert [(f.check, f.redis) for f in drift] == [("customer totals", 2)]
    # And a part's stock that the parts do not add up to.
    await redis.hincrby(keys.campaign("hot~3"), "r:r1:stock", 1)
    drift = drifted(await Reconcile(pool, redis, keys, settings, clock).run())
    assert ("stock parts", "hot/r1: stock over the parts", STOCK + 1, STOCK) in [
        (f.check, f.subject, f.redis, f.ledger) for f in drift
    ]
