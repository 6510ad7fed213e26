"""Where a vendor is reached (base URL, adapter) is part of what a live campaign's approver
approved: it cannot move while a pending, approved or paused campaign routes rewards to the
vendor. Keys rotate and tuning changes at any time, audited field by field, keys by fingerprint.
A change and a submit of a campaign routed to the vendor never cross (row locks)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest

from quanyi.campaigns import queries as campaign_queries
from quanyi.vendors import queries as vendor_queries
from quanyi.vendors.registry import key_fingerprint
from quanyi.vendors.rsa import load_key
from tests.support.factories import bring_to, register_vendor
from tests.support.stores import audit_rows
from tests.support.waiting import until

PATH = "/admin/v1/vendors/bonus"
BASE_URL = "https://bonus.example/api"


pytestmark = pytest.mark.usefixtures("signed_in")


@pytest.fixture
async def vendors(api, key_pairs, our_key_file) -> dict[str, Any]:
    """Vendor `bonus` (points) pays right `pts`; vendor `other` pays right `tea`."""
    bonus = await register_vendor(api, "bonus", BASE_URL, key_pairs, our_key_file, adapter="points")
    await register_vendor(api, "other", "https://other.example", key_pairs, our_key_file)
    await api.create_right("pts", vendor_id="bonus")
    await api.create_right("tea", vendor_id="other")
    return bonus


async def vendor_row(pool: asyncpg.Pool, vendor_id: str = "bonus") -> tuple[Any, ...]:
    return tuple(await pool.fetchrow("SELECT * FROM vendors WHERE id = $1", vendor_id))


async def update_details(pool: asyncpg.Pool) -> list[Any]:
    rows = await pool.fetch(
        "SELECT detail FROM audit_log WHERE action = 'vendor.update' AND target = 'vendor:bonus'"
        " ORDER BY id"
    )
    return [orjson.loads(r["detail"]) for r in rows]


REROUTES = {
    "base_url": {"base_url": "https://evil.example/api"},
    "adapter": {"adapter": "simulated"},
    "both": {"adapter": "http", "base_url": "https://evil.example/api"},
}


@pytest.mark.parametrize("state", ["pending", "approved", "paused"])
@pytest.mark.parametrize("change", list(REROUTES))
async def test_a_vendor_that_live_campaigns_pay_through_is_not_rerouted(
    api, pool, vendors, state, change
):
    await bring_to(api, state, "c1", right_id="pts")
    await bring_to(api, "draft", "c2", right_id="pts")  # a draft does not count
    await bring_to(api, state, "c3", right_id="tea")  # nor a live campaign of another vendor
    before, audit_before = await vendor_row(pool), await audit_rows(pool)

    status, body = await api.admin("admin", "PATCH", PATH, {**REROUTES[change], "name": "x"})
    assert status == 409, body
    assert body["error"]["code"] == "vendor_in_use"
    assert body["error"]["campaigns"] == ["c1"]
    assert sorted(body["error"]["fields"]) == sorted(REROUTES[change])
    assert await vendor_row(pool) == before
    assert await audit_rows(pool) == audit_before
    assert (await api.admin("admin", "GET", PATH)) == (200, vendors)


@pytest.mark.parametrize("state", ["draft", "rejected", "ended"])
async def test_a_vendor_no_live_campaign_pays_through_may_move(api, pool, vendors, state):
    await bring_to(api, state, "c1", right_id="pts")
    status, body = await api.admin("admin", "PATCH", PATH, REROUTES["both"])
    assert status == 200, body
    assert (body["adapter"], body["base_url"]) == ("http", "https://evil.example/api")
    assert await update_details(pool) == [
        {
            "changed": {
                "adapter": {"before": "points", "after": "http"},
                "base_url": {"before": BASE_URL, "after": "https://evil.example/api"},
            }
        }
    ]


async def test_keys_rotate_and_tuning_changes_while_live_audited_by_fingerprint(
    api, pool, vendors, key_pairs, tmp_path
):
    """Vendors rotate keys while their campaigns run: that, and tuning, stays allowed. The
    audit row names what changed with its value before and after, keys by fingerprint only."""
    await bring_to(api, "approved", "c1", right_id="pts")
    rotated = [key_pairs.vendor_public, key_pairs.rotated_public]
    status, body = await api.admin(
        "admin",
        "PATCH",
        PATH,
        {"public_keys": rotated, "base_url": BASE_URL, "adapter": "points"},  # same route
    )
    assert (status, body["public_keys"]) == (200, rotated), body

    new_ours = tmp_path / "ours-next.pem"
    new_ours.write_text(key_pairs.rotated_private)
    tuning = {
        "name": "Bonus Points",
        "timeout_ms": 900,
        "max_in_flight": 3,
        "retry": {"max_attempts": 2},
        "signing_key": f"file:{new_ours}",
    }
    status, body = await api.admin("admin", "PATCH", PATH, tuning)
    assert status == 200, body
    assert (body["name"], body["timeout_ms"], body["retry"]["max_attempts"]) == (
        "Bonus Points",
        900,
        2,
    )
    assert (body["base_url"], body["adapter"]) == (BASE_URL, "points")

    def fingerprint(pem: str) -> str:
        return key_fingerprint(load_key(pem))

    ours = {"reference": vendors["signing_key"], "fingerprint": fingerprint(key_pairs.ours_public)}
    assert await update_details(pool) == [
        {
            "changed": {
                "public_keys": {
                    "before": [fingerprint(key_pairs.vendor_public)],
                    "after": [fingerprint(p) for p in rotated],
                }
            }
        },
        {
            "changed": {
                "name": {"before": "vendor bonus", "after": "Bonus Points"},
                "timeout_ms": {"before": 2000, "after": 900},
                "max_in_flight": {"before": 64, "after": 3},
                "max_attempts": {"before": 8, "after": 2},
                "signing_key": {
                    "before": ours,
                    "after": {
                        "reference": f"file:{new_ours}",
                        "fingerprint": fingerprint(key_pairs.rotated_public),
                    },
                },
            }
        },
    ]
    stored = await pool.fetchval(
        "SELECT string_agg(detail::text, ' ') FROM audit_log WHERE action = 'vendor.update'"
    )
    assert "PUBLIC KEY" not in stored and "PRIVATE KEY" not in stored


async def waiting_on_a_lock(pool: asyncpg.Pool, query_part: str) -> bool:
    """Whether a backend of this database waits for a row lock while running such a query."""
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'",
            query_part,
        )
    )


async def test_a_submit_waits_for_a_vendor_change_in_flight(api, pool, vendors):
    """A change of the vendor holds its row until it commits; a submit routing a campaign to
    it waits (and then makes the vendor frozen), instead of going live beside the change."""
    await bring_to(api, "draft", "c1", right_id="pts")
    async with pool.acquire() as conn, conn.transaction():
        await conn.fetchrow(vendor_queries.lock_vendor, "bonus")  # a PATCH in flight
        submit = asyncio.create_task(api.admin("marketer", "POST", "/admin/v1/campaigns/c1/submit"))
        await until(
            lambda: waiting_on_a_lock(pool, "FROM vendors"), timeout=5, what="submit to wait"
        )
        assert not submit.done()
    status, body = await submit
    assert (status, body["status"]) == (200, "pending"), body
    status, body = await api.admin("admin", "PATCH", PATH, REROUTES["base_url"])
    assert (status, body["error"]["code"]) == (409, "vendor_in_use"), body


async def test_a_vendor_change_waits_for_a_submit_in_flight_then_sees_it(api, pool, vendors):
    """The other order: a submit holds a share lock on the vendor until it commits, so the
    change waits and then finds the campaign live."""
    await bring_to(api, "draft", "c1", right_id="pts")
    before = await vendor_row(pool)
    async with pool.acquire() as conn, conn.transaction():
        # What a submit does under its locks, left open.
        await conn.fetch(campaign_queries.share_vendors, ["bonus"])
        patch = asyncio.create_task(api.admin("admin", "PATCH", PATH, REROUTES["base_url"]))
        await until(
            lambda: waiting_on_a_lock(pool, "FOR NO KEY UPDATE"), timeout=5, what="the change"
        )
        assert not patch.done()
        await conn.execute("UPDATE campaigns SET status = 'pending' WHERE id = 'c1'")
    status, body = await patch
    assert (status, body["error"]["code"], body["error"]["campaigns"]) == (
        409,
        "vendor_in_use",
        ["c1"],
    ), body
    assert await vendor_row(pool) == before
