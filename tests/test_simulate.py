"""The dry run of a campaign (POST /admin/v1/campaigns/{id}/simulate) on the real app: a monthly
goal of five ¥100 purchases, its min_amount and mcc filters, the month's edge at local midnight,
stock, budget and daily caps, reversals with and without claw_back, goal-less rewards,
audiences (the file's and a reward's), the states and staff that may ask, bad and card-number
lines refused by line, the body limit, and that nothing in Redis or the ledger moves."""

from __future__ import annotations

from typing import Any

import pytest

from quanyi.campaigns.simulate import forecast
from quanyi.core.schemas import PAN_IN_ID
from tests.support.clients import Api, assert_error
from tests.support.settings import settings_for_tests

pytestmark = pytest.mark.usefixtures("coffee")

CSV = "text/csv"
HEADER = "customer_id,amount,mcc,occurred_at,event_id,reversal_of\n"
WINDOW = {"starts_at": "2026-10-01T00:00:00+08:00", "ends_at": "2027-01-01T00:00:00+08:00"}
MONTHLY = {"window": "month", "count": 5, "min_amount": 10000}
LIMIT = 64 * 1024


@pytest.fixture
def settings():
    return settings_for_tests(simulate_max_bytes=LIMIT)


def goal_reward(reward_id: str = "r1", stock: int = 100, **changes: Any) -> dict[str, Any]:
    return {
        "id": reward_id,
        "right_id": "coffee",
        "stock": stock,
        "per_customer_limit": 1,
        "goal": MONTHLY,
        **changes,
    }


async def draft(api: Api, *rewards: dict[str, Any], **fields: Any) -> None:
    """Campaign c1 (coffee costs 100 fen), a draft over WINDOW."""
    await api.create_campaign(
        "c1", list(rewards) or [goal_reward()], approve=False, **{**WINDOW, **fields}
    )


def purchases(customer: str, n: int, day: str = "2026-11-10", amount: int = 10000, **kw: Any):
    """`n` purchases of `customer` on a day, one a minute from 10:00 local, event ids
    `<customer>-<i>`."""
    mcc = kw.get("mcc", "5411")
    return [
        f"{customer},{amount},{mcc},{day}T10:{i:02d}:00+08:00,{customer}-{i},"
        for i in range(kw.get("first", 0), kw.get("first", 0) + n)
    ]


def body_of(lines: list[str], header: bool = True) -> bytes:
    return ((HEADER if header else "") + "\n".join(lines) + "\n").encode()


async def simulate(
    api: Api,
    body: bytes,
    user: str = "approver",
    campaign_id: str = "c1",
    audience_id: str | None = None,
) -> tuple[int, Any]:
    token = await api.login(user)
    query = f"?audience_id={audience_id}" if audience_id else ""
    resp = await api.client.post(
        f"/admin/v1/campaigns/{campaign_id}/simulate{query}",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": CSV},
    )
    return resp.status, await resp.json()


async def forecast_of(api: Api, lines: list[str], **kw: Any) -> dict[str, Any]:
    status, body = await simulate(api, body_of(lines), **kw)
    assert status == 200, body
    return body


async def test_five_purchases_of_100_yuan_in_a_month_reach_the_goal(api, signed_in):
    await draft(api)
    lines = [
        *purchases("cust-a", 5),  # reaches it
        *purchases("cust-b", 4),  # one short
        *purchases("cust-c", 4),
        *purchases("cust-c", 1, amount=9999, first=4),  # the fifth is under min_amount
        *purchases("cust-d", 3),
        *purchases("cust-d", 2, day="2026-11-20", first=3),  # two days, one month: reaches
    ]
    result = await forecast_of(api, lines)
    assert result == {
        "customers": 4,
        "qualified": 2,
        "grants": 2,
        "cost": 200,
        "stock_exhausted_at": None,
        "by_reward": [
            {
                "reward_id": "r1",
                "qualified": 2,
                "grants": 2,
                "cost": 200,
                "stock_exhausted_at": None,
            }
        ],
    }


