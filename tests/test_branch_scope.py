"""Branch scope of the whole staff API: every admin endpoint × role (marketer, approver, admin)
× own/other branch (head office HQ, branch SZ), asserting the status and that nothing of
another branch (head office's or GZ's campaign and grant ids and voucher codes, nor the vendor
endpoints and keys head office keeps) reaches SZ staff. That every admin endpoint has a row
is checked by tests/test_org_matrix.py, which covers every role and the whole branch tree."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from quanyi.campaigns.model import TRANSITIONS
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import new_sessions, sign_in
from tests.support.clock import SHANGHAI
from tests.support.factories import register_vendor
from tests.support.settings import CHANNEL, PASSWORD
from tests.support.waiting import running, until
from tests.support.workers import fulfilment_worker

HQ, SZ, GZ = "HQ", "SZ", "GZ"
USERS = {  # username -> (role, branch)
    "marketer": ("marketer", HQ),
    "approver": ("approver", HQ),
    "admin": ("admin", HQ),
    "sz-marketer": ("marketer", SZ),
    "sz-approver": ("approver", SZ),
    "sz-admin": ("admin", SZ),
}
# Who brings a campaign of a branch through its workflow before a case acts on it (GZ has no
# staff of its own: head office runs its campaigns).
MAKERS = {HQ: {"marketer": "marketer", "approver": "approver"}}
MAKERS[SZ] = {"marketer": "sz-marketer", "approver": "sz-approver"}
MAKERS[GZ] = MAKERS[HQ]
MAIN = {HQ: "hq-main", SZ: "sz-main", GZ: "gz-main"}
STEPS = {
    "draft": [],
    "pending": ["submit"],
    "approved": ["submit", "approve"],
    "paused": ["submit", "approve", "pause"],
}
SIM = "sim"


@dataclass
class World:
    """Head office and branches SZ and GZ each run a campaign on one vendor's right, with a
    grant; the cases act as head office (HQ) and branch (SZ) staff."""

    api: Any
    pool: Any
    redis: Any
    keys: Any
    settings: Any
    clock: Any
    # What SZ staff must never see: everything of head office and of the other branch.
    not_sz: set[str] = field(default_factory=set)
    made: int = 0

    def fresh(self, prefix: str) -> str:
        self.made += 1
        return f"{prefix}{self.made}"

    async def campaign(self, branch: str, state: str) -> str:
        """A new campaign of `branch`, brought to `state` by that branch's own staff."""
        campaign_id = self.fresh(f"{branch.lower()}c-")
        if branch != SZ:
            self.not_sz.add(campaign_id)
        makers = MAKERS[branch]
        status, body = await self.api.admin(
            makers["marketer"],
            "POST",
            "/admin/v1/campaigns",
            campaign_body(self, campaign_id, branch),
        )
        assert status == 201, body
        for action in STEPS[state]:
            user = makers["approver" if action == "approve" else "marketer"]
            status, body = await self.api.admin(
                user, "POST", f"/admin/v1/campaigns/{campaign_id}/{action}"
            )
            assert status == 200, body
        return campaign_id

    async def grant(self, branch: str) -> str:
        campaign_id = MAIN[branch]
        customer = self.fresh("cust-")
        status, grant = await self.api.claim(
            request_id=f"q-{customer}", campaign_id=campaign_id, customer_id=customer
        )
        assert status == 201, grant
        if branch != SZ:
            self.not_sz.add(grant["grant_id"])
        return grant["grant_id"]

    async def fulfil(self) -> None:
        """A fulfilled grant of each branch at the vendor, in the ledger with its code."""
        grants = [await self.grant(HQ), await self.grant(GZ), await self.grant(SZ)]
        worker = fulfilment_worker(
            self.redis, self.pool, self.keys, self.settings, self.clock, block_ms=20
        )
        async with running(worker):

            async def fulfilled() -> bool:
                for grant_id in grants:
                    _, seen = await self.api.channel("GET", f"/v1/grants/{grant_id}")
                    if seen["status"] != "fulfilled":
                        return False
                return True

            await until(fulfilled, what="fulfilment")
        await LedgerWorker(self.redis, self.pool, self.keys).drain()
        for grant_id in grants[:2]:
            code = await self.pool.fetchval("SELECT code FROM grants WHERE grant_id = $1", grant_id)
            assert code
            self.not_sz.add(code)


