"""Revisions of approved campaigns: made, submitted and approved like a campaign, then applied
to the running campaign at once, counters kept: more stock, another end, other channels. A
stock below what is granted is refused and changes nothing; claims flowing while a revision
applies see the old definition or the new one, never a mix."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from quanyi.core.settings import Settings
from quanyi.ledger.reconcile import Reconcile, drifted
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import add_staff, assert_error, claim, sign_in, stock_granted
from tests.support.factories import act, reward
from tests.support.settings import settings_for_tests
from tests.support.stores import audit_rows

pytestmark = pytest.mark.usefixtures("signed_in")

# c1 of the tests pays at most 10 x 100 fen: one approver; a revision to 1,000 units needs two.
THRESHOLD = 50_000
BASE = "/admin/v1/campaigns/c1/revisions"


@pytest.fixture
def settings() -> Settings:
    return settings_for_tests(dual_approval_above=THRESHOLD)


@pytest.fixture
async def c1(api) -> dict[str, Any]:
    """Approved campaign c1: reward r1 of coffee (100 fen), stock 10, one per customer."""
    await api.create_right()
    return await api.create_campaign("c1", [reward(stock=10)])


async def propose(api, changes: dict[str, Any], user: str = "marketer") -> dict[str, Any]:
    """A revision of c1, drafted and submitted by `user`."""
    status, revision = await api.admin(user, "POST", BASE, changes)
    assert status == 201, revision
    assert revision["status"] == "draft"
    status, revision = await api.admin(user, "POST", f"{BASE}/{revision['id']}/submit")
    assert status == 200, revision
    assert revision["status"] == "pending"
    return revision


async def decide(api, revision: dict[str, Any], action: str, user: str = "approver"):
    return await api.admin(user, "POST", f"{BASE}/{revision['id']}/{action}")


async def claims(api, first: int, count: int, **extra: Any) -> list[tuple[int, Any]]:
    return list(
        await asyncio.gather(
            *(claim(api, f"q{i}", f"cust-{i}", **extra) for i in range(first, first + count))
        )
    )


async def hot(redis, keys) -> tuple[dict[str, str], dict[str, Any]]:
    """c1's hash and definition in Redis."""
    fields = await redis.hgetall(keys.campaign("c1"))
    definition = orjson.loads(await redis.get(keys.campaign_definition("c1")))
    return fields, definition


async def view(api) -> dict[str, Any]:
    status, campaign = await api.admin("marketer", "GET", "/admin/v1/campaigns/c1")
    assert status == 200, campaign
    return campaign


# --- the workflow ---------------------------------------------------------------------------


async def test_more_stock_is_applied_with_the_counters_kept(api, pool, redis, keys, c1):
    granted = await claims(api, 0, 10)
    assert [s for s, _ in granted] == [201] * 10
    status, body = await claim(api, "q10", "cust-10")
    assert_error(status, body, 409, "out_of_stock")
    version = (await view(api))["version"]

    revision = await propose(api, {"rewards": [{"id": "r1", "stock": 15}]})
    assert revision["changes"] == {"rewards": [{"id": "r1", "stock": 15}]}
    assert revision["before"]["rewards"][0]["stock"] == 10
    status, revision = await decide(api, revision, "approve")
    assert status == 200, revision
    assert revision["status"] == "applied" and revision["applied_at"]

    campaign = await view(api)
    assert campaign["version"] == version + 1
    assert campaign["rewards"][0]["stock"] == 15
    assert campaign["rewards"][0]["granted"] == 10  # not reset
    fields, definition = await hot(redis, keys)
    assert fields["r:r1:stock"] == "15" and fields["r:r1:granted"] == "10"
    assert fields["ver"] == str(definition["version"]) == str(version + 1)
    # Five more, no more.
    more = await claims(api, 10, 8)
    assert sorted(s for s, _ in more) == [201] * 5 + [409] * 3
    assert await stock_granted(api) == 15
    actions = [action for _a, _b, action, _t in await audit_rows(pool, "campaign:c1")]
    assert actions[-4:] == [
        "campaign.revision.create",
        "campaign.revision.submit",
        "campaign.revision.approve",
        "campaign.revision.apply",
    ]


