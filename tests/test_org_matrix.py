"""The organisation matrix: every admin endpoint × role (marketer, approver, admin, auditor,
operator) × where its target lives relative to the caller (own branch, child, sibling,
parent), on the tree HQ → SZ → SZ01 and HQ → GZ.

Callers sit at SZ, which has all four relations, and at head office (own and child: head
office has neither sibling nor parent). Each row of TABLE says which roles may call the
endpoint and how far their reach goes; every other call must answer 403 and leave PostgreSQL
and Redis exactly as they were. Lists must show nothing outside the caller's subtree, and head
office must see beyond SZ's. The routes are read from the app: an endpoint without a row fails
the first test, so a new one cannot be forgotten."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from quanyi.campaigns.model import TRANSITIONS
from tests.support.clients import add_staff, new_sessions, sign_in
from tests.support.clock import SHANGHAI
from tests.support.factories import campaign_of_branch, move_right, move_vendor, right_body
from tests.support.settings import PASSWORD, TEST_PREFIX, TEST_REDIS_URL

ROLES = ("marketer", "approver", "admin", "auditor", "operator")
# Where callers sit, and the branch of each relation a target may have to them.
PLACES = {
    "SZ": {"own": "SZ", "child": "SZ01", "sibling": "GZ", "parent": "HQ"},
    "HQ": {"own": "HQ", "child": "SZ"},
}
SUBTREES = {"SZ": {"SZ", "SZ01"}, "HQ": {"HQ", "SZ", "SZ01", "GZ"}}
IN_REACH = ("own", "child")
VENDOR = "codes"


def caller(role: str, place: str) -> str:
    return f"{place.lower()}-as-{role}"


CALLERS = {caller(role, place): (role, place) for place in PLACES for role in ROLES}

# How far an allowed role reaches.
ANYWHERE = "anywhere"  # no target: callers of any branch
HEAD_OFFICE = "head office"  # callers at head office only (shared things: rights, vendors)
SUBTREE = "subtree"  # a target of the caller's own branch or one below it


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: Any = None
    data: bytes | None = None
    content_type: str | None = None
    params: dict[str, str] | None = None
    token: str | None = None  # another session of the caller than the one it uses
    signed: bool = True


@dataclass
class World:
    """Head office, SZ, SZ01 and GZ each run an approved campaign (`main-<branch>`) of right
    coffee; vendor `codes` is active; the cases make whatever else they act on."""

    api: Any
    pool: Any
    raw_redis: Redis
    clock: Any
    made: int = 0
    digest_sql: str = ""

    def fresh(self, prefix: str) -> str:
        self.made += 1
        return f"{prefix}{self.made}"

    async def campaign(self, branch: str, state: str) -> str:
        """A new campaign of `branch` brought to `state` by head office's marketer and
        approver (who act on every branch)."""
        campaign_id = self.fresh(f"c-{branch.lower()}-")
        status, body = await self.api.admin(
            "marketer",
            "POST",
            "/admin/v1/campaigns",
            campaign_of_branch(self.api, campaign_id, branch),
        )
        assert status == 201, body
        steps = {
            "draft": [],
            "pending": ["submit"],
            "approved": ["submit", "approve"],
            "paused": ["submit", "approve", "pause"],
        }[state]
        for action in steps:
            user = "approver" if action == "approve" else "marketer"
            status, body = await self.api.admin(
                user, "POST", f"/admin/v1/campaigns/{campaign_id}/{action}"
            )
            assert status == 200, body
        return campaign_id

    async def grant(self, branch: str) -> str:
        customer = self.fresh("cust-")
        status, grant = await self.api.claim(
            request_id=f"q-{customer}", campaign_id=f"main-{branch.lower()}", customer_id=customer
        )
        assert status == 201, grant
        return grant["grant_id"]

    async def audience(self, branch: str) -> str:
        audience_id = self.fresh(f"a-{branch.lower()}-")
        body = {"id": audience_id, "name": f"segment {audience_id}", "branch": branch}
        status, made = await self.api.admin("admin", "POST", "/admin/v1/audiences", body)
        assert status == 201, made
        return audience_id

    async def account(self, branch: str) -> str:
        username = self.fresh(f"staff-{branch.lower()}-")
        await add_staff(self.pool, {username: ("marketer", branch)})
        return username

    async def state(self) -> tuple[list[Any], list[Any]]:
        """Every row of every table (by digest) and every key of the run's Redis prefix."""
        if not self.digest_sql:
            tables = [
                r["tablename"]
                for r in await self.pool.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    " AND tablename <> 'schema_migrations' ORDER BY 1"
                )
            ]
            self.digest_sql = " UNION ALL ".join(
                f"SELECT '{t}' AS t, count(*) AS n,"
                f" md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS d"
                f' FROM "{t}" x'
                for t in tables
            )
        digests = await self.pool.fetch(self.digest_sql)
        found = self.raw_redis.scan_iter(match=f"{TEST_PREFIX}:*", count=1000)
        keys = sorted([k async for k in found])
        async with self.raw_redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.dump(key)
            dumps = await pipe.execute()
        return [tuple(r) for r in digests], list(zip(keys, dumps, strict=True))


