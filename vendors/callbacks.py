"""The routes vendors call, each RSA-signed by the vendor: redemption callbacks and their daily
statement. Who sent a request and whether it is fresh are checked before a byte of its body
is read; the signature is checked on the raw bytes before anything parses them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from quanyi.access.signing import is_fresh
from quanyi.core import metrics
from quanyi.core.errors import (
    Forbidden,
    GrantNotFound,
    GrantNotFulfilled,
    GrantNotRedeemable,
    GrantUnknown,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    StoreNotReady,
    TooManyRequests,
    Unauthorized,
)
from quanyi.core.http import CLOCK, SETTINGS, json_response, path_id, read_limited
from quanyi.core.ids import is_grant_id
from quanyi.core.pan import mask_pans, masked_json_text
from quanyi.core.schemas import decode, endpoint
from quanyi.issuance.api import GRANTS, LIFECYCLE
from quanyi.stores.appkeys import POOL
from quanyi.vendors import queries
from quanyi.vendors.api import STATEMENT_MAX_BYTES, VENDORS, reconciled
from quanyi.vendors.model import (
    RedemptionBody,
    RedemptionReply,
    StatementQuery,
    StatementReport,
)
from quanyi.vendors.rsa import verify
from quanyi.vendors.statements import VendorActor
from quanyi.vendors.upload_slots import upload_slots

routes = web.RouteTableDef()

# A redemption callback is a small JSON object: the app-wide request limit.
CALLBACK_MAX_BYTES = 64 * 1024


# redemptions


@routes.post("/v1/vendors/{vendor_id}/redemptions")
@endpoint(
    "A vendor reports that a customer used a right",
    auth="vendor",
    body=RedemptionBody,
    responses={200: RedemptionReply},
    errors=(
        NotFound,
        Unauthorized,
        PayloadTooLarge,
        InvalidRequest,
        Forbidden,
        GrantNotFulfilled,
        GrantUnknown,
        GrantNotRedeemable,
        StoreNotReady,
    ),
)
async def post_redemption(request: web.Request) -> web.Response:
    """Verified on the raw bytes before anything else; idempotent per redemption id (vendors
    retry callbacks for up to a day). A refused redemption is recorded, then answered 409."""
    app = request.app
    vendor_id = path_id(request, "vendor_id")
    body = await _verified_body(request, vendor_id)
    payload = _json(body)
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
    redemption = decode(RedemptionBody, body)
    redemption_id, grant_id, code = redemption.redemption_id, redemption.grant_id, redemption.code
    redeemed_at = redemption.redeemed_at
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
        raise GrantNotFulfilled("the grant is not fulfilled yet; retry later", state="granted")
    moved = await app[LIFECYCLE].move(
        grant["grant_id"],
        "redeemed",
        f"vendor:{vendor_id}",
        {"redemption_id": redemption_id, "redeemed_at": redeemed_at.isoformat()},
    )
    # Redeemed already by another redemption: refused, as a final state is, not a replay.
    other_redemption = moved.repeated and not await _redeemed_by(
        app, grant["grant_id"], redemption_id
    )
    if moved.refused or other_redemption:
        reason = f"grant is {moved.state}"
        await _record(pool, *record, "refused", reason)
        return _answer(vendor_id, "refused", reason, redemption_id, grant["grant_id"], False)
    await _record(pool, *record, "applied", None)
    return _answer(vendor_id, "applied", None, redemption_id, grant["grant_id"], moved.repeated)


def _json(body: bytes) -> Any:
    """The parsed body, for the checks of what it holds as a whole (NUL, depth)."""
    if not body:
        raise InvalidRequest("a JSON body is required", {"body": "required"})
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("body is not valid JSON", {"body": "not valid JSON"}) from None


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
    """The answer to a redemption that is recorded (now or by an earlier try of it): 200 when
    applied, else the refusal it was recorded with."""
    metrics.REDEMPTIONS.labels(vendor_id, "replayed" if replayed else outcome).inc()
    if outcome != "applied":
        refused = GrantUnknown if reason == "unknown grant" else GrantNotRedeemable
        raise refused(reason or outcome, redemption_id, grant_id)
    reply = {
        "redemption_id": redemption_id,
        "grant_id": grant_id,
        "status": "redeemed",
        "replayed": replayed,
    }
    return json_response(reply)


# statements


@routes.post("/v1/vendors/{vendor_id}/statements")
@endpoint(
    "A vendor sends its daily statement (CSV: grant_id,code,status,redeemed_at) itself",
    auth="vendor",
    query=StatementQuery,
    body_media="text/csv",
    responses={201: StatementReport},
    errors=(NotFound, Unauthorized, TooManyRequests, PayloadTooLarge, InvalidRequest),
)
async def post_vendor_statement(request: web.Request) -> web.Response:
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
        return await reconciled(request, VendorActor(vendor_id), vendor_id, body)


# signatures


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
    if not is_fresh(timestamp, app[CLOCK](), window):
        raise Unauthorized(f"X-Vendor-Timestamp must be unix seconds within {window} s of now")
    known = app[VENDORS].get(vendor_id)
    if known is None or not known[1] or not signature:
        raise Unauthorized("unknown vendor or bad signature")
    if before_read is not None:
        before_read()
    body = await read_limited(request, limit)
    if len(body) > CALLBACK_MAX_BYTES:
        # Hashing megabytes takes milliseconds; pycryptodome lets the loop run meanwhile.
        valid = await asyncio.to_thread(verify, known[1], timestamp, body, signature)
    else:
        valid = verify(known[1], timestamp, body, signature)
    if not valid:
        raise Unauthorized("unknown vendor or bad signature")
    return body