def campaign_body(world: World, campaign_id: str, branch: str) -> dict[str, Any]:
    now = datetime.fromtimestamp(world.api.clock(), UTC)
    return {
        "id": campaign_id,
        "name": f"campaign {campaign_id}",
        "branch": branch,
        "starts_at": (now - timedelta(hours=1)).isoformat(),
        "ends_at": (now + timedelta(days=30)).isoformat(),
        "channels": [CHANNEL],
        "rewards": [{"id": "r1", "right_id": "lounge", "stock": 100, "per_customer_limit": 1}],
    }


@pytest.fixture
async def world(api, pool, redis, keys, settings, clock, start_sim, key_pairs, our_key_file):
    await sign_in(api, pool)
    base_url = await start_sim()
    await register_vendor(api, SIM, base_url, key_pairs, our_key_file)
    await api.create_right("lounge", vendor_id=SIM)
    await api.create_right("spare")  # no campaign uses it: it may be edited
    w = World(api, pool, redis, keys, settings, clock, not_sz={base_url, our_key_file})
    for branch, campaign_id in MAIN.items():
        makers = MAKERS[branch]
        body = campaign_body(w, campaign_id, branch)
        status, created = await api.admin(makers["marketer"], "POST", "/admin/v1/campaigns", body)
        assert status == 201, created
        for user, action in ((makers["marketer"], "submit"), (makers["approver"], "approve")):
            status, done = await api.admin(
                user, "POST", f"/admin/v1/campaigns/{campaign_id}/{action}"
            )
            assert status == 200, done
    w.not_sz.update((MAIN[HQ], MAIN[GZ]))
    for branch in MAIN:
        await w.grant(branch)
    return w


# --- who may do what ----------------------------------------------------------------------

Expect = Callable[[str, str, str | None], int]


def anyone(ok: int = 200) -> Expect:
    return lambda role, branch, target: ok


def head_office(*roles: str, ok: int = 200) -> Expect:
    """Shared resources: head-office staff of these roles (admins always)."""

    def expect(role: str, branch: str, target: str | None) -> int:
        allowed = role == "admin" or not roles or role in roles
        return ok if allowed and branch == HQ else 403

    return expect


def own_branch(*roles: str, ok: int = 200) -> Expect:
    """A branch's own things: its staff of these roles, and head office's."""

    def expect(role: str, branch: str, target: str | None) -> int:
        allowed = role == "admin" or not roles or role in roles
        return ok if allowed and branch in (HQ, target) else 403

    return expect


Call = Callable[[World, str, str | None], Awaitable[tuple[str, int, Any]]]


@dataclass(frozen=True)
class Case:
    """One row of the matrix: a route (and action), how to call it as `user` on something of
    `target` (a branch, or None for what all branches share), and the status expected."""

    method: str
    route: str
    call: Call
    expect: Expect
    targets: tuple[str | None, ...] = (None,)
    action: str | None = None
    # Head office's answer holds head-office data: proof that the leak check can see it.
    reveals: bool = False
    needs_codes: bool = False

    @property
    def name(self) -> str:
        return f"{self.method} {self.route}" + (f" {self.action}" if self.action else "")


async def as_staff(
    world: World, user: str, method: str, path: str, body: Any = None
) -> tuple[str, int, Any]:
    status, reply = await world.api.admin(user, method, path, body)
    return path, status, reply


async def call_login(world: World, user: str, _t: str | None) -> tuple[str, int, Any]:
    resp = await world.api.client.post(
        "/admin/v1/login", json={"username": user, "password": PASSWORD}
    )
    return "/admin/v1/login", resp.status, await resp.json()


async def call_logout(world: World, user: str, _t: str | None) -> tuple[str, int, Any]:
    # A second session, so logging it out keeps the one the other calls use.
    [token] = (await new_sessions(world.pool, user)).values()
    resp = await world.api.client.post(
        "/admin/v1/logout", headers={"Authorization": f"Bearer {token}"}
    )
    return "/admin/v1/logout", resp.status, await resp.json()


