"""The ledger whatever order entries reach it in, and redrives against daily counters."""

from __future__ import annotations

import orjson

from quanyi.issuance.api import LIFECYCLE
from quanyi.issuance.lifecycle import grant_from_event
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.outbox import LEDGER_GROUP


async def test_a_grant_reaching_the_ledger_after_its_events_takes_their_status(
    api, pool, redis, keys
):
    """A dead worker's batch is taken over later than the events that followed it."""
    await api.create_right()
    await api.create_campaign()
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201
    app = api.client.server.app
    await app[LIFECYCLE].move(grant["grant_id"], "revoked", "test", {})

    # Deliver only the event first, as if the grant's entry sat in a dead consumer's list.
    entries = await redis.xrange(keys.outbox, "-", "+")
    grant_entry = next(e for e in entries if "g" in e[1])
    event_entry = next(e for e in entries if "e" in e[1])
    worker = LedgerWorker(redis, pool, keys)
    await redis.xreadgroup(LEDGER_GROUP, "dead", {keys.outbox: ">"}, count=1)  # takes the grant
    await worker.drain()  # persists the event only
    assert await pool.fetchval("SELECT count(*) FROM grants") == 0
    assert await pool.fetchval("SELECT count(*) FROM grant_events") == 1
    await redis.xclaim(keys.outbox, LEDGER_GROUP, worker.consumer, 0, [grant_entry[0]])
    await worker._persist([grant_entry])
    assert event_entry[0] != grant_entry[0]
    row = await pool.fetchrow("SELECT status FROM grants WHERE grant_id = $1", grant["grant_id"])
    assert row["status"] == "revoked"


async def test_a_redrive_takes_back_the_daily_stock_its_failure_gave_back(api, redis, keys):
    await api.create_right()
    await api.create_campaign(
        rewards=[
            {
                "id": "r1",
                "right_id": "coffee",
                "stock": 100,
                "daily_stock": 1,
                "per_customer_limit": 5,
            }
        ]
    )
    app = api.client.server.app
    status, first = await api.claim(request_id="q1", campaign_id="c1", customer_id="a")
    assert status == 201
    event = orjson.loads(await redis.hget(keys.pending, first["grant_id"]))
    failed = await app[LIFECYCLE].move(
        first["grant_id"], "failed", "test", {}, grant=grant_from_event(event)
    )
    assert failed.applied
    # The failure gave the day's only unit back, and another customer took it.
    status, _ = await api.claim(request_id="q2", campaign_id="c1", customer_id="b")
    assert status == 201
    redrive = await app[LIFECYCLE].move(
        first["grant_id"], "redriven", "test", {}, grant=grant_from_event(event)
    )
    assert (redrive.outcome, redrive.before) == ("refused", "out_of_stock")
