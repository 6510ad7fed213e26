"""A split campaign (inventory/stock_parts.py) whose parts Redis lost in part, or left behind: a
publication gives a lost part nothing left to sell while the live parts keep theirs, a shard
without its store-ready marker neither gives nor takes stock, a rebuild closes the moves left
open, and the scheduler's watch publishes again parts left on two versions. Whatever happens,
the campaign grants no more than its stock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from quanyi.inventory.stock_parts import MOVE_FIELD, RECEIVED_FIELD, StockParts, read_parts, sums
from quanyi.ledger.rebuild import Rebuild
from quanyi.ledger.worker import LedgerWorker
from quanyi.runtime import Stores
from quanyi.stores.keys import Keys, part_ids, part_of
from quanyi.stores.scripts import Scripts, run_script
from tests.support.clients import error_code
from tests.support.factories import act, reward

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]

CAMPAIGN, PARTS, STOCK = "hot", 4, 40
IDS = part_ids(CAMPAIGN, PARTS)


async def create_hot(api: Any) -> None:
    """Right `coffee` (unit cost 100) and approved campaign `hot`: r1, stock 40, one per
    customer, split into 4 parts of 10."""
    await api.create_right()
    await api.create_campaign(CAMPAIGN, [reward("r1", "coffee", stock=STOCK)], stock_parts=PARTS)


def customers_of(part: str, n: int, tag: str) -> list[str]:
    """`n` customer ids whose claims are decided in `part`."""
    found: list[str] = []
    i = 0
    while len(found) < n:
        if part_of(CAMPAIGN, PARTS, f"{tag}-{i}") == part:
            found.append(f"{tag}-{i}")
        i += 1
    return found


async def claim_all(api: Any, customers: list[str], tag: str) -> list[int]:
    replies = await asyncio.gather(
        *(
            api.claim(request_id=f"{tag}-{c}", campaign_id=CAMPAIGN, customer_id=c)
            for c in customers
        )
    )
    return [status for status, _body in replies]


async def parts(redis: Redis, keys: Keys) -> dict[str, dict[str, str]]:
    return dict(zip(IDS, await read_parts(redis, keys, CAMPAIGN, PARTS), strict=True))


async def stocks(redis: Redis, keys: Keys) -> dict[str, int]:
    return {pid: int(h["r:r1:stock"]) for pid, h in (await parts(redis, keys)).items()}


async def granted_over_parts(redis: Redis, keys: Keys) -> int:
    return (await sums(redis, keys, CAMPAIGN, PARTS, ["r1"]))[0]["r1"]


async def take(redis: Redis, keys: Keys, donor: str, receiver: str, move: str) -> list[int]:
    """take_stock.lua alone: the first step of a move, as a refill runs it."""
    taken = await run_script(
        redis,
        Scripts(redis).take_stock,
        [keys.campaign(donor), keys.of(donor).store_ready],
        ["r1", move, receiver, "stock"],
    )
    return [int(x) for x in taken]


async def give(redis: Redis, keys: Keys, receiver: str, move: str, stock: int) -> int:
    """give_stock.lua alone: the second step, for a move taken before."""
    given = await run_script(
        redis,
        Scripts(redis).give_stock,
        [keys.campaign(receiver), keys.of(receiver).store_ready],
        ["r1", move, stock, 0],
    )
    return int(given)


@asynccontextmanager
async def marker_lost(redis: Redis, keys: Keys, part: str) -> AsyncIterator[None]:
    """The store-ready marker of the part's shard missing for the block; set back as it was."""
    marker = keys.of(part).store_ready
    value, ttl = await redis.get(marker), await redis.pttl(marker)
    assert value is not None
    await redis.delete(marker)
    try:
        yield
    finally:
        await redis.set(marker, value, px=ttl if ttl > 0 else None)


async def test_a_lost_part_is_published_with_nothing_left_to_sell(api, pool, redis, keys):
    """Part 1 sold 15 (taking stock from the others), then its hash is lost while the others
    live: a pause and a resume write it again with its 15 grants as its whole stock, the others
    keep theirs, and a crowd of every part never gets more than the stock in all."""
    await create_hot(api)
    crowd = customers_of("hot~1", 15, "crowd")
    few = [c for j, p in enumerate(IDS) if p != "hot~1" for c in customers_of(p, 2, f"few{j}")]
    assert await claim_all(api, crowd + few, "q") == [201] * 21
    before = await stocks(redis, keys)
    assert before["hot~1"] > 10 and sum(before.values()) == STOCK  # stock moved into part 1
    assert await LedgerWorker(redis, pool, keys).drain() == 21

    await redis.delete(keys.campaign("hot~1"))
    for action in ("pause", "resume"):
        status, body = await act(api, "marketer", CAMPAIGN, action)
        assert status == 200, body

    held = await parts(redis, keys)
    assert {h["state"] for h in held.values()} == {"active"}
    assert (held["hot~1"]["r:r1:stock"], held["hot~1"]["r:r1:granted"]) == ("15", "15")
    after = await stocks(redis, keys)
    assert {p: s for p, s in after.items() if p != "hot~1"} == {
        p: s for p, s in before.items() if p != "hot~1"
    }
    assert sum(after.values()) <= STOCK
    assert await granted_over_parts(redis, keys) == 21

    fresh = [c for j, p in enumerate(IDS) for c in customers_of(p, 20, f"fresh{j}")]
    statuses = await claim_all(api, fresh, "late")
    assert set(statuses) <= {201, 409}
    granted = await granted_over_parts(redis, keys)
    assert granted <= STOCK
    assert statuses.count(201) + 21 == granted
    final = await parts(redis, keys)
    assert all(int(h["r:r1:granted"]) <= int(h["r:r1:stock"]) for h in final.values()), final
    await LedgerWorker(redis, pool, keys).drain()
    ledger = await pool.fetchval(
        "SELECT count(*) FROM grants WHERE campaign_id = $1 AND status <> 'revoked'", CAMPAIGN
    )
    assert ledger == granted