def right_body(right_id: str | None = None) -> dict[str, Any]:
    body = {"name": "spare right", "kind": "voucher", "face_value": 30, "unit_cost": 20}
    return {"id": right_id, **body} if right_id else body


def transition(action: str, state: str) -> Call:
    async def call(world: World, user: str, target: str | None) -> tuple[str, int, Any]:
        assert target is not None
        campaign_id = await world.campaign(target, state)
        return await as_staff(world, user, "POST", f"/admin/v1/campaigns/{campaign_id}/{action}")

    return call


async def call_put_campaign(world: World, user: str, target: str | None) -> tuple[str, int, Any]:
    assert target is not None
    campaign_id = await world.campaign(target, "draft")
    body = campaign_body(world, campaign_id, target)
    body.pop("id")
    return await as_staff(world, user, "PUT", f"/admin/v1/campaigns/{campaign_id}", body)


async def call_post_campaign(world: World, user: str, target: str | None) -> tuple[str, int, Any]:
    assert target is not None
    campaign_id = world.fresh("new-")
    if target != SZ:
        world.not_sz.add(campaign_id)
    body = campaign_body(world, campaign_id, target)
    return await as_staff(world, user, "POST", "/admin/v1/campaigns", body)


async def call_revoke(world: World, user: str, target: str | None) -> tuple[str, int, Any]:
    assert target is not None
    grant_id = await world.grant(target)
    return await as_staff(world, user, "POST", f"/admin/v1/grants/{grant_id}/revoke", {})