async def test_only_the_goals_merchant_categories_count(api, signed_in):
    await draft(
        api,
        goal_reward("grocery", goal={**MONTHLY, "mcc_in": ["5411"]}),
        goal_reward("not-cash", goal={**MONTHLY, "mcc_not_in": ["6011"]}),
    )
    lines = [
        *purchases("cust-a", 5, mcc="5411"),
        *purchases("cust-b", 4, mcc="5411"),
        *purchases("cust-b", 1, mcc="5812", first=4),
        *purchases("cust-c", 5, mcc="6011"),
    ]
    by_reward = {r["reward_id"]: r for r in (await forecast_of(api, lines))["by_reward"]}
    assert by_reward["grocery"]["grants"] == 1  # cust-a
    assert by_reward["not-cash"]["grants"] == 2  # cust-a, cust-b


async def test_the_month_ends_at_local_midnight(api, signed_in):
    await draft(api)
    lines = [
        *purchases("cust-a", 4, day="2026-11-30"),
        "cust-a,10000,5411,2026-11-30T15:59:59.999Z,a-last,",  # 23:59:59.999 in Shanghai
        *purchases("cust-b", 4, day="2026-11-30"),
        "cust-b,10000,5411,2026-11-30T16:00:00Z,b-last,",  # 00:00 on 1 December
    ]
    result = await forecast_of(api, lines)
    assert (result["qualified"], result["grants"]) == (1, 1)


async def test_stock_runs_out_at_the_transaction_that_took_the_last_unit(api, signed_in):
    await draft(api, goal_reward(stock=2))
    lines = [line for i in range(5) for line in purchases(f"cust-{i}", 5, day=f"2026-11-1{i}")]
    result = await forecast_of(api, lines[::-1])  # file order does not matter: time does
    assert (result["qualified"], result["grants"], result["cost"]) == (5, 2, 200)
    # cust-1's fifth purchase, on 11 November at 10:04 local
    assert result["stock_exhausted_at"] == "2026-11-11T02:04:00.000Z"
    assert result["by_reward"][0]["stock_exhausted_at"] == "2026-11-11T02:04:00.000Z"


async def test_the_budget_caps_the_grants(api, signed_in):
    await draft(api, budget=250)
    lines = [line for i in range(4) for line in purchases(f"cust-{i}", 5, day=f"2026-11-1{i}")]
    result = await forecast_of(api, lines)
    assert (result["qualified"], result["grants"], result["cost"]) == (4, 2, 200)
    assert result["stock_exhausted_at"] is None


async def test_daily_stock_and_daily_limit_go_by_the_local_day(api, signed_in):
    await draft(api, goal_reward(daily_stock=1, goal={"window": "campaign", "count": 1}))
    lines = [
        "cust-a,100,5411,2026-11-10T23:00:00+08:00,a1,",
        "cust-b,100,5411,2026-11-10T23:30:00+08:00,b1,",  # same local day: no unit left
        "cust-c,100,5411,2026-11-10T16:30:00Z,c1,",  # 00:30 on the 11th: a new day's unit
    ]
    result = await forecast_of(api, lines)
    assert (result["qualified"], result["grants"]) == (3, 2)


async def test_outside_the_campaign_nothing_counts(api, signed_in):
    await draft(api, goal_reward(goal={"window": "campaign", "count": 1}))
    lines = [
        "cust-a,100,5411,2026-09-30T23:59:59+08:00,a1,",
        "cust-b,100,5411,2027-01-01T00:00:00+08:00,b1,",
        "cust-c,100,5411,2026-10-01T00:00:00+08:00,c1,",
    ]
    result = await forecast_of(api, lines)
    assert (result["customers"], result["qualified"], result["grants"]) == (3, 1, 1)


async def test_a_reversal_without_claw_back_leaves_the_grant(api, signed_in):
    await draft(api)
    lines = [*purchases("cust-a", 5), "cust-a,10000,5411,2026-11-11T09:00:00+08:00,ref1,cust-a-4"]
    result = await forecast_of(api, lines)
    assert (result["qualified"], result["grants"], result["cost"]) == (1, 1, 100)


