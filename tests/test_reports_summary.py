"""GET /admin/v1/reports/summary: the rollups the ledger worker keeps in the transaction that
writes grants and their events, counted once whatever the delivery order or repeats, equal to a
rebuild from the rows, in the caller's branch scope, as JSON or CSV."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from quanyi.core.csv_cells import csv_rows, safe_cell
from quanyi.ledger.rollups import rebuild_rollups
from quanyi.ledger.worker import LedgerWorker
from tests.support.cli import quanyi
from tests.support.clients import error_code
from tests.support.clock import SHANGHAI
from tests.support.factories import campaign_in, reward
from tests.support.settings import CHANNEL, CHANNEL_SECRET

pytestmark = pytest.mark.usefixtures("signed_in", "coffee")

ZERO = dict.fromkeys(
    (
        "issued",
        "fulfilled",
        "redeemed",
        "expired",
        "revoked",
        "failed",
        "cost",
        "face_value_issued",
        "face_value_redeemed",
    ),
    0,
)


def figures(**changes: int) -> dict[str, int]:
    return {**ZERO, **changes}


def today(api: Any) -> str:
    return datetime.fromtimestamp(api.clock(), SHANGHAI).date().isoformat()


async def summary(api: Any, user: str = "marketer", **query: str) -> dict[str, Any]:
    status, body = await api.admin(user, "GET", _path(**query))
    assert status == 200, body
    return body


def _path(**query: str) -> str:
    text = "&".join(f"{k}={v}" for k, v in query.items())
    return "/admin/v1/reports/summary" + (f"?{text}" if text else "")


async def claims(api: Any, campaign_id: str, customers: range, channel: str = CHANNEL) -> list[str]:
    secret = {CHANNEL: CHANNEL_SECRET, "wechat": "wechat-secret"}[channel]
    grants = []
    for n in customers:
        status, grant = await api.channel(
            "POST",
            "/v1/claims",
            {
                "request_id": f"{channel}-{n}",
                "campaign_id": campaign_id,
                "customer_id": f"{channel}-{n}",
            },
            channel=channel,
            secret=secret,
        )
        assert status == 201, grant
        grants.append(grant["grant_id"])
    return grants


async def drain(redis: Any, pool: Any, keys: Any, settings: Any) -> None:
    await LedgerWorker(redis, pool, keys, tz=settings.tz).drain()


async def rollups(pool: Any) -> list[tuple]:
    rows = await pool.fetch("SELECT * FROM report_daily ORDER BY 1, 2, 3, 4")
    return [tuple(r.values()) for r in rows]


@pytest.fixture
async def two_channels(api):
    """Campaign c1: reward r1 of coffee (cost 100, face value 200), on `app` and `wechat`."""
    await api.create_campaign("c1", [reward("r1", stock=1000)], channels=[CHANNEL, "wechat"])


async def test_a_grant_is_in_the_report_as_soon_as_the_ledger_holds_it(
    api, redis, pool, keys, settings, two_channels
):
    await claims(api, "c1", range(3))
    await claims(api, "c1", range(2), channel="wechat")
    # Before the ledger has them, the report has nothing: it reads our ledger, nothing else.
    assert (await summary(api, campaign_id="c1"))["totals"] == ZERO
    await drain(redis, pool, keys, settings)

    body = await summary(api, campaign_id="c1", group_by="channel")
    assert body["rows"] == [
        # Coffee has no vendor: each grant is fulfilled as it is granted.
        {"key": "app", **figures(issued=3, fulfilled=3, cost=300, face_value_issued=600)},
        {"key": "wechat", **figures(issued=2, fulfilled=2, cost=200, face_value_issued=400)},
    ]
    assert body["totals"] == figures(issued=5, fulfilled=5, cost=500, face_value_issued=1000)
    by_day = await summary(api, campaign_id="c1", group_by="day")
    assert [r["key"] for r in by_day["rows"]] == [today(api)]
    # By default the 30 days up to today.
    last = datetime.fromtimestamp(api.clock(), SHANGHAI).date()
    assert (by_day["from"], by_day["to"]) == (
        (last - timedelta(days=29)).isoformat(),
        last.isoformat(),
    )
    for group_by, key in [
        ("campaign", "c1"),
        ("branch", "HQ"),
        ("right", "coffee"),
        ("reward", "c1/r1"),
        ("vendor", ""),
    ]:
        [row] = (await summary(api, group_by=group_by))["rows"]
        assert (row["key"], row["issued"]) == (key, 5), group_by


async def test_revocations_count_on_the_day_they_happen(
    api, redis, pool, keys, settings, clock, two_channels
):
    [first, second] = await claims(api, "c1", range(2))
    await drain(redis, pool, keys, settings)
    clock.advance(86_400)
    for grant_id in (first, second):
        status, body = await api.admin(
            "marketer", "POST", f"/admin/v1/grants/{grant_id}/revoke", {"reason": "complaint"}
        )
        assert status == 200, body
    await drain(redis, pool, keys, settings)

    days = await summary(api, group_by="day")
    issued_day, revoked_day = (r["key"] for r in days["rows"])
    assert revoked_day > issued_day
    assert days["rows"] == [
        {"key": issued_day, **figures(issued=2, fulfilled=2, cost=200, face_value_issued=400)},
        {"key": revoked_day, **figures(revoked=2)},
    ]


async def test_a_day_is_the_local_day_of_the_service_time_zone(
    api, redis, pool, keys, settings, clock, two_channels
):
    # 23:30 UTC is 07:30 the next day in Shanghai (QUANYI_TZ of the tests).
    late = datetime.fromtimestamp(clock(), UTC).replace(hour=23, minute=30, second=0)
    clock.now = late.timestamp()
    await claims(api, "c1", range(1))
    await drain(redis, pool, keys, settings)
    [row] = (await summary(api, group_by="day"))["rows"]
    assert row["key"] == datetime.fromtimestamp(clock(), SHANGHAI).date().isoformat()
    assert row["key"] != late.date().isoformat()


async def test_entries_delivered_again_or_out_of_order_are_counted_once(
    api, redis, pool, keys, settings, two_channels
):
    grants = await claims(api, "c1", range(4))
    for grant_id in grants[:2]:
        status, _ = await api.admin(
            "marketer", "POST", f"/admin/v1/grants/{grant_id}/revoke", {"reason": "test"}
        )
        assert status == 200
    entries = await redis.xrange(keys.outbox)
    grant_entries = [m for m in entries if b"g" in m[1] or "g" in m[1]]
    event_entries = [m for m in entries if m not in grant_entries]
    assert len(grant_entries) == 4 and len(event_entries) == 2

    worker = LedgerWorker(redis, pool, keys, tz=settings.tz)
    # The revocations reach the ledger before their grants (a dead worker's batch taken over
    # later), then everything again (a worker that died before acknowledging).
    await worker._persist(event_entries)
    assert await rollups(pool) == []
    await worker._persist(grant_entries)
    await worker._persist(entries)
    await worker._persist(entries)

    body = await summary(api, campaign_id="c1")
    assert body["totals"] == figures(
        issued=4, fulfilled=4, revoked=2, cost=400, face_value_issued=800
    )


async def test_the_kept_rollups_equal_a_rebuild_from_the_ledger(
    api, redis, pool, keys, settings, clock, two_channels
):
    grants = await claims(api, "c1", range(6))
    await claims(api, "c1", range(3), channel="wechat")
    await drain(redis, pool, keys, settings)
    clock.advance(86_400)
    for grant_id in grants[:3]:
        status, _ = await api.admin(
            "marketer", "POST", f"/admin/v1/grants/{grant_id}/revoke", {"reason": "test"}
        )
        assert status == 200
    await drain(redis, pool, keys, settings)
    kept = await rollups(pool)
    assert len(kept) == 3

    # What the rollups say, counted from the rows instead.
    issued = await pool.fetch(
        "SELECT (granted_at AT TIME ZONE $1)::date AS day, channel_id, count(*) AS n"
        " FROM grants GROUP BY 1, 2",
        settings.tz,
    )
    revoked = await pool.fetch(
        "SELECT (at AT TIME ZONE $1)::date AS day, count(*) AS n FROM grant_events"
        " WHERE event = 'revoked' GROUP BY 1",
        settings.tz,
    )
    assert {(r[0], r[3], r[7]) for r in kept if r[7]} == {
        (r["day"], r["channel_id"], r["n"]) for r in issued
    }
    assert {(r[0], r[11]) for r in kept if r[11]} == {(r["day"], r["n"]) for r in revoked}

    pages: list[int] = []
    assert await rebuild_rollups(pool, settings.tz, pages.append, page=4) == 9
    assert pages == [4, 4, 1]
    assert await rollups(pool) == kept


async def test_quanyi_reports_rebuild_fills_the_rollups_of_an_older_ledger(
    api, redis, pool, keys, settings, two_channels
):
    await claims(api, "c1", range(3))
    await drain(redis, pool, keys, settings)
    kept = await rollups(pool)
    await pool.execute("DELETE FROM report_daily")  # as a ledger from before the rollups

    done = await asyncio.to_thread(quanyi, "reports", "rebuild")
    assert done.returncode == 0, done.stderr
    assert "report rollups rebuilt from 3 grants (Asia/Shanghai days)" in done.stdout
    assert await rollups(pool) == kept


async def test_branch_staff_see_their_branch_only(api, redis, pool, keys, settings, two_channels):
    await claims(api, "c1", range(2))
    await campaign_in(api, "approved", "s1", "SZ")
    for n in range(3):
        status, grant = await api.claim(request_id=f"s1-{n}", campaign_id="s1", customer_id=f"S{n}")
        assert status == 201, grant
    await drain(redis, pool, keys, settings)

    sz = await summary(api, "sz-marketer", group_by="campaign")
    assert [(r["key"], r["issued"]) for r in sz["rows"]] == [("s1", 3)]
    hq = await summary(api, "marketer", group_by="campaign")
    assert [(r["key"], r["issued"]) for r in hq["rows"]] == [("c1", 2), ("s1", 3)]
    narrowed = await summary(api, "marketer", group_by="campaign", branch="SZ")
    assert [r["key"] for r in narrowed["rows"]] == ["s1"]

    for path in (_path(campaign_id="c1"), _path(branch="HQ")):
        status, body = await api.admin("sz-marketer", "GET", path)
        assert error_code(status, body) == (403, "forbidden"), path
    status, body = await api.admin("marketer", "GET", _path(campaign_id="nope"))
    assert error_code(status, body) == (404, "campaign_not_found")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"group_by": "customer"}, "group_by"),
        ({"from": "2026-13-01"}, "from"),
        ({"from": "2026-12-02", "to": "2026-12-01"}, "from"),
        ({"from": "2025-01-01", "to": "2026-12-01"}, "to"),
        ({"format": "xlsx"}, "format"),
        ({"campaign_id": "no spaces"}, "campaign_id"),
    ],
)
async def test_a_bad_query_is_refused_with_the_field_named(api, query, field):
    status, body = await api.admin("marketer", "GET", _path(**query))
    assert error_code(status, body) == (400, "invalid_request")
    assert field in body["error"]["fields"], body


async def test_the_csv_export_has_the_rows_and_totals(
    api, redis, pool, keys, settings, two_channels
):
    await claims(api, "c1", range(2))
    await claims(api, "c1", range(1), channel="wechat")
    await drain(redis, pool, keys, settings)
    resp = await api.client.get(
        _path(campaign_id="c1", group_by="channel", format="csv"),
        headers={"Authorization": f"Bearer {await api.login('marketer')}"},
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert rows[0][:3] == ["key", "issued", "fulfilled"]
    assert [r[:2] for r in rows[1:]] == [["app", "2"], ["wechat", "1"], ["(total)", "3"]]
    assert rows[-1][rows[0].index("cost")] == "300"


def test_csv_cells_a_spreadsheet_would_run_are_written_as_text():
    assert [safe_cell(v) for v in ("=SUM(A1)", "+1", "-2", "@x", "\tx", "ok", 5, None)] == [
        "'=SUM(A1)",
        "'+1",
        "'-2",
        "'@x",
        "'\tx",
        "ok",
        5,
        None,
    ]
    assert csv_rows([["=1+1", "a,b"]]) == b'\'=1+1,"a,b"\r\n'
