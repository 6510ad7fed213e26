"""A hot campaign split into stock parts (inventory/stock_parts.py): whatever the parts, the
moves between them and the crashes in a move, a campaign grants exactly its stock (or budget),
no more, once per customer's limit, and the ledger sees the campaign, never its parts."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import orjson
import pytest
from redis.crc import key_slot

from quanyi.inventory.stock_parts import StockParts, read_parts, sums
from quanyi.issuance.api import LIFECYCLE
from quanyi.issuance.lifecycle import grant_from_event
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import Keys, part_ids, part_of
from quanyi.stores.scripts import Scripts, run_script
from tests.support.clients import grant_view
from tests.support.factories import reward

pytestmark = pytest.mark.usefixtures("signed_in")


async def _split(api: Any, campaign_id: str = "hot", parts: int = 4, **fields: Any) -> None:
    """Right `coffee` (unit cost 100, no vendor) and approved campaign `campaign_id` of reward
    r1 (limit 1 unless told), split into `parts`."""
    stock = fields.pop("stock", 100)
    limit = fields.pop("per_customer_limit", 1)
    await api.create_right()
    await api.create_campaign(
        campaign_id,
        [reward("r1", "coffee", stock=stock, per_customer_limit=limit)],
        stock_parts=parts,
        **fields,
    )


async def _claim_all(
    api: Any, campaign_id: str, customers: list[str], tag: str = "q"
) -> list[tuple[int, Any]]:
    """One claim per customer, all at once (100 in flight at most)."""
    sem = asyncio.Semaphore(100)

    async def one(customer: str) -> tuple[int, Any]:
        async with sem:
            return await api.claim(
                request_id=f"{tag}-{customer}", campaign_id=campaign_id, customer_id=customer
            )

    return list(await asyncio.gather(*(one(c) for c in customers)))


def _granted(results: list[tuple[int, Any]]) -> list[dict[str, Any]]:
    return [body for status, body in results if status == 201]


def _refusals(results: list[tuple[int, Any]]) -> set[tuple[int, str]]:
    return {(s, b["error"]["code"]) for s, b in results if s != 201}


async def _parts(redis: Any, keys: Keys, campaign_id: str, parts: int) -> dict[str, dict]:
    """part id -> (stock, granted) of reward r1 and the moves it records."""
    hashes = await read_parts(redis, keys, campaign_id, parts)
    return {
        pid: {
            "stock": int(h["r:r1:stock"]),
            "granted": int(h.get("r:r1:granted") or 0),
            "moves": sorted(n for n in h if n.startswith("mv:")),
        }
        for pid, h in zip(part_ids(campaign_id, parts), hashes, strict=True)
    }


def _in_part(campaign_id: str, parts: int, j: int, n: int, first: int = 0) -> list[str]:
    """`n` customer ids whose claims go to part j."""
    pid = part_ids(campaign_id, parts)[j]
    found: list[str] = []
    i = first
    while len(found) < n:
        if part_of(campaign_id, parts, f"cust-{i}") == pid:
            found.append(f"cust-{i}")
        i += 1
    return found


async def _assert_stock_kept(redis: Any, keys: Keys, campaign_id: str, parts: int, stock: int):
    """Every part within its stock, and the parts (with open moves) holding the whole stock."""
    seen = await _parts(redis, keys, campaign_id, parts)
    _granted_sum, _spent, moving = await sums(redis, keys, campaign_id, parts, ["r1"])
    assert all(p["granted"] <= p["stock"] for p in seen.values()), seen
    assert sum(p["stock"] for p in seen.values()) + moving["r1"] == stock, (seen, moving)
    return seen


@pytest.mark.cluster_too
async def test_a_split_campaign_grants_exactly_its_stock_to_a_crowd(api, redis, keys, pool):
    """Stock 100 in 4 parts, 1,000 customers at once: 100 grants, 900 out_of_stock; the parts'
    counters add up to it, and the ledger holds 100 grants of the campaign, one per customer."""
    await _split(api, "hot", 4, stock=100)
    results = await _claim_all(api, "hot", [f"cust-{i}" for i in range(1000)])
    granted = _granted(results)
    assert len(granted) == 100
    assert _refusals(results) == {(409, "out_of_stock")}
    assert {g["campaign_id"] for g in granted} == {"hot"}
    seen = await _assert_stock_kept(redis, keys, "hot", 4, 100)
    assert sum(p["granted"] for p in seen.values()) == 100
    assert await LedgerWorker(redis, pool, keys).drain() == 100
    rows = await pool.fetch("SELECT campaign_id, customer_id FROM grants")
    assert {r["campaign_id"] for r in rows} == {"hot"}
    assert len(rows) == len({r["customer_id"] for r in rows}) == 100
    assert {r["customer_id"] for r in rows} == {g["customer_id"] for g in granted}


def test_the_parts_of_a_campaign_are_on_as_many_shards_each_in_its_own_slot() -> None:
    for shards in (3, 8):
        keys = Keys("qy", shards=shards)
        for campaign_id in ("hot", "c1", "sale-2026"):
            ids = part_ids(campaign_id, 3)
            assert ids == [campaign_id, f"{campaign_id}~1", f"{campaign_id}~2"]
            first = keys.of(campaign_id).shard
            assert [keys.of(p).shard for p in ids] == [(first + j) % shards for j in range(3)]
            slots = set()
            for pid in ids:
                shard = keys.of(pid)
                slot = key_slot(shard.outbox.encode())
                for key in (
                    keys.campaign(pid),
                    keys.customer_totals(pid, 0),
                    keys.grant_states(pid),
                    shard.idempotency("app", "q1")[0],
                ):
                    assert key_slot(key.encode()) == slot, key
                slots.add(slot)
            assert len(slots) == 3
    # One shard: every part in it.
    assert {Keys("qy").of(p).shard for p in part_ids("hot", 3)} == {0}


@pytest.mark.cluster_only("parts on several masters need a cluster")
async def test_on_a_cluster_a_campaigns_parts_are_held_by_different_masters(
    api, redis, keys, redis_mode
):
    """Three consecutive shards are not always on three masters (8 shards over 3): the test
    takes a campaign whose three parts are, and finds each part's hash on its own master."""

    def masters(campaign_id: str) -> list[str]:
        return [redis.get_node_from_key(keys.campaign(p)).name for p in part_ids(campaign_id, 3)]

    campaign_id = next(c for c in (f"hot{i}" for i in range(50)) if len(set(masters(c))) == 3)
    await _split(api, campaign_id, 3, stock=30)
    assert len({keys.of(p).shard for p in part_ids(campaign_id, 3)}) == 3
    for pid, node_name in zip(part_ids(campaign_id, 3), masters(campaign_id), strict=True):
        node = redis.get_node(node_name=node_name)
        held = await redis.execute_command(
            "HGET", keys.campaign(pid), "r:r1:stock", target_nodes=node
        )
        assert int(held) == 10, pid
    results = await _claim_all(api, campaign_id, [f"cust-{i}" for i in range(60)])
    assert len(_granted(results)) == 30