@pytest.fixture
async def world(api, pool, clock):
    await sign_in(api, pool)
    await add_staff(pool, {user: (role, place) for user, (role, place) in CALLERS.items()})
    await add_staff(pool, {"gz-staff": ("marketer", "GZ"), "sz01-staff": ("approver", "SZ01")})
    for user, token in (await new_sessions(pool, *CALLERS)).items():
        api.use_session(user, token)
    await api.create_right("coffee")
    await api.create_right("spare")
    status, body = await api.admin(
        "admin", "POST", "/admin/v1/vendors", {"id": VENDOR, "name": "codes", "adapter": "codepool"}
    )
    assert status == 201, body
    await move_vendor(api, VENDOR, "activate")
    raw = Redis.from_url(TEST_REDIS_URL)
    w = World(api, pool, raw, clock)
    for branch in ("HQ", "SZ", "SZ01", "GZ"):
        body = campaign_of_branch(api, f"main-{branch.lower()}", branch)
        status, made = await api.admin("marketer", "POST", "/admin/v1/campaigns", body)
        assert status == 201, made
        for user, action in (("marketer", "submit"), ("approver", "approve")):
            status, done = await api.admin(
                user, "POST", f"/admin/v1/campaigns/main-{branch.lower()}/{action}"
            )
            assert status == 200, done
    yield w
    await raw.aclose()


# --- how each endpoint is called ------------------------------------------------------------

Prepare = Callable[[World, str, str], Awaitable[Request]]


def plain(method: str, path: str, body: Callable[[World], Any] | None = None) -> Prepare:
    async def prepare(world: World, user: str, _branch: str) -> Request:
        return Request(method, path, body(world) if body else None)

    return prepare


async def login(world: World, user: str, _branch: str) -> Request:
    return Request(
        "POST", "/admin/v1/login", {"username": user, "password": PASSWORD}, signed=False
    )


async def logout(world: World, user: str, _branch: str) -> Request:
    # Another session of the caller's: the one the other calls use stays.
    [token] = (await new_sessions(world.pool, user)).values()
    return Request("POST", "/admin/v1/logout", token=token)


async def new_password(world: World, user: str, _branch: str) -> Request:
    return Request("POST", "/admin/v1/password", {"old": PASSWORD, "new": f"{user}-new-password"})


async def new_account(world: World, user: str, branch: str) -> Request:
    body = {
        "username": world.fresh("new-"),
        "password": "first-password-1",
        "role": "marketer",
        "branch": branch,
    }
    return Request("POST", "/admin/v1/staff", body)


async def change_account(world: World, user: str, branch: str) -> Request:
    return Request("PATCH", f"/admin/v1/staff/{await world.account(branch)}", {"role": "approver"})


async def reset_account(world: World, user: str, branch: str) -> Request:
    return Request("POST", f"/admin/v1/staff/{await world.account(branch)}/reset-password")


async def new_branch(world: World, user: str, branch: str) -> Request:
    body = {"id": world.fresh("N").upper(), "name": "new branch", "parent_id": branch}
    return Request("POST", "/admin/v1/branches", body)


async def new_campaign(world: World, user: str, branch: str) -> Request:
    body = campaign_of_branch(world.api, world.fresh(f"new-{branch.lower()}-"), branch)
    return Request("POST", "/admin/v1/campaigns", body)


async def read_campaign(world: World, user: str, branch: str) -> Request:
    return Request("GET", f"/admin/v1/campaigns/main-{branch.lower()}")


async def edit_campaign(world: World, user: str, branch: str) -> Request:
    campaign_id = await world.campaign(branch, "draft")
    body = campaign_of_branch(world.api, campaign_id, branch, name="edited")
    body.pop("id")
    return Request("PUT", f"/admin/v1/campaigns/{campaign_id}", body)


def transition(action: str, state: str) -> Prepare:
    async def prepare(world: World, user: str, branch: str) -> Request:
        campaign_id = await world.campaign(branch, state)
        return Request("POST", f"/admin/v1/campaigns/{campaign_id}/{action}")

    return prepare


