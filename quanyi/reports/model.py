"""What the report endpoints take and answer."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from quanyi.core.schemas import Body, Ident, Reply

GroupBy = Literal["day", "campaign", "channel", "branch", "reward", "right", "vendor"]
# What each grouping's key is: a fixed SQL expression over report_daily. A reward is named with
# its campaign (reward ids repeat across campaigns); a day as YYYY-MM-DD.
GROUP_KEYS: dict[str, str] = {
    "day": "to_char(day, 'YYYY-MM-DD')",
    "campaign": "campaign_id",
    "channel": "channel_id",
    "branch": "branch",
    "reward": "campaign_id || '/' || reward_id",
    "right": "right_id",
    "vendor": "vendor_id",
}
FIGURES = (
    "issued",
    "fulfilled",
    "redeemed",
    "expired",
    "revoked",
    "failed",
    "cost",
    "face_value_issued",
    "face_value_redeemed",
)
# Days one summary may span: a year and a day, so any calendar year fits.
MAX_DAYS = 367
DEFAULT_DAYS = 30


class SummaryQuery(Body):
    campaign_id: Ident | None = None
    # Local days (QUANYI_TZ), both included; default: the 30 days up to today.
    from_: date | None = Field(None, alias="from")
    to: date | None = None
    group_by: GroupBy = "day"
    # Head office (or a branch, for its own subtree) narrows the report to one branch.
    branch: Ident | None = None
    format: Literal["json", "csv"] = "json"


class Figures(Reply):
    issued: int
    fulfilled: int
    redeemed: int
    expired: int
    revoked: int
    failed: int
    # fen: the unit cost of every right issued, and the face value issued and redeemed
    cost: int
    face_value_issued: int
    face_value_redeemed: int


class SummaryRow(Figures):
    key: str


class SummaryReply(Reply):
    group_by: GroupBy
    # the days covered, both included
    from_: str = Field(alias="from")
    to: str
    rows: list[SummaryRow]
    totals: Figures


class LiabilityQuery(Body):
    branch: Ident | None = None


class LiabilityFigures(Reply):
    # grants ever issued, and how many are now fulfilled (the liability), redeemed, expired
    issued: int
    outstanding: int
    # fen: the face value of the fulfilled, unredeemed, unexpired grants
    outstanding_face_value: int
    redeemed: int
    expired: int
    # expired / issued and redeemed / issued; null before anything was issued
    breakage: float | None
    redemption_rate: float | None


class LiabilityRow(LiabilityFigures):
    right_id: str
    vendor_id: str


class LiabilityReply(Reply):
    rows: list[LiabilityRow]
    totals: LiabilityFigures


class VendorDaysQuery(Body):
    vendor_id: Ident | None = None
    # Local days, both included; default: the 30 days up to today.
    from_: date | None = Field(None, alias="from")
    to: date | None = None


class StatementFigures(Reply):
    statement_id: int
    # its lines, and how many it bills as issued and as redeemed
    rows: int
    billed_issued: int
    billed_redeemed: int
    # its reconciliation against our ledger: matched, mismatched, missing_ours, missing_theirs
    summary: dict[str, int]


class VendorDay(Reply):
    vendor_id: str
    day: str
    # grants issued there that day, their cost (fen), and redemptions its callbacks applied
    issued: int
    cost: int
    redeemed_by_callback: int
    # the latest statement the vendor sent for the day, or null
    statement: StatementFigures | None
    # what the statement bills less what we issued; its redeemed lines less the callbacks
    # (statement lines are the day's grants, so these compare like with like only roughly;
    # the statement's summary is the grant-by-grant comparison); null without a statement
    billed_minus_issued: int | None
    billed_redeemed_minus_callbacks: int | None


class VendorDaysReply(Reply):
    from_: str = Field(alias="from")
    to: str
    rows: list[VendorDay]


class FunnelQuery(Body):
    campaign_id: Ident


class FunnelReply(Reply):
    campaign_id: str
    # members of the audiences its rewards name (null: open to anyone)
    audience: int | None
    # customers GET offers showed it to; customers whose card events reached one of its goals
    # (null: no goal). Both counted with a HyperLogLog: within about 1 %.
    eligible: int
    qualified: int | None
    # its grants: all, fulfilled at some point, redeemed
    issued: int
    fulfilled: int
    redeemed: int