@pytest.mark.cluster_too
async def test_one_customer_retrying_at_once_gets_one_grant_and_its_replay(api):
    """Limit 1: 20 claims of one customer with 20 request ids at once, one grant; its request
    id sent again replays that grant."""
    await _split(api, "hot", 4, stock=100)
    results = await asyncio.gather(
        *(api.claim(request_id=f"r{i}", campaign_id="hot", customer_id="cust-1") for i in range(20))
    )
    granted = _granted(list(results))
    assert len(granted) == 1, results
    assert _refusals(list(results)) == {(409, "limit_reached")}
    winner = granted[0]
    request_id = f"r{[b for _s, b in results].index(winner)}"
    status, again = await api.claim(request_id=request_id, campaign_id="hot", customer_id="cust-1")
    assert status == 200, again
    assert (again["grant_id"], again["replayed"]) == (winner["grant_id"], True)


@pytest.mark.cluster_too
@pytest.mark.parametrize(
    ("coffees", "crowd"),
    [(37, "everyone"), (40, "one part")],
    ids=["shares-not-whole-coffees", "all-claims-in-one-part"],
)
async def test_a_split_budget_grants_exactly_what_it_pays_for(api, redis, keys, coffees, crowd):
    """Budget for exactly `coffees` coffees (unit cost 100), stock 100 in 4 parts, 300
    customers (of every part, or all of part 0, which must take budget from the others):
    `coffees` grants, then budget_exhausted; the parts' spend adds up to the budget."""
    await _split(api, "hot", 4, stock=100, budget=coffees * 100)
    customers = (
        [f"cust-{i}" for i in range(300)] if crowd == "everyone" else _in_part("hot", 4, 0, 300)
    )
    results = await _claim_all(api, "hot", customers)
    granted, spent, _moving = await sums(redis, keys, "hot", 4, ["r1"])
    hashes = await read_parts(redis, keys, "hot", 4)
    left = [int(h["budget"]) - int(h.get("spent") or 0) for h in hashes]
    assert (len(_granted(results)), spent) == (coffees, coffees * 100), left
    assert granted["r1"] == coffees
    assert _refusals(results) == {(409, "budget_exhausted")}
    assert sum(int(h["budget"]) for h in hashes) == coffees * 100
    assert all(x >= 0 for x in left), left


