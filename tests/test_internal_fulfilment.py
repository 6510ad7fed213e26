"""Grants of a right with no vendor are born fulfilled: one claim.lua call, one outbox entry, one
ledger write of the grant and its `fulfilled` event; the fulfilment worker only acknowledges
them. An entry appended before that (without `fulfilled_at_ms`) is fulfilled the old way."""

from __future__ import annotations

import orjson
import pytest

from quanyi.core.ids import new_grant_id
from quanyi.issuance.api import LIFECYCLE
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.outbox import FULFIL_GROUP, LEDGER_GROUP
from tests.support.clients import grant_view
from tests.support.waiting import running, until

pytestmark = pytest.mark.cluster_too


async def _status_counts(pool, campaign_id: str = "c1") -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT status, grants FROM report_status WHERE campaign_id = $1 AND grants <> 0",
        campaign_id,
    )
    return {r["status"]: r["grants"] for r in rows}


async def _daily(pool, campaign_id: str = "c1") -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT sum(issued) AS issued, sum(fulfilled) AS fulfilled FROM report_daily"
        " WHERE campaign_id = $1",
        campaign_id,
    )
    return int(row["issued"] or 0), int(row["fulfilled"] or 0)


async def test_a_grant_of_a_right_with_no_vendor_is_fulfilled_where_it_is_granted(
    api, pool, redis, keys, c1
):
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert (status, grant["status"]) == (201, "fulfilled")

    # One outbox entry, the grant, carrying its fulfilment; read back before the ledger has it.
    entries = await redis.xrange(keys.of("c1").outbox, "-", "+")
    assert len(entries) == 1 and set(entries[0][1]) == {"g"}
    event = orjson.loads(entries[0][1]["g"])
    assert event["fulfilled_at_ms"] == event["granted_at_ms"]
    seen = await grant_view(api, grant["grant_id"])
    assert (seen["status"], seen["persisted"]) == ("fulfilled", False)
    assert [(e["event"], e["actor"]) for e in seen["timeline"]] == [
        ("granted", "channel:app"),
        ("fulfilled", "vendor:internal"),
    ]

    assert await LedgerWorker(redis, pool, keys).drain() == 1
    row = await pool.fetchrow(
        "SELECT status, vendor_id, outbox_id FROM grants WHERE grant_id = $1", grant["grant_id"]
    )
    assert (row["status"], row["vendor_id"], row["outbox_id"]) == ("fulfilled", None, entries[0][0])
    events = await pool.fetch(
        "SELECT event, actor, detail, outbox_id FROM grant_events WHERE grant_id = $1",
        grant["grant_id"],
    )
    assert [(e["event"], e["actor"], orjson.loads(e["detail"])) for e in events] == [
        ("fulfilled", "vendor:internal", {})
    ]
    assert await _status_counts(pool) == {"fulfilled": 1}
    assert await _daily(pool) == (1, 1)
    persisted = await grant_view(api, grant["grant_id"])
    assert persisted["persisted"] is True
    assert {k: v for k, v in persisted.items() if k != "persisted"} == {
        k: v for k, v in seen.items() if k != "persisted"
    }

    # A replay says fulfilled too.
    status, again = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert (status, again["status"], again["replayed"]) == (200, "fulfilled", True)


async def test_the_fulfilment_worker_only_acknowledges_grants_born_fulfilled(
    api, pool, redis, keys, c1, make_worker
):
    grant_ids = []
    for i in range(5):
        status, grant = await api.claim(request_id=f"q{i}", campaign_id="c1", customer_id=f"u{i}")
        assert status == 201
        grant_ids.append(grant["grant_id"])
    worker = make_worker()
    await worker.step()
    # Acknowledged, and nothing appended: no transition.lua, no second ledger entry.
    assert (await redis.xpending(keys.of("c1").outbox, FULFIL_GROUP))["pending"] == 0
    assert await redis.xlen(keys.of("c1").outbox) == 5
    assert await redis.hlen(keys.of("c1").pending_events) == 0

    assert await LedgerWorker(redis, pool, keys).drain() == 5
    rows = await pool.fetch(
        "SELECT g.status, count(e.*) AS events FROM grants g"
        " LEFT JOIN grant_events e USING (grant_id) GROUP BY g.grant_id"
    )
    assert {(r["status"], r["events"]) for r in rows} == {("fulfilled", 1)}
    assert await _status_counts(pool) == {"fulfilled": 5}
    assert await _daily(pool) == (5, 5)


