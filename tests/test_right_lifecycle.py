"""A right's lifecycle (准入 / 退出): proposed, admitted by an approver who did not propose it,
suspended and resumed, retired. Only admitted rights go into campaigns; a suspended right's
live rewards refuse claims and goal grants (campaign_not_active, state right_suspended) until
it is resumed; a right with live campaigns is not retired."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from quanyi.campaigns.api import CAMPAIGNS
from quanyi.core.settings import Settings
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import Api, assert_error, stock_granted
from tests.support.events import add_card_channel, event, goal_campaign, send
from tests.support.factories import bring_to, campaign_body, move_right, reward, right_body
from tests.support.stores import audit_rows

pytestmark = pytest.mark.usefixtures("signed_in")


async def act(api: Api, user: str, right_id: str, action: str) -> tuple[int, Any]:
    return await api.admin(user, "POST", f"/admin/v1/rights/{right_id}/{action}")


async def right_state(pool: asyncpg.Pool, right_id: str = "coffee") -> str:
    return str(await pool.fetchval("SELECT state FROM rights WHERE id = $1", right_id))


def suspended(status: int, body: Any) -> bool:
    return (status, body["error"]["code"], body["error"].get("state")) == (
        409,
        "campaign_not_active",
        "right_suspended",
    )


# --- who moves a right, and where to -------------------------------------------------------


async def test_a_right_is_proposed_then_admitted_by_someone_else(api, pool):
    proposed = await api.create_right(admit=False)
    assert (proposed["state"], proposed["proposed_by"], proposed["proposers"]) == (
        "proposed",
        "marketer",
        ["marketer"],
    )
    assert proposed["admitted_by"] is None

    # Not admitted: no campaign may name it yet, and nothing is made.
    status, body = await api.admin(
        "marketer", "POST", "/admin/v1/campaigns", campaign_body(api.clock())
    )
    error = assert_error(status, body, 409, "right_not_admitted")
    assert error["rights"] == [{"right_id": "coffee", "state": "proposed"}]
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0

    status, admitted = await act(api, "approver", "coffee", "admit")
    assert status == 200, admitted
    assert (admitted["state"], admitted["admitted_by"]) == ("admitted", "approver")
    assert admitted["admitted_at"] is not None
    assert await audit_rows(pool, "right:coffee") == [
        ("marketer", "HQ", "right.create", "right:coffee"),
        ("approver", "HQ", "right.admit", "right:coffee"),
    ]
    await api.create_campaign()  # admitted: it may be paid out now

    status, listed = await api.admin("approver", "GET", "/admin/v1/rights")
    assert [(r["id"], r["state"]) for r in listed["rights"]] == [("coffee", "admitted")]


async def test_whoever_proposed_a_right_may_not_admit_it(api, pool):
    status, body = await api.admin("admin", "POST", "/admin/v1/rights", right_body())
    assert status == 201, body
    status, body = await act(api, "admin", "coffee", "admit")
    assert_error(status, body, 403, "forbidden")
    assert await right_state(pool) == "proposed"
    await move_right(api, "coffee", "admit", user="approver")


@pytest.mark.parametrize("user", ["marketer", "sz-approver", "sz-admin"])
async def test_only_head_office_approvers_move_rights(api, pool, user):
    await api.create_right(admit=False)
    status, body = await act(api, user, "coffee", "admit")
    assert_error(status, body, 403, "forbidden")
    assert await right_state(pool) == "proposed"
    assert "right.admit" not in {row[2] for row in await audit_rows(pool, "right:coffee")}


async def test_an_edit_proposes_the_right_again_and_its_editor_may_not_admit_it(api, pool):
    await api.create_right()
    status, edited = await api.admin(
        "admin", "PUT", "/admin/v1/rights/coffee", right_body(unit_cost=300)
    )
    assert status == 200, edited
    assert (edited["state"], edited["proposers"], edited["unit_cost"]) == (
        "proposed",
        ["admin"],
        300,
    )
    status, body = await api.admin(
        "marketer", "POST", "/admin/v1/campaigns", campaign_body(api.clock())
    )
    assert_error(status, body, 409, "right_not_admitted")
    # A second edit while proposed adds its editor: neither may admit it.
    status, edited = await api.admin("marketer", "PUT", "/admin/v1/rights/coffee", right_body())
    assert (status, edited["proposers"]) == (200, ["admin", "marketer"])
    status, body = await act(api, "admin", "coffee", "admit")
    assert_error(status, body, 403, "forbidden")
    await move_right(api, "coffee", "admit")


STATES_AND_PATHS = {
    "proposed": [],
    "admitted": ["admit"],
    "suspended": ["admit", "suspend"],
    "retired": ["admit", "retire"],
}
LEGAL = {
    ("proposed", "admit"),
    ("proposed", "retire"),
    ("admitted", "suspend"),
    ("admitted", "retire"),
    ("suspended", "resume"),
    ("suspended", "retire"),
}


async def right_in(api: Api, state: str) -> None:
    await api.create_right(admit=False)
    for action in STATES_AND_PATHS[state]:
        await move_right(api, "coffee", action)


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (s, a)
        for s in STATES_AND_PATHS
        for a in ("admit", "suspend", "resume", "retire")
        if (s, a) not in LEGAL
    ],
)
async def test_an_illegal_move_is_409_naming_the_state(api, pool, state, action):
    await right_in(api, state)
    audit_before = await audit_rows(pool, "right:coffee")
    status, body = await act(api, "approver", "coffee", action)
    error = assert_error(status, body, 409, "invalid_transition")
    assert error["state"] == state
    assert await right_state(pool) == state
    assert await audit_rows(pool, "right:coffee") == audit_before


@pytest.mark.parametrize(("state", "action"), sorted(LEGAL))
async def test_each_legal_move(api, pool, state, action):
    await right_in(api, state)
    status, body = await act(api, "approver", "coffee", action)
    assert status == 200, body
    target = {"admit": "admitted", "suspend": "suspended", "resume": "admitted"}.get(
        action, "retired"
    )
    assert body["state"] == target == await right_state(pool)
    by = {"admitted": "admitted_by", "suspended": "suspended_by", "retired": "retired_by"}[target]
    assert body[by] == "approver"
    assert ("approver", "HQ", f"right.{action}", "right:coffee") in await audit_rows(
        pool, "right:coffee"
    )


async def test_unknown_rights_and_actions_are_404(api):
    status, body = await act(api, "approver", "nope", "admit")
    assert_error(status, body, 404, "not_found")
    await api.create_right(admit=False)
    status, body = await act(api, "approver", "coffee", "approve")
    assert_error(status, body, 404, "not_found")


# --- retiring ------------------------------------------------------------------------------


@pytest.mark.parametrize("live", ["pending", "approved", "paused"])
async def test_a_right_with_live_campaigns_is_not_retired(api, pool, live):
    await api.create_right()
    await bring_to(api, live, "c1")
    await bring_to(api, "draft", "c2")  # a draft does not hold it
    status, body = await act(api, "approver", "coffee", "retire")
    error = assert_error(status, body, 409, "right_in_use")
    assert error["campaigns"] == ["c1"]
    assert await right_state(pool) == "admitted"


async def test_a_retired_right_is_named_by_no_campaign_and_not_edited(api, pool):
    await api.create_right()
    await bring_to(api, "ended", "c1")
    await bring_to(api, "draft", "c2")
    await move_right(api, "coffee", "retire")
    body = campaign_body(api.clock(), "c3")
    status, refused = await api.admin("marketer", "POST", "/admin/v1/campaigns", body)
    error = assert_error(status, refused, 409, "right_not_admitted")
    assert error["rights"] == [{"right_id": "coffee", "state": "retired"}]
    status, refused = await api.admin("marketer", "POST", "/admin/v1/campaigns/c2/submit")
    assert_error(status, refused, 409, "right_not_admitted")
    status, refused = await api.admin("marketer", "PUT", "/admin/v1/rights/coffee", right_body())
    assert_error(status, refused, 409, "invalid_transition")
    assert refused["error"]["state"] == "retired"


# --- suspension on the hot path ------------------------------------------------------------


async def test_suspending_refuses_claims_and_resuming_restores_them(api, pool, redis, keys):
    await api.create_right()
    await api.create_right("tea")
    await api.create_campaign("c1")
    await api.create_campaign("c2", [reward("r1", stock=10)], approve=False)
    await api.admin("marketer", "POST", "/admin/v1/campaigns/c2/submit")
    await api.create_campaign("c3", [reward("r1", "tea")])
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="a")
    assert status == 201, grant

    status, body = await act(api, "approver", "coffee", "suspend")
    assert (status, body["state"], body["suspended_by"]) == (200, "suspended", "approver")
    audited = (await audit_rows(pool, "right:coffee"))[-1]
    assert audited == ("approver", "HQ", "right.suspend", "right:coffee")

    status, refused = await api.claim(request_id="q2", campaign_id="c1", customer_id="b")
    assert suspended(status, refused), refused
    assert refused["error"]["message"]
    # Nothing taken, and a retry of a granted request still answers its grant.
    assert await stock_granted(api, "c1") == 1
    status, replay = await api.claim(request_id="q1", campaign_id="c1", customer_id="a")
    assert (status, replay["grant_id"], replay["replayed"]) == (200, grant["grant_id"], True)
    # Another right's campaign is untouched.
    status, tea = await api.claim(request_id="q3", campaign_id="c3", customer_id="b")
    assert status == 201, tea
    # A campaign approved while its right is suspended, or paused and resumed, stays refused.
    status, _ = await api.admin("approver", "POST", "/admin/v1/campaigns/c2/approve")
    assert status == 200
    await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/pause")
    await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/resume")
    for campaign_id in ("c1", "c2"):
        status, refused = await api.claim(
            request_id=f"q-{campaign_id}", campaign_id=campaign_id, customer_id="c"
        )
        assert suspended(status, refused), refused
    # The marker the claims read, in the campaign's own hash; offers say so too.
    assert await redis.hget(keys.campaign("c1"), "r:r1:susp") == "1"
    assert await offer_reasons(api, "d") == {"c1": "right_suspended", "c2": "right_suspended"}

    status, body = await act(api, "approver", "coffee", "resume")
    assert (status, body["state"]) == (200, "admitted")
    assert await redis.hget(keys.campaign("c1"), "r:r1:susp") is None
    for campaign_id in ("c1", "c2"):
        status, grant = await api.claim(
            request_id=f"q-{campaign_id}", campaign_id=campaign_id, customer_id="c"
        )
        assert status == 201, grant
    assert await offer_reasons(api, "d") == {"c1": None, "c2": None}


async def offer_reasons(api: Any, customer: str) -> dict[str, str | None]:
    """Why each coffee campaign's reward is not claimable for `customer` (None: it is)."""
    status, body = await api.channel("GET", f"/v1/customers/{customer}/offers")
    assert status == 200, body
    return {o["campaign_id"]: o.get("reason") for o in body["offers"] if o["right_id"] == "coffee"}


