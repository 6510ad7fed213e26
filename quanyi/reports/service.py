"""Report queries over the rollups (report_daily), in the caller's branch scope."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
from redis.asyncio import Redis

from quanyi.access.staff import Staff
from quanyi.core.clock import Clock
from quanyi.core.errors import CampaignNotFound, InvalidRequest
from quanyi.reports import queries
from quanyi.reports.model import (
    DEFAULT_DAYS,
    FIGURES,
    GROUP_KEYS,
    MAX_DAYS,
    FunnelQuery,
    LiabilityQuery,
    SummaryQuery,
    VendorDaysQuery,
)
from quanyi.stores.keys import Keys

# Who reads reports: money is shown, so not operators.
READERS = ("marketer", "approver", "auditor")
LIABILITY_COUNTS = ("issued", "outstanding", "outstanding_face_value", "redeemed", "expired")


class ReportService:
    def __init__(
        self, pool: asyncpg.Pool, redis: Redis, keys: Keys, zone: ZoneInfo, clock: Clock
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys
        self._zone = zone
        self._clock = clock

    async def funnel(self, staff: Staff, query: FunnelQuery) -> dict[str, Any]:
        """From audience to redemption for one campaign: members of its audiences, customers
        offered it, customers who reached a goal, then its grants by state."""
        staff.require_role(*READERS)
        campaign_id = query.campaign_id
        row = await self._pool.fetchrow(queries.funnel_campaign, campaign_id)
        if row is None:
            raise CampaignNotFound(f"no campaign {campaign_id}")
        staff.require_branch(row["branch"])
        grants = await self._pool.fetchrow(queries.funnel_grants, campaign_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.pfcount(self._keys.offered(campaign_id))
            pipe.pfcount(self._keys.qualified(campaign_id))
            eligible, qualified = await pipe.execute()
        return {
            "campaign_id": campaign_id,
            "audience": row["audience"],
            "eligible": eligible,
            "qualified": qualified if row["has_goal"] else None,
            "issued": grants["issued"],
            "fulfilled": grants["fulfilled"],
            "redeemed": grants["redeemed"],
        }

    async def summary(self, staff: Staff, query: SummaryQuery) -> dict[str, Any]:
        """{"group_by", "from", "to", "rows": [{"key", figures...}], "totals": {figures...}}:
        the figures of the rollups in the caller's scope, per key of `group_by`."""
        staff.require_role(*READERS)
        first, last = self._range(query.from_, query.to)
        branches = self._branches(staff, query.branch)
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

    async def liability(self, staff: Staff, query: LiabilityQuery) -> dict[str, Any]:
        """{"rows": [{"right_id", "vendor_id", figures...}], "totals": {figures...}}: what
        is fulfilled and not yet redeemed or expired, by right and vendor, with breakage and
        redemption rates, in the caller's scope."""
        staff.require_role(*READERS)
        branches = self._branches(staff, query.branch)
        rows = await self._pool.fetch(queries.liability, branches)
        listed = [
            {"right_id": r["right_id"], "vendor_id": r["vendor_id"], **_rates(dict(r))}
            for r in rows
        ]
        totals = {f: sum(r[f] for r in listed) for f in LIABILITY_COUNTS}
        return {"rows": listed, "totals": _rates(totals)}

    async def vendor_days(self, staff: Staff, query: VendorDaysQuery) -> dict[str, Any]:
        """Per vendor and day: what we issued there, what its callbacks redeemed, what its
        statement bills, and the differences. Vendors are head office's: so is this view."""
        staff.require_role(*READERS)
        staff.require_head_office()
        first, last = self._range(query.from_, query.to)
        rows = await self._pool.fetch(queries.vendor_days, first, last, query.vendor_id)
        return {"from": first.isoformat(), "to": last.isoformat(), "rows": [_day(r) for r in rows]}

    @staticmethod
    def _branches(staff: Staff, branch: str | None) -> list[str] | None:
        """The branches a report covers: `branch` if the caller may see it, else their scope."""
        if branch is None:
            return staff.visible_branches()
        staff.require_branch(branch)
        return [branch]

    def _range(self, first: date | None, last: date | None) -> tuple[date, date]:
        """The days a report covers: as asked, by default the 30 days up to today."""
        last = last or datetime.fromtimestamp(self._clock(), self._zone).date()
        first = first or last - timedelta(days=DEFAULT_DAYS - 1)
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


def _rates(figures: dict[str, Any]) -> dict[str, Any]:
    counts = {f: figures[f] for f in LIABILITY_COUNTS}
    issued = counts["issued"]
    return {
        **counts,
        "breakage": counts["expired"] / issued if issued else None,
        "redemption_rate": counts["redeemed"] / issued if issued else None,
    }


def _day(row: asyncpg.Record) -> dict[str, Any]:
    statement = None
    if row["statement_id"] is not None:
        statement = {
            "statement_id": row["statement_id"],
            "rows": row["rows"],
            "billed_issued": row["billed_issued"],
            "billed_redeemed": row["billed_redeemed"],
            "summary": orjson.loads(row["summary"]),
        }
    return {
        "vendor_id": row["vendor_id"],
        "day": row["day"].isoformat(),
        "issued": row["issued"],
        "cost": row["cost"],
        "redeemed_by_callback": row["redeemed_by_callback"],
        "statement": statement,
        "billed_minus_issued": None if statement is None else row["rows"] - row["issued"],
        "billed_redeemed_minus_callbacks": (
            None if statement is None else row["billed_redeemed"] - row["redeemed_by_callback"]
        ),
    }
