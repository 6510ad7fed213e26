"""Budgets carved down the branch tree: head office's yearly budget, allocations to children and
reclaims, reservations at approval (atomic under races), release of the unspent part at the
end, scope and bad bodies. The tree is tests/support/stores.py TEST_BRANCHES: HQ > SZ > SZ01,
HQ > GZ."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from quanyi.access.staff import Staff
from quanyi.campaigns import queries as campaign_queries
from quanyi.campaigns.budget_reservations import rereserve
from quanyi.campaigns.budgets import BudgetRules
from quanyi.campaigns.model import Campaign
from quanyi.core.errors import BudgetExceeded
from quanyi.runtime import Stores
from quanyi.stores.scripts import Scripts
from tests.support.clients import Api, add_staff, sign_in
from tests.support.clock import SHANGHAI
from tests.support.factories import campaign_of_branch
from tests.support.settings import settings_for_tests

pytestmark = pytest.mark.usefixtures("signed_in")


def this_year(api: Api) -> str:
    """The period of a campaign made by the factories: the year of its start (an hour ago)."""
    return datetime.fromtimestamp(api.clock() - 3600, SHANGHAI).strftime("%Y")


async def allocate(
    api: Api, user: str, branch: str, amount: Any, period: Any, **extra: Any
) -> tuple[int, Any]:
    body = {"period": period, "amount": amount, **extra}
    return await api.admin(user, "POST", f"/admin/v1/branches/{branch}/budget/allocations", body)


async def reclaim(api: Api, user: str, branch: str, amount: int, period: str) -> tuple[int, Any]:
    body = {"period": period, "amount": amount}
    return await api.admin(user, "POST", f"/admin/v1/branches/{branch}/budget/reclaim", body)


async def budget(api: Api, branch: str, period: str, user: str = "admin") -> dict[str, Any]:
    status, body = await api.admin(
        user, "GET", f"/admin/v1/branches/{branch}/budget?period={period}"
    )
    assert status == 200, body
    return body


def figures(view: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return (view["allocated"], view["given"], view["reserved"], view["spent"], view["available"])


async def fund_tree(api: Api, period: str, hq: int = 10_000, sz: int = 0) -> None:
    """Head office's budget for `period`, and part of it given to SZ."""
    status, body = await allocate(api, "admin", "HQ", hq, period)
    assert status == 200, body
    if sz:
        status, body = await allocate(api, "approver", "SZ", sz, period, **{"from": "HQ"})
        assert status == 200, body


async def sz_campaign(api: Api, campaign_id: str, budget: int | None, **fields: Any) -> None:
    """A pending SZ campaign on right `coffee` (unit cost 100, stock 10) with this budget."""
    body = campaign_of_branch(api, campaign_id, "SZ", **fields)
    if budget is not None:
        body["budget"] = budget
    status, created = await api.admin("sz-marketer", "POST", "/admin/v1/campaigns", body)
    assert status == 201, created
    status, submitted = await act(api, "sz-marketer", campaign_id, "submit")
    assert status == 200, submitted


async def act(api: Api, user: str, campaign_id: str, action: str) -> tuple[int, Any]:
    return await api.admin(user, "POST", f"/admin/v1/campaigns/{campaign_id}/{action}")


async def ledger_of_money(pool: asyncpg.Pool) -> tuple[list[Any], list[Any], list[Any]]:
    balances = await pool.fetch("SELECT * FROM branch_budgets ORDER BY branch_id, period")
    movements = await pool.fetch("SELECT * FROM budget_movements ORDER BY id")
    reservations = await pool.fetch("SELECT * FROM budget_reservations ORDER BY campaign_id")
    return (
        [tuple(r) for r in balances],
        [tuple(r) for r in movements],
        [tuple(r) for r in reservations],
    )


