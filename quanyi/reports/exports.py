"""Exports for the data warehouse: the ledger's grants, card events or report rollups of a range
of local days, streamed from a server-side cursor into CSV or Parquet, a chunk at a time, so an
export of any size holds one chunk in memory.

Values are written as they are (a warehouse loads them): no spreadsheet escaping, and nothing
secret: voucher codes stay out of the grants export, and card numbers are never stored at all.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal
from zoneinfo import ZoneInfo

import asyncpg

from quanyi.reports import queries

Kind = Literal["grants", "events", "rollups"]
Format = Literal["csv", "parquet"]
KINDS: tuple[Kind, ...] = ("grants", "events", "rollups")
CHUNK = 10_000


@dataclass(frozen=True)
class Table:
    """One exportable table: its rows' query, how many there are, and its columns' types."""

    rows: str
    count: str
    # name -> "text" | "int" | "time" | "date" (Parquet types; CSV writes them as text)
    columns: dict[str, str]
    # Whether the range is on timestamps (start, end) or on days (first, last)
    by_moment: bool = True


TABLES: dict[Kind, Table] = {
    "grants": Table(
        queries.export_grants,
        queries.count_grants,
        {
            "grant_id": "text",
            "campaign_id": "text",
            "reward_id": "text",
            "right_id": "text",
            "customer_id": "text",
            "channel_id": "text",
            "request_id": "text",
            "unit_cost": "int",
            "status": "text",
            "granted_at": "time",
            "persisted_at": "time",
            "vendor_id": "text",
            "reference": "text",
            "expires_at": "time",
        },
    ),
    "events": Table(
        queries.export_card_events,
        queries.count_card_events,
        {
            "channel_id": "text",
            "event_id": "text",
            "type": "text",
            "customer_id": "text",
            "amount": "int",
            "mcc": "text",
            "occurred_at": "time",
            "reversal_of": "text",
            "outcome": "text",
            "counted": "text",
            "grants": "text",
            "received_at": "time",
        },
    ),
    "rollups": Table(
        queries.export_rollups,
        queries.count_rollups,
        {
            "day": "date",
            "campaign_id": "text",
            "reward_id": "text",
            "channel_id": "text",
            "right_id": "text",
            "vendor_id": "text",
            "branch": "text",
            "issued": "int",
            "fulfilled": "int",
            "redeemed": "int",
            "expired": "int",
            "revoked": "int",
            "failed": "int",
            "cost": "int",
            "face_value_issued": "int",
            "face_value_redeemed": "int",
        },
        by_moment=False,
    ),
}


def _bounds(table: Table, first: date, last: date, zone: ZoneInfo) -> tuple[Any, Any]:
    """The range as the table's query takes it: [start, end) of the local days, or the days."""
    if not table.by_moment:
        return first, last
    start = datetime.combine(first, time.min, zone)
    end = datetime.combine(last + timedelta(days=1), time.min, zone)
    return start, end


class Writer:
    """Chunks of rows into one file, as CSV (a header first) or Parquet (a row group a chunk)."""

    def __init__(self, out: BinaryIO, table: Table, fmt: Format) -> None:
        self._out = out
        self._columns = table.columns
        self._fmt = fmt
        self._parquet: Any = None
        if fmt == "csv":
            self._write_csv([list(self._columns)])
        else:
            import pyarrow as pa  # only an export to Parquet needs it loaded
            import pyarrow.parquet as pq

            types = {
                "text": pa.string(),
                "int": pa.int64(),
                "time": pa.timestamp("us", tz="UTC"),
                "date": pa.date32(),
            }
            self._schema = pa.schema([(n, types[t]) for n, t in self._columns.items()])
            self._parquet = pq.ParquetWriter(out, self._schema)

    def write(self, rows: list[asyncpg.Record]) -> None:
        if self._fmt == "csv":
            self._write_csv([[_text(r[name]) for name in self._columns] for r in rows])
            return
        import pyarrow as pa

        values = {
            name: [_text(r[name]) if kind == "text" else r[name] for r in rows]
            for name, kind in self._columns.items()
        }
        self._parquet.write_table(pa.table(values, schema=self._schema))

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()

    def _write_csv(self, rows: list[list[Any]]) -> None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\r\n").writerows(rows)
        self._out.write(text.getvalue().encode())


def _text(value: Any) -> Any:
    """A cell as the export writes it: times in RFC 3339, JSON as its text, None kept."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


async def count_rows(
    pool: asyncpg.Pool, kind: Kind, first: date, last: date, zone: ZoneInfo
) -> int:
    table = TABLES[kind]
    return int(await pool.fetchval(table.count, *_bounds(table, first, last, zone)))


async def export(
    pool: asyncpg.Pool,
    kind: Kind,
    first: date,
    last: date,
    zone: ZoneInfo,
    path: Path,
    fmt: Format,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Writes the rows of `kind` of the local days `first`..`last` to `path`; returns how many.
    The file appears whole or not at all: it is written beside `path` and renamed at the end."""
    table = TABLES[kind]
    partial = path.with_name(f".{path.name}.partial")
    written = 0
    try:
        with partial.open("wb") as out:
            writer = Writer(out, table, fmt)
            async with pool.acquire() as conn, conn.transaction(readonly=True):
                cursor = await conn.cursor(table.rows, *_bounds(table, first, last, zone))
                while rows := await cursor.fetch(CHUNK):
                    writer.write(rows)
                    written += len(rows)
                    if progress:
                        progress(len(rows))
            writer.close()
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return written