async def simulate(world: World, user: str, branch: str) -> Request:
    campaign_id = await world.campaign(branch, "draft")
    occurred = datetime.fromtimestamp(world.api.clock(), SHANGHAI).isoformat()
    return Request(
        "POST",
        f"/admin/v1/campaigns/{campaign_id}/simulate",
        data=f"cust-1,12000,5812,{occurred}\n".encode(),
        content_type="text/csv",
    )


async def statement(world: World, user: str, _branch: str) -> Request:
    day = datetime.fromtimestamp(world.api.clock(), SHANGHAI).date().isoformat()
    return Request(
        "POST",
        f"/admin/v1/vendors/{VENDOR}/statements",
        data=b"grant_id,code,status,redeemed_at\n",
        content_type="text/csv",
        params={"day": day},
    )


async def revoke(world: World, user: str, branch: str) -> Request:
    return Request("POST", f"/admin/v1/grants/{await world.grant(branch)}/revoke", {})


async def new_audience(world: World, user: str, branch: str) -> Request:
    audience_id = world.fresh(f"new-a-{branch.lower()}-")
    return Request(
        "POST", "/admin/v1/audiences", {"id": audience_id, "name": "segment", "branch": branch}
    )


async def read_audience(world: World, user: str, branch: str) -> Request:
    return Request("GET", f"/admin/v1/audiences/{await world.audience(branch)}")


async def import_members(world: World, user: str, branch: str) -> Request:
    return Request(
        "PUT",
        f"/admin/v1/audiences/{await world.audience(branch)}/members",
        data=b"customer_id\ncust-1\ncust-2\n",
        content_type="text/csv",
    )


async def new_issuance(world: World, user: str, branch: str) -> Request:
    job_id = world.fresh(f"new-j-{branch.lower()}-")
    body = {"id": job_id, "reward_id": "r1", "audience_id": await world.audience(branch)}
    return Request("POST", f"/admin/v1/campaigns/main-{branch.lower()}/issuances", body)


async def issuance_in(world: World, branch: str, state: str) -> str:
    """A bulk issuance of `branch`'s main campaign to an empty audience, made by head office's
    marketer and brought to `state` by head office's approver."""
    job_id = world.fresh(f"j-{branch.lower()}-")
    body = {"id": job_id, "reward_id": "r1", "audience_id": await world.audience(branch)}
    path = f"/admin/v1/campaigns/main-{branch.lower()}/issuances"
    status, made = await world.api.admin("marketer", "POST", path, body)
    assert status == 201, made
    steps = {"pending_approval": [], "running": ["approve"], "paused": ["approve", "pause"]}
    for action in steps[state]:
        user = "approver" if action == "approve" else "marketer"
        status, made = await world.api.admin(user, "POST", f"/admin/v1/issuances/{job_id}/{action}")
        assert status == 200, made
    return job_id


async def read_issuance(world: World, user: str, branch: str) -> Request:
    return Request("GET", f"/admin/v1/issuances/{await issuance_in(world, branch, 'running')}")


async def issuances_everywhere(world: World) -> None:
    """A job pending approval in each branch's main campaign, for the list to show."""
    for branch in PLACES["SZ"].values():
        await issuance_in(world, branch, "pending_approval")


def issuance_step(action: str, state: str) -> Prepare:
    async def prepare(world: World, user: str, branch: str) -> Request:
        job_id = await issuance_in(world, branch, state)
        return Request("POST", f"/admin/v1/issuances/{job_id}/{action}")

    return prepare


def year(world: World) -> str:
    return str(datetime.fromtimestamp(world.api.clock(), SHANGHAI).year)


async def fund_branches(world: World) -> None:
    """Head office's own budget for the year, given on to SZ and GZ, and by SZ to SZ01."""
    for branch, giver, amount in (
        ("HQ", None, 10**9),
        ("SZ", "HQ", 10**8),
        ("GZ", "HQ", 10**8),
        ("SZ01", "SZ", 10**7),
    ):
        body = {"period": year(world), "amount": amount, **({"from": giver} if giver else {})}
        path = f"/admin/v1/branches/{branch}/budget/allocations"
        status, reply = await world.api.admin("admin", "POST", path, body)
        assert status == 200, reply


PARENTS = {"HQ": None, "SZ": "HQ", "GZ": "HQ", "SZ01": "SZ"}


