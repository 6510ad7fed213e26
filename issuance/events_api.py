"""`POST /v1/events`: the card system's transactions, signed by a channel with the events
scope. Each event is judged on its own: a bad one is `rejected` in its place of the answer,
the others are recorded."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from quanyi.access.api import CHANNELS
from quanyi.core.errors import (
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    StoreNotReady,
    Unauthorized,
    Unavailable,
)
from quanyi.core.http import json_response
from quanyi.core.schemas import check, decode, endpoint, is_ident
from quanyi.issuance.event_model import (
    CardEvent,
    EventsBody,
    EventsReply,
    RawEventsBody,
)
from quanyi.issuance.events import EventOutcome, EventService

routes = web.RouteTableDef()
EVENTS = web.AppKey("events", EventService)

# 1,000 events of about 250 bytes each, with room to spare.
EVENTS_MAX_BYTES = 1024 * 1024


@routes.post("/v1/events")
@endpoint(
    "Send card transactions toward spending goals",
    auth="channel",
    body=EventsBody,
    responses={200: EventsReply},
    errors=(InvalidRequest, Unauthorized, Forbidden, PayloadTooLarge, Unavailable, StoreNotReady),
    tags=("events",),
)
async def post_events(request: web.Request) -> web.Response:
    channel_id, body = await request.app[CHANNELS].authenticate(
        request, scope="events", max_bytes=EVENTS_MAX_BYTES
    )
    try:
        events = decode(EventsBody, body).events
        judged: list[CardEvent | dict[str, Any]] = list(events)
    except InvalidRequest:
        # Some events are bad (or the envelope is: then this raises the 400 itself).
        judged = [_checked(raw) for raw in decode(RawEventsBody, body).events]
        events = [e for e in judged if isinstance(e, CardEvent)]
    outcomes = iter(await request.app[EVENTS].record(channel_id, events))
    results = [
        _result(item.event_id, next(outcomes)) if isinstance(item, CardEvent) else item
        for item in judged
    ]
    return json_response({"results": results})


def _checked(raw: Any) -> CardEvent | dict[str, Any]:
    """The event, or its `rejected` result."""
    if not isinstance(raw, dict):
        return _rejected(None, InvalidRequest("an event is a JSON object"))
    try:
        return check(CardEvent, raw, "the event is invalid")
    except InvalidRequest as exc:
        event_id = raw.get("event_id")
        # An id that is not one (is_ident: nor one holding a card number) is never echoed back.
        shown = event_id if isinstance(event_id, str) and is_ident(event_id) else None
        return _rejected(shown, exc)


def _rejected(event_id: str | None, exc: InvalidRequest) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "status": "rejected",
        "error": {"code": exc.code, "message": exc.message, "fields": exc.details["fields"]},
    }


def _result(event_id: str, outcome: EventOutcome) -> dict[str, Any]:
    result: dict[str, Any] = {"event_id": event_id, "status": outcome.status}
    if outcome.code:
        result["error"] = {"code": outcome.code, "message": outcome.message}
    if outcome.held:
        result["held"] = True
    if outcome.granted:
        result["granted"] = list(outcome.granted)
    if outcome.revoked:
        result["revoked"] = list(outcome.revoked)
    return result