async def test_the_history_says_who_and_when(api, c1):
    first = await propose(api, {"rewards": [{"id": "r1", "per_customer_limit": 2}]})
    status, body = await decide(api, first, "reject")
    assert status == 200 and body["status"] == "rejected", body
    second = await propose(api, {"budget": 900}, user="marketer2")
    status, body = await decide(api, second, "approve")
    assert status == 200 and body["status"] == "applied", body

    status, body = await api.admin("approver", "GET", BASE)
    assert status == 200, body
    shown = [
        (r["id"], r["status"], r["created_by"], r["submitted_by"], r["rejected_by"])
        for r in body["revisions"]
    ]
    assert shown == [
        (first["id"], "rejected", "marketer", "marketer", "approver"),
        (second["id"], "applied", "marketer2", "marketer2", None),
    ]
    applied = body["revisions"][1]
    assert [a["approver"] for a in applied["approvals"]] == ["approver"]
    for r in body["revisions"]:
        assert r["created_at"] and r["submitted_at"] and r["decided_at"]
    assert (await view(api))["budget"] == 900


async def test_a_rejected_revision_changes_nothing_and_stays_rejected(api, redis, keys, c1):
    before = await hot(redis, keys)
    revision = await propose(api, {"rewards": [{"id": "r1", "stock": 5}]})
    status, body = await decide(api, revision, "reject")
    assert status == 200, body
    status, body = await decide(api, revision, "approve")
    assert_error(status, body, 409, "invalid_transition")
    assert await hot(redis, keys) == before


async def test_one_open_revision_at_a_time(api, c1):
    await propose(api, {"budget": 500})
    status, body = await api.admin("marketer", "POST", BASE, {"budget": 600})
    assert_error(status, body, 409, "revision_open")


@pytest.mark.parametrize("state", ["draft", "pending", "ended"])
async def test_only_an_approved_or_paused_campaign_is_revised(api, state):
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=10)], approve=False)
    steps = {"draft": [], "pending": ["submit"], "ended": ["submit", "approve", "end"]}[state]
    for step in steps:
        status, body = await act(api, "approver" if step == "approve" else "marketer", "c1", step)
        assert status == 200, body
    status, body = await api.admin("marketer", "POST", BASE, {"budget": 500})
    assert_error(status, body, 409, "invalid_transition")


async def test_a_paused_campaign_is_revised(api, c1):
    status, body = await act(api, "marketer", "c1", "pause")
    assert status == 200, body
    revision = await propose(api, {"rewards": [{"id": "r1", "stock": 12}]})
    status, body = await decide(api, revision, "approve")
    assert status == 200 and body["status"] == "applied", body
    campaign = await view(api)
    assert campaign["status"] == "paused" and campaign["rewards"][0]["stock"] == 12


async def test_who_may_do_what(api, c1):
    # Approvers do not draft, marketers do not approve, a branch does not revise head office's.
    status, body = await api.admin("approver", "POST", BASE, {"budget": 500})
    assert_error(status, body, 403, "forbidden")
    status, body = await api.admin("sz-marketer", "POST", BASE, {"budget": 500})
    assert_error(status, body, 403, "forbidden")
    revision = await propose(api, {"budget": 500}, user="admin")
    status, body = await decide(api, revision, "approve", user="marketer")
    assert_error(status, body, 403, "forbidden")
    # Whoever drafted or submitted it may not approve it.
    status, body = await decide(api, revision, "approve", user="admin")
    assert_error(status, body, 403, "maker_may_not_approve")
    status, body = await decide(api, revision, "approve")
    assert status == 200, body


