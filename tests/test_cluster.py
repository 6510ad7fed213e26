"""A Redis Cluster: every script call in one slot, campaigns spread over the masters, and the
counts and idempotency of one Redis kept across shards (quanyi/stores/keys.py, shards.py)."""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot

from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import Keys
from quanyi.stores.redis import PackedConnection
from quanyi.stores.scripts import Scripts
from quanyi.stores.shards import Route, route_requests
from tests.support.factories import reward

CAMPAIGNS = [f"c{i}" for i in range(1, 9)]


def test_a_shards_keys_and_its_campaigns_keys_share_one_slot() -> None:
    keys = Keys("qy", shards=8)
    for campaign_id in CAMPAIGNS:
        shard = keys.of(campaign_id)
        slot = key_slot(shard.outbox.encode())
        for key in (
            shard.pending,
            shard.store_ready,
            shard.customer_pending("cust-1"),
            shard.idempotency("app", "q1")[0],
            shard.live_version,
            keys.campaign(campaign_id),
            keys.customer_totals(campaign_id, 3),
            keys.progress(campaign_id, 7),
        ):
            assert key_slot(key.encode()) == slot, key
    assert len({keys.of(c).shard for c in CAMPAIGNS}) > 1


def test_with_several_shards_a_shared_key_must_be_named_by_shard() -> None:
    with pytest.raises(LookupError):
        _ = Keys("qy", shards=2).outbox
    assert Keys("qy").outbox == Keys("qy").shards[0].outbox


@pytest.mark.cluster_too
async def test_claims_on_campaigns_of_every_shard_grant_exactly_their_stock(
    api, pool, redis, keys, redis_mode
):
    """8 campaigns (on several masters in a cluster), stock 20 each, 600 concurrent claims:
    exactly 20 grants each, all in the ledger."""
    await api.create_right()
    for campaign_id in CAMPAIGNS:
        await api.create_campaign(campaign_id, [reward("r1", "coffee", stock=20)])
    sem = asyncio.Semaphore(100)

    async def one(i: int) -> tuple[int, dict]:
        async with sem:
            return await api.claim(
                request_id=f"q{i}", campaign_id=CAMPAIGNS[i % 8], customer_id=f"cust-{i}"
            )

    results = await asyncio.gather(*(one(i) for i in range(600)))
    granted = [body for status, body in results if status == 201]
    per_campaign = {c: sum(1 for g in granted if g["campaign_id"] == c) for c in CAMPAIGNS}
    assert per_campaign == dict.fromkeys(CAMPAIGNS, 20)
    assert {body["error"]["code"] for status, body in results if status != 201} == {"out_of_stock"}
    if redis_mode == "cluster":
        outboxes = {keys.of(c).outbox for c in CAMPAIGNS}
        nodes = {redis.get_node_from_key(o).name for o in outboxes}  # type: ignore[attr-defined]
        assert len(nodes) > 1
    assert await LedgerWorker(redis, pool, keys).drain() == 160
    assert await pool.fetchval("SELECT count(*) FROM grants") == 160


@pytest.mark.cluster_too
async def test_a_request_id_reused_for_a_campaign_of_another_shard_is_a_conflict(api, keys):
    await api.create_right()
    first = "c1"
    # On a cluster a campaign of another shard; on one Redis, another campaign.
    other = next((c for c in CAMPAIGNS if keys.of(c).shard != keys.of(first).shard), "c2")
    for campaign_id in (first, other):
        await api.create_campaign(campaign_id, [reward("r1", "coffee", stock=5)])
    status, grant = await api.claim(request_id="same", campaign_id=first, customer_id="cust-1")
    assert status == 201, grant
    status, body = await api.claim(request_id="same", campaign_id=other, customer_id="cust-1")
    assert (status, body["error"]["code"]) == (409, "idempotency_conflict")
    status, again = await api.claim(request_id="same", campaign_id=first, customer_id="cust-1")
    assert (status, again["grant_id"]) == (200, grant["grant_id"])


@pytest.mark.cluster_too
async def test_one_request_id_claimed_at_once_for_two_shards_is_granted_once(api, keys):
    """The same request id sent 20 times at once, half for a campaign of another shard: one
    grant; the others replay it (same body) or are conflicts (the other campaign)."""
    await api.create_right()
    first = "c1"
    other = next((c for c in CAMPAIGNS if keys.of(c).shard != keys.of(first).shard), "c2")
    for campaign_id in (first, other):
        await api.create_campaign(campaign_id, [reward("r1", "coffee", stock=50)])
    results = await asyncio.gather(
        *(
            api.claim(request_id="dup", campaign_id=(first, other)[i % 2], customer_id="cust-1")
            for i in range(20)
        )
    )
    created = [body for status, body in results if status == 201]
    assert len(created) == 1, results
    winner = created[0]
    for status, body in results:
        if status == 200:
            assert (body["grant_id"], body["replayed"]) == (winner["grant_id"], True)
        elif status == 409:
            assert body["error"]["code"] == "idempotency_conflict"
        else:
            assert status == 201
    loser = other if winner["campaign_id"] == first else first
    status, body = await api.claim(request_id="dup", campaign_id=loser, customer_id="cust-1")
    assert (status, body["error"]["code"]) == (409, "idempotency_conflict")


@pytest.mark.cluster_too
async def test_routes_of_a_batch_decide_each_request_id_in_one_shard_and_only_extend(
    redis, keys, redis_mode
):
    """route_requests over 16 shards (on a single Redis too): a request id keeps the first
    shard it was routed to, within one batch and after; the bucket's expiry only moves later."""
    sharded = Keys(f"{keys.prefix}:rt", shards=16)
    route = Scripts(redis).route
    far, farther = 4_000_000_000, 4_100_000_000
    batch = [
        Route("app", "a", 3, far),
        Route("app", "b", 5, far),
        Route("app", "a", 4, far),  # the same request id for another shard: refused
        Route("app", "a", 3, far),  # and again for its own: allowed
    ]
    assert await route_requests(redis, route, sharded, batch) == [True, True, False, True]
    key, _ = sharded.idempotency_route("app", "b")
    assert await redis.expiretime(key) == far
    later = [Route("app", "b", 6, farther), Route("app", "c", 6, farther)]
    assert await route_requests(redis, route, sharded, later) == [False, True]
    assert await redis.expiretime(key) == farther
    assert await route_requests(redis, route, sharded, [Route("app", "b", 5, far)]) == [True]
    assert await redis.expiretime(key) == farther
    assert await route_requests(redis, route, Keys("x"), [Route("app", "b", 9, far)]) == [True]
    if redis_mode == "cluster":
        # Every node's commands packed by hiredis, as on a single Redis.
        nodes = redis.get_nodes()  # type: ignore[attr-defined]
        assert {node.connection_class for node in nodes} == {PackedConnection}
