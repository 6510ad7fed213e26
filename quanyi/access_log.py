"""The access log: one JSON line per request, written after the response went out.

A line says who (the channel or the staff member), what (method, path, the query's known-safe
keys), how it ended (status, bytes) and how long it took. It never carries a token, a signature,
a body or an unknown query key, and card numbers in the path are masked.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from quanyi.pan import mask_pans
from quanyi.settings import Settings
from quanyi.validation import IDENT

ACCESS_LOGGER = "quanyi.access"
# Query keys that carry no secret and help reading the log; every other key is left out.
SAFE_QUERY_KEYS = ("day", "limit")
_MAX_VALUE = 32

# Set by the staff check of an admin request, read here once the response went out. (Older
# aiohttp has no RequestKey: a plain string key works the same.)
STAFF_USERNAME: Any = (
    web.RequestKey("staff_username", str) if hasattr(web, "RequestKey") else "staff_username"
)


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp calls `log` after each response; the line's fields are plain values, turned into
    JSON by the log handler's formatter only when the line is actually written."""

    __slots__ = ()

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        logger = self.logger
        try:
            # A record made here, not through logger.info(): no stack walk for a caller nobody
            # reads, and none of the process-wide redaction, since every field is already safe
            # (the path masked, the channel a checked id, the staff name from a valid token).
            record = logging.LogRecord(logger.name, logging.INFO, __file__, 0, "access", (), None)
            record.fields = access_fields(request, response, time)
            record._redacted = True
            record._fields_safe = True
            logger.handle(record)
        except Exception:  # a log line must never break the connection
            logger.warning("access log line failed", exc_info=True)


def access_fields(
    request: web.BaseRequest, response: web.StreamResponse, time: float
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "method": request.method[:16],
        "path": _path(request),
        "status": response.status,
        "ms": round(time * 1000, 2),
        "bytes": response.body_length,
    }
    channel = request.headers.get("X-Channel-Id")
    if channel is not None:
        # Client-supplied: only a well-formed id is written (no log injection, no junk).
        fields["channel"] = (
            channel if IDENT.match(channel) and mask_pans(channel) == channel else "?"
        )
    staff = request.get(STAFF_USERNAME)
    if staff is not None:
        fields["staff"] = staff
    return fields


def _path(request: web.BaseRequest) -> str:
    path = request.path
    if request.query_string:
        query = request.query
        safe = [f"{k}={query[k][:_MAX_VALUE]}" for k in SAFE_QUERY_KEYS if k in query]
        if safe:
            path = f"{path}?{'&'.join(safe)}"
    return mask_pans(path[:512])


def access_log_options(settings: Settings) -> dict[str, Any]:
    """What an aiohttp runner takes to write (or, when turned off, not write) the access log."""
    if not settings.access_log:
        return {"access_log": None}
    logger = logging.getLogger(ACCESS_LOGGER)
    # Its own level: the access log follows QUANYI_ACCESS_LOG, not QUANYI_LOG_LEVEL.
    logger.setLevel(logging.INFO)
    return {"access_log": logger, "access_log_class": JsonAccessLogger}
