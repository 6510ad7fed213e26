"""A grant entry the ledger cannot write goes to the dead letters, and the grants beside it reach
the ledger: the worker keeps running. Grants go in by COPY (quanyi/ledger/batch.py), which
encodes rows on the client: a wrong type or a number past bigint must be caught when the entry
is read, not raised out of the worker mid-batch."""

from __future__ import annotations

import asyncio

import orjson

from quanyi.core.ids import new_grant_id
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.outbox import LEDGER_GROUP, ensure_groups
from tests.support.waiting import until


async def test_a_grant_past_bigint_or_of_the_wrong_type_is_dead_lettered_and_the_rest_written(
    api, pool, redis, keys
):
    await ensure_groups(redis, keys)
    await api.create_right()  # coffee: no vendor, born fulfilled
    await api.create_campaign()
    good = []
    for n in (1, 2):
        status, grant = await api.claim(
            request_id=f"q{n}", campaign_id="c1", customer_id=f"cust-{n}"
        )
        assert status == 201, grant
        good.append(grant["grant_id"])
    [(_id, fields)] = [m for m in await redis.xrange(keys.outbox) if good[0] in str(m[1])]
    model = orjson.loads(fields["g"])

    def bad(n: int, **changes: object) -> dict[str, str]:
        event = {
            **model,
            "grant_id": new_grant_id(model["granted_at_ms"] + n),
            "request_id": f"bad-{n}",
            **changes,
        }
        return {"g": orjson.dumps(event).decode()}

    too_costly = await redis.xadd(keys.outbox, bad(1, unit_cost=2**63))
    numeric_customer = await redis.xadd(keys.outbox, bad(2, customer_id=123))
    fractional_cost = await redis.xadd(keys.outbox, bad(3, unit_cost=1.5))
    status, grant = await api.claim(request_id="q3", campaign_id="c1", customer_id="cust-3")
    assert status == 201, grant
    good.append(grant["grant_id"])

    worker = LedgerWorker(redis, pool, keys, block_ms=20)
    run = asyncio.create_task(worker.run())
    try:

        async def settled() -> bool:
            if run.done():
                return True  # the worker died: asserted below
            written = await pool.fetchval(
                "SELECT count(*) FROM grants WHERE grant_id = ANY($1)", good
            )
            return written == len(good) and await redis.xlen(keys.outbox_dead) == 3

        await until(settled, what="the good grants written and the bad ones dead-lettered")
        assert not run.done(), f"the ledger worker stopped: {run.exception()!r}"
    finally:
        worker.stop()
        await asyncio.wait_for(run, 15)

    rows = await pool.fetch("SELECT grant_id, status FROM grants ORDER BY grant_id")
    assert [(r["grant_id"], r["status"]) for r in rows] == [(g, "fulfilled") for g in sorted(good)]
    dead = {f["outbox_id"]: f for _id, f in await redis.xrange(keys.outbox_dead)}
    assert set(dead) == {too_costly, numeric_customer, fractional_cost}
    for outbox_id, why in (
        (too_costly, "bigint"),
        (numeric_customer, "expected a string"),
        (fractional_cost, "expected an integer"),
    ):
        assert dead[outbox_id]["error"].startswith("unreadable event"), dead[outbox_id]
        assert why in dead[outbox_id]["error"], dead[outbox_id]
        assert "g" in dead[outbox_id]  # kept as it came, for whoever redrives it
    assert (await redis.xpending(keys.outbox, LEDGER_GROUP))["pending"] == 0
