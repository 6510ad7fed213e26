"""Revisions of the stock and budget of a campaign split into stock parts
(campaigns/revise_parts.py): a raise is shared out over the parts, a cut taken from what they
have left, never below what they granted; the parts always add up to the campaign's figure, a
raise the approval did not give reaches the parts with the scheduler, once, and a rebuild from
the ledger does not count it twice."""

from __future__ import annotations

import pytest

from quanyi.campaigns.revise_parts import given_back_on_failure, transaction_keeping_cuts
from quanyi.inventory.stock_parts import CUT_FIELD, RECEIVED_FIELD, Cut, StockParts
from quanyi.ledger.rebuild import Rebuild
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import part_ids, part_share
from quanyi.stores.scripts import Scripts
from tests.support.clients import assert_error
from tests.test_stock_parts_campaigns import (
    PARTS,
    STOCK,
    claim_all,
    in_part,
    parts,
    revise,
    scheduler_of,
    split,
    view,
)

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]
IDS = part_ids("c1", PARTS)


async def stocks(redis, keys, field: str = "r:r1:stock") -> list[int]:
    """Each part's figure, part 0 first."""
    return [int(h.get(field) or 0) for h in (await parts(redis, keys)).values()]


async def parts_to_give(pool) -> list:
    return [
        r["parts_to_give"] for r in await pool.fetch("SELECT parts_to_give FROM campaign_revisions")
    ]


def granted_of(results) -> int:
    return sum(1 for status, _ in results if status == 201)


async def sold_out(api, left: int) -> bool:
    """Whether 4 × `left` customers at once, then `left` + 10 one at a time, get exactly `left`
    grants: never more at once (a claim may be refused while the stock it needs is moving
    between parts), and the rest one at a time."""
    at_once = granted_of(await claim_all(api, [f"crowd-{i}" for i in range(4 * left)]))
    assert at_once <= left
    late = [granted_of(await claim_all(api, [f"late-{i}"])) for i in range(left + 10)]
    return at_once + sum(late) == left


async def test_more_stock_is_shared_over_the_parts_and_sold_exactly(api, pool, redis, keys):
    await split(api)
    first = in_part(0, 5)
    assert granted_of(await claim_all(api, first)) == 5
    before = await stocks(redis, keys)

    status, body = await revise(api, {"rewards": [{"id": "r1", "stock": 150}]})
    assert status == 200 and body["status"] == "applied", body
    after = await stocks(redis, keys)
    assert [a - b for a, b in zip(after, before, strict=True)] == [
        part_share(50, PARTS, j) for j in range(PARTS)
    ]
    assert sum(after) == 150
    assert await parts_to_give(pool) == [None]
    shown = (await view(api))["rewards"][0]
    assert (shown["stock"], shown["granted"], shown["remaining"]) == (150, 5, 145)
    # 580 customers at once, then one at a time: exactly what the new stock leaves.
    assert await sold_out(api, 145)
    assert sum(await stocks(redis, keys, "r:r1:granted")) == 150


async def test_less_stock_is_cut_from_what_the_parts_have_left(api, pool, redis, keys):
    await split(api)  # 25 a part
    assert granted_of(await claim_all(api, in_part(0, 20))) == 20

    status, body = await revise(api, {"rewards": [{"id": "r1", "stock": 30}]})
    assert status == 200 and body["status"] == "applied", body
    held = await parts(redis, keys)
    assert sum(int(h["r:r1:stock"]) for h in held.values()) == 30
    assert all(int(h["r:r1:stock"]) >= int(h.get("r:r1:granted") or 0) for h in held.values())
    assert (await view(api))["rewards"][0]["stock"] == 30
    assert await sold_out(api, 10)
    await LedgerWorker(redis, pool, keys).drain()
    assert await pool.fetchval("SELECT count(*) FROM grants WHERE campaign_id = 'c1'") == 30


async def test_a_cut_below_what_the_parts_granted_is_refused_and_changes_nothing(
    api, pool, redis, keys
):
    await split(api)
    assert granted_of(await claim_all(api, in_part(0, 20) + in_part(1, 2))) == 22
    before = await parts(redis, keys)

    status, body = await revise(api, {"rewards": [{"id": "r1", "stock": 21}]})
    error = assert_error(status, body, 409, "stock_below_granted")
    assert (error["reward_id"], error["granted"]) == ("r1", 22)
    after = await parts(redis, keys)
    # What the cut took on its way was given back (under markers of its own): every figure
    # as it was.
    assert {
        p: {k: v for k, v in h.items() if not k.startswith(RECEIVED_FIELD)}
        for p, h in after.items()
    } == before
    assert (await view(api))["rewards"][0]["stock"] == STOCK
    assert await pool.fetchval("SELECT status FROM campaign_revisions") == "pending"


async def test_the_budget_is_raised_and_cut_over_the_parts(api, redis, keys):
    await split(api, budget=10_000)  # 100 grants of 100 fen
    assert granted_of(await claim_all(api, in_part(2, 4))) == 4

    status, body = await revise(api, {"budget": 30_000})
    assert status == 200 and body["status"] == "applied", body
    assert sum(await stocks(redis, keys, "budget")) == 30_000
    status, body = await revise(api, {"budget": 1_000})
    assert status == 200 and body["status"] == "applied", body
    assert sum(await stocks(redis, keys, "budget")) == 1_000
    status, body = await revise(api, {"budget": 300})
    error = assert_error(status, body, 409, "budget_below_spent")
    assert error["spent"] == 400
    assert sum(await stocks(redis, keys, "budget")) == 1_000
    # What the budget leaves: 6 more grants, whichever parts they come to.
    assert await sold_out(api, 6)