async def test_a_campaign_may_not_be_drafted_edited_or_submitted_on_a_suspended_right(api, pool):
    await api.create_right()
    await bring_to(api, "draft", "c1")
    await move_right(api, "coffee", "suspend")
    status, body = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/submit")
    error = assert_error(status, body, 409, "right_not_admitted")
    assert error["rights"] == [{"right_id": "coffee", "state": "suspended"}]
    status, body = await api.admin(
        "marketer", "POST", "/admin/v1/campaigns", campaign_body(api.clock(), "c2")
    )
    assert_error(status, body, 409, "right_not_admitted")
    edit = {k: v for k, v in campaign_body(api.clock(), "c1").items() if k != "id"}
    status, body = await api.admin("marketer", "PUT", "/admin/v1/campaigns/c1", edit)
    assert_error(status, body, 409, "right_not_admitted")
    assert await pool.fetchval("SELECT status FROM campaigns WHERE id = 'c1'") == "draft"


async def test_suspension_stops_goal_grants_too(api, pool, settings: Settings):
    await add_card_channel(api, pool, settings)
    await goal_campaign(api)
    await send(api, *(event(api, f"tx-{i}") for i in range(4)))
    await move_right(api, "lounge", "suspend")
    fifth = (await send(api, event(api, "tx-4")))[0]
    # Counted toward the goal, but the goal's grant waits for the right to be resumed.
    assert fifth["status"] == "accepted" and "granted" not in fifth
    assert await stock_granted(api, "g1") == 0
    await move_right(api, "lounge", "resume")
    sixth = (await send(api, event(api, "tx-5")))[0]
    assert len(sixth["granted"]) == 1
    assert await stock_granted(api, "g1") == 1


