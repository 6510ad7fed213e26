"""The channel API: `POST /v1/claims` and grant reads. Every request is signed by its channel."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from issuance.claims import Claim
from issuance.grants import public
from issuance.lifecycle import GrantNotLive
from quanyi.appkeys import CHANNELS, CLAIMS, GRANTS, LIFECYCLE, OUTCOMES
from quanyi.errors import Forbidden, InvalidRequest
from quanyi.ids import is_grant_id
from quanyi.validation import IDENT, Fields, is_digits, looks_like_card_number, parse_json
from quanyi.web import json_response

routes = web.RouteTableDef()


def _customer_id(value: str | None, fields: Fields) -> None:
    if value is not None and looks_like_card_number(value):
        fields.fail(
            "customer_id", "looks like a card number: send the customer number, never a PAN"
        )


MAX_WAIT_MS = 800


@routes.post("/v1/claims")
async def post_claim(request: web.Request) -> web.Response:
    app = request.app
    channel_id, body = await app[CHANNELS].authenticate(request)
    f = Fields(parse_json(body))
    claim = Claim(
        channel_id=channel_id,
        request_id=f.ident("request_id"),
        campaign_id=f.ident("campaign_id"),
        customer_id=f.ident("customer_id"),
        reward_id=f.ident("reward_id", required=False),
    )
    wait_ms = f.integer("wait_ms", 0, MAX_WAIT_MS, required=False)
    _customer_id(claim.customer_id, f)
    f.check()
    grant = await app[CLAIMS].claim(claim)
    reply = grant.to_json()
    if wait_ms and not grant.replayed:
        reply.update(await _fulfilment(request.app, grant.grant_id, wait_ms / 1000))
    return json_response(reply, status=200 if grant.replayed else 201)


async def _fulfilment(app: web.Application, grant_id: str, wait_s: float) -> dict[str, Any]:
    """The fulfilment outcome if it arrives within `wait_s`, else nothing (still granted)."""
    waiter = app[OUTCOMES]
    arrived = waiter.expect(grant_id)
    try:
        # It may have happened before we started listening: look once, then wait.
        grant = await app[GRANTS].get(grant_id)
        if grant["status"] != "granted":
            outcome = grant
        else:
            try:
                outcome = await asyncio.wait_for(asyncio.shield(arrived), wait_s)
            except TimeoutError:
                return {}
    finally:
        waiter.forget(grant_id)
    return {
        k: outcome.get(k) for k in ("status", "code", "reference", "expires_at") if outcome.get(k)
    }


@routes.get("/v1/grants/{grant_id}")
async def get_grant(request: web.Request) -> web.Response:
    await request.app[CHANNELS].authenticate(request)
    return json_response(public(await request.app[GRANTS].get(_grant_id(request))))


def _grant_id(request: web.Request) -> str:
    grant_id = request.match_info["grant_id"]
    if not is_grant_id(grant_id):
        raise InvalidRequest("not a grant id", {"grant_id": "26 characters, Crockford base32"})
    return grant_id


async def revoke(app: web.Application, grant_id: str, actor: str, reason: str) -> None:
    """Revoke a live grant; revoking a revoked one again changes nothing."""
    moved = await app[LIFECYCLE].move(
        grant_id, "revoked", actor, {"reason": reason} if reason else {}
    )
    if moved.outcome == "refused":
        raise GrantNotLive(
            f"grant {grant_id} is {moved.before}: it cannot be revoked", state=moved.before
        )


@routes.post("/v1/grants/{grant_id}/revoke")
async def revoke_grant(request: web.Request) -> web.Response:
    """A channel cancels one of its own grants: stock and the customer's limit come back."""
    channel_id, body = await request.app[CHANNELS].authenticate(request)
    grant_id = _grant_id(request)
    reason = ""
    if body:
        f = Fields(parse_json(body))
        reason = f.text("reason", 500, required=False) or ""
        f.check()
    grant = await request.app[GRANTS].get(grant_id)
    if grant["channel_id"] != channel_id:
        raise Forbidden(f"grant {grant_id} was not made by channel {channel_id}")
    await revoke(request.app, grant_id, f"channel:{channel_id}", reason)
    return json_response(public(await request.app[GRANTS].get(grant_id)))


@routes.get("/v1/customers/{customer_id}/grants")
async def get_customer_grants(request: web.Request) -> web.Response:
    await request.app[CHANNELS].authenticate(request)
    customer_id = request.match_info["customer_id"]
    if not IDENT.match(customer_id) or looks_like_card_number(customer_id):
        raise InvalidRequest(
            "not a customer id", {"customer_id": "a customer number, 1-64 characters"}
        )
    limit_raw = request.query.get("limit", "100")
    # Length first: int() refuses strings of more than 4,300 digits with a ValueError.
    if not is_digits(limit_raw) or len(limit_raw) > 3 or not 1 <= int(limit_raw) <= 500:
        raise InvalidRequest("bad limit", {"limit": "an integer from 1 to 500"})
    grants = await request.app[GRANTS].of_customer(customer_id, int(limit_raw))
    return json_response({"customer_id": customer_id, "grants": grants})
