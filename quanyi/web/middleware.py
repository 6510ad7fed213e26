"""The one place errors become responses: our JSON error for every failure, whether a handler
raised it or aiohttp met HTTP it cannot parse."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web
from aiohttp.http_exceptions import (
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from quanyi.core.errors import QuanyiError
from quanyi.core.http import error_response
from quanyi.core.settings import Settings
from quanyi.stores.db import POSTGRES_AWAY
from quanyi.stores.outbox import REDIS_AWAY
from quanyi.web.access_log import AccessLogWriter, access_log_options

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except QuanyiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "invalid_request" if exc.status < 500 else "internal")
        return error_response(exc.status, code, exc.reason)
    except REDIS_AWAY as exc:  # away, read-only after a failover, or a cluster failing over
        log.warning("redis unreachable: %s", exc)
        return error_response(503, "unavailable", "the rights store is unreachable; retry")
    except (*POSTGRES_AWAY, asyncpg.TooManyConnectionsError) as exc:
        if isinstance(exc, ConnectionResetError) and _client_gone(request):
            # The client hung up while its body was read: nobody to answer, nothing is wrong.
            log.info("client closed the connection on %s %s", request.method, request.path)
            return error_response(400, "invalid_request", "the connection broke off")
        log.warning("postgresql unreachable: %s", exc)
        return error_response(503, "unavailable", "the database is unreachable; retry")
    except (HttpProcessingError, RequestPayloadError) as exc:  # a body that broke off mid-way
        return error_response(400, "invalid_request", _malformed(exc))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; it has been logged")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


# HTTP that aiohttp itself cannot parse


def _malformed(exc: BaseException | None) -> str:
    """What was wrong, never the offending bytes: aiohttp's own message quotes them (a header
    value may be a token)."""
    if isinstance(exc, LineTooLong):
        return "malformed HTTP: the request line or a header is too long"
    if isinstance(exc, BadStatusLine):
        return "malformed HTTP: bad request line"
    if isinstance(exc, InvalidHeader):
        return "malformed HTTP: bad header"
    if isinstance(exc, PayloadEncodingError | RequestPayloadError):
        return "malformed HTTP: bad body encoding (chunks, length or compression)"
    return "malformed HTTP request"


class JsonErrorsRequestHandler(RequestHandler):
    """aiohttp answers what it cannot parse (a bad request line, header or chunked body, a line
    too long) and errors that escape every middleware itself, in text/plain quoting the
    offending bytes. This answers them with our JSON error instead, quoting nothing."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # part of a response went out: only closing is left
            raise ConnectionError("response already started; cannot send an error")
        if status >= 500:
            log.error("unhandled error in the HTTP server (%d)", status, exc_info=exc)
            code, text = ("internal", "internal error; it has been logged")
            if status == 504:
                code, text = ("timeout", "the request timed out; retry")
        else:
            log.info("malformed HTTP from %s: %s", request.remote, type(exc).__name__)
            code, text = _HTTP_CODES.get(status, "invalid_request"), _malformed(exc)
        response = error_response(status, code, text)
        response.force_close()
        return response


class _JsonErrorsServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorsRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorsRunner(web.AppRunner):
    """An AppRunner whose connections are JsonErrorsRequestHandlers."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app builds a plain Server; only which handler a connection gets differs.
        server.__class__ = _JsonErrorsServer
        return server


def app_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The one way the service serves an app: our JSON for every error, and the access log
    (its last lines written when the app cleans up)."""
    writer = AccessLogWriter()

    async def flush_access_log(_app: web.Application) -> None:
        writer.flush()

    app.on_cleanup.append(flush_access_log)
    return JsonErrorsRunner(app, handle_signals=False, **access_log_options(settings, writer))
