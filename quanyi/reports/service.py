"""Report queries over the rollups (report_daily), in the caller's branch scope."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from quanyi.access.staff import Staff
from quanyi.core.clock import Clock
from quanyi.core.errors import CampaignNotFound, InvalidRequest
from quanyi.reports import queries
from quanyi.reports.model import DEFAULT_DAYS, FIGURES, GROUP_KEYS, MAX_DAYS, SummaryQuery

# Who reads reports: money is shown, so not operators.
READERS = ("marketer", "approver", "auditor")


class ReportService:
    def __init__(self, pool: asyncpg.Pool, zone: ZoneInfo, clock: Clock) -> None:
        self._pool = pool
        self._zone = zone
        self._clock = clock

    async def summary(self, staff: Staff, query: SummaryQuery) -> dict[str, Any]:
        """{"group_by", "from", "to", "rows": [{"key", figures...}], "totals": {figures...}}:
        the figures of the rollups in the caller's scope, per key of `group_by`."""
        staff.require_role(*READERS)
        first, last = self._days(query)
        branches = staff.visible_branches()
        if query.branch is not None:
            staff.require_branch(query.branch)
            branches = [query.branch]
        async with self._pool.acquire() as conn:
            if query.campaign_id is not None:
                branch = await conn.fetchval(queries.campaign_branch, query.campaign_id)
                if branch is None:
                    raise CampaignNotFound(f"no campaign {query.campaign_id}")
                staff.require_branch(branch)
            sql = queries.summary.replace("{key}", GROUP_KEYS[query.group_by])
            rows = await conn.fetch(sql, first, last, query.campaign_id, branches)
        figures = [{"key": r["key"], **{f: r[f] for f in FIGURES}} for r in rows]
        return {
            "group_by": query.group_by,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "rows": figures,
            "totals": {f: sum(r[f] for r in figures) for f in FIGURES},
        }

    def _days(self, query: SummaryQuery) -> tuple[date, date]:
        today = datetime.fromtimestamp(self._clock(), self._zone).date()
        last = query.to or today
        first = query.from_ or last - timedelta(days=DEFAULT_DAYS - 1)
        if first > last:
            raise InvalidRequest("from is after to", {"from": "on or before to"})
        if (last - first).days + 1 > MAX_DAYS:
            raise InvalidRequest(
                f"at most {MAX_DAYS} days in one report", {"to": f"within {MAX_DAYS} days of from"}
            )
        return first, last


def summary_csv_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """The summary as CSV rows: a header, a row per key, then the totals."""
    header = ["key", *FIGURES]
    body = [[r["key"], *(r[f] for f in FIGURES)] for r in summary["rows"]]
    return [header, *body, ["(total)", *(summary["totals"][f] for f in FIGURES)]]