async def test_a_reversal_with_claw_back_returns_the_stock_to_the_next_customer(api, signed_in):
    await draft(api, goal_reward(stock=1, grant="auto", claw_back=True))
    lines = [
        *purchases("cust-a", 5, day="2026-11-10"),  # takes the only unit
        "cust-a,10000,5411,2026-11-11T09:00:00+08:00,ref1,cust-a-4",  # back below the goal
        "cust-a,10000,5411,2026-11-11T09:01:00+08:00,ref2,cust-a-4",  # twice: applied once
        *purchases("cust-b", 5, day="2026-11-12"),  # the unit is free again
    ]
    result = await forecast_of(api, lines)
    assert (result["qualified"], result["grants"], result["cost"]) == (2, 1, 100)
    assert result["stock_exhausted_at"] == "2026-11-12T02:04:00.000Z"


async def test_a_reversal_of_another_customer_or_amount_takes_nothing_back(api, signed_in):
    await draft(api, goal_reward(grant="auto", claw_back=True))
    lines = [
        *purchases("cust-a", 5),
        "cust-b,10000,5411,2026-11-11T09:00:00+08:00,ref1,cust-a-4",
        "cust-a,999,5411,2026-11-11T09:00:00+08:00,ref2,cust-a-4",
        "cust-a,10000,5411,2026-11-11T09:00:00+08:00,ref3,nothing-like-it",
        *purchases("cust-a", 1, first=4, day="2026-11-12"),  # a repeat of cust-a-4: once
    ]
    result = await forecast_of(api, lines)
    assert (result["grants"], result["cost"]) == (1, 100)


async def test_a_reward_without_a_goal_is_claimed_once_per_customer(api, signed_in):
    await draft(api, {"id": "welcome", "right_id": "coffee", "stock": 2, "per_customer_limit": 3})
    lines = [*purchases("cust-a", 3), *purchases("cust-b", 1), *purchases("cust-c", 1)]
    result = await forecast_of(api, lines)
    assert (result["customers"], result["qualified"], result["grants"]) == (3, 2, 2)
    assert result["stock_exhausted_at"] == "2026-11-10T02:00:00.000Z"  # cust-b's first


async def put_members(api: Api, audience_id: str, members: list[str]) -> None:
    status, body = await api.admin(
        "marketer",
        "POST",
        "/admin/v1/audiences",
        {"id": audience_id, "name": "VIP", "branch": "HQ"},
    )
    assert status == 201, body
    token = await api.login("marketer")
    resp = await api.client.put(
        f"/admin/v1/audiences/{audience_id}/members",
        data="\n".join(members).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": CSV},
    )
    assert resp.status == 200, await resp.text()


async def test_the_audience_filter_counts_its_members_only(api, signed_in):
    await put_members(api, "vip", ["cust-a", "cust-c"])
    await draft(api)
    lines = [*purchases("cust-a", 5), *purchases("cust-b", 5)]
    result = await forecast_of(api, lines, audience_id="vip")
    assert (result["customers"], result["qualified"], result["grants"]) == (1, 1, 1)
    status, body = await simulate(api, body_of(lines), audience_id="nobody")
    assert assert_error(status, body, 400, "invalid_request")["fields"] == {
        "audience_id": "no such audience"
    }


async def test_a_rewards_audience_counts_its_members_only(api, signed_in):
    await put_members(api, "vip", ["cust-a"])
    await draft(api, goal_reward("vip-only", audience_id="vip"), goal_reward("everyone"))
    lines = [*purchases("cust-a", 5), *purchases("cust-b", 5)]
    result = await forecast_of(api, lines)
    by_reward = {r["reward_id"]: r["grants"] for r in result["by_reward"]}
    assert by_reward == {"vip-only": 1, "everyone": 2}
    assert (result["customers"], result["qualified"], result["grants"]) == (2, 2, 3)


@pytest.mark.parametrize("state", ["approved", "paused", "ended", "rejected"])
async def test_only_a_draft_or_pending_campaign_is_simulated(api, signed_in, state):
    from tests.support.factories import bring_to

    await bring_to(api, state)
    status, body = await simulate(api, body_of(purchases("cust-a", 5)))
    assert assert_error(status, body, 409, "invalid_transition")["state"] == state