async def allocate(world: World, user: str, branch: str) -> Request:
    parent = PARENTS[branch]
    body = {"period": year(world), "amount": 1, **({"from": parent} if parent else {})}
    return Request("POST", f"/admin/v1/branches/{branch}/budget/allocations", body)


async def reclaim(world: World, user: str, branch: str) -> Request:
    body = {"period": year(world), "amount": 1}
    return Request("POST", f"/admin/v1/branches/{branch}/budget/reclaim", body)


async def read_grant(world: World, user: str, branch: str) -> Request:
    return Request("GET", f"/admin/v1/grants/{await world.grant(branch)}")


CUSTOMER_OF_EVERY_BRANCH = "cust-everywhere"


async def grants_everywhere(world: World) -> None:
    """One customer with a grant of each branch's campaign."""
    for branch in PLACES["SZ"].values():
        status, grant = await world.api.claim(
            request_id=f"q-all-{branch}",
            campaign_id=f"main-{branch.lower()}",
            customer_id=CUSTOMER_OF_EVERY_BRANCH,
        )
        assert status == 201, grant


async def read_budget(world: World, user: str, branch: str) -> Request:
    return Request("GET", f"/admin/v1/branches/{branch}/budget", params={"period": year(world)})


def moves_money_down(role: str, place: str, relation: str | None) -> bool:
    """Budget goes from a parent in the caller's reach to its child; head office's own budget
    is its admins' to set."""
    if relation == "child":
        return True
    return place == "HQ" and relation == "own" and role == "admin"


async def new_revision(world: World, user: str, branch: str) -> Request:
    campaign_id = await world.campaign(branch, "approved")
    body = {"rewards": [{"id": "r1", "stock": 20}]}
    return Request("POST", f"/admin/v1/campaigns/{campaign_id}/revisions", body)


async def read_revisions(world: World, user: str, branch: str) -> Request:
    return Request("GET", f"/admin/v1/campaigns/main-{branch.lower()}/revisions")


def revision_step(action: str, state: str) -> Prepare:
    async def prepare(world: World, user: str, branch: str) -> Request:
        campaign_id = await world.campaign(branch, "approved")
        path = f"/admin/v1/campaigns/{campaign_id}/revisions"
        status, revision = await world.api.admin(
            "marketer", "POST", path, {"rewards": [{"id": "r1", "stock": 20}]}
        )
        assert status == 201, revision
        if state == "pending":
            status, revision = await world.api.admin(
                "marketer", "POST", f"{path}/{revision['id']}/submit"
            )
            assert status == 200, revision
        return Request("POST", f"{path}/{revision['id']}/{action}")

    return prepare


RIGHT_STEPS = {"proposed": [], "admitted": ["admit"], "suspended": ["admit", "suspend"]}
RIGHT_SOURCE = {
    "admit": "proposed",
    "suspend": "admitted",
    "resume": "suspended",
    "retire": "proposed",
}


def right_step(action: str) -> Prepare:
    async def prepare(world: World, user: str, _branch: str) -> Request:
        right_id = world.fresh("right-")
        await world.api.create_right(right_id, admit=False)
        for step in RIGHT_STEPS[RIGHT_SOURCE[action]]:
            await move_right(world.api, right_id, step)
        return Request("POST", f"/admin/v1/rights/{right_id}/{action}")

    return prepare


VENDOR_STEPS = {"proposed": [], "active": ["activate"], "suspended": ["activate", "suspend"]}
VENDOR_SOURCE = {
    "activate": "proposed",
    "suspend": "active",
    "resume": "suspended",
    "offboard": "proposed",
}


def vendor_step(action: str) -> Prepare:
    async def prepare(world: World, user: str, _branch: str) -> Request:
        vendor_id = world.fresh("vendor-")
        body = {"id": vendor_id, "name": "codes", "adapter": "codepool"}
        status, made = await world.api.admin("admin", "POST", "/admin/v1/vendors", body)
        assert status == 201, made
        for step in VENDOR_STEPS[VENDOR_SOURCE[action]]:
            await move_vendor(world.api, vendor_id, step)
        return Request("POST", f"/admin/v1/vendors/{vendor_id}/{action}")

    return prepare


async def clone(world: World, user: str, branch: str) -> Request:
    body = campaign_of_branch(world.api, world.fresh("clone-"), branch)
    window = {k: body[k] for k in ("id", "starts_at", "ends_at")}
    return Request("POST", f"/admin/v1/campaigns/main-{branch.lower()}/clone", window)


async def funnel(world: World, user: str, branch: str) -> Request:
    params = {"campaign_id": f"main-{branch.lower()}"}
    return Request("GET", "/admin/v1/reports/funnel", params=params)