# --- bad revisions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({}, "body"),
        ({"stok": 5}, "stok"),
        ({"rewards": [{"id": "r1", "stok": 5}]}, "rewards[0].stok"),
        ({"rewards": [{"id": "r1", "right_id": "tea"}]}, "rewards[0].right_id"),
        ({"name": "other"}, "name"),
        ({"rewards": [{"id": "r1", "stock": -1}]}, "rewards[0].stock"),
        ({"rewards": [{"id": "r1", "stock": None}]}, "rewards[0].stock"),
        ({"rewards": [{"id": "r1", "stock": "5"}]}, "rewards[0].stock"),
        ({"rewards": [{"id": "r1", "daily_stock": 0}]}, "rewards[0].daily_stock"),
        ({"rewards": [{"id": "r1", "per_customer_limit": 0}]}, "rewards[0].per_customer_limit"),
        ({"rewards": [{"id": "r1"}]}, "rewards[0]"),
        ({"rewards": []}, "rewards"),
        ({"rewards": [{"id": "r9", "stock": 5}]}, "rewards[0].id"),
        ({"channels": []}, "channels"),
        ({"channels": None}, "channels"),
        ({"ends_at": "tomorrow"}, "ends_at"),
        ({"ends_at": 1767225600}, "ends_at"),
        ({"ends_at": None}, "ends_at"),
        ({"ends_at": "2001-01-01T00:00:00+08:00"}, "ends_at"),
        ({"budget": -5}, "budget"),
    ],
)
async def test_a_bad_revision_is_refused_naming_the_field(api, pool, c1, changes, field):
    status, body = await api.admin("marketer", "POST", BASE, changes)
    error = assert_error(status, body, 400, "invalid_request")
    assert field in error["fields"], error
    assert await pool.fetchval("SELECT count(*) FROM campaign_revisions") == 0


async def test_an_unknown_field_says_what_a_revision_changes(api, c1):
    status, body = await api.admin("marketer", "POST", BASE, {"stok": 5})
    error = assert_error(status, body, 400, "invalid_request")
    assert "per_customer_limit" in error["fields"]["stok"]


async def test_stock_below_granted_is_refused_and_nothing_changes(api, pool, redis, keys, c1):
    assert [s for s, _ in await claims(api, 0, 6)] == [201] * 6
    revision = await propose(api, {"rewards": [{"id": "r1", "stock": 5}], "budget": 5_000})
    before_rows = await pool.fetch("SELECT * FROM rewards WHERE campaign_id = 'c1'")
    before_campaign = await pool.fetchrow("SELECT * FROM campaigns WHERE id = 'c1'")
    before_hot = await hot(redis, keys)

    status, body = await decide(api, revision, "approve")
    error = assert_error(status, body, 409, "stock_below_granted")
    assert error["reward_id"] == "r1" and error["granted"] == 6

    assert await pool.fetch("SELECT * FROM rewards WHERE campaign_id = 'c1'") == before_rows
    assert await pool.fetchrow("SELECT * FROM campaigns WHERE id = 'c1'") == before_campaign
    assert await hot(redis, keys) == before_hot
    status, body = await api.admin("marketer", "GET", BASE)
    assert body["revisions"][0]["status"] == "pending"
    assert body["revisions"][0]["approvals"] == []  # the approval went with the refusal
    # Exactly what is granted is allowed.
    status, body = await decide(api, revision, "reject")
    assert status == 200, body
    revision = await propose(api, {"rewards": [{"id": "r1", "stock": 6}]})
    status, body = await decide(api, revision, "approve")
    assert status == 200 and body["status"] == "applied", body
    status, body = await claim(api, "q99", "cust-99")
    assert_error(status, body, 409, "out_of_stock")


async def test_a_budget_below_spent_is_refused(api, redis, keys, c1):
    assert [s for s, _ in await claims(api, 0, 3)] == [201] * 3  # 300 fen spent
    revision = await propose(api, {"budget": 299})
    before = await hot(redis, keys)
    status, body = await decide(api, revision, "approve")
    error = assert_error(status, body, 409, "budget_below_spent")
    assert error["spent"] == 300
    assert await hot(redis, keys) == before


