"""The campaigns domain treats a campaign split into stock parts (inventory/stock_parts.py) as
one campaign: its view and its figures at the end sum the parts, a pause or an end stops claims
in every part, a revision of its end or limits reaches every part and leaves each part's stock
as it is (its stock and budget: tests/test_stock_parts_revisions.py), while a daily stock or a
first budget is refused (409 campaign_split); and what a part cannot count alone is refused when
the campaign is made."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from quanyi.campaigns.api import CAMPAIGNS
from quanyi.campaigns.schedule import CampaignScheduler
from quanyi.inventory.stock_parts import read_parts
from quanyi.runtime import Stores
from quanyi.stores.keys import Keys, buckets_for, customer_bucket, part_ids, part_of
from quanyi.stores.scripts import Scripts
from tests.support.clients import assert_error, error_code
from tests.support.factories import act, campaign_body, reward

pytestmark = pytest.mark.usefixtures("signed_in")

PARTS = 4
STOCK = 100
BASE = "/admin/v1/campaigns/c1"


async def split(api: Any, stock: int = STOCK, **fields: Any) -> dict[str, Any]:
    """Right `coffee` (unit cost 100) and approved campaign c1 of reward r1 (one per customer),
    split into PARTS."""
    await api.create_right()
    return await api.create_campaign("c1", [reward(stock=stock)], stock_parts=PARTS, **fields)


def in_part(j: int, n: int, first: int = 0) -> list[str]:
    """`n` customer ids whose claims of c1 go to part j."""
    pid = part_ids("c1", PARTS)[j]
    found: list[str] = []
    i = first
    while len(found) < n:
        if part_of("c1", PARTS, f"cust-{i}") == pid:
            found.append(f"cust-{i}")
        i += 1
    return found


def one_per_part(first: int = 0) -> list[str]:
    """A customer of each part, part 0 first."""
    return [in_part(j, 1, first)[0] for j in range(PARTS)]


async def claim_all(api: Any, customers: list[str], tag: str = "q") -> list[tuple[int, Any]]:
    return list(
        await asyncio.gather(
            *(
                api.claim(request_id=f"{tag}-{c}", campaign_id="c1", customer_id=c)
                for c in customers
            )
        )
    )


async def view(api: Any) -> dict[str, Any]:
    status, campaign = await api.admin("marketer", "GET", BASE)
    assert status == 200, campaign
    return campaign


async def parts(redis: Any, keys: Keys) -> dict[str, dict[str, str]]:
    """part id -> its hash."""
    hashes = await read_parts(redis, keys, "c1", PARTS)
    return dict(zip(part_ids("c1", PARTS), hashes, strict=True))


def figures(held: dict[str, dict[str, str]], *names: str) -> dict[str, tuple[str | None, ...]]:
    return {pid: tuple(h.get(n) for n in names) for pid, h in held.items()}


def scheduler_of(settings, clock, keys, redis, pool) -> CampaignScheduler:
    return Stores(settings, clock, keys, redis, pool, Scripts(redis)).scheduler()


async def revise(api: Any, changes: dict[str, Any]) -> tuple[int, Any]:
    """A revision of c1 drafted, submitted and approved; the reply of the first refusal."""
    status, revision = await api.admin("marketer", "POST", f"{BASE}/revisions", changes)
    if status != 201:
        return status, revision
    path = f"{BASE}/revisions/{revision['id']}"
    status, revision = await api.admin("marketer", "POST", f"{path}/submit")
    assert status == 200, revision
    return await api.admin("approver", "POST", f"{path}/approve")


# --- the view ---------------------------------------------------------------------------------


@pytest.mark.cluster_too
async def test_the_view_shows_what_every_part_granted_and_spent(api, redis, keys):
    await split(api)
    results = await claim_all(api, [f"cust-{i}" for i in range(60)])
    granted = sum(1 for s, _ in results if s == 201)
    assert granted == 60, results
    held = await parts(redis, keys)
    by_part = [int(h.get("r:r1:granted") or 0) for h in held.values()]
    assert sum(by_part) == granted and max(by_part) < granted  # more than one part granted

    shown = await view(api)
    assert shown["stock_parts"] == PARTS
    assert (shown["rewards"][0]["granted"], shown["rewards"][0]["remaining"]) == (60, 40)
    assert shown["spent"] == 60 * 100
    status, listed = await api.admin("marketer", "GET", "/admin/v1/campaigns")
    assert status == 200, listed
    [c1] = [c for c in listed["campaigns"] if c["id"] == "c1"]
    assert (c1["rewards"][0]["granted"], c1["spent"]) == (60, 6000)
    # The stock gauges of /metrics.
    levels = await api.client.server.app[CAMPAIGNS].stock_levels()
    assert ("c1", "r1", STOCK, STOCK - 60) in levels


# --- pausing and ending -------------------------------------------------------------------------


@pytest.mark.cluster_too
async def test_a_pause_stops_claims_in_every_part_and_a_resume_opens_them(api, redis, keys):
    await split(api)
    status, body = await act(api, "marketer", "c1", "pause")
    assert status == 200, body
    assert {h["state"] for h in (await parts(redis, keys)).values()} == {"paused"}
    for status, body in await claim_all(api, one_per_part()):
        assert error_code(status, body) == (409, "campaign_not_active"), body

    status, body = await act(api, "marketer", "c1", "resume")
    assert status == 200, body
    assert {h["state"] for h in (await parts(redis, keys)).values()} == {"active"}
    assert [s for s, _ in await claim_all(api, one_per_part(), "again")] == [201] * PARTS


async def test_the_window_s_end_stops_every_part_with_the_figures_summed(
    api, pool, redis, keys, settings, clock
):
    start = datetime.fromtimestamp(int(clock()), UTC)
    await split(
        api,
        starts_at=(start - timedelta(hours=1)).isoformat(),
        ends_at=(start + timedelta(seconds=60)).isoformat(),
    )
    customers = [c for j in range(PARTS) for c in in_part(j, 3)]
    assert [s for s, _ in await claim_all(api, customers)] == [201] * len(customers)

    clock.advance(60)
    assert (await scheduler_of(settings, clock, keys, redis, pool).tick()).ended == ["c1"]
    assert {h["state"] for h in (await parts(redis, keys)).values()} == {"ended"}
    for status, body in await claim_all(api, one_per_part(first=1000), "late"):
        assert error_code(status, body) == (409, "campaign_not_active"), body
    row = await pool.fetchrow("SELECT granted, cost FROM campaign_results WHERE campaign_id = 'c1'")
    assert (row["granted"], row["cost"]) == (len(customers), len(customers) * 100)
    payload = await pool.fetchval(
        "SELECT payload::text FROM notifications WHERE kind = 'campaign.ended'"
    )
    assert orjson.loads(payload)["spent"] == len(customers) * 100


async def test_a_part_left_in_another_state_is_published_again(
    api, pool, redis, keys, settings, clock
):
    """A publication that stopped half way (a part paused, the rest and PostgreSQL active)."""
    await split(api)
    last = part_ids("c1", PARTS)[-1]
    await redis.hset(keys.campaign(last), "state", "paused")
    [customer] = in_part(PARTS - 1, 1)
    [(status, body)] = await claim_all(api, [customer])
    assert error_code(status, body) == (409, "campaign_not_active"), body

    done = await scheduler_of(settings, clock, keys, redis, pool).tick()
    assert done.healed == ["c1"]
    assert {h["state"] for h in (await parts(redis, keys)).values()} == {"active"}
    assert [s for s, _ in await claim_all(api, [customer], "again")] == [201]
    assert (await scheduler_of(settings, clock, keys, redis, pool).tick()).healed == []


# --- revisions ----------------------------------------------------------------------------------


@pytest.mark.cluster_too
async def test_a_later_end_and_a_new_limit_reach_every_part_and_leave_each_stock(
    api, redis, keys, settings
):
    await split(api, budget=50_000)
    customers = [c for j in range(PARTS) for c in in_part(j, 2)]
    assert [s for s, _ in await claim_all(api, customers)] == [201] * len(customers)
    before = figures(await parts(redis, keys), "r:r1:stock", "r:r1:granted", "budget", "spent")
    ends_at = datetime.fromtimestamp(api.clock(), UTC) + timedelta(days=200)

    status, body = await revise(
        api, {"ends_at": ends_at.isoformat(), "rewards": [{"id": "r1", "per_customer_limit": 2}]}
    )
    assert status == 200 and body["status"] == "applied", body
    version = (await view(api))["version"]
    held = await parts(redis, keys)
    ends_ms = str(int(ends_at.timestamp() * 1000))
    assert figures(held, "ends", "ver", "r:r1:limit") == dict.fromkeys(
        held, (ends_ms, str(version), "2")
    )
    assert figures(held, "r:r1:stock", "r:r1:granted", "budget", "spent") == before
    # The definition is part 0's alone.
    definition = orjson.loads(await redis.get(keys.campaign_definition("c1")))
    assert definition["version"] == version and definition["ends_ms"] == int(ends_ms)
    assert [await redis.exists(keys.campaign_definition(p)) for p in held] == [1] + [0] * (
        PARTS - 1
    )
    # Each part's customer counters are kept until the new end.
    keep_until = int(ends_at.timestamp()) + settings.idempotency_retention_days * 86_400
    bucket = customer_bucket(customers[-1], buckets_for(STOCK))
    totals = keys.customer_totals(part_of("c1", PARTS, customers[-1]), bucket)
    assert await redis.expiretime(totals) == keep_until
    # The new limit holds in the customers' own parts.
    again = await claim_all(api, customers, "second")
    assert [s for s, _ in again] == [201] * len(customers)
    third = await claim_all(api, customers, "third")
    assert {error_code(s, b) for s, b in third} == {(409, "limit_reached")}


@pytest.mark.cluster_too
@pytest.mark.parametrize(
    ("budget", "changes"),
    [
        (50_000, {"rewards": [{"id": "r1", "daily_stock": 10}]}),
        (None, {"budget": 90_000}),
        (None, {"ends_at": "2099-01-01T00:00:00Z", "budget": 90_000}),
    ],
    ids=["daily_stock", "budget_where_none", "budget_where_none_with_end"],
)
async def test_a_daily_stock_or_a_first_budget_for_a_split_campaign_is_refused(
    api, pool, redis, keys, budget, changes
):
    await split(api, **({} if budget is None else {"budget": budget}))
    assert [s for s, _ in await claim_all(api, one_per_part())] == [201] * PARTS
    before = await parts(redis, keys)
    version = (await view(api))["version"]

    status, body = await revise(api, changes)
    error = assert_error(status, body, 409, "campaign_split")
    assert "it has no daily stock, and keeps a budget (or none) as approved" in error["message"]
    assert (error["campaign_id"], error["stock_parts"]) == ("c1", PARTS)
    assert await parts(redis, keys) == before
    shown = await view(api)
    assert (shown["version"], shown["budget"], shown["rewards"][0]["stock"]) == (
        version,
        budget,
        STOCK,
    )
    assert await pool.fetchval("SELECT count(*) FROM campaign_revisions") == 0


# --- what a split campaign cannot have ----------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"goal": {"window": "month", "count": 3}, "grant": "claim"},
        {"daily_stock": 10},
        {"channel_quota": {"app": 10}},
    ],
    ids=["goal", "daily_stock", "channel_quota"],
)
async def test_a_split_campaign_with_what_a_part_cannot_count_is_refused(api, pool, extra):
    await api.create_right()
    body = campaign_body(api.clock(), rewards=[reward(stock=STOCK, **extra)], stock_parts=PARTS)
    status, reply = await api.admin("marketer", "POST", "/admin/v1/campaigns", body)
    error = assert_error(status, reply, 400, "invalid_request")
    assert "split into stock parts" in str(error["fields"]), error
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


@pytest.mark.parametrize("stock_parts", [0, 17, -1, "4", 2.0])
async def test_stock_parts_out_of_range_is_refused(api, pool, stock_parts):
    await api.create_right()
    body = campaign_body(api.clock(), stock_parts=stock_parts)
    status, reply = await api.admin("marketer", "POST", "/admin/v1/campaigns", body)
    error = assert_error(status, reply, 400, "invalid_request")
    assert "stock_parts" in error["fields"], error
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0