async def test_a_ledger_entry_delivered_twice_writes_its_fulfilment_once(
    api, pool, redis, keys, c1
):
    await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    entries = await redis.xrange(keys.of("c1").outbox, "-", "+")
    worker = LedgerWorker(redis, pool, keys)
    await worker.drain()
    # As if the worker died after its commit, before its XACK: the entry comes again.
    await redis.xclaim(keys.of("c1").outbox, LEDGER_GROUP, worker.consumer, 0, [entries[0][0]])
    assert await worker._persist(entries, keys.of("c1")) == 0
    assert await pool.fetchval("SELECT count(*) FROM grant_events") == 1
    assert await _status_counts(pool) == {"fulfilled": 1}
    assert await _daily(pool) == (1, 1)


async def test_a_grant_born_fulfilled_can_still_be_revoked(api, pool, redis, keys, c1):
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201
    await api.client.server.app[LIFECYCLE].revoke(grant["grant_id"], "staff:ops", "mistake")
    seen = await grant_view(api, grant["grant_id"])
    assert seen["status"] == "revoked"
    assert [e["event"] for e in seen["timeline"]] == ["granted", "fulfilled", "revoked"]
    # Its stock and the customer's limit came back: the customer may claim again.
    status, second = await api.claim(request_id="q2", campaign_id="c1", customer_id="cust-1")
    assert (status, second["status"]) == (201, "fulfilled")

    await LedgerWorker(redis, pool, keys).drain()
    row = await pool.fetchrow("SELECT status FROM grants WHERE grant_id = $1", grant["grant_id"])
    assert row["status"] == "revoked"
    assert await _status_counts(pool) == {"revoked": 1, "fulfilled": 1}


async def test_a_vendor_grant_is_not_born_fulfilled(api, redis, keys, sim):
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert (status, grant["status"]) == (201, "granted")
    entries = await redis.xrange(keys.of("c1").outbox, "-", "+")
    assert "fulfilled_at_ms" not in orjson.loads(entries[0][1]["g"])


async def test_an_entry_from_before_the_upgrade_is_fulfilled_the_old_way(
    api, pool, redis, keys, c1, make_worker, clock
):
    """An outbox entry appended by a version that did not know grants born fulfilled."""
    now_ms = int(clock() * 1000)
    grant_id = new_grant_id(now_ms)
    event = orjson.dumps(
        {
            "grant_id": grant_id,
            "campaign_id": "c1",
            "reward_id": "r1",
            "right_id": "coffee",
            "customer_id": "old-1",
            "channel_id": "app",
            "request_id": "old-q1",
            "unit_cost": 100,
            "granted_at_ms": now_ms,
        }
    )
    await redis.xadd(keys.of("c1").outbox, {"g": event})
    await redis.hset(keys.of("c1").pending, grant_id, event)
    assert (await grant_view(api, grant_id))["status"] == "granted"

    async with running(make_worker()):

        async def fulfilled() -> bool:
            return (await grant_view(api, grant_id))["status"] == "fulfilled"

        await until(fulfilled, what="the old entry fulfilled")
    # Fulfilled through transition.lua: its own outbox entry, by vendor:internal.
    moved = [orjson.loads(f["e"]) for _, f in await redis.xrange(keys.of("c1").outbox) if "e" in f]
    assert [(e["event"], e["actor"]) for e in moved] == [("fulfilled", "vendor:internal")]

    await LedgerWorker(redis, pool, keys).drain()
    events = await pool.fetch("SELECT event, actor FROM grant_events WHERE grant_id = $1", grant_id)
    assert [(e["event"], e["actor"]) for e in events] == [("fulfilled", "vendor:internal")]
    assert await _status_counts(pool) == {"fulfilled": 1}
    assert await _daily(pool) == (1, 1)