# --- what claims see ----------------------------------------------------------------------


async def test_changed_channels_take_effect_for_claims(api, redis, keys, c1):
    # The API holds c1's definition in its cache from this claim on.
    status, body = await claim(api, "q0", "cust-0")
    assert status == 201, body
    revision = await propose(api, {"channels": ["wechat"]})
    status, body = await decide(api, revision, "approve")
    assert status == 200, body
    status, body = await claim(api, "q1", "cust-1")
    assert_error(status, body, 403, "channel_not_allowed")
    status, body = await api.channel(
        "POST",
        "/v1/claims",
        {"request_id": "w1", "campaign_id": "c1", "customer_id": "cust-1"},
        channel="wechat",
        secret="wechat-secret",
    )
    assert status == 201, body
    fields, definition = await hot(redis, keys)
    assert "ch:app" not in fields and fields["ch:wechat"] == "1"
    assert definition["channels"] == ["wechat"]


async def test_ends_at_moved_earlier_ends_claims_and_postgresql_knows(api, pool, c1):
    now = datetime.fromtimestamp(api.clock(), UTC)
    ends_at = now - timedelta(minutes=1)
    revision = await propose(api, {"ends_at": ends_at.isoformat()})
    status, body = await decide(api, revision, "approve")
    assert status == 200, body
    assert await pool.fetchval("SELECT ends_at FROM campaigns WHERE id = 'c1'") == ends_at
    status, body = await claim(api, "q1", "cust-1")
    error = assert_error(status, body, 409, "campaign_not_active")
    assert "end" in error["message"] or error.get("reason") == "ended", error


async def test_ends_at_moved_later_keeps_customer_totals_until_then(
    api, pool, redis, keys, settings, c1
):
    status, body = await claim(api, "q0", "cust-0")
    assert status == 201, body
    ends_at = datetime.fromtimestamp(api.clock(), UTC) + timedelta(days=200)
    revision = await propose(api, {"ends_at": ends_at.isoformat()})
    status, body = await decide(api, revision, "approve")
    assert status == 200, body
    keep_until = int(ends_at.timestamp()) + settings.idempotency_retention_days * 86_400
    [totals] = [k async for k in redis.scan_iter(f"{keys.campaign('c1')}:cu:*")]
    assert await redis.expiretime(totals) == keep_until
    # The customer's limit still holds.
    status, body = await claim(api, "q1", "cust-0")
    assert_error(status, body, 409, "limit_reached")


async def test_a_daily_stock_taken_away_is_gone_from_redis(api, redis, keys):
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=10, daily_stock=2)])
    fields, _ = await hot(redis, keys)
    assert fields["r:r1:dstock"] == "2"
    revision = await propose(api, {"rewards": [{"id": "r1", "daily_stock": None}]})
    status, body = await decide(api, revision, "approve")
    assert status == 200, body
    fields, definition = await hot(redis, keys)
    assert "r:r1:dstock" not in fields
    assert definition["rewards"][0]["daily_stock"] is None
    assert [s for s, _ in await claims(api, 0, 3)] == [201] * 3


