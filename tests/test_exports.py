"""`quanyi export grants|events|rollups`: the ledger's rows of a range of local days, in CSV or
Parquet, whole or not at all, without voucher codes."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from quanyi.ledger.worker import LedgerWorker
from quanyi.reports.exports import export
from tests.support.cli import quanyi
from tests.support.clock import SHANGHAI
from tests.support.events import add_card_channel, event, send

pytestmark = pytest.mark.usefixtures("signed_in")


def local_day(api: Any, days: int = 0) -> str:
    return (datetime.fromtimestamp(api.clock(), SHANGHAI).date() + timedelta(days=days)).isoformat()


@pytest.fixture
async def ledger(api, c1, redis, pool, keys, settings) -> list[str]:
    """Three grants of c1 today and one tomorrow, two card events today, all in the ledger."""
    grants = []
    for n in range(3):
        status, grant = await api.claim(request_id=f"x-{n}", campaign_id="c1", customer_id=f"C{n}")
        assert status == 201, grant
        grants.append(grant["grant_id"])
    await add_card_channel(api, pool, settings)
    await send(api, event(api, "ev-1", "C0"), event(api, "ev-2", "C1", amount=500))
    api.clock.advance(86_400)
    status, grant = await api.claim(request_id="x-late", campaign_id="c1", customer_id="C9")
    assert status == 201, grant
    grants.append(grant["grant_id"])
    await LedgerWorker(redis, pool, keys, tz=settings.tz).drain()
    # A fulfilled grant carries a voucher code: the export must not.
    await pool.execute("UPDATE grants SET code = 'SECRET-CODE-1' WHERE grant_id = $1", grants[0])
    return grants


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


async def test_grants_of_a_day_as_csv_without_their_codes(api, pool, settings, ledger, tmp_path):
    path = tmp_path / "grants.csv"
    done = await asyncio.to_thread(
        quanyi,
        "export",
        "grants",
        "--from",
        local_day(api, -1),
        "--to",
        local_day(api, -1),
        "--output",
        str(path),
    )
    assert done.returncode == 0, done.stderr
    assert f"3 grants of {local_day(api, -1)}..{local_day(api, -1)} written" in done.stdout
    rows = read_csv(path)
    assert sorted(r["grant_id"] for r in rows) == sorted(ledger[:3])
    assert {r["campaign_id"] for r in rows} == {"c1"} and {r["unit_cost"] for r in rows} == {"100"}
    assert "code" not in rows[0] and "SECRET-CODE-1" not in path.read_text()
    datetime.fromisoformat(rows[0]["granted_at"])  # RFC 3339


async def test_card_events_and_rollups_as_parquet(api, pool, settings, ledger, tmp_path):
    events = tmp_path / "events.parquet"
    count = await export(
        pool,
        "events",
        datetime.fromisoformat(local_day(api, -1)).date(),
        datetime.fromisoformat(local_day(api)).date(),
        settings.zone,
        events,
        "parquet",
    )
    table = pq.read_table(events)
    assert count == table.num_rows == 2
    assert sorted(table.column("event_id").to_pylist()) == ["ev-1", "ev-2"]
    assert sorted(table.column("amount").to_pylist()) == [500, 12_000]
    assert str(table.schema.field("occurred_at").type) == "timestamp[us, tz=UTC]"

    rollups = tmp_path / "rollups.parquet"
    pages: list[int] = []
    first = datetime.fromisoformat(local_day(api, -1)).date()
    last = datetime.fromisoformat(local_day(api)).date()
    assert (
        await export(pool, "rollups", first, last, settings.zone, rollups, "parquet", pages.append)
        == 2
    )
    assert pages == [2]
    days = pq.read_table(rollups).to_pylist()
    assert [(d["day"].isoformat(), d["issued"], d["cost"]) for d in days] == [
        (local_day(api, -1), 3, 300),
        (local_day(api), 1, 100),
    ]


async def test_an_export_that_fails_leaves_the_last_file_alone(api, pool, settings, tmp_path):
    path = tmp_path / "grants.csv"
    path.write_text("the last good export\n")
    # The end of this range is past what dates can hold: the export fails once it has begun.
    with pytest.raises(OverflowError):
        await export(pool, "grants", date(2026, 12, 1), date.max, settings.zone, path, "csv")
    assert path.read_text() == "the last good export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["grants.csv"]


async def test_from_after_to_is_refused(tmp_path):
    done = await asyncio.to_thread(
        quanyi, "export", "grants", "--from", "2026-12-02", "--to", "2026-12-01"
    )
    assert done.returncode == 2 and "--from is after --to" in done.stderr
