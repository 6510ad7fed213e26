"""Vendor-facing endpoints (signed redemption callbacks) and the staff vendor registry."""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg
from aiohttp import web

from access.staff import Staff, audit
from issuance.api import revoke
from issuance.grants import public
from quanyi.appkeys import CAMPAIGNS, CLOCK, GRANTS, LIFECYCLE, POOL, SETTINGS, VENDORS
from quanyi.errors import Conflict, Forbidden, GrantNotFound, InvalidRequest, Unauthorized
from quanyi.ids import is_grant_id
from quanyi.validation import Fields, is_digits, parse_json
from quanyi.web import json_response, path_id, request_staff
from vendors import queries
from vendors.registry import VendorRegistry
from vendors.rsa import verify
from vendors.statements import reconcile

routes = web.RouteTableDef()


class GrantUnknown(Conflict):
    code = "grant_unknown"


# redemptions


@routes.post("/v1/vendors/{vendor_id}/redemptions")
async def post_redemption(request: web.Request) -> web.Response:
    """A vendor reports that a customer used a right. Verified on the raw bytes before anything
    else; idempotent per redemption id (vendors retry callbacks for up to a day)."""
    app = request.app
    vendor_id = path_id(request, "vendor_id")
    body = await _verified_body(request, vendor_id)
    payload = parse_json(body)
    if _has_nul(payload):
        # PostgreSQL cannot keep such a body (jsonb); refuse it before anything changes.
        raise InvalidRequest("text must not contain NUL characters", {"body": "NUL character"})
    f = Fields(payload)
    redemption_id = f.ident("redemption_id")
    grant_id = f.text("grant_id", 64, required=False)
    code = f.text("code", 128, required=False)
    redeemed_at = f.time("redeemed_at")
    if not grant_id and not code:
        f.fail("grant_id", "grant_id or code is required")
    f.check()

    pool = app[POOL]
    prior = await pool.fetchrow(queries.get_redemption, vendor_id, redemption_id)
    if prior is not None:
        return _answer(prior["outcome"], prior["reason"], redemption_id, prior["grant_id"], True)

    grant = await _find_grant(app, vendor_id, grant_id, code)
    record = (
        vendor_id,
        redemption_id,
        grant["grant_id"] if grant else grant_id,
        code,
        redeemed_at,
        body,
    )
    if grant is None:
        await _record(pool, *record, "refused", "unknown grant")
        return _answer("refused", "unknown grant", redemption_id, grant_id, False)
    # Who fulfils it: recorded at fulfilment, else (not fulfilled yet, or revoked before its
    # fulfilment was recorded) the vendor its reward is routed to.
    owner = grant.get("vendor_id") or await pool.fetchval(
        queries.reward_vendor, grant["campaign_id"], grant["reward_id"]
    )
    if owner != vendor_id:
        raise Forbidden(f"grant {grant['grant_id']} is not fulfilled by vendor {vendor_id}")
    if grant["status"] == "granted":
        raise Conflict("the grant is not fulfilled yet; retry later", state="granted")
    moved = await app[LIFECYCLE].move(
        grant["grant_id"],
        "redeemed",
        f"vendor:{vendor_id}",
        {"redemption_id": redemption_id, "redeemed_at": redeemed_at.isoformat()},
    )
    if moved.outcome == "repeated" and not await _redeemed_by(
        app, grant["grant_id"], redemption_id
    ):
        moved = dataclasses.replace(moved, outcome="refused", before="redeemed")
    if moved.outcome == "refused":
        reason = f"grant is {moved.before}"
        await _record(pool, *record, "refused", reason)
        return _answer("refused", reason, redemption_id, grant["grant_id"], False)
    await _record(pool, *record, "applied", None)
    return _answer("applied", None, redemption_id, grant["grant_id"], moved.outcome == "repeated")


async def _redeemed_by(app: web.Application, grant_id: str, redemption_id: str) -> bool:
    """Whether the grant was redeemed by this very redemption (a concurrent retry of it)."""
    grant = await app[GRANTS].get(grant_id)
    return any(
        e["event"] == "redeemed" and e.get("detail", {}).get("redemption_id") == redemption_id
        for e in grant["timeline"]
    )


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


STATEMENT_MAX_BYTES = 16 * 1024 * 1024


async def _read_large(request: web.Request, limit: int) -> bytes:
    """The body, up to `limit` bytes: statements are larger than the app-wide request limit."""
    if (request.content_length or 0) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return bytes(body)


async def _verified_body(request: web.Request, vendor_id: str, limit: int | None = None) -> bytes:
    app = request.app
    timestamp = request.headers.get("X-Vendor-Timestamp", "")
    signature = request.headers.get("X-Vendor-Signature", "")
    window = app[SETTINGS].signature_window_s
    if (
        not is_digits(timestamp)
        or len(timestamp) > 12
        or abs(int(app[CLOCK]()) - int(timestamp)) > window
    ):
        raise Unauthorized(f"X-Vendor-Timestamp must be unix seconds within {window} s of now")
    known = app[VENDORS].get(vendor_id)
    body = await (_read_large(request, limit) if limit else request.read())
    if known is None or not known[1] or not verify(known[1], timestamp, body, signature):
        raise Unauthorized("unknown vendor or bad signature")
    return body


