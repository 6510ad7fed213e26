"""HTTP plumbing shared by the APIs: JSON responses and the one place errors become responses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from access.staff import Staff, authenticate
from ledger.worker import POSTGRES_AWAY
from quanyi import metrics
from quanyi.appkeys import POOL
from quanyi.errors import NotFound, QuanyiError
from quanyi.validation import IDENT

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def path_id(request: web.Request, name: str, missing: type[QuanyiError] = NotFound) -> str:
    """An id from the URL path; one that no record can have is simply not found."""
    value = request.match_info[name]
    if not IDENT.match(value):
        raise missing(f"no {name.removesuffix('_id')} {value!r}")
    return value


async def request_staff(request: web.Request) -> Staff:
    """The staff member whose bearer token signs this admin request."""
    return await authenticate(request.app[POOL], request.headers.get("Authorization", ""))


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> web.Response:
    metrics.HTTP_ERRORS.labels(code).inc()
    return json_response({"error": {"code": code, "message": message, **(details or {})}}, status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except QuanyiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "invalid_request" if exc.status < 500 else "internal")
        return error_response(exc.status, code, exc.reason)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.warning("redis unreachable: %s", exc)
        return error_response(503, "unavailable", "the rights store is unreachable; retry")
    except (*POSTGRES_AWAY, asyncpg.TooManyConnectionsError) as exc:
        log.warning("postgresql unreachable: %s", exc)
        return error_response(503, "unavailable", "the database is unreachable; retry")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; it has been logged")
