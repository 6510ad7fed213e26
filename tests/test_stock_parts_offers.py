"""Offers of a campaign split into stock parts, through the signed channel API on real Redis
and PostgreSQL: a customer's offer is judged by the part their claims go to (their limit, the
part's stock), and a part run dry by what the whole campaign has left, as a claim would take
stock or budget from the other parts (inventory/stock_parts.py refill)."""

from __future__ import annotations

import itertools

import pytest

from quanyi.stores.keys import part_ids, part_of
from tests.support.clients import Api
from tests.support.factories import reward
from tests.test_offers import offers

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]

PARTS = 4


def customers_of(part: str, n: int, parts: int = PARTS, campaign_id: str = "c1") -> list[str]:
    """`n` customer ids whose claims of the campaign go to `part`."""
    found = (f"cust-{i}" for i in itertools.count())
    return list(itertools.islice((c for c in found if part_of(campaign_id, parts, c) == part), n))


async def claim(api: Api, customer: str, request_id: str) -> None:
    status, body = await api.claim(request_id=request_id, campaign_id="c1", customer_id=customer)
    assert status == 201, body


async def part_figures(redis, keys, part: str, *fields: str) -> list[int]:
    return [int(v or 0) for v in await redis.hmget(keys.campaign(part), list(fields))]


async def test_a_split_campaign_is_offered_as_claimable(api):
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=8, per_customer_limit=2)], stock_parts=PARTS)

    for customer in [customers_of(p, 1)[0] for p in part_ids("c1", PARTS)]:
        (offer,) = await offers(api, customer)
        assert offer["campaign_id"] == "c1"
        assert offer["claimable"] is True
        assert offer["remaining_for_customer"] == 2


async def test_a_limit_reached_is_read_in_the_customers_part(api, redis, keys):
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=8, per_customer_limit=2)], stock_parts=PARTS)
    # Not part 0: a read of the campaign's own hash would not see this customer's claims.
    mine, other = part_ids("c1", PARTS)[2], part_ids("c1", PARTS)[1]
    (customer,) = customers_of(mine, 1)
    (someone,) = customers_of(other, 1)

    for i in range(2):
        await claim(api, customer, f"q{i}")
    assert await part_figures(redis, keys, mine, "r:r1:granted") == [2]
    assert await part_figures(redis, keys, "c1", "r:r1:granted") == [0]

    # The other part's customer first: the plan their read leaves must not serve this one's.
    (theirs,) = await offers(api, someone)
    assert theirs["claimable"] is True
    assert theirs["remaining_for_customer"] == 2
    (offer,) = await offers(api, customer)
    assert (offer["claimable"], offer["reason"]) == (False, "limit_reached")
    assert offer["remaining_for_customer"] == 0


async def test_a_dry_part_is_claimable_while_other_parts_have_stock(api, redis, keys):
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=8)], stock_parts=PARTS)
    dry = part_ids("c1", PARTS)[1]
    first, second, customer = customers_of(dry, 3)
    await claim(api, first, "q1")
    await claim(api, second, "q2")
    # The part's own share (8 / 4) is gone, the other parts still hold theirs.
    assert await part_figures(redis, keys, dry, "r:r1:stock", "r:r1:granted") == [2, 2]

    (offer,) = await offers(api, customer)
    assert offer["claimable"] is True
    assert offer["remaining_for_customer"] == 1
    await claim(api, customer, "q3")  # as the offer said: the claim refills the part


async def test_a_campaign_sold_out_in_every_part_is_out_of_stock(api, redis, keys):
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=8)], stock_parts=PARTS)
    # More buyers in part 1 than its share: their claims take stock from the other parts.
    buyers = customers_of(part_ids("c1", PARTS)[1], 5) + customers_of("c1", 3)
    last = part_ids("c1", PARTS)[3]
    (late,) = customers_of(last, 1)
    for i, buyer in enumerate(buyers[:-1]):
        await claim(api, buyer, f"q{i}")
    (offer,) = await offers(api, late)
    assert offer["claimable"] is True  # one left, wherever it is
    assert offer["remaining_for_customer"] == 1

    await claim(api, buyers[-1], "q-last")
    granted = [
        (await part_figures(redis, keys, p, "r:r1:granted"))[0] for p in part_ids("c1", PARTS)
    ]
    assert sum(granted) == 8
    for customer in (late, *customers_of(part_ids("c1", PARTS)[2], 1)):
        (offer,) = await offers(api, customer)
        assert (offer["claimable"], offer["reason"]) == (False, "out_of_stock")
        assert offer["remaining_for_customer"] == 0


async def test_a_dry_budget_part_is_budget_exhausted_only_once_every_part_is(api, redis, keys):
    await api.create_right(unit_cost=100)
    # 200 fen of budget per part: two claims spend a part's share.
    await api.create_campaign("c1", [reward(stock=100)], budget=800, stock_parts=PARTS)
    dry = part_ids("c1", PARTS)[3]
    buyers = customers_of(dry, 3)
    await claim(api, buyers[0], "q1")
    await claim(api, buyers[1], "q2")
    assert await part_figures(redis, keys, dry, "budget", "spent") == [200, 200]

    (offer,) = await offers(api, buyers[2])
    assert offer["claimable"] is True

    others = [c for p in part_ids("c1", PARTS)[:3] for c in customers_of(p, 2)]
    for i, buyer in enumerate(others):
        await claim(api, buyer, f"o{i}")
    (offer,) = await offers(api, buyers[2])
    assert (offer["claimable"], offer["reason"]) == (False, "budget_exhausted")


async def test_a_paused_split_campaign_is_no_longer_offered_in_any_part(api):
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=8)], stock_parts=PARTS)
    await api.create_campaign("c2")
    customers = [customers_of(p, 1)[0] for p in part_ids("c1", PARTS)]
    for customer in customers:
        assert len(await offers(api, customer)) == 2
    status, body = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/pause")
    assert status == 200, body
    # At once: the version of each part's shard moved with the publication.
    for customer in customers:
        assert [o["campaign_id"] for o in await offers(api, customer)] == ["c2"]