async def assert_consistent(pool: asyncpg.Pool) -> None:
    """Each balance column is the sum of its movements; a parent's `given` is what its children
    were allocated; `committed` is what live reservations hold plus what ended ones charged."""
    rows = await pool.fetch(
        """
        SELECT b.branch_id, b.period, b.allocated, b.given, b.committed,
            coalesce((SELECT sum(amount) FROM budget_movements m WHERE m.branch_id = b.branch_id
                AND m.period = b.period AND m.account = 'allocated'), 0) AS moved_allocated,
            coalesce((SELECT sum(amount) FROM budget_movements m WHERE m.branch_id = b.branch_id
                AND m.period = b.period AND m.account = 'given'), 0) AS moved_given,
            coalesce((SELECT sum(amount) FROM budget_movements m WHERE m.branch_id = b.branch_id
                AND m.period = b.period AND m.account = 'committed'), 0) AS moved_committed,
            coalesce((SELECT sum(c.allocated) FROM branch_budgets c JOIN branches t
                ON t.id = c.branch_id WHERE t.parent_id = b.branch_id AND c.period = b.period),
                0) AS children_allocated,
            coalesce((SELECT sum(coalesce(r.charged, r.amount)) FROM budget_reservations r
                WHERE r.branch_id = b.branch_id AND r.period = b.period), 0) AS held
        FROM branch_budgets b
        """
    )
    for r in rows:
        assert r["allocated"] == r["moved_allocated"], dict(r)
        assert r["given"] == r["moved_given"] == r["children_allocated"], dict(r)
        assert r["committed"] == r["moved_committed"] == r["held"], dict(r)
        assert r["given"] + r["committed"] <= r["allocated"], dict(r)


# allocations and reclaims


async def test_head_office_budget_flows_down_and_back_up(api: Api, pool: asyncpg.Pool) -> None:
    year = this_year(api)
    status, hq = await allocate(api, "admin", "HQ", 10_000, year)
    assert status == 200, hq
    assert hq == {
        "branch": "HQ",
        "period": year,
        "allocated": 10_000,
        "given": 0,
        "reserved": 0,
        "spent": 0,
        "available": 10_000,
    }
    status, sz = await allocate(api, "approver", "SZ", 4000, year, **{"from": "HQ"})
    assert status == 200, sz
    assert figures(sz) == (4000, 0, 0, 0, 4000)
    status, sz01 = await allocate(api, "sz-approver", "SZ01", 1500, year, **{"from": "SZ"})
    assert status == 200, sz01
    assert figures(sz01) == (1500, 0, 0, 0, 1500)
    assert figures(await budget(api, "SZ", year)) == (4000, 1500, 0, 0, 2500)
    assert figures(await budget(api, "HQ", year)) == (10_000, 4000, 0, 0, 6000)

    # No more than what is left unallocated.
    before = await ledger_of_money(pool)
    status, refused = await allocate(api, "sz-approver", "SZ01", 2501, year, **{"from": "SZ"})
    assert status == 409, refused
    assert refused["error"] | {"message": ""} == {
        "code": "budget_exceeded",
        "message": "",
        "branch": "SZ",
        "period": year,
        "available": 2500,
        "needed": 2501,
    }
    assert await ledger_of_money(pool) == before

    # Reclaims take back what is unallocated below: SZ's 1500 given to SZ01 stays with SZ01.
    status, sz = await reclaim(api, "approver", "SZ", 1000, year)
    assert status == 200, sz
    assert figures(sz) == (3000, 1500, 0, 0, 1500)
    status, refused = await reclaim(api, "approver", "SZ", 1501, year)
    assert (status, refused["error"]["code"]) == (409, "budget_exceeded"), refused
    assert refused["error"]["available"] == 1500
    assert figures(await budget(api, "HQ", year)) == (10_000, 3000, 0, 0, 7000)

    # Head office's own budget is lowered by its admins, never below what it gave away.
    status, refused = await reclaim(api, "admin", "HQ", 7001, year)
    assert (status, refused["error"]["code"]) == (409, "budget_exceeded"), refused
    status, hq = await reclaim(api, "admin", "HQ", 7000, year)
    assert status == 200, hq
    assert figures(hq) == (3000, 3000, 0, 0, 0)

    # Another year is another budget.
    assert figures(await budget(api, "HQ", str(int(year) + 1))) == (0, 0, 0, 0, 0)
    await assert_consistent(pool)
    movements = await pool.fetch(
        "SELECT branch_id, account, kind, amount, counterpart, actor FROM budget_movements"
        " ORDER BY id"
    )
    assert [tuple(m) for m in movements] == [
        ("HQ", "allocated", "fund", 10_000, None, "admin"),
        ("HQ", "given", "allocation", 4000, "SZ", "approver"),
        ("SZ", "allocated", "allocation", 4000, "HQ", "approver"),
        ("SZ", "given", "allocation", 1500, "SZ01", "sz-approver"),
        ("SZ01", "allocated", "allocation", 1500, "SZ", "sz-approver"),
        ("HQ", "given", "reclaim", -1000, "SZ", "approver"),
        ("SZ", "allocated", "reclaim", -1000, "HQ", "approver"),
        ("HQ", "allocated", "reclaim", -7000, None, "admin"),
    ]
    audited = await pool.fetch(
        "SELECT actor, action, target FROM audit_log WHERE action LIKE 'budget.%' ORDER BY id"
    )
    assert [tuple(a) for a in audited] == [
        ("admin", "budget.allocate", "branch:HQ"),
        ("approver", "budget.allocate", "branch:SZ"),
        ("sz-approver", "budget.allocate", "branch:SZ01"),
        ("approver", "budget.reclaim", "branch:SZ"),
        ("admin", "budget.reclaim", "branch:HQ"),
    ]