async def _find_grant(
    app: web.Application, vendor_id: str, grant_id: str | None, code: str | None
) -> dict[str, Any] | None:
    if not grant_id:
        row = await app[POOL].fetchrow(queries.grant_by_code, vendor_id, code)
        if row is None:
            return None
        grant_id = row["grant_id"]
    if not is_grant_id(grant_id):
        return None
    try:
        return await app[GRANTS].get(grant_id)
    except GrantNotFound:
        return None


async def _record(
    pool: asyncpg.Pool,
    vendor_id: str,
    redemption_id: str,
    grant_id: str | None,
    code: str | None,
    redeemed_at: Any,
    body: bytes,
    outcome: str,
    reason: str | None,
) -> None:
    await pool.execute(
        queries.insert_redemption,
        vendor_id,
        redemption_id,
        grant_id,
        code,
        redeemed_at,
        outcome,
        reason,
        body.decode(),
    )


def _answer(
    outcome: str, reason: str | None, redemption_id: str, grant_id: str | None, replayed: bool
) -> web.Response:
    if outcome == "applied":
        return json_response(
            {
                "redemption_id": redemption_id,
                "grant_id": grant_id,
                "status": "redeemed",
                "replayed": replayed,
            }
        )
    code = "grant_unknown" if reason == "unknown grant" else "grant_not_redeemable"
    return json_response(
        {
            "error": {
                "code": code,
                "message": f"redemption refused: {reason}",
                "redemption_id": redemption_id,
                "grant_id": grant_id,
            }
        },
        409,
    )


# staff


@routes.post("/admin/v1/vendors")
async def post_vendor(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    vendor = await VendorRegistry(request.app[POOL]).create(staff, parse_json(await request.read()))
    await request.app[VENDORS].refresh()
    return json_response(vendor.to_json(), 201)


@routes.get("/admin/v1/vendors")
async def get_vendors(request: web.Request) -> web.Response:
    await request_staff(request)
    vendors = await VendorRegistry(request.app[POOL]).all()
    return json_response({"vendors": [v.to_json() for v in vendors]})


@routes.get("/admin/v1/vendors/{vendor_id}")
async def get_vendor(request: web.Request) -> web.Response:
    await request_staff(request)
    vendor = await VendorRegistry(request.app[POOL]).get(path_id(request, "vendor_id"))
    return json_response(vendor.to_json())


@routes.patch("/admin/v1/vendors/{vendor_id}")
async def patch_vendor(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    vendor = await VendorRegistry(request.app[POOL]).update(
        staff, path_id(request, "vendor_id"), parse_json(await request.read())
    )
    await request.app[VENDORS].refresh()
    return json_response(vendor.to_json())


@routes.post("/admin/v1/grants/{grant_id}/revoke")
async def staff_revoke(request: web.Request) -> web.Response:
    """Staff cancel a grant of a campaign of their branch; audited."""
    staff = await request_staff(request)
    staff.require_role("marketer", "approver")
    grant_id = request.match_info["grant_id"]
    if not is_grant_id(grant_id):
        raise GrantNotFound(f"no grant {grant_id}")
    grant = await request.app[GRANTS].get(grant_id)
    campaign = await request.app[CAMPAIGNS].get(staff, grant["campaign_id"])  # branch scope
    body = await request.read()
    reason = ""
    if body:
        f = Fields(parse_json(body))
        reason = f.text("reason", 500, required=False) or ""
        f.check()
    await revoke(request.app, grant_id, f"staff:{staff.username}", reason)
    await audit(
        request.app[POOL],
        staff,
        "grant.revoke",
        f"grant:{grant_id}",
        {"campaign": campaign["id"], "reason": reason},
    )
    return json_response(public(await request.app[GRANTS].get(grant_id)))


@routes.post("/admin/v1/vendors/{vendor_id}/statements")
async def post_statement(request: web.Request) -> web.Response:
    """Upload a vendor's daily statement (CSV) for `?day=YYYY-MM-DD`; returns the report."""
    staff = await request_staff(request)
    staff.require_role("approver", "marketer")
    vendor_id = path_id(request, "vendor_id")
    await VendorRegistry(request.app[POOL]).get(vendor_id)
    body = await _read_large(request, STATEMENT_MAX_BYTES)
    return await _reconcile(request, staff, vendor_id, body)


@routes.post("/v1/vendors/{vendor_id}/statements")
async def post_vendor_statement(request: web.Request) -> web.Response:
    """A vendor sends its daily statement itself, signed like a callback."""
    vendor_id = path_id(request, "vendor_id")
    body = await _verified_body(request, vendor_id, STATEMENT_MAX_BYTES)
    return await _reconcile(request, Staff(f"vendor:{vendor_id}", "vendor", "HQ"), vendor_id, body)


async def _reconcile(
    request: web.Request, actor: Staff, vendor_id: str, body: bytes
) -> web.Response:
    try:
        text = body.decode("utf-8-sig")  # spreadsheet exports start with a BOM
    except UnicodeDecodeError:
        raise InvalidRequest("a statement is UTF-8 CSV") from None
    day = request.query.get("day", "")
    report = await reconcile(
        request.app[POOL], actor, vendor_id, day, text, request.app[SETTINGS].zone
    )
    return json_response(report, 201)