async def test_a_pending_campaign_is_simulated_by_its_approver(api, signed_in):
    await draft(api)
    status, body = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/submit")
    assert status == 200, body
    assert (await forecast_of(api, purchases("cust-a", 5), user="approver"))["grants"] == 1


async def test_branch_staff_simulate_their_own_branch_only(api, signed_in):
    await draft(api)
    status, body = await simulate(api, body_of(purchases("cust-a", 5)), user="sz-marketer")
    assert_error(status, body, 403, "forbidden")
    status, body = await simulate(api, body_of([]), campaign_id="nope")
    assert_error(status, body, 404, "campaign_not_found")


async def test_bad_lines_refuse_the_file_naming_their_lines(api, signed_in):
    await draft(api)
    lines = [
        *purchases("cust-a", 1),  # line 2, after the header
        "cust-b,ten,5411,2026-11-10T10:00:00+08:00,x1,",  # 3
        "cust-c,100,54110,2026-11-10T10:00:00+08:00,x2,",  # 4
        "cust-d,100,5411,2026-11-10T10:00:00,x3,",  # 5: no offset
        "cust-e,100,5411",  # 6
        "-bad,100,5411,2026-11-10T10:00:00+08:00,x4,",  # 7
    ]
    status, body = await simulate(api, body_of(lines))
    error = assert_error(status, body, 400, "invalid_request")
    assert [e["line"] for e in error["errors"]] == [3, 4, 5, 6, 7]
    assert error["rejected"] == 5
    assert error["errors"][0]["reason"].startswith("amount")


@pytest.mark.parametrize(
    "card", ["4111111111111111", "cust-4111-1111-1111-1111", "4111.1111.1111.1111"]
)
async def test_a_card_number_line_is_refused_and_never_repeated(api, signed_in, card):
    await draft(api)
    lines = [*purchases("cust-a", 2), f"{card},10000,5411,2026-11-10T10:00:00+08:00,x1,"]
    token = await api.login("approver")
    resp = await api.client.post(
        "/admin/v1/campaigns/c1/simulate",
        data=body_of(lines),
        headers={"Authorization": f"Bearer {token}", "Content-Type": CSV},
    )
    text = await resp.text()
    assert resp.status == 400, text
    assert "4111" not in text and "1111" not in text
    assert (await resp.json())["error"]["errors"] == [
        {"line": 4, "reason": f"customer_id: {PAN_IN_ID}"}
    ]


async def test_a_body_over_the_limit_is_413(api, signed_in):
    await draft(api)
    status, body = await simulate(api, b"x" * (LIMIT + 1))
    assert_error(status, body, 413, "payload_too_large")


async def redis_snapshot(redis, keys) -> dict[str, Any]:
    snapshot: dict[str, Any] = {}
    async for key in redis.scan_iter(match=f"{keys.prefix}*", count=1000):
        kind = await redis.type(key)
        if kind == "hash":
            value: Any = await redis.hgetall(key)
        elif kind == "string":
            value = await redis.get(key)
        elif kind == "set":
            value = sorted(await redis.smembers(key))
        elif kind == "stream":
            value = await redis.xrange(key)
        else:
            value = kind
        snapshot[key] = (value, await redis.ttl(key))
    return snapshot