async def test_claims_racing_a_suspension_are_granted_before_it_or_refused_after(
    api, pool, redis, keys
):
    """Claims fired in waves while the right is suspended: each is granted whole or refused;
    stock is never oversold; once the suspension has answered no claim is granted; Redis and
    the ledger hold exactly the grants answered 201."""
    # Less than the claims: on a slow day it runs out before the suspension lands.
    stock = 150
    await api.create_right()
    await api.create_campaign("c1", [reward("r1", stock=stock)])
    sent_at: dict[int, float] = {}
    answered: set[int] = set()
    under_way = asyncio.Event()  # 40 claims answered: the suspension comes among the rest

    async def one(i: int) -> tuple[int, Any]:
        sent_at[i] = asyncio.get_running_loop().time()
        reply = await api.claim(request_id=f"q{i}", campaign_id="c1", customer_id=f"cust-{i}")
        answered.add(i)
        if len(answered) >= 40:
            under_way.set()
        return reply

    suspension_answered = asyncio.Event()

    async def waves() -> list[tuple[int, Any]]:
        # Waves of 10 until three waves after the suspension answered.
        replies: list[tuple[int, Any]] = []
        after = 0
        for w in range(500):
            replies += await asyncio.gather(*(one(w * 10 + k) for k in range(10)))
            after += suspension_answered.is_set()
            if after == 3:
                break
        return replies

    claims = asyncio.ensure_future(waves())
    await under_way.wait()
    started = len(answered)
    status, body = await act(api, "approver", "coffee", "suspend")
    assert status == 200, body
    suspended_at = asyncio.get_running_loop().time()
    suspension_answered.set()
    during = await claims
    after = await asyncio.gather(*(one(i) for i in range(10_000, 10_050)))

    assert all(suspended(s, b) for s, b in after)
    outcomes = {(s, b["error"]["code"] if s >= 400 else "granted") for s, b in during}
    assert outcomes <= {(201, "granted"), (409, "campaign_not_active"), (409, "out_of_stock")}
    refused = [b for s, b in during if s == 409 and b["error"]["code"] == "campaign_not_active"]
    assert refused and all(b["error"]["state"] == "right_suspended" for b in refused)
    granted_ids = {b["grant_id"] for s, b in during if s == 201}
    assert started <= len(granted_ids) <= stock
    # No claim sent once the suspension had answered was granted (and some were sent then).
    assert any(sent_at[i] > suspended_at for i in range(len(during)))
    assert all(sent_at[i] < suspended_at for i, (s, _) in enumerate(during) if s == 201)
    assert await stock_granted(api, "c1") == len(granted_ids)
    await LedgerWorker(redis, pool, keys).drain()
    ledger = {r["grant_id"] for r in await pool.fetch("SELECT grant_id FROM grants")}
    assert ledger == granted_ids

    await move_right(api, "coffee", "resume")
    status, grant = await one(99_999)
    if len(granted_ids) < stock:
        assert status == 201, grant
    else:
        assert_error(status, grant, 409, "out_of_stock")