async def test_a_revision_applied_while_claims_flow(api, pool, redis, keys):
    """Claims keep coming while stock goes from 100 to 150: none fails for the change, every
    one granted is counted once, and no more than the new stock is granted."""
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=100)])
    revision = await propose(
        api, {"rewards": [{"id": "r1", "stock": 150, "per_customer_limit": 2}]}
    )
    outcomes: list[tuple[int, Any]] = []
    under_way = asyncio.Event()

    async def flow() -> None:
        for wave in range(25):
            outcomes.extend(await claims(api, wave * 10, 10))
            if wave == 3:
                under_way.set()  # 40 granted under the old definition, 210 claims to come

    claiming = asyncio.create_task(flow())
    await under_way.wait()
    status, body = await decide(api, revision, "approve")
    assert status == 200, body
    await claiming

    granted = [b["grant_id"] for s, b in outcomes if s == 201]
    refused = [b["error"]["code"] for s, b in outcomes if s != 201]
    assert set(refused) <= {"out_of_stock"}, refused
    assert len(granted) == len(set(granted)) == 150
    assert await stock_granted(api) == 150
    fields, definition = await hot(redis, keys)
    assert fields["ver"] == str(definition["version"])
    assert fields["r:r1:stock"] == "150" == str(definition["rewards"][0]["stock"])
    assert fields["r:r1:limit"] == "2" == str(definition["rewards"][0]["limit"])
    await LedgerWorker(redis, pool, keys).drain()
    assert await pool.fetchval("SELECT count(*) FROM grants WHERE campaign_id = 'c1'") == 150


# --- dual control -------------------------------------------------------------------------


async def test_a_large_revision_needs_two_approvers(api, pool, c1):
    await add_staff(pool, {"approver2": ("approver", "HQ")})
    await sign_in(api, pool, "approver2")
    revision = await propose(api, {"rewards": [{"id": "r1", "stock": 1_000}]})
    assert revision["approvals_needed"] == 2
    status, body = await decide(api, revision, "approve")
    assert status == 202, body
    assert body["status"] == "pending" and [a["approver"] for a in body["approvals"]] == [
        "approver"
    ]
    assert (await view(api))["rewards"][0]["stock"] == 10
    status, body = await decide(api, revision, "approve")
    assert_error(status, body, 409, "already_approved")
    status, body = await decide(api, revision, "approve", user="approver2")
    assert status == 200 and body["status"] == "applied", body
    assert (await view(api))["rewards"][0]["stock"] == 1_000


# --- channel quotas stay kept ---------------------------------------------------------------


async def test_a_revision_keeps_the_channel_quotas_whole(api):
    await api.create_right()
    await api.create_campaign(
        "c1", [reward(stock=10, channel_quota={"app": 6})], channels=["app", "wechat"]
    )
    # wechat takes the 4 the quota leaves.
    for i in range(4):
        status, body = await api.channel(
            "POST",
            "/v1/claims",
            {"request_id": f"w{i}", "campaign_id": "c1", "customer_id": f"cust-{i}"},
            channel="wechat",
            secret="wechat-secret",
        )
        assert status == 201, body
    # A stock below the quotas, or a channel a quota names taken away: refused as it is made.
    for changes, field in (
        ({"rewards": [{"id": "r1", "stock": 5}]}, "rewards.r1.channel_quota"),
        ({"channels": ["wechat"]}, "rewards.r1.channel_quota.app"),
    ):
        status, body = await api.admin("marketer", "POST", BASE, changes)
        assert field in assert_error(status, body, 400, "invalid_request")["fields"], body
    # 8 holds the quota of 6, but not with 4 granted already: 6 reserved, 4 left.
    revision = await propose(api, {"rewards": [{"id": "r1", "stock": 8}]})
    status, body = await decide(api, revision, "approve")
    assert assert_error(status, body, 409, "stock_below_quotas")["reward_id"] == "r1"
    assert (await view(api))["rewards"][0]["stock"] == 10


# --- channel quotas moved by a revision ----------------------------------------------------


async def quota_c1(api, quota: dict[str, int], stock: int) -> None:
    await api.create_right()
    await api.create_campaign(
        "c1", [reward(stock=stock, channel_quota=quota)], channels=["app", "wechat"]
    )


async def claim_on(api, channel: str, request_id: str, customer: str) -> tuple[int, Any]:
    if channel == "app":
        return await claim(api, request_id, customer)
    body = {"request_id": request_id, "campaign_id": "c1", "customer_id": customer}
    return await api.channel("POST", "/v1/claims", body, channel=channel, secret="wechat-secret")


