"""Vendor-facing endpoints (signed redemption callbacks) and the staff vendor registry."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from access.staff import Staff, audit
from issuance.api import revoke
from issuance.grants import public
from quanyi import metrics
from quanyi.appkeys import CAMPAIGNS, CLOCK, GRANTS, LIFECYCLE, POOL, SETTINGS, VENDORS
from quanyi.errors import Conflict, Forbidden, GrantNotFound, InvalidRequest, Unauthorized
from quanyi.ids import is_grant_id
from quanyi.pan import mask_pans, masked_json_text
from quanyi.validation import Fields, is_digits, parse_json
from quanyi.web import json_response, path_id, request_staff
from vendors import queries
from vendors.registry import VendorRegistry
from vendors.rsa import verify
from vendors.statements import reconcile
from vendors.upload_slots import upload_slots

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
    _check_numbers(body)
    if _depth(payload) > MAX_BODY_DEPTH:
        # What is stored is walked by recursive code (card-number masking): refuse it first.
        raise InvalidRequest(
            f"the body nests deeper than {MAX_BODY_DEPTH} levels",
            {"body": f"at most {MAX_BODY_DEPTH} levels of nesting"},
        )
    f = Fields(payload)
    redemption_id = f.ident("redemption_id")
    grant_id = f.text("grant_id", 64, required=False)
    code = f.text("code", 128, required=False, mask=False)  # looked up as sent, stored masked
    redeemed_at = f.time("redeemed_at")
    if not grant_id and not code:
        f.fail("grant_id", "grant_id or code is required")
    f.check()
    # What will be stored (card numbers masked) is worked out before any state moves: a body
    # that cannot be stored is refused now, not after the grant was redeemed.
    try:
        stored_body = masked_json_text(body)
        stored_code = mask_pans(code) if code else code
    except (ValueError, TypeError, RecursionError):
        raise InvalidRequest(
            "the body cannot be stored", {"body": "cannot be stored with card numbers masked"}
        ) from None

    pool = app[POOL]
    prior = await pool.fetchrow(queries.get_redemption, vendor_id, redemption_id)
    if prior is not None:
        return _answer(
            vendor_id, prior["outcome"], prior["reason"], redemption_id, prior["grant_id"], True
        )

    grant = await _find_grant(app, vendor_id, grant_id, code)
    record = (
        vendor_id,
        redemption_id,
        grant["grant_id"] if grant else grant_id,
        stored_code,
        redeemed_at,
        stored_body,
    )
    if grant is None:
        await _record(pool, *record, "refused", "unknown grant")
        return _answer(vendor_id, "refused", "unknown grant", redemption_id, grant_id, False)
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
        return _answer(vendor_id, "refused", reason, redemption_id, grant["grant_id"], False)
    await _record(pool, *record, "applied", None)
    replayed = moved.outcome == "repeated"
    return _answer(vendor_id, "applied", None, redemption_id, grant["grant_id"], replayed)


async def _redeemed_by(app: web.Application, grant_id: str, redemption_id: str) -> bool:
    """Whether the grant was redeemed by this very redemption (a concurrent retry of it)."""
    grant = await app[GRANTS].get(grant_id)
    return any(
        e["event"] == "redeemed" and e.get("detail", {}).get("redemption_id") == redemption_id
        for e in grant["timeline"]
    )


def _has_nul(value: Any) -> bool:
    # A loop, not recursion: a body may nest as deep as the JSON parser allows (1,024 levels).
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


MAX_BODY_DEPTH = 32


def _depth(value: Any) -> int:
    """How deeply objects and lists nest in a parsed JSON value (a loop, not recursion)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend((v, depth) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


# A JSON string (maybe a key, when a colon follows) or a number, in valid JSON.
_JSON_TOKEN = re.compile(rb'("(?:[^"\\]|\\.)*")(\s*:)?|(-?[0-9][0-9.eE+-]*)')
# What PostgreSQL's jsonb keeps: it stores numbers exactly, and refuses one with more than
# 16,383 digits after the point (0.000...1 or 1e-20000, which orjson reads as 0.0).
_STORABLE_NUMBER = re.compile(rb"-?[0-9]{1,40}(?:\.[0-9]{1,40})?(?:[eE][+-]?[0-9]{1,3})?")


def _check_numbers(body: bytes) -> None:
    """Refuses a body holding a number the redemptions table cannot keep: checked before any
    state moves, so a vendor's retry of it cannot find the grant redeemed and the insert failing."""
    key = "body"
    for token in _JSON_TOKEN.finditer(body):
        if token[1] is not None:
            if token[2] is not None:
                key = orjson.loads(token[1])
        elif not _STORABLE_NUMBER.fullmatch(token[3]):
            raise InvalidRequest(
                "numbers must have at most 40 digits before and after the point",
                {key: "a number of at most 40 digits before and after the point"},
            )


STATEMENT_MAX_BYTES = 16 * 1024 * 1024
# A redemption callback is a small JSON object: the app-wide request limit.
CALLBACK_MAX_BYTES = 64 * 1024


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


async def _verified_body(
    request: web.Request,
    vendor_id: str,
    limit: int = CALLBACK_MAX_BYTES,
    before_read: Callable[[], object] | None = None,
) -> bytes:
    """The raw body of a vendor's signed request. Nothing of the body is read until the
    timestamp is fresh, the vendor known and the declared size within `limit` (401 or 413
    otherwise, so a stranger cannot make us buffer megabytes); then the signature is checked
    on the raw bytes, before anything parses them. `before_read` runs once the headers
    passed and before the body is read (a statement takes its upload slot there)."""
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
    if known is None or not known[1] or not signature:
        raise Unauthorized("unknown vendor or bad signature")
    if before_read is not None:
        before_read()
    body = await _read_large(request, limit)
    if len(body) > CALLBACK_MAX_BYTES:
        # Hashing megabytes takes milliseconds; pycryptodome lets the loop run meanwhile.
        valid = await asyncio.to_thread(verify, known[1], timestamp, body, signature)
    else:
        valid = verify(known[1], timestamp, body, signature)
    if not valid:
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
    stored_body: str,
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
        stored_body,  # kept for reconciliation, never with a card number (masked_json_text)
    )


