"""The channel API: `POST /v1/claims` and grant reads. Every request is signed by its channel."""

from __future__ import annotations

from aiohttp import web

from issuance.claims import Claim
from quanyi.appkeys import CHANNELS, CLAIMS, GRANTS
from quanyi.errors import InvalidRequest
from quanyi.ids import is_grant_id
from quanyi.validation import IDENT, Fields, looks_like_card_number, parse_json
from quanyi.web import json_response

routes = web.RouteTableDef()


def _customer_id(value: str | None, fields: Fields) -> None:
    if value is not None and looks_like_card_number(value):
        fields.fail(
            "customer_id", "looks like a card number: send the customer number, never a PAN"
        )


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
    _customer_id(claim.customer_id, f)
    f.check()
    grant = await app[CLAIMS].claim(claim)
    return json_response(grant.to_json(), status=200 if grant.replayed else 201)


@routes.get("/v1/grants/{grant_id}")
async def get_grant(request: web.Request) -> web.Response:
    await request.app[CHANNELS].authenticate(request)
    grant_id = request.match_info["grant_id"]
    if not is_grant_id(grant_id):
        raise InvalidRequest("not a grant id", {"grant_id": "26 characters, Crockford base32"})
    return json_response(await request.app[GRANTS].get(grant_id))


@routes.get("/v1/customers/{customer_id}/grants")
async def get_customer_grants(request: web.Request) -> web.Response:
    await request.app[CHANNELS].authenticate(request)
    customer_id = request.match_info["customer_id"]
    if not IDENT.match(customer_id) or looks_like_card_number(customer_id):
        raise InvalidRequest(
            "not a customer id", {"customer_id": "a customer number, 1-64 characters"}
        )
    limit_raw = request.query.get("limit", "100")
    if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 500:
        raise InvalidRequest("bad limit", {"limit": "an integer from 1 to 500"})
    grants = await request.app[GRANTS].of_customer(customer_id, int(limit_raw))
    return json_response({"customer_id": customer_id, "grants": grants})