@pytest.mark.cluster_too
async def test_a_move_a_crash_stranded_sells_nothing_twice_and_is_completed(api, redis, keys):
    """Stock 20 in 2 parts; take_stock moves 5 out of part 0 for part 1 and the process dies
    before give_stock: the 5 are in no part, claims sell within the rest; complete_moves
    finishes it once, and then the campaign sells exactly its 20."""
    await _split(api, "hot", 2, stock=20)
    scripts = Scripts(redis)
    donor, receiver = part_ids("hot", 2)
    taken = await run_script(
        redis,
        scripts.take_stock,
        [keys.campaign(donor), keys.of(donor).store_ready],
        ["r1", "m1", receiver, "stock"],
    )
    assert [int(x) for x in taken] == [5, 0]
    seen = await _assert_stock_kept(redis, keys, "hot", 2, 20)
    assert (seen[donor]["stock"], seen[donor]["moves"], seen[receiver]["stock"]) == (
        5,
        ["mv:m1"],
        10,
    )
    # Customers of part 1 alone, within what it holds: no refill, so the move stays open.
    results = await _claim_all(api, "hot", _in_part("hot", 2, 1, 4))
    assert len(_granted(results)) == 4
    await _assert_stock_kept(redis, keys, "hot", 2, 20)
    parts = StockParts(redis, keys, scripts)
    assert await parts.complete_moves("hot", 2) == 1
    assert await parts.complete_moves("hot", 2) == 0
    seen = await _assert_stock_kept(redis, keys, "hot", 2, 20)
    assert (seen[donor]["stock"], seen[receiver]["stock"]) == (5, 15)
    assert all(p["moves"] == [] for p in seen.values())
    results = await _claim_all(api, "hot", [f"cust-{i}" for i in range(100)], tag="late")
    assert len(_granted(results)) == 16
    assert _refusals(results) >= {(409, "out_of_stock")}
    seen = await _assert_stock_kept(redis, keys, "hot", 2, 20)
    assert sum(p["granted"] for p in seen.values()) == 20


@pytest.mark.cluster_too
async def test_a_move_given_but_not_closed_before_a_crash_adds_nothing_again(api, redis, keys):
    """The crash after give_stock, before the donor forgets the move: completing it again (by
    complete_moves, or by a refill's) adds nothing, and claims sell exactly the stock."""
    await _split(api, "hot", 3, stock=30)
    scripts = Scripts(redis)
    donor, receiver, _third = part_ids("hot", 3)
    move = secrets.token_hex(8)
    stock, budget = await run_script(
        redis,
        scripts.take_stock,
        [keys.campaign(donor), keys.of(donor).store_ready],
        ["r1", move, receiver, "stock"],
    )
    added = await run_script(
        redis,
        scripts.give_stock,
        [keys.campaign(receiver), keys.of(receiver).store_ready],
        ["r1", move, stock, budget],
    )
    assert (int(stock), int(added)) == (5, 1)
    # Counted in the receiver and still recorded in the donor: sums() sees it as moving.
    seen = await _parts(redis, keys, "hot", 3)
    assert sum(p["stock"] for p in seen.values()) == 30
    assert await StockParts(redis, keys, scripts).complete_moves("hot", 3) == 1
    await _assert_stock_kept(redis, keys, "hot", 3, 30)
    results = await _claim_all(api, "hot", [f"cust-{i}" for i in range(200)])
    assert len(_granted(results)) == 30
    assert _refusals(results) == {(409, "out_of_stock")}