async def test_budget_goes_only_from_a_parent_to_its_child(api: Api, pool: asyncpg.Pool) -> None:
    year = this_year(api)
    await fund_tree(api, year, sz=1000)
    before = await ledger_of_money(pool)
    cases = [
        ("SZ01", {"from": "HQ"}),  # a grandchild
        ("SZ01", {"from": "GZ"}),  # another branch's
        ("GZ", {"from": "SZ"}),  # a sibling
        ("SZ", {}),  # no from: only head office's own budget names none
        ("HQ", {"from": "SZ"}),  # head office has no parent
    ]
    for branch, extra in cases:
        status, refused = await allocate(api, "admin", branch, 100, year, **extra)
        assert status == 400, (branch, extra, refused)
        assert refused["error"]["code"] == "invalid_request"
        assert set(refused["error"]["fields"]) == {"from"}, refused
    status, missing = await allocate(api, "admin", "NOPE", 100, year, **{"from": "HQ"})
    assert (status, missing["error"]["code"]) == (404, "not_found"), missing
    status, missing = await api.admin(
        "admin", "GET", f"/admin/v1/branches/NOPE/budget?period={year}"
    )
    assert status == 404, missing
    assert await ledger_of_money(pool) == before


async def test_only_approvers_and_admins_of_the_parent_or_above_move_money(
    api: Api, pool: asyncpg.Pool
) -> None:
    year = this_year(api)
    await fund_tree(api, year, sz=1000)
    await add_staff(pool, {"sz01-approver": ("approver", "SZ01")})
    await sign_in(api, pool, "sz01-approver")
    before = await ledger_of_money(pool)
    refusals = [
        ("approver", "HQ", {}),  # head office's own budget: its admins only
        ("sz-admin", "HQ", {}),
        ("sz-approver", "SZ", {"from": "HQ"}),  # a branch does not fund itself from above
        ("sz-admin", "GZ", {"from": "HQ"}),  # outside its subtree
        ("sz01-approver", "SZ01", {"from": "SZ"}),
        ("marketer", "SZ", {"from": "HQ"}),  # marketers plan, they do not move money
        ("sz-marketer", "SZ01", {"from": "SZ"}),
        ("auditor", "SZ", {"from": "HQ"}),
        ("operator", "SZ", {"from": "HQ"}),
    ]
    for user, branch, extra in refusals:
        status, refused = await allocate(api, user, branch, 100, year, **extra)
        assert (status, refused["error"]["code"]) == (403, "forbidden"), (user, branch, refused)
    for user, branch in [("sz-approver", "SZ"), ("sz01-approver", "SZ01"), ("approver", "HQ")]:
        status, refused = await reclaim(api, user, branch, 100, year)
        assert (status, refused["error"]["code"]) == (403, "forbidden"), (user, branch, refused)
    assert await ledger_of_money(pool) == before

    # Reading: a branch's staff read their subtree; auditors read; operators do not.
    path = f"/admin/v1/branches/{{}}/budget?period={year}"
    for user, branch, expected in [
        ("sz-marketer", "SZ", 200),
        ("sz-marketer", "SZ01", 200),
        ("sz01-approver", "SZ01", 200),
        ("sz01-approver", "SZ", 403),
        ("sz-approver", "GZ", 403),
        ("sz-approver", "HQ", 403),
        ("auditor", "SZ", 200),
        ("operator", "SZ", 403),
    ]:
        status, body = await api.admin(user, "GET", path.format(branch))
        assert status == expected, (user, branch, body)

    # An admin of SZ may both give to and take back from SZ's own child.
    status, body = await allocate(api, "sz-admin", "SZ01", 300, year, **{"from": "SZ"})
    assert status == 200, body
    status, body = await reclaim(api, "sz-admin", "SZ01", 100, year)
    assert (status, body["allocated"]) == (200, 200), body
    await assert_consistent(pool)


