"""HTTP helpers every API uses: JSON responses and errors, ids from the path, the request keys
the access log reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from quanyi.core import metrics
from quanyi.core.clock import Clock
from quanyi.core.errors import InvalidRequest, NotFound, PayloadTooLarge, QuanyiError
from quanyi.core.pan import id_has_pan
from quanyi.core.schemas import IDENT, IDENT_RULE, PAN_IN_ID
from quanyi.core.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")

# Set by the staff check of an admin request, read by the access log once the response went
# out. (Older aiohttp has no RequestKey: a plain string key works the same.)
STAFF_USERNAME: Any = (
    web.RequestKey("staff_username", str) if hasattr(web, "RequestKey") else "staff_username"
)


def path_id(request: web.Request, name: str, missing: type[QuanyiError] = NotFound) -> str:
    """An id from the URL path; one that no record can have is simply not found. A value
    that breaks the id rules is never repeated in the answer (it may be a card number with
    spaces, a line break, anything): the answer names the parameter and the rule."""
    value = request.match_info[name]
    if not IDENT.match(value):
        message = f"no such {name.removesuffix('_id')}: {name} must be {IDENT_RULE}"
        if issubclass(missing, InvalidRequest):
            raise missing(message, {name: IDENT_RULE})
        raise missing(message)
    if id_has_pan(value):  # refused, never looked up or repeated in an answer
        raise InvalidRequest(f"{name} looks like a card number", {name: PAN_IN_ID})
    return value


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    metrics.HTTP_ERRORS.labels(code).inc()
    body = {"error": {"code": code, "message": message, **(details or {})}}
    return json_response(body, status, headers)


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body, streamed up to `limit` bytes, for the few routes whose bodies are larger than
    the app-wide request limit (statements, audience members): beyond it, 413."""
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"the body is over {limit} bytes", max_size=limit)
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes", max_size=limit)
    return bytes(body)