async def stored(pool, redis, keys) -> tuple[Any, ...]:
    """Everything a refused revision must leave as it was: c1's rows and its Redis copy."""
    return (
        await pool.fetch("SELECT * FROM rewards WHERE campaign_id = 'c1'"),
        await pool.fetchrow("SELECT * FROM campaigns WHERE id = 'c1'"),
        await hot(redis, keys),
    )


async def test_quota_moves_between_channels_while_both_claim(api, pool, redis, keys, settings):
    """30 in stock, 20 reserved for app and 10 for wechat. Wechat's customers want far more
    than 10; app's 12 customers fewer than 20. While both channels claim, head office moves 4
    of app's unused units to wechat: no snapshot of the counters ever shows a channel over
    its quota or the stock oversold, and wechat ends with its new 14, app with its 12."""
    await quota_c1(api, {"app": 20, "wechat": 10}, stock=30)
    revision = await propose(
        api, {"rewards": [{"id": "r1", "channel_quota": {"app": 16, "wechat": 14}}]}
    )
    assert revision["changes"]["rewards"] == [
        {"id": "r1", "channel_quota": {"app": 16, "wechat": 14}}
    ]
    assert revision["before"]["rewards"][0]["channel_quota"] == {"app": 20, "wechat": 10}
    names = ["r:r1:q:app", "r:r1:qg:app", "r:r1:q:wechat", "r:r1:qg:wechat", "r:r1:granted"]
    outcomes: list[tuple[str, int, Any]] = []
    snapshots: list[list[int]] = []
    under_way, applied, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def wave(w: int) -> None:
        # App's customers repeat after the first 12 (limit 1 each); wechat's are always new.
        asks = [("app", f"a{w}-{i}", f"app-{(w * 2 + i) % 12}") for i in range(2)]
        asks += [("wechat", f"w{w}-{i}", f"wx-{w}-{i}") for i in range(5)]
        replies = await asyncio.gather(*(claim_on(api, *ask) for ask in asks))
        outcomes.extend(
            (ch, st, body) for (ch, _r, _c), (st, body) in zip(asks, replies, strict=True)
        )

    async def flow() -> None:
        w, after = 0, 0
        while after < 4 and w < 40:  # 4 waves once the revision is in, whatever its timing
            await wave(w)
            w += 1
            if w == 3:
                under_way.set()  # wechat holds its 10 already: its claims are refused now
            if applied.is_set():
                after += 1
        done.set()

    async def watch() -> None:
        while not done.is_set():
            snapshots.append([int(v or 0) for v in await redis.hmget(keys.campaign("c1"), names)])
            await asyncio.sleep(0)

    claiming, watching = asyncio.create_task(flow()), asyncio.create_task(watch())
    await under_way.wait()
    status, body = await decide(api, revision, "approve")
    assert status == 200 and body["status"] == "applied", body
    applied.set()
    await asyncio.gather(claiming, watching)

    assert len(snapshots) > 10
    for q_app, g_app, q_wechat, g_wechat, granted in snapshots:
        assert g_app <= q_app and g_wechat <= q_wechat and granted <= 30
        assert granted == g_app + g_wechat
    assert {(q_app, q_wechat) for q_app, _, q_wechat, _, _ in snapshots} == {(20, 10), (16, 14)}
    granted_by = {
        ch: sum(1 for c, st, _ in outcomes if c == ch and st == 201) for ch in ("app", "wechat")
    }
    assert granted_by == {"app": 12, "wechat": 14}
    refused = {(b["error"]["code"], b["error"].get("scope")) for _, st, b in outcomes if st != 201}
    assert refused == {("limit_reached", "customer"), ("out_of_stock", "channel")}
    row = await pool.fetchval("SELECT channel_quota::text FROM rewards WHERE id = 'r1'")
    assert orjson.loads(row) == {"app": 16, "wechat": 14}
    shown = (await view(api))["rewards"][0]
    assert shown["channel_quota"] == {"app": 16, "wechat": 14}
    assert shown["channel_granted"] == {"app": 12, "wechat": 14, "goal": 0}
    _, definition = await hot(redis, keys)
    assert definition["rewards"][0]["channel_quota"] == {"app": 16, "wechat": 14}
    # The counters agree with the ledger once it has every grant.
    await LedgerWorker(redis, pool, keys).drain()
    assert drifted(await Reconcile(pool, redis, keys, settings, api.clock).run()) == []