async def test_a_raise_a_part_missed_is_given_by_the_scheduler_once(
    api, pool, redis, keys, settings, clock
):
    await split(api)
    status, body = await revise(api, {"rewards": [{"id": "r1", "stock": 140}]})
    assert status == 200, body
    # As if the approval's give had stopped before part 2: its share neither added nor marked.
    share = part_share(40, PARTS, 2)
    await redis.hincrby(keys.campaign(IDS[2]), "r:r1:stock", -share)
    await redis.hdel(keys.campaign(IDS[2]), f"{RECEIVED_FIELD}rev{body['id']}:r1")
    await pool.execute("UPDATE campaign_revisions SET parts_to_give = '[[\"r1\", 40]]'")
    assert sum(await stocks(redis, keys)) == 140 - share  # sells less meanwhile, never more

    scheduler = scheduler_of(settings, clock, keys, redis, pool)
    assert (await scheduler.tick()).given == ["c1"]
    assert sum(await stocks(redis, keys)) == 140
    assert await parts_to_give(pool) == [None]
    # Given again (a second process, a tick after a crash): nothing more.
    await pool.execute("UPDATE campaign_revisions SET parts_to_give = '[[\"r1\", 40]]'")
    assert (await scheduler.tick()).given == ["c1"]
    assert sum(await stocks(redis, keys)) == 140


async def test_a_rebuild_counts_a_raise_still_to_give_once(api, pool, redis, keys, settings, clock):
    await split(api)
    assert granted_of(await claim_all(api, in_part(1, 3))) == 3
    status, body = await revise(api, {"rewards": [{"id": "r1", "stock": 140}]})
    assert status == 200, body
    await LedgerWorker(redis, pool, keys).drain()
    await pool.execute("UPDATE campaign_revisions SET parts_to_give = '[[\"r1\", 40]]'")

    await redis.flushdb()
    await Rebuild(pool, redis, keys, settings, clock).run()
    assert sum(await stocks(redis, keys)) == 140  # the campaign's figure, the raise in it
    assert await parts_to_give(pool) == [None]
    assert (await scheduler_of(settings, clock, keys, redis, pool).tick()).given == []
    assert sum(await stocks(redis, keys)) == 140


async def test_a_cut_whose_answer_was_lost_is_given_back_from_the_parts_record(api, redis, keys):
    """cut_stock.lua ran, its answer never came: the part's own record says what to give back."""
    await split(api)
    store = StockParts(redis, keys, Scripts(redis))
    scripts = Scripts(redis)
    shard = keys.of(IDS[1])
    taken = await scripts.cut_stock(
        keys=[keys.campaign(IDS[1]), shard.store_ready], args=["r1", 7, "lost"]
    )
    assert taken == 7 and sum(await stocks(redis, keys)) == STOCK - 7
    await store.give_back(Cut("lost", "r1", [IDS[1]]))
    assert sum(await stocks(redis, keys)) == STOCK
    assert CUT_FIELD + "lost" not in (await parts(redis, keys))[IDS[1]]
    await store.give_back(Cut("lost", "r1", [IDS[1]]))  # again: nothing more
    assert sum(await stocks(redis, keys)) == STOCK


@pytest.mark.parametrize("fails", ["before the commit", "after the commit"])
async def test_cuts_are_given_back_only_if_the_revision_did_not_commit(
    api, pool, redis, keys, fails
):
    await split(api)
    store = StockParts(redis, keys, Scripts(redis))
    with pytest.raises(RuntimeError, match=fails):
        async with given_back_on_failure(store, "c1") as taken:
            async with pool.acquire() as conn, transaction_keeping_cuts(conn, store, taken):
                await conn.execute("UPDATE rewards SET stock = 70 WHERE campaign_id = 'c1'")
                cut = Cut("c-1", "r1")
                taken.append(cut)
                assert await store.cut("c1", PARTS, cut, 30)
                if fails == "before the commit":
                    raise RuntimeError(fails)
            raise RuntimeError(fails)
    stock = await pool.fetchval("SELECT stock FROM rewards WHERE campaign_id = 'c1'")
    # The parts hold what PostgreSQL holds, whichever side of the commit it failed on.
    assert (
        sum(await stocks(redis, keys)) == stock == (STOCK if fails == "before the commit" else 70)
    )
    assert not [
        f for h in (await parts(redis, keys)).values() for f in h if f.startswith(CUT_FIELD)
    ]


async def test_a_cut_while_a_part_has_lost_its_data_is_a_503_and_changes_nothing(
    api, pool, redis, keys
):
    await split(api)
    before = await stocks(redis, keys)
    await redis.delete(keys.of(IDS[0]).store_ready)
    try:
        status, body = await revise(api, {"rewards": [{"id": "r1", "stock": 10}]})
    finally:
        await redis.set(keys.of(IDS[0]).store_ready, "restored by the test")
    assert_error(status, body, 503, "unavailable")
    assert await stocks(redis, keys) == before
    assert (await view(api))["rewards"][0]["stock"] == STOCK