async def test_a_dry_run_changes_nothing(api, signed_in, redis, keys, pool):
    await put_members(api, "vip", ["cust-a"])
    await draft(api, goal_reward(audience_id="vip", stock=1, grant="auto", claw_back=True))
    lines = [*purchases("cust-a", 5), "cust-a,10000,5411,2026-11-11T09:00:00+08:00,r1,cust-a-4"]
    before = await redis_snapshot(redis, keys)
    tables = "SELECT (SELECT count(*) FROM grants), (SELECT count(*) FROM card_events)"
    ledger_before = tuple(await pool.fetchrow(tables))
    await forecast_of(api, lines)
    await forecast_of(api, lines, audience_id="vip")
    assert await redis_snapshot(redis, keys) == before
    assert tuple(await pool.fetchrow(tables)) == ledger_before == (0, 0)
    audited = await pool.fetch("SELECT action FROM audit_log WHERE action = 'campaign.simulate'")
    assert len(audited) == 2


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_the_fast_and_the_line_by_line_reader_agree(ending):
    from quanyi.inventory.hot_campaigns import HotCampaign, HotGoal, HotReward

    goal = HotGoal("month", count=3, amount=30000)
    campaign = HotCampaign(
        "c1",
        1,
        "draft",
        1_790_000_000_000,
        1_800_000_000_000,
        ("app",),
        10_000,
        1,
        (
            HotReward("r1", "coffee", 50, None, 1, None, 100, goal=goal, claw_back=True),
            HotReward("r2", "coffee", 30, 5, 1, None, 100),
        ),
    )
    lines = []
    for i in range(300):
        day = 1 + i % 28
        lines.append(f"c{i % 70},{10000 + i},5411,2026-11-{day:02d}T0{i % 10}:00:00+08:00,e{i},")
        if i % 17 == 0:
            lines.append(f"c{i % 70},{10000 + i},5411,2026-11-{day:02d}T12:00:00Z,v{i},e{i}")
    text = ending.join(lines).encode()
    plain = forecast(b"customer_id\n" + text.replace(b"\r", b""), campaign, "Asia/Shanghai")
    assert forecast(text, campaign, "Asia/Shanghai") == plain
    assert plain["grants"] > 0 and plain["by_reward"][1]["grants"] == 30


@pytest.mark.parametrize(
    "body",
    [b"customer_id,amount", b"customer_id", b"\xef\xbb\xbfcustomer_id", b"customer_id\n"],
    ids=["header-with-two-names", "header-alone", "bom-and-header", "header-and-newline"],
)
async def test_a_header_alone_is_an_empty_forecast(api, signed_in, body):
    await draft(api)
    status, result = await simulate(api, body)
    assert status == 200, result
    assert (result["customers"], result["qualified"], result["grants"]) == (0, 0, 0)


async def test_a_reversal_after_the_window_still_takes_its_purchase_back(api, signed_in):
    """As the live path: a refund on 1 January of a purchase of 31 December (the campaign
    ended at midnight) takes the purchase back, and claws the grant back."""
    await draft(api, goal_reward(stock=1, grant="auto", claw_back=True))
    lines = [
        *purchases("cust-a", 5, day="2026-12-31"),
        "cust-a,10000,5411,2027-01-01T09:00:00+08:00,ref1,cust-a-4",
    ]
    result = await forecast_of(api, lines)
    assert (result["qualified"], result["grants"], result["cost"]) == (1, 0, 0)
    assert result["stock_exhausted_at"] is None


async def test_of_two_reversals_before_their_original_the_first_is_kept(api, signed_in):
    """The first reversal held has another amount: it cancels nothing, and the second one, the
    right one, was refused for coming after it (the live path's already_reversed)."""
    await draft(api, goal_reward(grant="auto", claw_back=True))
    lines = [
        "cust-a,999,5411,2026-11-09T09:00:00+08:00,ref1,cust-a-4",
        "cust-a,10000,5411,2026-11-09T09:01:00+08:00,ref2,cust-a-4",
        *purchases("cust-a", 5),  # cust-a-4 counts: the fifth purchase reaches the goal
    ]
    assert (await forecast_of(api, lines))["grants"] == 1


async def test_an_original_cancelled_by_its_reversal_is_reversed_no_more(api, signed_in):
    await draft(api, goal_reward(grant="auto", claw_back=True))
    lines = [
        "cust-a,10000,5411,2026-11-09T09:00:00+08:00,ref1,cust-a-4",  # held: cancels cust-a-4
        "cust-a,999,5411,2026-11-09T09:01:00+08:00,ref2,cust-a-4",  # a second, not kept
        *purchases("cust-a", 6),  # five count (cust-a-4 does not): reached at cust-a-5
        "cust-a,10000,5411,2026-11-11T09:00:00+08:00,ref3,cust-a-4",  # counts for nothing
        "cust-a,10000,5411,2026-11-11T09:01:00+08:00,ref3,cust-a-4",  # its repeat: nothing
    ]
    result = await forecast_of(api, lines)
    assert (result["qualified"], result["grants"]) == (1, 1)