async def test_a_quota_below_what_its_channel_granted_is_refused_and_nothing_changes(
    api, pool, redis, keys
):
    await quota_c1(api, {"app": 4, "wechat": 4}, stock=10)
    for i in range(3):
        assert (await claim_on(api, "app", f"a{i}", f"cust-{i}"))[0] == 201
    # Fine on paper (8 of 10), but app granted 3 already.
    revision = await propose(
        api, {"rewards": [{"id": "r1", "channel_quota": {"app": 2, "wechat": 6}}]}
    )
    before = await stored(pool, redis, keys)
    status, body = await decide(api, revision, "approve")
    error = assert_error(status, body, 409, "quota_below_granted")
    assert (error["reward_id"], error["channel"], error["granted"]) == ("r1", "app", 3)
    assert "below the 3" in error["fields"]["rewards.r1.channel_quota.app"]
    assert await stored(pool, redis, keys) == before
    status, body = await api.admin("marketer", "GET", BASE)
    assert body["revisions"][0]["status"] == "pending" and body["revisions"][0]["approvals"] == []
    # Exactly what app granted is allowed.
    assert (await decide(api, revision, "reject"))[0] == 200
    revision = await propose(
        api, {"rewards": [{"id": "r1", "channel_quota": {"app": 3, "wechat": 6}}]}
    )
    status, body = await decide(api, revision, "approve")
    assert status == 200 and body["status"] == "applied", body
    status, body = await claim_on(api, "app", "a9", "cust-9")
    assert assert_error(status, body, 409, "out_of_stock")["scope"] == "channel"


async def test_a_stock_cut_or_a_move_that_breaks_the_reservations_is_refused(
    api, pool, redis, keys
):
    # app reserves 2 of 6; wechat, not named, took 3 of the 4 the quota leaves.
    await quota_c1(api, {"app": 2}, stock=6)
    for i in range(3):
        assert (await claim_on(api, "wechat", f"w{i}", f"cust-{i}"))[0] == 201
    before = await stored(pool, redis, keys)
    for changes in (
        # 4 holds the quota of 2, but 3 are granted: 1 left for the 2 app still holds.
        {"rewards": [{"id": "r1", "stock": 4}]},
        # 4 for app fits the stock of 6, but only 3 are left.
        {"rewards": [{"id": "r1", "channel_quota": {"app": 4}}]},
    ):
        revision = await propose(api, changes)
        status, body = await decide(api, revision, "approve")
        error = assert_error(status, body, 409, "stock_below_quotas")
        assert error["reward_id"] == "r1", error
        assert "rewards.r1.channel_quota" in error["fields"], error
        assert await stored(pool, redis, keys) == before
        assert (await decide(api, revision, "reject"))[0] == 200
    # Both at once, within what is left: 5 in stock, 3 granted, app reserves its 2.
    revision = await propose(api, {"rewards": [{"id": "r1", "stock": 5}]})
    status, body = await decide(api, revision, "approve")
    assert status == 200 and body["status"] == "applied", body
    assert (await claim_on(api, "wechat", "w9", "cust-9"))[0] == 409
    assert [(await claim_on(api, "app", f"a{i}", f"cust-a{i}"))[0] for i in range(3)] == [
        201,
        201,
        409,
    ]


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        # A channels revision that drops a channel a quota names.
        ({"channels": ["wechat"]}, "rewards.r1.channel_quota.app", "not a channel"),
        (
            {"rewards": [{"id": "r1", "channel_quota": {"app": 3, "h5": 1}}]},
            "rewards.r1.channel_quota.h5",
            "not a channel",
        ),
        (
            {"rewards": [{"id": "r1", "channel_quota": {"app": 8, "wechat": 3}}]},
            "rewards.r1.channel_quota",
            "more than the stock of 10",
        ),
        (
            {"rewards": [{"id": "r1", "stock": 7, "channel_quota": {"app": 6, "wechat": 2}}]},
            "rewards.r1.channel_quota",
            "more than the stock of 7",
        ),
        (
            {"rewards": [{"id": "r1", "channel_quota": None}]},
            "rewards[0].channel_quota",
            "required",
        ),
        ({"rewards": [{"id": "r1", "channel_quota": {}}]}, "rewards[0].channel_quota", "at least"),
        (
            {"rewards": [{"id": "r1", "channel_quota": {"app": 0}}]},
            "rewards[0].channel_quota.app",
            "from 1",
        ),
    ],
)
async def test_quotas_that_cannot_fit_are_refused_as_the_revision_is_made(
    api, pool, changes, field, says
):
    await quota_c1(api, {"app": 6, "wechat": 2}, stock=10)
    status, body = await api.admin("marketer", "POST", BASE, changes)
    error = assert_error(status, body, 400, "invalid_request")
    assert says in error["fields"][field], error
    assert await pool.fetchval("SELECT count(*) FROM campaign_revisions") == 0


