"""The report rollups: added up in Python for each ledger batch (BatchRollups) and written in one
upsert per table, and recomputed from the ledger (rebuild_rollups).

The ledger worker (worker.py `_insert`) counts what its transaction newly wrote: each grant it
inserted (report_daily `issued`, `cost`, report_status at its status), each event of such a
grant it inserted (report_daily by the event's day), and each grant whose status an event
moved (report_status, -1 and +1). The groups are summed here, sorted (two workers upserting the
same rows lock them in one order) and sent as arrays: a row of report_daily per day, campaign,
reward and channel of the batch rather than a join and an aggregate over every grant. The
rarer cases, events of grants written earlier, keep the SQL of queries.sql (roll_up_events).

rebuild_rollups builds every rollup again from every grant and event: the daily rollups with
roll_up_grants and roll_up_events, page by page, the status counts in one query. For a ledger
that held grants before the rollups existed, after a change of QUANYI_TZ, or to check that the
kept rollups agree with the rows (tests do)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from zoneinfo import ZoneInfo

import asyncpg

from quanyi.ledger import queries

PAGE = 5000
# report_daily's event counters, in the order add_daily takes them.
EVENT_COLUMNS = ("fulfilled", "redeemed", "expired", "revoked", "failed")
# day, campaign, reward, channel
DayKey = tuple[date, str, str, str]


class BatchRollups:
    """What one ledger transaction adds to report_status and report_daily."""

    def __init__(self, tz: str) -> None:
        self._zone = ZoneInfo(tz)
        # (campaign, reward, status) -> [grants, right]
        self._status: dict[tuple[str, str, str], list] = {}
        # DayKey -> [right, issued, cost, fulfilled, redeemed, expired, revoked, failed]
        self._daily: dict[DayKey, list] = {}

    def _day(self, at: datetime) -> date:
        return at.astimezone(self._zone).date()

    def status(self, campaign: str, reward: str, right: str, status: str, by: int) -> None:
        row = self._status.setdefault((campaign, reward, status), [0, right])
        row[0] += by

    def _daily_row(
        self, at: datetime, campaign: str, reward: str, channel: str, right: str
    ) -> list:
        key = (self._day(at), campaign, reward, channel)
        row = self._daily.get(key)
        if row is None:
            row = self._daily[key] = [right, 0, 0, 0, 0, 0, 0, 0]
        elif right < row[0]:
            row[0] = right
        return row

    def issued(self, grant: tuple) -> None:
        """A grant inserted now, as GrantEntry.row() gives it."""
        _id, campaign, reward, right, _customer, channel, _req, cost, granted_at, _o = grant[:10]
        row = self._daily_row(granted_at, campaign, reward, channel, right)
        row[1] += 1
        row[2] += cost

    def event(self, grant: tuple, event: str, at: datetime) -> None:
        """An event inserted now of a grant inserted now (`grant` as GrantEntry.row())."""
        if event not in EVENT_COLUMNS:
            return  # redriven: no counter
        _id, campaign, reward, right, _customer, channel = grant[:6]
        row = self._daily_row(at, campaign, reward, channel, right)
        row[3 + EVENT_COLUMNS.index(event)] += 1

    async def write(self, conn: asyncpg.Connection) -> None:
        """The status counts, then the days (the order rebuild_rollups locks them in)."""
        status = sorted((k, v) for k, v in self._status.items() if v[0])
        if status:
            await conn.execute(
                queries.add_status_counts,
                [k[0] for k, _ in status],
                [k[1] for k, _ in status],
                [k[2] for k, _ in status],
                [v[1] for _, v in status],
                [v[0] for _, v in status],
            )
        daily = sorted(self._daily.items())
        if daily:
            columns = [[k[i] for k, _ in daily] for i in range(4)]
            values = [[v[i] for _, v in daily] for i in range(8)]
            await conn.execute(queries.add_daily, *columns, *values)


async def rebuild_rollups(
    pool: asyncpg.Pool,
    tz: str,
    progress: Callable[[int], None] | None = None,
    page: int = PAGE,
) -> int:
    """Replaces every rollup row with what the ledger's grants and events add up to; returns
    the grants counted. `progress` is told how many grants each page counted.

    One transaction: reports read the old rollups until it commits. The ledger worker's writes
    wait for it (its rollup update needs the table the rebuild holds), so a grant is either in
    the snapshot the rebuild counts or written, and counted, after it: never both or neither."""
    counted = 0
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        # Before the first query: the snapshot is taken then, with every writer kept out. In
        # the order the ledger worker writes them (status counts, then days): no deadlock.
        await conn.execute("LOCK TABLE report_status, report_daily IN EXCLUSIVE MODE")
        await conn.execute("DELETE FROM report_daily")
        await conn.execute("DELETE FROM report_status")
        await conn.execute(queries.count_statuses)
        after = ""
        while True:
            ids = [r["grant_id"] for r in await conn.fetch(queries.grant_ids_after, after, page)]
            if not ids:
                return counted
            await conn.execute(queries.roll_up_grants, ids, tz)
            await conn.execute(queries.roll_up_events, ids, [], [], tz)
            counted += len(ids)
            after = ids[-1]
            if progress:
                progress(len(ids))
