"""Card events toward spending goals: counted once, granted once when the goal is reached,
taken back by a reversal (with or without a claw back), held when the reversal comes first."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from quanyi.core.settings import Settings
from quanyi.ledger.reconcile import Reconcile, drifted
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import Api, grant_view, stock_granted
from tests.support.events import add_card_channel, event, goal_campaign, send
from tests.support.factories import register_vendor

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]


@pytest.fixture
async def core(api: Api, pool: asyncpg.Pool, settings: Settings) -> str:
    """The card system's channel: events only."""
    return await add_card_channel(api, pool, settings)


async def test_the_fifth_qualifying_purchase_grants_once(api: Api, core: str) -> None:
    await goal_campaign(api)
    results = await send(api, *(event(api, f"tx-{i}") for i in range(4)))
    assert [r["status"] for r in results] == ["accepted"] * 4
    assert not any("granted" in r for r in results)
    assert await stock_granted(api, "g1") == 0

    fifth = (await send(api, event(api, "tx-4")))[0]
    assert fifth["status"] == "accepted" and len(fifth["granted"]) == 1
    sixth = (await send(api, event(api, "tx-5")))[0]
    assert "granted" not in sixth
    again = await send(api, event(api, "tx-4"), event(api, "tx-0"))
    assert [r["status"] for r in again] == ["duplicate", "duplicate"]
    assert await stock_granted(api, "g1") == 1


async def test_reversal_with_claw_back_revokes_the_grant(api: Api, core: str) -> None:
    await goal_campaign(api, claw_back=True)
    results = await send(api, *(event(api, f"tx-{i}") for i in range(5)))
    granted = results[-1]["granted"][0]
    refund = (await send(api, event(api, "rf-1", reversal_of="tx-2")))[0]
    assert refund["status"] == "accepted" and refund["revoked"] == [granted]
    assert await stock_granted(api, "g1") == 0
    # Reaching the goal again grants again.
    regained = (await send(api, event(api, "tx-9")))[0]
    assert len(regained["granted"]) == 1 and regained["granted"][0] != granted
    assert (await send(api, event(api, "rf-1", reversal_of="tx-2")))[0]["status"] == "duplicate"


async def test_reversal_before_its_original_cancels_it(api: Api, core: str) -> None:
    await goal_campaign(api)
    held = (await send(api, event(api, "rf-1", reversal_of="tx-0")))[0]
    assert held == {"event_id": "rf-1", "status": "accepted", "held": True}
    await send(api, event(api, "tx-0"), *(event(api, f"tx-{i}") for i in range(1, 5)))
    # tx-0 counted for nothing: four purchases, no grant yet.
    assert await stock_granted(api, "g1") == 0
    assert (await send(api, event(api, "tx-0")))[0]["status"] == "duplicate"
    assert len((await send(api, event(api, "tx-5")))[0]["granted"]) == 1


async def test_bad_events_are_rejected_in_place(api: Api, core: str) -> None:
    await goal_campaign(api)
    results = await send(
        api,
        event(api, "tx-0"),
        {**event(api, "tx-1"), "amount": -5},
        {**event(api, "tx-2"), "customer_id": "4111111111111111"},
        "not an event",
    )
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected", "rejected"]
    assert "4111111111111111" not in str(results)


async def test_reconcile_finds_goal_grants_in_agreement(
    api: Api, core: str, pool: asyncpg.Pool, redis, keys, settings: Settings, clock
) -> None:
    """A goal grant is made once a period by its progress, under no channel's request id: the
    ledger holding it with no idempotency entry in Redis is no drift."""
    await goal_campaign(api, claw_back=True)
    results = await send(api, *(event(api, f"tx-{i}") for i in range(5)))
    assert len(results[-1]["granted"]) == 1
    await send(api, event(api, "rf-1", reversal_of="tx-0"), event(api, "tx-5"))
    await LedgerWorker(redis, pool, keys).drain()
    assert drifted(await Reconcile(pool, redis, keys, settings, clock).run()) == []


async def test_a_goal_grant_of_a_right_with_no_vendor_is_born_fulfilled(
    api: Api, core: str, pool: asyncpg.Pool, redis, keys, start_sim, key_pairs, our_key_file
) -> None:
    """As a claim's: its outbox entry carries its fulfilment, the channel sees it fulfilled at
    once, and the ledger writes it fulfilled with no fulfilment worker running. A goal grant
    of a right with a vendor still waits for the vendor."""
    sim = await start_sim()
    await register_vendor(api, "sim", sim, key_pairs, our_key_file)
    await api.create_right("gift", vendor_id="sim")
    await goal_campaign(api, "g1")  # lounge: no vendor
    await goal_campaign(api, "g2", right_id="gift", new_right=False)
    results = await send(api, *(event(api, f"tx-{i}") for i in range(5)))
    assert len(results[-1]["granted"]) == 2
    grants = {
        e["campaign_id"]: e
        for shard in keys.shards
        for _id, fields in await redis.xrange(shard.outbox)
        if "g" in fields
        for e in [orjson.loads(fields["g"])]
    }
    internal, vendor = grants["g1"], grants["g2"]
    assert internal["fulfilled_at_ms"] == internal["granted_at_ms"]
    assert "fulfilled_at_ms" not in vendor
    assert (await grant_view(api, internal["grant_id"]))["status"] == "fulfilled"
    assert (await grant_view(api, vendor["grant_id"]))["status"] == "granted"

    await LedgerWorker(redis, pool, keys).drain()
    rows = await pool.fetch(
        "SELECT g.campaign_id, g.status, e.event, e.actor FROM grants g"
        " LEFT JOIN grant_events e USING (grant_id) ORDER BY g.campaign_id"
    )
    assert [tuple(r) for r in rows] == [
        ("g1", "fulfilled", "fulfilled", "vendor:internal"),
        ("g2", "granted", None, None),
    ]
    assert (await grant_view(api, internal["grant_id"]))["status"] == "fulfilled"