async def test_a_channel_and_its_quota_leave_together(api, pool, redis, keys):
    await quota_c1(api, {"app": 6, "wechat": 2}, stock=10)
    assert (await claim_on(api, "wechat", "w0", "cust-0"))[0] == 201
    revision = await propose(
        api, {"channels": ["app"], "rewards": [{"id": "r1", "channel_quota": {"app": 6}}]}
    )
    status, body = await decide(api, revision, "approve")
    assert status == 200 and body["status"] == "applied", body
    fields, _ = await hot(redis, keys)
    assert "r:r1:q:wechat" not in fields and "ch:wechat" not in fields
    # wechat's grant now counts in the shared remainder; app keeps its 6.
    assert (fields["r:r1:qsum"], fields["r:r1:qfg"], fields["r:r1:qch"]) == ("6", "1", "app")


async def test_a_reward_approved_without_quotas_is_not_given_them(api, pool, c1):
    status, body = await api.admin(
        "marketer", "POST", BASE, {"rewards": [{"id": "r1", "channel_quota": {"app": 5}}]}
    )
    error = assert_error(status, body, 400, "invalid_request")
    assert "without channel quotas" in error["fields"]["rewards.r1.channel_quota"]
    assert await pool.fetchval("SELECT count(*) FROM campaign_revisions") == 0


# --- branch budgets follow a revised budget -----------------------------------------------


async def test_a_revised_budget_moves_the_reservation(api, clock):
    # The year of the campaign's start (an hour ago), whose budget it reserves from.
    starts = datetime.fromtimestamp(clock() - 3600, UTC).astimezone(settings_for_tests().zone)
    period = str(starts.year)
    status, body = await api.admin(
        "admin",
        "POST",
        "/admin/v1/branches/HQ/budget/allocations",
        {"period": period, "amount": 5_000},
    )
    assert status in (200, 201), body
    await api.create_right()
    await api.create_campaign("c1", [reward(stock=10)], budget=1_000)

    async def available() -> int:
        status, body = await api.admin(
            "admin", "GET", f"/admin/v1/branches/HQ/budget?period={period}"
        )
        assert status == 200, body
        return int(body["available"])

    assert await available() == 4_000
    revision = await propose(api, {"budget": 3_000})
    status, body = await decide(api, revision, "approve")
    assert status == 200 and body["status"] == "applied", body
    assert await available() == 2_000
    # More than the branch has left: refused, and nothing moves.
    revision = await propose(api, {"budget": 6_000})
    status, body = await decide(api, revision, "approve")
    assert_error(status, body, 409, "budget_exceeded")
    assert await available() == 2_000
    assert (await view(api))["budget"] == 3_000
