"""Maker-checker holds after approval and across versions: what a campaign pays out is frozen
into its rewards, a right that live campaigns use cannot change, and whoever made any version of
a campaign may not approve it. Also the numbers of the campaign view and list, and reports that
echo vendor cells into a spreadsheet."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from quanyi.campaigns import queries as campaign_queries
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.db import migrate, migration_files
from quanyi.vendors.simulator import STATE, SimulatorConfig, create_simulator
from tests.support.clock import SHANGHAI
from tests.support.factories import bring_to, move_right, register_vendor
from tests.support.stores import audit_rows
from tests.support.waiting import running, until
from tests.support.workers import fulfilment_worker

BIG = 50_000_000


pytestmark = pytest.mark.usefixtures("signed_in")


def right_body(face_value: int, **changes: Any) -> dict[str, Any]:
    return {
        "name": "points",
        "kind": "points",
        "face_value": face_value,
        "unit_cost": 10,
        **changes,
    }


async def right_row(pool, right_id: str = "coffee") -> tuple[Any, ...]:
    row = await pool.fetchrow(
        "SELECT name, kind, face_value, unit_cost, vendor_id FROM rights WHERE id = $1", right_id
    )
    return tuple(row)


# --- the right of a live campaign is frozen -----------------------------------------------


@pytest.mark.parametrize("state", ["pending", "approved", "paused"])
async def test_a_right_a_live_campaign_uses_cannot_change(api, pool, state):
    await api.create_right("coffee", 100)
    await api.create_right("tea", 50)
    await bring_to(api, state, "c1")
    await bring_to(api, "draft", "c2")  # a draft on the same right does not count
    await bring_to(api, state, "c3", right_id="tea")  # nor does a live one on another right
    before, audit_before = await right_row(pool), await audit_rows(pool)

    status, body = await api.admin(
        "marketer", "PUT", "/admin/v1/rights/coffee", right_body(BIG, name="coffee right")
    )
    assert status == 409, body
    assert body["error"]["code"] == "right_in_use"
    assert body["error"]["campaigns"] == ["c1"]
    assert await right_row(pool) == before
    assert await audit_rows(pool) == audit_before


@pytest.mark.parametrize("state", ["draft", "rejected", "ended"])
async def test_a_right_no_live_campaign_uses_may_change(api, pool, state):
    await api.create_right("coffee", 100)
    await bring_to(api, state)
    status, body = await api.admin("marketer", "PUT", "/admin/v1/rights/coffee", right_body(300))
    assert (status, body["face_value"]) == (200, 300), body
    assert ("marketer", "HQ", "right.update", "right:coffee") in await audit_rows(pool)
    # The campaign keeps its own copy until it is edited.
    status, view = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
    assert (view["rewards"][0]["face_value"], view["rewards"][0]["unit_cost"]) == (200, 100)


async def test_editing_a_draft_copies_the_catalog_again(api, pool):
    await api.create_right("coffee", 100)
    await bring_to(api, "rejected")
    status, _ = await api.admin("marketer", "PUT", "/admin/v1/rights/coffee", right_body(300))
    assert status == 200
    await move_right(api, "coffee", "admit")  # an edit proposes the right again
    status, view = await api.admin("marketer", "GET", "/admin/v1/campaigns/c1")
    body = {k: view[k] for k in ("name", "branch", "starts_at", "ends_at", "channels")}
    body["rewards"] = [{"id": "r1", "right_id": "coffee", "stock": 10, "per_customer_limit": 1}]
    status, edited = await api.admin("marketer", "PUT", "/admin/v1/campaigns/c1", body)
    assert status == 200, edited
    [reward] = edited["rewards"]
    assert (reward["face_value"], reward["unit_cost"], reward["vendor_id"]) == (300, 10, None)


@pytest.mark.parametrize("edit_while_live", [True, False], ids=["edited-while-live", "ended-only"])
async def test_a_claim_pays_the_face_value_the_approver_saw(
    api,
    pool,
    redis,
    keys,
    settings,
    clock,
    aiohttp_server,
    key_pairs,
    our_key_file,
    edit_while_live,
):
    """The reported bypass: after approval a marketer alone set the right's face value from
    100 to 50,000,000 and the next claim credited 50,000,000 points. Now the edit is refused
    while the campaign is live, and a grant is paid from the reward's frozen copy even when the
    catalog changed after the campaign ended and before the grant was fulfilled (`ended-only`
    leaves the refused edit out: the copy alone decides what is paid)."""
    sim = await aiohttp_server(
        create_simulator(
            SimulatorConfig(
                latency_ms=1,
                private_key_pem=key_pairs.vendor_private,
                client_public_key_pem=key_pairs.ours_public,
            )
        )
    )
    base_url = str(sim.make_url("")).rstrip("/")
    await register_vendor(api, "bonus", base_url, key_pairs, our_key_file, adapter="points")
    status, body = await api.admin(
        "marketer", "POST", "/admin/v1/rights", {"id": "pts", **right_body(100, vendor_id="bonus")}
    )
    assert status == 201, body
    await move_right(api, "pts", "admit")
    await bring_to(api, "approved", right_id="pts")

    if edit_while_live:
        status, body = await api.admin(
            "marketer", "PUT", "/admin/v1/rights/pts", right_body(BIG, vendor_id="bonus")
        )
        assert status == 409, body
        assert body["error"]["code"] == "right_in_use"
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant

    # Ended, the campaign no longer holds the right; its grant is still to be paid.
    status, _ = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/end")
    assert status == 200
    status, body = await api.admin(
        "marketer", "PUT", "/admin/v1/rights/pts", right_body(BIG, vendor_id="bonus")
    )
    assert (status, body["face_value"]) == (200, BIG)

    credits = sim.app[STATE].credits
    worker = fulfilment_worker(redis, pool, keys, settings, clock, block_ms=20)
    async with running(worker):

        async def credited() -> bool:
            return grant["grant_id"] in credits

        await until(credited, what="the points credit")
    assert credits[grant["grant_id"]]["points"] == 100
    status, view = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
    assert view["rewards"][0]["face_value"] == 100


# --- whoever made any version may not approve ---------------------------------------------


async def approve(api, user: str, campaign_id: str = "c1") -> tuple[int, Any]:
    return await api.admin(user, "POST", f"/admin/v1/campaigns/{campaign_id}/approve")


async def put_stock(api, user: str, stock: int, campaign_id: str = "c1") -> dict[str, Any]:
    status, view = await api.admin(user, "GET", f"/admin/v1/campaigns/{campaign_id}")
    assert status == 200, view
    body = {k: view[k] for k in ("name", "branch", "starts_at", "ends_at", "channels")}
    body["rewards"] = [{"id": "r1", "right_id": "coffee", "stock": stock, "per_customer_limit": 1}]
    status, edited = await api.admin(user, "PUT", f"/admin/v1/campaigns/{campaign_id}", body)
    assert status == 200, edited
    return edited


async def test_an_admin_who_edited_someone_elses_draft_may_not_approve_it(api, pool):
    """The reported bypass: an admin edited a marketer's draft (stock 10^12), the marketer
    submitted, and the same admin approved."""
    await api.create_right()
    await bring_to(api, "draft")
    edited = await put_stock(api, "admin", 10**12)
    assert edited["created_by"] == "marketer"
    status, submitted = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/submit")
    assert (status, submitted["submitted_by"]) == (200, "marketer")

    status, body = await approve(api, "admin")
    assert status == 403, body
    assert body["error"]["code"] == "forbidden"
    assert await pool.fetchval("SELECT status FROM campaigns WHERE id = 'c1'") == "pending"
    assert ("admin", "HQ", "campaign.approve", "campaign:c1") not in await audit_rows(pool)
    assert submitted["makers"] == ["marketer", "admin"]

    status, body = await approve(api, "approver")
    assert (status, body["status"], body["approved_by"]) == (200, "approved", "approver")


async def test_an_editor_of_an_earlier_version_may_not_approve_a_later_one(api, pool):
    await api.create_right()
    await bring_to(api, "draft")
    await put_stock(api, "admin", 500)
    for user, action in (("marketer", "submit"), ("approver", "reject")):
        status, body = await api.admin(user, "POST", f"/admin/v1/campaigns/c1/{action}")
        assert status == 200, body
    # The marketer writes the next version from scratch and submits it again.
    await put_stock(api, "marketer", 20)
    status, submitted = await api.admin("marketer2", "POST", "/admin/v1/campaigns/c1/submit")
    assert status == 200, submitted
    for user in ("admin", "marketer2"):
        status, body = await approve(api, user)
        assert status == 403, (user, body)
    status, body = await approve(api, "approver")
    assert (status, body["status"]) == (200, "approved")
    assert body["makers"] == ["marketer", "admin", "marketer2"]


async def test_an_approver_who_rejected_and_did_not_edit_may_approve_the_next_version(api):
    await api.create_right()
    await bring_to(api, "rejected")
    status, body = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/submit")
    assert status == 200, body
    status, body = await approve(api, "approver")
    assert (status, body["status"], body["makers"]) == (200, "approved", ["marketer"])


# --- the campaign view and list -----------------------------------------------------------


async def test_the_list_shows_each_campaign_as_its_view_does(api, pool, redis, keys):
    await api.create_right("coffee", 100)
    await api.create_right("tea", 40)
    await api.create_campaign("c1")
    rewards = [
        {"id": "t1", "right_id": "tea", "stock": 5, "per_customer_limit": 1},
        {"id": "t2", "right_id": "coffee", "stock": 3, "per_customer_limit": 1},
    ]
    await api.create_campaign("c2", rewards)
    await api.create_campaign("c3", approve=False)
    for i, (campaign_id, reward_id) in enumerate([("c1", "r1"), ("c2", "t1"), ("c2", "t2")]):
        status, body = await api.claim(
            request_id=f"q{i}", campaign_id=campaign_id, customer_id="cust-1", reward_id=reward_id
        )
        assert status == 201, body
    await LedgerWorker(redis, pool, keys).drain()
    status, _ = await api.claim(request_id="q9", campaign_id="c1", customer_id="cust-2")
    assert status == 201

    status, listed = await api.admin("approver", "GET", "/admin/v1/campaigns")
    assert status == 200, listed
    by_id = {c["id"]: c for c in listed["campaigns"]}
    assert sorted(by_id) == ["c1", "c2", "c3"]
    views = {}
    for campaign_id, shown in by_id.items():
        status, view = await api.admin("approver", "GET", f"/admin/v1/campaigns/{campaign_id}")
        assert status == 200, view
        views[campaign_id] = view
        # The list is the view without the ledger counts (reading those for 500 campaigns
        # would read their every grant); the lag's age grows between the two reads.
        without_ledger = [
            {k: v for k, v in r.items() if k not in ("persisted", "revoked", "failed")}
            for r in view["rewards"]
        ]
        assert {**shown, "ledger_lag": None} == {
            **view,
            "rewards": without_ledger,
            "ledger_lag": None,
        }
        assert shown["ledger_lag"]["entries"] == view["ledger_lag"]["entries"]
        assert all(r.keys() & {"persisted", "revoked", "failed"} == set() for r in shown["rewards"])
    c1, c2 = by_id["c1"], by_id["c2"]
    assert c1["ledger_lag"]["entries"] == 1
    [r1] = c1["rewards"]
    assert (r1["face_value"], r1["granted"], r1["remaining"]) == (200, 2, 98)
    assert [(r["id"], r["face_value"], r["granted"]) for r in c2["rewards"]] == [
        ("t1", 80, 1),
        ("t2", 200, 1),
    ]
    assert c2["spent"] == 140
    assert by_id["c3"]["rewards"][0]["granted"] == 0
    # The single view has them.
    assert [r["persisted"] for r in views["c1"]["rewards"]] == [1]
    assert [(r["persisted"], r["revoked"]) for r in views["c2"]["rewards"]] == [(1, 0), (1, 0)]


async def test_the_list_reads_no_grant_and_the_view_reads_its_campaign_through_the_index(api, pool):
    """Listing campaigns asks PostgreSQL nothing about grants: it answers while the grants
    table is locked against every reader. One campaign's view counts its own grants through
    grants_campaign (campaign_id, reward_id), not by reading the table."""
    await api.create_right()
    await api.create_campaign("c1")
    await pool.execute(
        "INSERT INTO grants (grant_id, campaign_id, reward_id, right_id, customer_id, channel_id,"
        " request_id, unit_cost, status, granted_at, outbox_id)"
        " SELECT 'g' || i, 'c' || (i % 50), 'r1', 'coffee', 'u' || i, 'app', 'q' || i, 100,"
        " CASE WHEN i % 7 = 0 THEN 'revoked' ELSE 'granted' END, now(), '0-' || i"
        " FROM generate_series(1, 20000) AS i"
    )
    await pool.execute("ANALYZE grants")

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE grants IN ACCESS EXCLUSIVE MODE")
        status, listed = await asyncio.wait_for(
            api.admin("approver", "GET", "/admin/v1/campaigns"), 5
        )
        assert status == 200, listed
        assert [c["id"] for c in listed["campaigns"]] == ["c1"]

    status, view = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
    assert status == 200, view
    assert (view["rewards"][0]["persisted"], view["rewards"][0]["revoked"]) == (400, 57)
    plan = await pool.fetchval(f"EXPLAIN (FORMAT JSON) {campaign_queries.ledger_counts}", "c1")
    assert "grants_campaign" in plan and "Seq Scan" not in plan, plan


async def test_the_view_counts_revoked_grants_apart(api, pool, redis, keys):
    """granted (Redis, live grants) and persisted (ledger rows) differ by the revoked ones,
    and the view says so."""
    await api.create_right()
    await api.create_campaign()
    grants = []
    for i in range(3):
        status, grant = await api.claim(request_id=f"q{i}", campaign_id="c1", customer_id=f"u{i}")
        assert status == 201, grant
        grants.append(grant["grant_id"])
    status, body = await api.channel("POST", f"/v1/grants/{grants[0]}/revoke", {"reason": "x"})
    assert status == 200, body
    await LedgerWorker(redis, pool, keys).drain()
    status, view = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
    [reward] = view["rewards"]
    assert view["ledger_lag"]["entries"] == 0
    assert (reward["granted"], reward["persisted"], reward["revoked"]) == (2, 3, 1)
    assert reward["granted"] == reward["persisted"] - reward["revoked"] - reward["failed"]


# --- reports that end up in spreadsheets --------------------------------------------------


FORMULAS = ['=HYPERLINK("http://evil")', "+1+2", "-3+4", "@SUM(A1)"]


async def test_cells_a_spreadsheet_would_run_are_escaped_in_statement_reports(
    api, pool, redis, keys, settings, clock, start_sim, key_pairs, our_key_file
):
    """Both what the vendor uploads (echoed in missing_ours) and the codes it delivered (in
    missing_theirs) reach a spreadsheet as text, never as formulas."""
    base_url = await start_sim(code_prefix="=CMD")
    await register_vendor(api, "sim", base_url, key_pairs, our_key_file)
    await api.create_right("lounge", vendor_id="sim")
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "lounge", "stock": 5, "per_customer_limit": 1}]
    )
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    async with running(fulfilment_worker(redis, pool, keys, settings, clock, block_ms=20)):

        async def fulfilled() -> bool:
            _, seen = await api.channel("GET", f"/v1/grants/{grant['grant_id']}")
            return seen["status"] == "fulfilled"

        await until(fulfilled, what="fulfilment")
    await LedgerWorker(redis, pool, keys).drain()
    code = await pool.fetchval("SELECT code FROM grants WHERE grant_id = $1", grant["grant_id"])
    assert code.startswith("=CMD-")

    lines = ["grant_id,code,status,redeemed_at,note"]
    lines += [f"{cell},{cell},issued,,{cell}" for cell in FORMULAS]
    day = datetime.fromtimestamp(api.clock(), SHANGHAI).date().isoformat()
    token = await api.login("approver")
    resp = await api.client.post(
        "/admin/v1/vendors/sim/statements",
        params={"day": day},
        data=("\n".join(lines) + "\n").encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    report = await resp.json()
    assert resp.status == 201, report
    echoed = [(r["grant_id"], r["code"], r["note"]) for r in report["missing_ours"]]
    assert echoed == [(f"'{cell}",) * 3 for cell in FORMULAS]
    assert report["missing_theirs"] == [
        {"grant_id": grant["grant_id"], "code": f"'{code}", "ours": "fulfilled"}
    ]
    stored = await pool.fetchval(
        "SELECT report->'missing_ours'->0->>'note' FROM statements WHERE id = $1",
        report["statement_id"],
    )
    assert stored == f"'{FORMULAS[0]}"


# --- the migration on a database that already has campaigns -------------------------------


@pytest.fixture
async def database_at_0002(database):
    """A database of its own with migrations 0001 and 0002 applied, as a deployment has it."""
    url = f"{database}_at_0002"
    admin = await asyncpg.connect(database.rsplit("/", 1)[0] + "/postgres")
    name = url.rsplit("/", 1)[1]
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, path in migration_files()[:2]:
            await conn.execute(path.read_text())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, path.name
            )
        yield url, conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_the_migration_freezes_face_values_and_remembers_makers_of_existing_campaigns(
    database_at_0002,
):
    url, conn = database_at_0002
    await conn.execute(
        "INSERT INTO rights (id, name, kind, face_value, unit_cost, created_by)"
        " VALUES ('coffee', 'coffee', 'voucher', 500, 100, 'marketer')"
    )
    await conn.execute(
        "INSERT INTO campaigns (id, name, branch, starts_at, ends_at, channels, created_by,"
        " submitted_by, status) VALUES"
        " ('c1', 'c1', 'HQ', now(), now() + interval '1 day', '{app}', 'marketer', 'marketer2',"
        "  'pending'),"
        " ('c2', 'c2', 'HQ', now(), now() + interval '1 day', '{app}', 'marketer', NULL, 'draft')"
    )
    await conn.execute(
        "INSERT INTO rewards (campaign_id, id, right_id, unit_cost, stock, per_customer_limit,"
        " position) VALUES ('c1', 'r1', 'coffee', 100, 10, 1, 0), ('c2', 'r1', 'coffee', 100, 10, 1, 0)"
    )
    # An admin edited c1 before marketer2 submitted it.
    await conn.execute(
        "INSERT INTO audit_log (actor, branch, action, target) VALUES"
        " ('marketer', 'HQ', 'campaign.create', 'campaign:c1'),"
        " ('admin', 'HQ', 'campaign.update', 'campaign:c1'),"
        " ('marketer2', 'HQ', 'campaign.submit', 'campaign:c1'),"
        " ('approver', 'HQ', 'campaign.reject', 'campaign:c1')"
    )
    applied = await migrate(url)
    assert "0003_maker_checker.sql" in applied
    makers = dict(await conn.fetch("SELECT id, makers FROM campaigns"))
    assert makers == {"c1": ["admin", "marketer", "marketer2"], "c2": ["marketer"]}
    faces = await conn.fetch("SELECT campaign_id, face_value FROM rewards ORDER BY 1")
    assert [tuple(r) for r in faces] == [("c1", 500), ("c2", 500)]
    assert await migrate(url) == []