@pytest.mark.cluster_too
async def test_a_revoked_grant_gives_its_stock_back_in_its_customers_part(api, redis, keys, pool):
    """Sold out (stock 8 in 2 parts); staff revoke one grant: its part's granted goes down by
    one, and a new customer of either part gets the unit again, no more."""
    await _split(api, "hot", 2, stock=8)
    results = await _claim_all(api, "hot", [f"cust-{i}" for i in range(40)])
    granted = _granted(results)
    assert len(granted) == 8
    await LedgerWorker(redis, pool, keys).drain()
    before = await _assert_stock_kept(redis, keys, "hot", 2, 8)
    victim = granted[0]
    its_part = part_of("hot", 2, victim["customer_id"])
    status, body = await api.admin(
        "marketer", "POST", f"/admin/v1/grants/{victim['grant_id']}/revoke", {"reason": "fraud"}
    )
    assert (status, body["status"]) == (200, "revoked"), body
    after = await _assert_stock_kept(redis, keys, "hot", 2, 8)
    assert after[its_part]["granted"] == before[its_part]["granted"] - 1
    other = next(p for p in after if p != its_part)
    assert after[other]["granted"] == before[other]["granted"]
    # A customer of the other part: the unit moves over to it.
    late = _in_part("hot", 2, part_ids("hot", 2).index(other), 1, first=1000)
    results = await _claim_all(api, "hot", late + [f"cust-{i}" for i in range(2000, 2010)])
    assert len(_granted(results)) == 1
    assert _refusals(results) == {(409, "out_of_stock")}
    seen = await _assert_stock_kept(redis, keys, "hot", 2, 8)
    assert sum(p["granted"] for p in seen.values()) == 8


@pytest.mark.cluster_too
async def test_a_grant_of_a_split_campaign_without_a_vendor_is_fulfilled_and_found(
    api, redis, keys, pool
):
    """A right no vendor fulfils: born fulfilled in whichever part, and GET /v1/grants/{id}
    finds it, before and after the ledger has it."""
    await _split(api, "hot", 3, stock=30)
    customers = [_in_part("hot", 3, j, 1)[0] for j in range(3)]
    results = await _claim_all(api, "hot", customers)
    granted = _granted(results)
    assert len(granted) == 3 and {g["status"] for g in granted} == {"fulfilled"}
    for grant in granted:
        view = await grant_view(api, grant["grant_id"])
        assert (view["campaign_id"], view["customer_id"], view["status"]) == (
            "hot",
            grant["customer_id"],
            "fulfilled",
        )
    await LedgerWorker(redis, pool, keys).drain()
    for grant in granted:
        view = await grant_view(api, grant["grant_id"])
        assert (view["status"], view["persisted"]) == ("fulfilled", True)


@pytest.mark.cluster_too
async def test_a_redrive_in_a_dry_part_takes_the_stock_another_part_has(api, redis, keys):
    """Stock 2 in 2 parts. A grant of part 0 fails (its unit comes back), another customer of
    part 0 takes that unit, and the redrive of the failed grant, short in part 0, is refilled
    from part 1: applied, and the campaign holds exactly its 2 grants; a second failed grant's
    redrive with nothing left anywhere is refused out_of_stock."""
    await _split(api, "hot", 2, stock=2)
    lifecycle = api.client.server.app[LIFECYCLE]
    first, second, third = _in_part("hot", 2, 0, 3)
    status, granted = await api.claim(request_id="q1", campaign_id="hot", customer_id=first)
    assert status == 201, granted
    shard = keys.of(part_of("hot", 2, first))
    event = orjson.loads(await redis.hget(shard.pending, granted["grant_id"]))
    failed = await lifecycle.move(
        granted["grant_id"], "failed", "test", {}, grant=grant_from_event(event)
    )
    assert failed.applied
    status, _ = await api.claim(request_id="q2", campaign_id="hot", customer_id=second)
    assert status == 201
    redrive = await lifecycle.move(
        granted["grant_id"], "redriven", "test", {}, grant=grant_from_event(event)
    )
    assert redrive.applied, redrive
    granted_now, _spent, moving = await sums(redis, keys, "hot", 2, ["r1"])
    assert granted_now == {"r1": 2} and moving == {"r1": 0}
    # Nothing left in either part: a failure's unit taken again, and its redrive refused.
    status, other = await api.claim(request_id="q3", campaign_id="hot", customer_id=third)
    assert status == 409 and other["error"]["code"] == "out_of_stock"
    event = orjson.loads(await redis.hget(shard.pending, granted["grant_id"]))
    await lifecycle.move(granted["grant_id"], "failed", "test", {}, grant=grant_from_event(event))
    status, _ = await api.claim(request_id="q4", campaign_id="hot", customer_id=third)
    assert status == 201
    again = await lifecycle.move(
        granted["grant_id"], "redriven", "test", {}, grant=grant_from_event(event)
    )
    assert (again.outcome, again.before) == ("refused", "out_of_stock")
    granted_now, _spent, _moving = await sums(redis, keys, "hot", 2, ["r1"])
    assert granted_now == {"r1": 2}