async def test_bad_bodies_are_refused_naming_the_field_and_change_nothing(
    api: Api, pool: asyncpg.Pool
) -> None:
    year = this_year(api)
    await fund_tree(api, year, sz=1000)
    before = await ledger_of_money(pool)
    path = "/admin/v1/branches/SZ/budget/allocations"
    cases: list[tuple[Any, str]] = [
        ({"period": year, "amount": 0, "from": "HQ"}, "amount"),
        ({"period": year, "amount": -5, "from": "HQ"}, "amount"),
        ({"period": year, "amount": "100", "from": "HQ"}, "amount"),
        ({"period": year, "amount": 1.5, "from": "HQ"}, "amount"),
        ({"period": year, "amount": True, "from": "HQ"}, "amount"),
        ({"period": year, "amount": 10**13, "from": "HQ"}, "amount"),
        ({"period": year, "from": "HQ"}, "amount"),
        ({"period": int(year), "amount": 100, "from": "HQ"}, "period"),
        ({"period": "27", "amount": 100, "from": "HQ"}, "period"),
        ({"period": "2027-01", "amount": 100, "from": "HQ"}, "period"),
        ({"period": "1999", "amount": 100, "from": "HQ"}, "period"),
        ({"period": "２０２７", "amount": 100, "from": "HQ"}, "period"),
        ({"amount": 100, "from": "HQ"}, "period"),
        ({"period": year, "amount": 100, "from": "H Q"}, "from"),
        ({"period": year, "amount": 100, "from": 7}, "from"),
        ([1, 2], "body"),
    ]
    for body, field in cases:
        status, refused = await api.admin("approver", "POST", path, body)
        assert status == 400, (body, refused)
        assert refused["error"]["code"] == "invalid_request"
        assert field in refused["error"]["fields"], (body, refused)
    token = await api.login("approver")
    for raw in (b"", b"{", b"null"):
        resp = await api.client.post(path, data=raw, headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 400, raw
        assert (await resp.json())["error"]["code"] == "invalid_request"
    status, refused = await api.admin(
        "approver", "POST", "/admin/v1/branches/SZ/budget/reclaim", {"period": year}
    )
    assert (status, set(refused["error"]["fields"])) == (400, {"amount"}), refused
    for query in ("", "?period=27", "?period=abcd", "?period=20271"):
        status, refused = await api.admin("admin", "GET", f"/admin/v1/branches/SZ/budget{query}")
        assert (status, set(refused["error"]["fields"])) == (400, {"period"}), (query, refused)
    assert await ledger_of_money(pool) == before


async def test_concurrent_allocations_never_give_more_than_there_is(
    api: Api, pool: asyncpg.Pool
) -> None:
    year = this_year(api)
    await fund_tree(api, year, hq=1000)
    answers = await asyncio.gather(
        *(allocate(api, "approver", "SZ", 300, year, **{"from": "HQ"}) for _ in range(10))
    )
    assert sorted(status for status, _ in answers) == [200] * 3 + [409] * 7, answers
    assert figures(await budget(api, "HQ", year)) == (1000, 900, 0, 0, 100)
    await assert_consistent(pool)


# campaigns


async def test_approval_reserves_the_budget_and_refuses_when_short(
    api: Api, pool: asyncpg.Pool
) -> None:
    year = this_year(api)
    await api.create_right()
    await fund_tree(api, year, sz=1000)
    await sz_campaign(api, "c1", 600)
    status, approved = await act(api, "sz-approver", "c1", "approve")
    assert (status, approved["status"]) == (200, "approved"), approved
    assert figures(await budget(api, "SZ", year)) == (1000, 0, 600, 0, 400)

    await sz_campaign(api, "c2", 500)
    before = await ledger_of_money(pool)
    status, refused = await act(api, "sz-approver", "c2", "approve")
    assert status == 409, refused
    assert refused["error"] | {"message": ""} == {
        "code": "budget_exceeded",
        "message": "",
        "branch": "SZ",
        "period": year,
        "available": 400,
        "needed": 500,
    }
    status, c2 = await api.admin("sz-marketer", "GET", "/admin/v1/campaigns/c2")
    assert c2["status"] == "pending"
    assert await ledger_of_money(pool) == before

    # Without a budget, no approval once head office has a budget for the year.
    await sz_campaign(api, "c3", None)
    status, refused = await act(api, "sz-approver", "c3", "approve")
    assert status == 409, refused
    assert refused["error"]["code"] == "budget_required"
    assert (refused["error"]["branch"], refused["error"]["period"]) == ("SZ", year)
    assert await ledger_of_money(pool) == before

    # A reservation is not taken back up.
    status, refused = await reclaim(api, "approver", "SZ", 401, year)
    assert (status, refused["error"]["available"]) == (409, 400), refused
    status, sz = await reclaim(api, "approver", "SZ", 400, year)
    assert status == 200, sz
    assert figures(sz) == (600, 0, 600, 0, 0)
    reservations = await pool.fetch(
        "SELECT campaign_id, branch_id, period, amount, charged FROM budget_reservations"
    )
    assert [tuple(r) for r in reservations] == [("c1", "SZ", year, 600, None)]
    await assert_consistent(pool)


async def test_no_budgets_no_reservations(api: Api, pool: asyncpg.Pool) -> None:
    """Until head office has a budget for a year, campaigns starting in it are approved as
    before, with or without a budget of their own, and hold nothing."""
    year = this_year(api)
    await api.create_right()
    await fund_tree(api, str(int(year) + 1))
    await sz_campaign(api, "c1", None)
    await sz_campaign(api, "c2", 10_000_000)
    for campaign_id in ("c1", "c2"):
        status, approved = await act(api, "sz-approver", campaign_id, "approve")
        assert (status, approved["status"]) == (200, "approved"), approved
    assert await pool.fetchval("SELECT count(*) FROM budget_reservations") == 0


class TestBudgetNotRequired:
    @pytest.fixture
    def settings(self) -> Any:
        return settings_for_tests(budget_required=False)

    async def test_a_campaign_without_a_budget_is_approved_unreserved(
        self, api: Api, pool: asyncpg.Pool
    ) -> None:
        year = this_year(api)
        await api.create_right()
        await fund_tree(api, year, sz=100)
        await sz_campaign(api, "c1", None)
        status, approved = await act(api, "sz-approver", "c1", "approve")
        assert (status, approved["status"]) == (200, "approved"), approved
        await sz_campaign(api, "c2", 101)
        status, refused = await act(api, "sz-approver", "c2", "approve")
        assert (status, refused["error"]["code"]) == (409, "budget_exceeded"), refused
        assert figures(await budget(api, "SZ", year)) == (100, 0, 0, 0, 100)


async def test_twenty_approvals_racing_for_budget_enough_for_three(
    api: Api, pool: asyncpg.Pool
) -> None:
    year = this_year(api)
    await api.create_right()
    await fund_tree(api, year, sz=1500)
    ids = [f"race{i:02d}" for i in range(20)]
    for campaign_id in ids:
        await sz_campaign(api, campaign_id, 500)
    answers = await asyncio.gather(*(act(api, "sz-approver", c, "approve") for c in ids))
    approved = [c for c, (status, _) in zip(ids, answers, strict=True) if status == 200]
    refused = [body for status, body in answers if status != 200]
    assert len(approved) == 3, answers
    assert len(refused) == 17
    assert {r["error"]["code"] for r in refused} == {"budget_exceeded"}
    assert all(r["error"]["available"] < 500 for r in refused)
    statuses = await pool.fetch("SELECT id FROM campaigns WHERE status = 'approved' ORDER BY id")
    assert [r["id"] for r in statuses] == sorted(approved)
    held = await pool.fetch("SELECT campaign_id FROM budget_reservations ORDER BY campaign_id")
    assert [r["campaign_id"] for r in held] == sorted(approved)
    assert figures(await budget(api, "SZ", year)) == (1500, 0, 1500, 0, 0)
    await assert_consistent(pool)


async def test_end_gives_back_what_the_campaign_did_not_spend(api: Api, pool: asyncpg.Pool) -> None:
    year = this_year(api)
    await api.create_right()  # unit cost 100
    await fund_tree(api, year, sz=2000)
    await sz_campaign(api, "c1", 1000)
    await sz_campaign(api, "c2", 250)
    for campaign_id in ("c1", "c2"):
        status, approved = await act(api, "sz-approver", campaign_id, "approve")
        assert status == 200, approved
    for i in range(3):
        status, granted = await api.claim(request_id=f"a{i}", campaign_id="c1", customer_id=f"k{i}")
        assert status == 201, granted
    # c2's own budget stops it at two grants: the branch never pays beyond a reservation.
    answers = [
        await api.claim(request_id=f"b{i}", campaign_id="c2", customer_id=f"k{i}") for i in range(3)
    ]
    assert [status for status, _ in answers] == [201, 201, 409], answers
    assert answers[2][1]["error"]["code"] == "budget_exhausted"
    assert figures(await budget(api, "SZ", year)) == (2000, 0, 750, 500, 750)

    status, ended = await act(api, "sz-marketer", "c1", "end")
    assert (status, ended["status"]) == (200, "ended"), ended
    assert figures(await budget(api, "SZ", year)) == (2000, 0, 50, 500, 1450)
    status, ended = await act(api, "sz-marketer", "c2", "end")
    assert status == 200, ended
    assert figures(await budget(api, "SZ", year)) == (2000, 0, 0, 500, 1500)

    held = await pool.fetch(
        "SELECT campaign_id, amount, charged, released_at IS NOT NULL AS closed"
        " FROM budget_reservations ORDER BY campaign_id"
    )
    assert [tuple(r) for r in held] == [("c1", 1000, 300, True), ("c2", 250, 200, True)]
    released = await pool.fetch(
        "SELECT campaign_id, amount, actor FROM budget_movements WHERE kind = 'release' ORDER BY id"
    )
    assert [tuple(r) for r in released] == [("c1", -700, "sz-marketer"), ("c2", -50, "sz-marketer")]
    # What came back can be given again; what was spent cannot.
    status, refused = await reclaim(api, "approver", "SZ", 1501, year)
    assert (status, refused["error"]["available"]) == (409, 1500), refused
    status, sz = await reclaim(api, "approver", "SZ", 1500, year)
    assert (status, figures(sz)) == (200, (500, 0, 0, 500, 0)), sz
    await assert_consistent(pool)


async def test_the_scheduler_ending_a_campaign_gives_back_its_unspent_budget(
    api: Api, pool: asyncpg.Pool, redis: Any, keys: Any, settings: Any, clock: Any
) -> None:
    year = this_year(api)
    await api.create_right()
    await fund_tree(api, year, sz=1000)
    ends_at = datetime.fromtimestamp(int(clock()) + 60, UTC).isoformat()
    await sz_campaign(api, "c1", 800, ends_at=ends_at)
    status, approved = await act(api, "sz-approver", "c1", "approve")
    assert status == 200, approved
    status, granted = await api.claim(request_id="q1", campaign_id="c1", customer_id="k1")
    assert status == 201, granted
    clock.advance(61)
    await Stores(settings, clock, keys, redis, pool, Scripts(redis)).scheduler().tick()
    assert await pool.fetchval("SELECT status FROM campaigns WHERE id = 'c1'") == "ended"
    assert figures(await budget(api, "SZ", year)) == (1000, 0, 0, 100, 900)
    released = await pool.fetchrow(
        "SELECT amount, actor FROM budget_movements WHERE kind = 'release'"
    )
    assert tuple(released) == (-700, "(schedule)")
    await assert_consistent(pool)


async def load(conn: asyncpg.Connection, campaign_id: str) -> Campaign:
    row = await conn.fetchrow(campaign_queries.get_campaign, campaign_id)
    return Campaign.from_rows(row, await conn.fetch(campaign_queries.campaign_rewards, campaign_id))


async def test_a_revised_budget_moves_the_reservation(api: Api, pool: asyncpg.Pool) -> None:
    """rereserve, as a revision of an approved campaign's budget calls it in its transaction."""
    year = this_year(api)
    await api.create_right()
    await fund_tree(api, year, sz=1000)
    await sz_campaign(api, "c1", 500)
    status, approved = await act(api, "sz-approver", "c1", "approve")
    assert status == 200, approved
    rules, approver = BudgetRules(SHANGHAI), Staff("approver", "approver", "HQ")

    async def revise(new_budget: int | None) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await rereserve(conn, rules, approver, await load(conn, "c1"), new_budget)

    await revise(900)
    assert figures(await budget(api, "SZ", year)) == (1000, 0, 900, 0, 100)
    with pytest.raises(BudgetExceeded) as refused:
        await revise(1001)
    # What is needed is the difference.
    assert (refused.value.details["available"], refused.value.details["needed"]) == (100, 101)
    assert figures(await budget(api, "SZ", year)) == (1000, 0, 900, 0, 100)
    await revise(300)
    assert figures(await budget(api, "SZ", year)) == (1000, 0, 300, 0, 700)
    await revise(300)  # unchanged: no movement
    kinds = await pool.fetch(
        "SELECT kind, amount FROM budget_movements WHERE campaign_id = 'c1' ORDER BY id"
    )
    assert [tuple(k) for k in kinds] == [
        ("reservation", 500),
        ("revision", 400),
        ("revision", -600),
    ]
    await assert_consistent(pool)


async def test_a_revision_of_the_budget_through_the_api(api: Api, pool: asyncpg.Pool) -> None:
    year = this_year(api)
    await api.create_right()
    await fund_tree(api, year, sz=1000)
    await sz_campaign(api, "c1", 500)
    status, approved = await act(api, "sz-approver", "c1", "approve")
    assert status == 200, approved

    base = "/admin/v1/campaigns/c1/revisions"

    async def revise(new_budget: int) -> tuple[int, Any]:
        status, revision = await api.admin("sz-marketer", "POST", base, {"budget": new_budget})
        assert status == 201, revision
        path = f"{base}/{revision['id']}"
        status, revision = await api.admin("sz-marketer", "POST", f"{path}/submit")
        assert status == 200, revision
        status, answer = await api.admin("sz-approver", "POST", f"{path}/approve")
        if status != 200:  # still pending: rejected, so the next one may be made
            status_rejected, rejected = await api.admin("sz-approver", "POST", f"{path}/reject")
            assert status_rejected == 200, rejected
        return status, answer

    before = await ledger_of_money(pool)
    status, refused = await revise(1200)  # the difference, 700, is more than SZ has left
    assert status == 409, refused
    assert (refused["error"]["code"], refused["error"]["available"]) == ("budget_exceeded", 500)
    assert await ledger_of_money(pool) == before
    status, campaign = await api.admin("sz-marketer", "GET", "/admin/v1/campaigns/c1")
    assert campaign["budget"] == 500
    status, applied = await revise(900)
    assert status == 200, applied
    assert figures(await budget(api, "SZ", year)) == (1000, 0, 900, 0, 100)
    await assert_consistent(pool)