def report(name: str) -> Prepare:
    async def prepare(world: World, user: str, branch: str) -> Request:
        return Request("GET", f"/admin/v1/reports/{name}", params={"branch": branch})

    return prepare


# --- who may do what ----------------------------------------------------------------------

Listed = Callable[[Any], set[str]]


@dataclass(frozen=True)
class Row:
    method: str
    route: str
    prepare: Prepare
    roles: tuple[str, ...]  # the roles that may call it; every other one gets 403
    scope: str
    ok: int = 200
    action: str | None = None
    # The call names a branch (the target's, or the one a new record goes to).
    targeted: bool = False
    # The branches a list shows, which must stay in the caller's subtree.
    listed: Listed | None = None
    # Who may, when it is more than roles and a scope (budgets move down the tree).
    rule: Callable[[str, str, str | None], bool] | None = None
    # What the row needs made before any call, beyond the world.
    setup: Callable[[World], Awaitable[None]] | None = None
    # A target out of reach is not found (404 with this code), as an id nothing has: the
    # answer never tells that it exists elsewhere.
    hidden: str | None = None

    @property
    def name(self) -> str:
        return f"{self.method} {self.route}" + (f" {self.action}" if self.action else "")

    def expect(self, role: str, place: str, relation: str | None) -> int:
        if role not in self.roles:
            return 403
        if self.rule is not None:
            return self.ok if self.rule(role, place, relation) else 403
        if self.scope == HEAD_OFFICE and place != "HQ":
            return 403
        if self.scope == SUBTREE and relation not in IN_REACH:
            return 403 if self.hidden is None else 404
        return self.ok


EVERYONE = ROLES
READERS = ("marketer", "approver", "admin", "auditor")  # money, campaigns, audiences: no operator
MAKERS = ("marketer", "admin")
STAFF_ADMINS = ("admin",)
VENDOR_READERS = ("marketer", "approver", "admin", "auditor", "operator")
VENDOR_CHANGERS = ("operator", "admin")
CAMPAIGN = "/admin/v1/campaigns/{campaign_id}"
ACTION = "/admin/v1/campaigns/{campaign_id}/{action}"
SOURCE_STATE = {
    "submit": "draft",
    "approve": "pending",
    "reject": "pending",
    "pause": "approved",
    "resume": "paused",
    "end": "approved",
}


def branches_of(key: str, field: str = "branch") -> Listed:
    return lambda reply: {item[field] for item in reply[key]}