async def test_suspensions_racing_campaign_moves_leave_every_live_reward_marked_as_its_right(
    api, pool, redis, keys
):
    """Suspend and resume the right while its campaigns are submitted, approved, paused and
    resumed: no move deadlocks or fails for it (each answers what its turn allows), and every
    live campaign ends with the suspended marker exactly when its right is suspended."""
    await api.create_right()
    ids = [f"c{i}" for i in range(6)]
    for i, campaign_id in enumerate(ids):  # half pending already, half to be submitted
        await bring_to(api, "pending" if i % 2 else "draft", campaign_id)

    async def campaign_moves(campaign_id: str) -> list[int]:
        statuses = []
        for user, action in [
            ("marketer", "submit"),
            ("approver", "approve"),
            ("marketer", "pause"),
            ("marketer", "resume"),
            ("marketer", "pause"),
            ("marketer", "resume"),
        ]:
            status, body = await api.admin(
                user, "POST", f"/admin/v1/campaigns/{campaign_id}/{action}"
            )
            assert status in (200, 409), body
            statuses.append(status)
        return statuses

    async def right_moves() -> None:
        for action in ["suspend", "resume"] * 4:
            status, body = await act(api, "approver", "coffee", action)
            assert status == 200, body

    await asyncio.gather(right_moves(), *(campaign_moves(c) for c in ids))
    await move_right(api, "coffee", "suspend")
    for final in ("suspended", "admitted"):
        live = await pool.fetch(
            "SELECT id FROM campaigns WHERE status IN ('pending', 'approved', 'paused')"
        )
        assert len(live) >= 3
        for row in live:
            marker = await redis.hget(keys.campaign(row["id"]), "r:r1:susp")
            assert (marker == "1") == (final == "suspended"), row["id"]
        if final == "suspended":
            await move_right(api, "coffee", "resume")


async def test_a_campaign_published_while_its_right_is_suspended_keeps_the_marker(
    api, pool, redis, keys
):
    """A campaign transition in flight (its row locked, its rewards read while the right was
    admitted) publishes after the suspension has started: the suspension waits for it and
    publishes last, so the stale publication cannot take the marker away."""
    await api.create_right()
    await api.create_campaign("c1")
    service = api.client.server.app[CAMPAIGNS]
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        stale = await service._load(conn, "c1", lock=True)  # as a transition does
        suspension = asyncio.ensure_future(act(api, "approver", "coffee", "suspend"))
        await asyncio.sleep(0.3)
        assert not suspension.done()  # it waits for the campaign
        await service._publish(conn, stale)
        await transaction.commit()
    status, body = await suspension
    assert status == 200, body
    assert await redis.hget(keys.campaign("c1"), "r:r1:susp") == "1"
    status, refused = await api.claim(request_id="q1", campaign_id="c1", customer_id="a")
    assert suspended(status, refused), refused