async def test_a_shard_without_its_marker_neither_gives_nor_takes_stock(api, redis, keys):
    """take_stock.lua takes nothing from a donor whose shard lost its marker, give_stock.lua
    adds nothing to such a receiver, and complete_moves leaves the move recorded in the donor
    until the marker is back."""
    await create_hot(api)
    donor, receiver = "hot~2", "hot"
    unmoved = await parts(redis, keys)
    async with marker_lost(redis, keys, donor):
        assert await take(redis, keys, donor, receiver, "m1") == [0, 0]
        assert await parts(redis, keys) == unmoved

    taken, _budget = await take(redis, keys, donor, receiver, "m2")
    assert taken == 5  # half of the 10 the donor has left
    taken_from = await parts(redis, keys)
    moves = StockParts(redis, keys, Scripts(redis))
    async with marker_lost(redis, keys, receiver):
        assert await give(redis, keys, receiver, "m2", taken) == -1
        assert await parts(redis, keys) == taken_from
        assert await moves.complete_moves(CAMPAIGN, PARTS) == 0  # still open
        assert await parts(redis, keys) == taken_from
    held = taken_from[donor]
    assert held[MOVE_FIELD + "m2"] == f"{receiver}|r1|5|0"
    assert RECEIVED_FIELD + "m2" not in taken_from[receiver]
    assert (await sums(redis, keys, CAMPAIGN, PARTS, ["r1"]))[2] == {"r1": 5}
    assert sum((await stocks(redis, keys)).values()) == STOCK - 5

    # The marker back: the move is completed, once.
    assert await moves.complete_moves(CAMPAIGN, PARTS) == 1
    done = await parts(redis, keys)
    assert not [n for h in done.values() for n in h if n.startswith(MOVE_FIELD)]
    assert await stocks(redis, keys) == {"hot": 15, "hot~1": 10, "hot~2": 5, "hot~3": 10}
    assert await moves.complete_moves(CAMPAIGN, PARTS) == 0
    assert sum((await stocks(redis, keys)).values()) == STOCK


async def test_a_give_after_a_rebuild_adds_nothing(api, pool, redis, keys, settings, clock):
    """A process between take_stock and give_stock while `quanyi rebuild-redis` runs: the
    rebuild marks the open move received and writes the parts from the ledger, so the late give
    adds nothing, and the campaign still sells exactly its stock."""
    await create_hot(api)
    customers = [c for j, p in enumerate(IDS) for c in customers_of(p, 3, f"c{j}")]
    assert await claim_all(api, customers, "q") == [201] * 12
    assert await LedgerWorker(redis, pool, keys).drain() == 12
    donor, receiver = "hot~2", "hot"
    taken, _budget = await take(redis, keys, donor, receiver, "late")
    assert taken == 4  # half of the 7 the donor has left, rounded up

    await Rebuild(pool, redis, keys, settings, clock).run()
    rebuilt = await parts(redis, keys)
    assert MOVE_FIELD + "late" not in rebuilt[donor]
    assert RECEIVED_FIELD + "late" in rebuilt[receiver]
    assert sum((await stocks(redis, keys)).values()) == STOCK

    assert await give(redis, keys, receiver, "late", taken) == 0
    assert await parts(redis, keys) == rebuilt
    assert sum((await stocks(redis, keys)).values()) == STOCK
    statuses = await claim_all(api, [f"fresh-{i}" for i in range(60)], "late")
    assert (statuses.count(201), statuses.count(409)) == (STOCK - 12, 60 - (STOCK - 12))
    assert await granted_over_parts(redis, keys) == STOCK


async def test_parts_left_on_two_versions_are_published_again(
    api, pool, redis, keys, settings, clock
):
    """A publication that stopped half way left part 3 on another version: its claims are
    answered as a definition changing until the watch publishes the campaign again, and then
    every part holds PostgreSQL's version and the claim is granted."""
    await create_hot(api)
    status, shown = await api.admin("marketer", "GET", f"/admin/v1/campaigns/{CAMPAIGN}")
    assert status == 200, shown
    version = str(shown["version"])
    await redis.hset(keys.campaign("hot~3"), "ver", int(version) + 5)
    [customer] = customers_of("hot~3", 1, "v")
    status, body = await api.claim(request_id="v-1", campaign_id=CAMPAIGN, customer_id=customer)
    assert error_code(status, body) == (503, "unavailable"), body

    scheduler = Stores(settings, clock, keys, redis, pool, Scripts(redis)).scheduler()
    assert (await scheduler.tick()).healed == [CAMPAIGN]
    assert {h["ver"] for h in (await parts(redis, keys)).values()} == {version}
    status, body = await api.claim(request_id="v-2", campaign_id=CAMPAIGN, customer_id=customer)
    assert status == 201, body
    assert (await scheduler.tick()).healed == []
    assert sum((await stocks(redis, keys)).values()) == STOCK