TABLE = [
    Row("POST", "/admin/v1/login", login, EVERYONE, ANYWHERE),
    Row("POST", "/admin/v1/logout", logout, EVERYONE, ANYWHERE),
    Row("GET", "/admin/v1/me", plain("GET", "/admin/v1/me"), EVERYONE, ANYWHERE),
    Row("POST", "/admin/v1/password", new_password, EVERYONE, ANYWHERE),
    Row(
        "GET",
        "/admin/v1/staff",
        plain("GET", "/admin/v1/staff"),
        ("admin", "auditor"),
        ANYWHERE,
        listed=branches_of("staff"),
    ),
    Row("POST", "/admin/v1/staff", new_account, STAFF_ADMINS, SUBTREE, 201, targeted=True),
    Row(
        "PATCH", "/admin/v1/staff/{username}", change_account, STAFF_ADMINS, SUBTREE, targeted=True
    ),
    Row(
        "POST",
        "/admin/v1/staff/{username}/reset-password",
        reset_account,
        STAFF_ADMINS,
        SUBTREE,
        targeted=True,
    ),
    Row(
        "GET",
        "/admin/v1/branches",
        plain("GET", "/admin/v1/branches"),
        EVERYONE,
        ANYWHERE,
        listed=branches_of("branches", "id"),
    ),
    Row("POST", "/admin/v1/branches", new_branch, STAFF_ADMINS, HEAD_OFFICE, 201, targeted=True),
    Row(
        "POST",
        "/admin/v1/rights",
        plain("POST", "/admin/v1/rights", lambda w: right_body(w.fresh("right-"))),
        MAKERS,
        HEAD_OFFICE,
        201,
    ),
    Row(
        "PUT",
        "/admin/v1/rights/{right_id}",
        plain(
            "PUT",
            "/admin/v1/rights/spare",
            lambda w: {k: v for k, v in right_body("spare", 20).items() if k != "id"},
        ),
        MAKERS,
        HEAD_OFFICE,
    ),
    Row("GET", "/admin/v1/rights", plain("GET", "/admin/v1/rights"), READERS, ANYWHERE),
    Row("POST", "/admin/v1/campaigns", new_campaign, MAKERS, SUBTREE, 201, targeted=True),
    Row(
        "GET",
        "/admin/v1/campaigns",
        plain("GET", "/admin/v1/campaigns"),
        READERS,
        ANYWHERE,
        listed=branches_of("campaigns"),
    ),
    Row("GET", CAMPAIGN, read_campaign, READERS, SUBTREE, targeted=True),
    Row("PUT", CAMPAIGN, edit_campaign, MAKERS, SUBTREE, targeted=True),
    *(
        Row(
            "POST",
            ACTION,
            transition(action, SOURCE_STATE[action]),
            (*TRANSITIONS[action][2], "admin"),
            SUBTREE,
            action=action,
            targeted=True,
        )
        for action in TRANSITIONS
    ),
    Row(
        "POST",
        "/admin/v1/campaigns/{campaign_id}/simulate",
        simulate,
        READERS,
        SUBTREE,
        targeted=True,
    ),
    Row(
        "POST",
        "/admin/v1/vendors",
        plain(
            "POST",
            "/admin/v1/vendors",
            lambda w: {"id": w.fresh("vendor-"), "name": "more codes", "adapter": "codepool"},
        ),
        VENDOR_CHANGERS,
        HEAD_OFFICE,
        201,
    ),
    Row("GET", "/admin/v1/vendors", plain("GET", "/admin/v1/vendors"), VENDOR_READERS, HEAD_OFFICE),
    Row(
        "GET",
        "/admin/v1/vendors/{vendor_id}",
        plain("GET", f"/admin/v1/vendors/{VENDOR}"),
        VENDOR_READERS,
        HEAD_OFFICE,
    ),
    Row(
        "PATCH",
        "/admin/v1/vendors/{vendor_id}",
        plain("PATCH", f"/admin/v1/vendors/{VENDOR}", lambda w: {"timeout_ms": 2500 + w.made}),
        VENDOR_CHANGERS,
        HEAD_OFFICE,
    ),
    Row(
        "POST",
        "/admin/v1/vendors/{vendor_id}/statements",
        statement,
        ("marketer", "approver", "admin"),
        HEAD_OFFICE,
        201,
    ),
    Row(
        "POST",
        "/admin/v1/grants/{grant_id}/revoke",
        revoke,
        ("marketer", "approver", "admin"),
        SUBTREE,
        targeted=True,
    ),
    Row(
        "GET",
        "/admin/v1/grants/{grant_id}",
        read_grant,
        READERS,
        SUBTREE,
        targeted=True,
        hidden="grant_not_found",
    ),
    Row(
        "GET",
        "/admin/v1/grants",
        plain("GET", f"/admin/v1/grants?customer_id={CUSTOMER_OF_EVERY_BRANCH}"),
        READERS,
        ANYWHERE,
        listed=branches_of("grants"),
        setup=grants_everywhere,
    ),
    Row(
        "GET",
        "/admin/v1/vendor-health",
        plain("GET", "/admin/v1/vendor-health"),
        VENDOR_READERS,
        HEAD_OFFICE,
    ),
    Row(
        "GET",
        "/admin/v1/vendors/{vendor_id}/health",
        plain("GET", f"/admin/v1/vendors/{VENDOR}/health"),
        VENDOR_READERS,
        HEAD_OFFICE,
    ),
    Row(
        "GET",
        "/admin/v1/vendors/{vendor_id}/code-pools",
        plain("GET", f"/admin/v1/vendors/{VENDOR}/code-pools"),
        VENDOR_READERS,
        HEAD_OFFICE,
    ),
    Row(
        "GET",
        "/admin/v1/dead-letters",
        plain("GET", "/admin/v1/dead-letters"),
        VENDOR_CHANGERS,
        HEAD_OFFICE,
    ),
    Row(
        "POST",
        "/admin/v1/dead-letters/redrive",
        plain("POST", "/admin/v1/dead-letters/redrive", lambda w: {"grant_ids": ["01NOSUCHGRANT"]}),
        VENDOR_CHANGERS,
        HEAD_OFFICE,
    ),
    Row(
        "POST",
        "/admin/v1/campaigns/{campaign_id}/issuances",
        new_issuance,
        MAKERS,
        SUBTREE,
        201,
        targeted=True,
    ),
    Row("GET", "/admin/v1/issuances/{issuance_id}", read_issuance, READERS, SUBTREE, targeted=True),
    Row(
        "GET",
        "/admin/v1/issuances",
        plain("GET", "/admin/v1/issuances"),
        READERS,
        ANYWHERE,
        listed=branches_of("issuances"),
        setup=issuances_everywhere,
    ),
    Row(
        "POST",
        "/admin/v1/issuances/{issuance_id}/approve",
        issuance_step("approve", "pending_approval"),
        ("approver", "admin"),
        SUBTREE,
        targeted=True,
    ),
    *(
        Row(
            "POST",
            f"/admin/v1/issuances/{{issuance_id}}/{action}",
            issuance_step(action, state),
            ("marketer", "approver", "admin"),
            SUBTREE,
            targeted=True,
        )
        for action, state in (("pause", "running"), ("resume", "paused"), ("cancel", "running"))
    ),
    Row("POST", "/admin/v1/audiences", new_audience, MAKERS, SUBTREE, 201, targeted=True),
    Row("GET", "/admin/v1/audiences/{audience_id}", read_audience, READERS, SUBTREE, targeted=True),
    Row(
        "PUT",
        "/admin/v1/audiences/{audience_id}/members",
        import_members,
        MAKERS,
        SUBTREE,
        targeted=True,
    ),
    Row("GET", "/admin/v1/audit", plain("GET", "/admin/v1/audit"), ("admin", "auditor"), ANYWHERE),
    Row("GET", "/admin/v1/channels", plain("GET", "/admin/v1/channels"), EVERYONE, HEAD_OFFICE),
    Row(
        "POST",
        "/admin/v1/channels/{channel_id}/rotate",
        plain("POST", "/admin/v1/channels/wechat/rotate", lambda w: {"grace_s": 60}),
        STAFF_ADMINS,
        HEAD_OFFICE,
    ),
    Row(
        "PUT",
        "/admin/v1/channels/{channel_id}/rate-limit",
        plain(
            "PUT",
            "/admin/v1/channels/wechat/rate-limit",
            lambda w: {"per_second": 100 + w.made, "burst": 200},
        ),
        STAFF_ADMINS,
        HEAD_OFFICE,
    ),
    *(
        Row(
            "POST",
            "/admin/v1/rights/{right_id}/{action}",
            right_step(action),
            ("approver", "admin"),
            HEAD_OFFICE,
            action=action,
        )
        for action in RIGHT_SOURCE
    ),
    *(
        Row(
            "POST",
            "/admin/v1/vendors/{vendor_id}/{action}",
            vendor_step(action),
            ("approver", "admin"),
            HEAD_OFFICE,
            action=action,
        )
        for action in VENDOR_SOURCE
    ),
    Row(
        "POST",
        "/admin/v1/branches/{branch_id}/budget/allocations",
        allocate,
        ("approver", "admin"),
        SUBTREE,
        targeted=True,
        rule=moves_money_down,
        setup=fund_branches,
    ),
    Row(
        "POST",
        "/admin/v1/branches/{branch_id}/budget/reclaim",
        reclaim,
        ("approver", "admin"),
        SUBTREE,
        targeted=True,
        rule=moves_money_down,
        setup=fund_branches,
    ),
    Row(
        "GET",
        "/admin/v1/branches/{branch_id}/budget",
        read_budget,
        READERS,
        SUBTREE,
        targeted=True,
        setup=fund_branches,
    ),
    Row(
        "POST",
        "/admin/v1/campaigns/{campaign_id}/clone",
        clone,
        MAKERS,
        SUBTREE,
        201,
        targeted=True,
    ),
    *(
        Row("GET", f"/admin/v1/reports/{name}", report(name), READERS, SUBTREE, targeted=True)
        for name in ("summary", "liability")
    ),
    Row("GET", "/admin/v1/reports/funnel", funnel, READERS, SUBTREE, targeted=True),
    Row(
        "GET",
        "/admin/v1/reports/vendors",
        plain("GET", "/admin/v1/reports/vendors"),
        READERS,
        HEAD_OFFICE,
    ),
    Row(
        "POST",
        "/admin/v1/campaigns/{campaign_id}/revisions",
        new_revision,
        MAKERS,
        SUBTREE,
        201,
        targeted=True,
    ),
    Row(
        "GET",
        "/admin/v1/campaigns/{campaign_id}/revisions",
        read_revisions,
        READERS,
        SUBTREE,
        targeted=True,
    ),
    Row(
        "POST",
        "/admin/v1/campaigns/{campaign_id}/revisions/{revision_id}/{action}",
        revision_step("submit", "draft"),
        MAKERS,
        SUBTREE,
        action="submit",
        targeted=True,
    ),
    Row(
        "POST",
        "/admin/v1/campaigns/{campaign_id}/revisions/{revision_id}/{action}",
        revision_step("reject", "pending"),
        ("approver", "admin"),
        SUBTREE,
        action="reject",
        targeted=True,
    ),
]


