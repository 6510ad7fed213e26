"""GET /admin/v1/reports/...: the ledger's figures for staff, as JSON or CSV."""

from __future__ import annotations

from aiohttp import web

from quanyi.access.api import request_staff
from quanyi.core.csv_cells import csv_rows
from quanyi.core.errors import CampaignNotFound, Forbidden, InvalidRequest, Unauthorized
from quanyi.core.http import json_response
from quanyi.core.schemas import check, endpoint
from quanyi.reports.model import (
    FunnelQuery,
    FunnelReply,
    LiabilityQuery,
    LiabilityReply,
    SummaryQuery,
    SummaryReply,
    VendorDaysQuery,
    VendorDaysReply,
)
from quanyi.reports.service import ReportService, summary_csv_rows

routes = web.RouteTableDef()
REPORTS = web.AppKey("reports", ReportService)


@routes.get("/admin/v1/reports/summary")
@endpoint(
    "What campaigns issued, what became of it and what it cost, per day, campaign, channel,"
    " branch, reward, right or vendor, from the ledger's rollups, in the caller's branch scope;"
    " format=csv gives the same rows and a (total) row as text/csv",
    auth="staff",
    query=SummaryQuery,
    responses={200: SummaryReply},
    response_media="text/csv",
    errors=(InvalidRequest, Unauthorized, Forbidden, CampaignNotFound),
    tags=("reports",),
)
async def get_summary(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    query = check(SummaryQuery, request.query, "bad report query")
    summary = await request.app[REPORTS].summary(staff, query)
    if query.format == "json":
        return json_response(summary)
    return web.Response(
        body=csv_rows(summary_csv_rows(summary)),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="summary.csv"',
        },
    )


@routes.get("/admin/v1/reports/liability")
@endpoint(
    "Rights fulfilled and not yet redeemed or expired, by right and vendor, with count and"
    " face value; breakage (expired / issued) and redemption rate, in the caller's branch scope",
    auth="staff",
    query=LiabilityQuery,
    responses={200: LiabilityReply},
    errors=(InvalidRequest, Unauthorized, Forbidden),
    tags=("reports",),
)
async def get_liability(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    query = check(LiabilityQuery, request.query, "bad report query")
    return json_response(await request.app[REPORTS].liability(staff, query))


@routes.get("/admin/v1/reports/vendors")
@endpoint(
    "Per vendor and day: what we issued there, what its callbacks redeemed, what its latest"
    " statement for the day bills and how it reconciled, and the differences (head office)",
    auth="staff",
    query=VendorDaysQuery,
    responses={200: VendorDaysReply},
    errors=(InvalidRequest, Unauthorized, Forbidden),
    tags=("reports",),
)
async def get_vendor_days(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    query = check(VendorDaysQuery, request.query, "bad report query")
    return json_response(await request.app[REPORTS].vendor_days(staff, query))


@routes.get("/admin/v1/reports/funnel")
@endpoint(
    "One campaign from audience to redemption: its audiences' members, the customers offered"
    " it, those whose card events reached a goal, then its grants issued, fulfilled, redeemed",
    auth="staff",
    query=FunnelQuery,
    responses={200: FunnelReply},
    errors=(InvalidRequest, Unauthorized, Forbidden, CampaignNotFound),
    tags=("reports",),
)
async def get_funnel(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    query = check(FunnelQuery, request.query, "bad report query")
    return json_response(await request.app[REPORTS].funnel(staff, query))