def _answer(
    vendor_id: str,
    outcome: str,
    reason: str | None,
    redemption_id: str,
    grant_id: str | None,
    replayed: bool,
) -> web.Response:
    metrics.REDEMPTIONS.labels(vendor_id, "replayed" if replayed else outcome).inc()
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
    staff = await request_staff(request)
    vendors = await VendorRegistry(request.app[POOL]).read_all(staff)
    return json_response({"vendors": [v.to_json() for v in vendors]})


@routes.get("/admin/v1/vendors/{vendor_id}")
async def get_vendor(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    vendor = await VendorRegistry(request.app[POOL]).read(staff, path_id(request, "vendor_id"))
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
    # A statement is reconciled against every grant of the vendor, of every branch.
    staff.require_head_office()
    vendor_id = path_id(request, "vendor_id")
    await VendorRegistry(request.app[POOL]).get(vendor_id)
    with upload_slots(request.app).hold(vendor_id):  # before a byte of the body is read
        body = await _read_large(request, STATEMENT_MAX_BYTES)
        return await _reconcile(request, staff, vendor_id, body)


@routes.post("/v1/vendors/{vendor_id}/statements")
async def post_vendor_statement(request: web.Request) -> web.Response:
    """A vendor sends its daily statement itself, signed like a callback."""
    vendor_id = path_id(request, "vendor_id")
    with ExitStack() as held:
        # The upload slot is taken once the headers passed, before the body is read, and
        # held until the statement is reconciled.
        body = await _verified_body(
            request,
            vendor_id,
            STATEMENT_MAX_BYTES,
            before_read=lambda: held.enter_context(upload_slots(request.app).hold(vendor_id)),
        )
        actor = Staff(f"vendor:{vendor_id}", "vendor", "HQ")
        return await _reconcile(request, actor, vendor_id, body)


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
    # A report lists every row of a statement of up to 16 MB: encoded off the event loop.
    body = await asyncio.to_thread(orjson.dumps, report)
    return web.Response(body=body, status=201, content_type="application/json")
