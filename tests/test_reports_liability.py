"""GET /admin/v1/reports/liability: fulfilled rights not yet redeemed or expired, by right and
vendor, from status counts the ledger worker moves in the transaction that changes a grant's
status; always equal to counting the grants themselves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from quanyi.issuance.api import LIFECYCLE
from quanyi.ledger.rollups import rebuild_rollups
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import error_code
from tests.support.factories import campaign_in

pytestmark = pytest.mark.usefixtures("signed_in")


async def grants_of(api: Any, campaign_id: str, count: int) -> list[str]:
    grants = []
    for n in range(count):
        status, grant = await api.claim(
            request_id=f"{campaign_id}-{n}", campaign_id=campaign_id, customer_id=f"L{n}"
        )
        assert status == 201, grant
        grants.append(grant["grant_id"])
    return grants


async def move(api: Any, grant_id: str, *events: str) -> None:
    for event in events:
        moved = await api.client.app[LIFECYCLE].move(grant_id, event, "vendor:test")
        assert moved.applied, (grant_id, event, moved)


async def status_counts(pool: Any) -> dict[tuple[str, str, str], int]:
    """What report_status must say: the grants counted one by one."""
    rows = await pool.fetch(
        "SELECT campaign_id, reward_id, status, count(*) AS n FROM grants GROUP BY 1, 2, 3"
    )
    return {(r["campaign_id"], r["reward_id"], r["status"]): r["n"] for r in rows}


async def kept_counts(pool: Any) -> dict[tuple[str, str, str], int]:
    rows = await pool.fetch("SELECT campaign_id, reward_id, status, grants FROM report_status")
    return {
        (r["campaign_id"], r["reward_id"], r["status"]): r["grants"] for r in rows if r["grants"]
    }


async def test_the_outstanding_liability_breakage_and_redemption_rate(
    api, c1, redis, pool, keys, settings
):
    # Coffee has no vendor: its grants are fulfilled as they are granted.
    grants = await grants_of(api, "c1", 5)
    await move(api, grants[0], "redeemed")
    await move(api, grants[1], "expired")
    await move(api, grants[4], "revoked")
    await LedgerWorker(redis, pool, keys, tz=settings.tz).drain()

    status, body = await api.admin("approver", "GET", "/admin/v1/reports/liability")
    assert status == 200, body
    # coffee: face value 200; two fulfilled and neither redeemed nor expired.
    figures = {
        "issued": 5,
        "outstanding": 2,
        "outstanding_face_value": 400,
        "redeemed": 1,
        "expired": 1,
        "breakage": 0.2,
        "redemption_rate": 0.2,
    }
    assert body["rows"] == [{"right_id": "coffee", "vendor_id": "", **figures}]
    assert body["totals"] == figures
    assert await kept_counts(pool) == await status_counts(pool)
    # The daily rollups saw the same events.
    status, summary = await api.admin("marketer", "GET", "/admin/v1/reports/summary")
    assert summary["totals"] == {
        "issued": 5,
        "fulfilled": 5,
        "redeemed": 1,
        "expired": 1,
        "revoked": 1,
        "failed": 0,
        "cost": 500,
        "face_value_issued": 1000,
        "face_value_redeemed": 200,
    }


async def test_status_counts_follow_the_grants_whatever_the_delivery_order(
    api, c1, redis, pool, keys, settings
):
    grants = await grants_of(api, "c1", 4)  # born fulfilled: coffee has no vendor
    await move(api, grants[0], "redeemed")
    entries = await redis.xrange(keys.outbox)
    grant_entries = [m for m in entries if "g" in m[1]]
    later = [m for m in entries if m not in grant_entries]
    worker = LedgerWorker(redis, pool, keys, tz=settings.tz)
    # Events first (a dead worker's grants taken over later), then everything delivered again.
    await worker._persist(later)
    await worker._persist(grant_entries)
    await worker._persist(entries)
    assert (
        await kept_counts(pool)
        == await status_counts(pool)
        == {
            ("c1", "r1", "fulfilled"): 3,
            ("c1", "r1", "redeemed"): 1,
        }
    )

    before = await kept_counts(pool)
    await rebuild_rollups(pool, settings.tz)
    assert await kept_counts(pool) == before


async def test_an_empty_ledger_has_no_rates_and_branches_see_their_own(
    api, c1, redis, pool, keys, settings
):
    status, body = await api.admin("marketer", "GET", "/admin/v1/reports/liability")
    assert (status, body["rows"], body["totals"]["breakage"]) == (200, [], None)

    await grants_of(api, "c1", 2)
    await campaign_in(api, "approved", "s1", "SZ")
    [sz_grant] = await grants_of(api, "s1", 1)
    await LedgerWorker(redis, pool, keys, tz=settings.tz).drain()
    # Outstanding means fulfilled: coffee has no vendor, so its grant is born fulfilled.
    status_of = "SELECT status FROM grants WHERE grant_id = $1"
    assert await pool.fetchval(status_of, sz_grant) == "fulfilled"

    status, sz = await api.admin("sz-marketer", "GET", "/admin/v1/reports/liability")
    assert status == 200, sz
    assert (sz["totals"]["issued"], sz["totals"]["outstanding"]) == (1, 1)
    status, hq = await api.admin("marketer", "GET", "/admin/v1/reports/liability")
    assert hq["totals"]["issued"] == 3
    status, narrowed = await api.admin("marketer", "GET", "/admin/v1/reports/liability?branch=SZ")
    assert narrowed["totals"] == sz["totals"]
    status, body = await api.admin("sz-marketer", "GET", "/admin/v1/reports/liability?branch=HQ")
    assert error_code(status, body) == (403, "forbidden")
    status, body = await api.admin("marketer", "GET", "/admin/v1/reports/liability?branch=a%20b")
    assert error_code(status, body) == (400, "invalid_request")


async def test_two_ledger_workers_at_once_miss_no_event(api, c1, redis, pool, keys, settings):
    """A grant (born fulfilled) written by one worker while another writes its redemption:
    each transaction would miss the other's row but for the ledger lock across processes."""
    for round_ in range(8):
        grants = []
        for n in range(6):
            status, grant = await api.claim(
                request_id=f"w{round_}-{n}", campaign_id="c1", customer_id=f"W{round_}-{n}"
            )
            assert status == 201, grant
            grants.append(grant["grant_id"])
        for grant_id in grants:
            await move(api, grant_id, "redeemed")
        entries = await redis.xrange(keys.outbox)
        await redis.xtrim(keys.outbox, maxlen=0)
        ours = [m for m in entries if any(g in str(m[1]) for g in grants)]
        grant_entries = [m for m in ours if "g" in m[1]]
        event_entries = [m for m in ours if "e" in m[1]]
        one = LedgerWorker(redis, pool, keys, consumer="one", tz=settings.tz)
        two = LedgerWorker(redis, pool, keys, consumer="two", tz=settings.tz)
        await asyncio.gather(one._persist(grant_entries), two._persist(event_entries))
    assert await kept_counts(pool) == await status_counts(pool) == {("c1", "r1", "redeemed"): 48}
    status, summary = await api.admin("marketer", "GET", "/admin/v1/reports/summary")
    assert (summary["totals"]["issued"], summary["totals"]["fulfilled"]) == (48, 48)