def admin_routes(api: Any) -> set[tuple[str, str]]:
    """(method, path) of every route under /admin/; HEAD runs the GET handler."""
    routes = set()
    for route in api.client.server.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or ""
        if path.startswith("/admin/") and route.method != "HEAD":
            routes.add((route.method, path))
    return routes


async def test_every_admin_route_has_a_row(api):
    covered = {(row.method, row.route) for row in TABLE}
    assert admin_routes(api) - covered == set(), "admin routes without a row in TABLE"
    assert covered - admin_routes(api) == set(), "rows of routes the app does not have"


def test_every_workflow_action_has_a_row():
    assert {row.action for row in TABLE if row.route == ACTION} == set(TRANSITIONS)


async def send(world: World, user: str, request: Request) -> tuple[int, Any]:
    headers = {}
    if request.signed:
        headers["Authorization"] = f"Bearer {request.token or await world.api.login(user)}"
    if request.content_type:
        headers["Content-Type"] = request.content_type
    resp = await world.api.client.request(
        request.method,
        request.path,
        json=request.json if request.data is None else None,
        data=request.data,
        params=request.params,
        headers=headers,
    )
    return resp.status, await resp.json()


def _changed(before: Any, after: Any) -> list[str]:
    """The tables and Redis keys that differ between two World.state() readings."""
    (rows_before, keys_before), (rows_after, keys_after) = before, after
    tables = sorted({r[0] for r in set(rows_before) ^ set(rows_after)})
    keys = sorted({str(k) for k, _ in set(keys_before) ^ set(keys_after)})
    return tables + keys