async def call_statement(world: World, user: str, _t: str | None) -> tuple[str, int, Any]:
    """An empty statement: every grant of ours at the vendor comes back as missing_theirs."""
    day = datetime.fromtimestamp(world.api.clock(), SHANGHAI).date().isoformat()
    token = await world.api.login(user)
    path = f"/admin/v1/vendors/{SIM}/statements"
    resp = await world.api.client.post(
        path,
        params={"day": day},
        data=b"grant_id,code,status,redeemed_at\n",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    return path, resp.status, await resp.json()


async def call_simulate(world: World, user: str, target: str | None) -> tuple[str, int, Any]:
    """A dry run of a draft campaign of `target` on one past transaction."""
    assert target is not None
    campaign_id = await world.campaign(target, "draft")
    token = await world.api.login(user)
    path = f"/admin/v1/campaigns/{campaign_id}/simulate"
    occurred = datetime.fromtimestamp(world.api.clock(), SHANGHAI).isoformat()
    resp = await world.api.client.post(
        path,
        data=f"cust-1,12000,5812,{occurred}\n".encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    return path, resp.status, await resp.json()


def audience_body(audience_id: str, branch: str) -> dict[str, Any]:
    return {"id": audience_id, "name": f"segment {audience_id}", "branch": branch}


async def an_audience(world: World, branch: str) -> str:
    """A new audience of `branch`, made by a head-office admin."""
    audience_id = world.fresh(f"{branch.lower()}a-")
    if branch != SZ:
        world.not_sz.add(audience_id)
    body = audience_body(audience_id, branch)
    status, made = await world.api.admin("admin", "POST", "/admin/v1/audiences", body)
    assert status == 201, made
    return audience_id


async def call_post_audience(world: World, user: str, target: str | None) -> tuple[str, int, Any]:
    assert target is not None
    audience_id = world.fresh(f"new-{target.lower()}a-")
    if target != SZ:
        world.not_sz.add(audience_id)
    body = audience_body(audience_id, target)
    return await as_staff(world, user, "POST", "/admin/v1/audiences", body)


async def call_get_audience(world: World, user: str, target: str | None) -> tuple[str, int, Any]:
    assert target is not None
    audience_id = await an_audience(world, target)
    return await as_staff(world, user, "GET", f"/admin/v1/audiences/{audience_id}")


async def call_put_members(world: World, user: str, target: str | None) -> tuple[str, int, Any]:
    assert target is not None
    path = f"/admin/v1/audiences/{await an_audience(world, target)}/members"
    token = await world.api.login(user)
    resp = await world.api.client.put(
        path,
        data=b"customer_id\ncust-1\ncust-2\n",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    return path, resp.status, await resp.json()


def simple(method: str, path: str, body: Callable[[World], Any] | None = None) -> Call:
    async def call(world: World, user: str, _t: str | None) -> tuple[str, int, Any]:
        return await as_staff(world, user, method, path, body(world) if body else None)

    return call


def scoped_get(kind: str) -> Call:
    async def call(world: World, user: str, target: str | None) -> tuple[str, int, Any]:
        return await as_staff(world, user, "GET", f"/admin/v1/{kind}/{target_id(target)}")

    return call


def target_id(target: str | None) -> str:
    return SIM if target is None else MAIN[target]


BRANCHES = (HQ, SZ)
CAMPAIGN = "/admin/v1/campaigns/{campaign_id}"
ACTION = "/admin/v1/campaigns/{campaign_id}/{action}"
VENDOR = "/admin/v1/vendors/{vendor_id}"
ACTION_CASES = {
    "submit": ("draft", own_branch("marketer")),
    "approve": ("pending", own_branch("approver")),
    "reject": ("pending", own_branch("approver")),
    "pause": ("approved", own_branch("marketer", "approver")),
    "resume": ("paused", own_branch("marketer", "approver")),
    "end": ("approved", own_branch("marketer", "approver")),
}

CASES = [
    Case("POST", "/admin/v1/login", call_login, anyone()),
    Case("POST", "/admin/v1/logout", call_logout, anyone()),
    Case(
        "POST",
        "/admin/v1/rights",
        simple("POST", "/admin/v1/rights", lambda w: right_body(w.fresh("right-"))),
        head_office("marketer", ok=201),
    ),
    Case(
        "PUT",
        "/admin/v1/rights/{right_id}",
        simple("PUT", "/admin/v1/rights/spare", lambda w: right_body()),
        head_office("marketer"),
    ),
    Case("GET", "/admin/v1/rights", simple("GET", "/admin/v1/rights"), anyone()),
    Case(
        "POST",
        "/admin/v1/campaigns",
        call_post_campaign,
        own_branch("marketer", ok=201),
        BRANCHES,
    ),
    Case(
        "GET",
        "/admin/v1/campaigns",
        simple("GET", "/admin/v1/campaigns"),
        anyone(),
        reveals=True,
    ),
    Case("GET", CAMPAIGN, scoped_get("campaigns"), own_branch(), BRANCHES),
    Case("PUT", CAMPAIGN, call_put_campaign, own_branch("marketer"), BRANCHES),
    *(
        Case("POST", ACTION, transition(action, state), expect, BRANCHES, action=action)
        for action, (state, expect) in ACTION_CASES.items()
    ),
    Case(
        "POST",
        "/admin/v1/campaigns/{campaign_id}/simulate",
        call_simulate,
        own_branch("marketer", "approver"),
        BRANCHES,
    ),
    Case(
        "POST",
        "/admin/v1/vendors",
        simple(
            "POST",
            "/admin/v1/vendors",
            lambda w: {"id": w.fresh("vendor-"), "name": "codes", "adapter": "codepool"},
        ),
        head_office("admin", ok=201),
    ),
    Case(
        "GET", "/admin/v1/vendors", simple("GET", "/admin/v1/vendors"), head_office(), reveals=True
    ),
    Case("GET", VENDOR, scoped_get("vendors"), head_office(), reveals=True),
    Case(
        "PATCH",
        VENDOR,
        simple("PATCH", f"/admin/v1/vendors/{SIM}", lambda w: {"timeout_ms": 2500}),
        head_office("admin"),
    ),
    Case(
        "POST",
        "/admin/v1/grants/{grant_id}/revoke",
        call_revoke,
        own_branch("marketer", "approver"),
        BRANCHES,
    ),
    Case(
        "POST",
        "/admin/v1/vendors/{vendor_id}/statements",
        call_statement,
        head_office("marketer", "approver", ok=201),
        reveals=True,
        needs_codes=True,
    ),
    Case(
        "POST",
        "/admin/v1/audiences",
        call_post_audience,
        own_branch("marketer", ok=201),
        BRANCHES,
    ),
    Case("GET", "/admin/v1/audiences/{audience_id}", call_get_audience, own_branch(), BRANCHES),
    Case(
        "PUT",
        "/admin/v1/audiences/{audience_id}/members",
        call_put_members,
        own_branch("marketer"),
        BRANCHES,
    ),
]


# Budgets down the branch tree: head office's own budget is its admins' (target HQ), a branch's
# is given and taken back by approvers and admins of its parent (target SZ, parent HQ).
BUDGET = "/admin/v1/branches/{branch_id}/budget"


def money_mover(role: str, branch: str, target: str | None) -> int:
    if branch != HQ or role == "marketer":
        return 403
    return 200 if target == SZ or role == "admin" else 403


def budget_call(what: str) -> Call:
    async def call(world: World, user: str, target: str | None) -> tuple[str, int, Any]:
        year = datetime.fromtimestamp(world.clock(), SHANGHAI).strftime("%Y")
        given = {"period": year, "amount": 1000}
        # Head office keeps as much as it gives SZ: each side has some left to move.
        funded = {"period": year, "amount": 2000}
        await as_staff(world, "admin", "POST", f"{BUDGET.format(branch_id=HQ)}/allocations", funded)
        await as_staff(
            world,
            "admin",
            "POST",
            f"{BUDGET.format(branch_id=SZ)}/allocations",
            given | {"from": HQ},
        )
        path = BUDGET.format(branch_id=target)
        if what == "read":
            return await as_staff(world, user, "GET", f"{path}?period={year}")
        body = {"period": year, "amount": 100} | (
            {"from": HQ} if what == "allocations" and target == SZ else {}
        )
        return await as_staff(world, user, "POST", f"{path}/{what}", body)

    return call


CASES += [
    Case("GET", BUDGET, budget_call("read"), own_branch(), BRANCHES),
    Case("POST", f"{BUDGET}/allocations", budget_call("allocations"), money_mover, BRANCHES),
    Case("POST", f"{BUDGET}/reclaim", budget_call("reclaim"), money_mover, BRANCHES),
]


def admin_routes(api: Any) -> set[tuple[str, str]]:
    """(method, path) of every route under /admin/v1; HEAD runs the GET handler."""
    routes = set()
    for route in api.client.server.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or ""
        if path.startswith("/admin/v1") and route.method != "HEAD":
            routes.add((route.method, path))
    return routes


def test_the_cases_cover_every_workflow_action():
    assert {c.action for c in CASES if c.route == ACTION} == set(TRANSITIONS)


async def test_every_case_is_a_route_of_the_app(api):
    # That every admin route has a row is tests/test_org_matrix.py's to check, over every role
    # and the whole branch tree; this matrix keeps the leak checks of its cases.
    assert {(c.method, c.route) for c in CASES} <= admin_routes(api)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_branch_scope(world, case):
    if case.needs_codes:
        await world.fulfil()
    problems = []
    for user, (role, branch) in USERS.items():
        for target in case.targets:
            path, status, body = await case.call(world, user, target)
            expected = case.expect(role, branch, target)
            if status != expected:
                problems.append((user, target, f"status {status}, expected {expected}", body))
            if status >= 400 and (
                not isinstance(body, dict) or "code" not in body.get("error", {})
            ):
                problems.append((user, target, "not a JSON error", body))
            shown = orjson.dumps(body).decode()
            # What the caller sent (the id in the path) is theirs to see again.
            sent = path.split("/")
            seen = sorted(s for s in world.not_sz if s in shown and s not in sent)
            if branch != HQ and seen:
                problems.append((user, target, f"other branches data shown: {seen}", body))
            if case.reveals and branch == HQ and status == expected and not seen:
                problems.append((user, target, "head office sees none of its own data", body))
    assert problems == [], "\n".join(repr(p[:3]) for p in problems)