@pytest.mark.parametrize("row", TABLE, ids=lambda r: r.name)
async def test_the_matrix(world, row):
    if row.setup is not None:
        await row.setup(world)
    problems = []
    for user, (role, place) in CALLERS.items():
        relations = PLACES[place].items() if row.targeted else [(None, place)]
        for relation, branch in relations:
            where = (user, relation)
            request = await row.prepare(world, user, branch)
            before = await world.state()
            status, reply = await send(world, user, request)
            expected = row.expect(role, place, relation)
            if status != expected:
                problems.append((*where, f"status {status}, expected {expected}", reply))
            if status >= 400:
                refusal = row.hidden if status == 404 and row.hidden else "forbidden"
                if reply.get("error", {}).get("code") != refusal:
                    problems.append((*where, "not a forbidden error", reply))
                after = await world.state()
                if after != before:
                    changed = _changed(before, after)
                    problems.append((*where, f"a refused call changed {changed}", reply))
            elif row.listed is not None:
                shown = row.listed(reply)
                if not shown <= SUBTREES[place]:
                    problems.append((*where, f"shows {sorted(shown - SUBTREES[place])}", reply))
                if place == "HQ" and "GZ" not in shown:
                    problems.append((*where, "head office does not see GZ", reply))
    assert problems == [], "\n".join(repr(p)[:400] for p in problems)


async def test_a_pending_password_opens_only_me_password_and_logout(world, pool):
    """After a reset, every admin route but these answers 403 password_change_required, before
    it looks at anything else."""
    await pool.execute("UPDATE staff SET must_change_password = true WHERE username = 'admin'")
    token = await world.api.login("admin")
    opened = {
        ("POST", "/admin/v1/login"),
        ("POST", "/admin/v1/logout"),
        ("GET", "/admin/v1/me"),
        ("POST", "/admin/v1/password"),
    }
    wrong = []
    # A real action of each workflow route: an unknown one is a 404 before anything else.
    action_examples = {"campaigns": "submit", "rights": "admit", "vendors": "activate"}
    for method, route in sorted(admin_routes(world.api) - opened):
        kind = route.split("/")[3]
        path = route.replace("{action}", action_examples.get(kind, "x"))
        path = path.replace("{", "").replace("}", "")  # any id: the check comes first
        resp = await world.api.client.request(
            method, path, headers={"Authorization": f"Bearer {token}"}
        )
        body = await resp.json()
        if (resp.status, body.get("error", {}).get("code")) != (403, "password_change_required"):
            wrong.append((method, route, resp.status, body))
    assert wrong == []
    resp = await world.api.client.get("/admin/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert (resp.status, (await resp.json())["must_change_password"]) == (200, True)
