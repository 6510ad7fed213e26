"""The access log: one JSON line per request, written after the response went out.

A line says who (the channel or the staff member), what (method, path, the query's known-safe
keys), how it ended (status, bytes) and how long it took. It never carries a token, a signature,
a body or an unknown query key, and card numbers in the path are masked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from quanyi.core.http import STAFF_USERNAME
from quanyi.core.pan import mask_pans
from quanyi.core.schemas import IDENT
from quanyi.core.settings import Settings

log = logging.getLogger(__name__)

ACCESS_LOGGER = "quanyi.access"
# Query keys that carry no secret and help reading the log; every other key is left out.
SAFE_QUERY_KEYS = ("day", "limit")
_MAX_VALUE = 32
# Peers whose X-Forwarded-For is believed: nginx on the same host (deploy/nginx/quanyi.conf),
# which appends the address it saw. From any other peer the header is the client's own word,
# and the peer's address is written instead.
TRUSTED_PROXIES = frozenset({"127.0.0.1", "::1"})


class AccessLogWriter:
    """Access-log lines gathered in memory and written in one go: at most every `flush_s`, or
    once `max_bytes` are waiting, and at shutdown. One JSON line per request through the logging
    module cost ~14 us of the claim path's ~65 us of CPU (its record, handler lock, formatter
    and a write per line); gathered, a line costs a dict and an orjson call. What a crash can
    lose is the last `flush_s` of lines."""

    def __init__(
        self, stream: BinaryIO | None = None, *, flush_s: float = 0.2, max_bytes: int = 64 * 1024
    ) -> None:
        self._stream = stream
        self._flush_s = flush_s
        self._max_bytes = max_bytes
        self._pending = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._process = os.getpid()
        # The second the last line was written in, as "YYYY-MM-DDTHH:MM:SS": building a
        # datetime for every line cost as much as the rest of the line.
        self._second = -1
        self._second_text = ""

    def _timestamp(self, now: float) -> str:
        """`now` as datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")."""
        # Rounded as datetime.fromtimestamp rounds: the fraction alone, half to even.
        fraction, whole = math.modf(now)
        second, micros = int(whole), round(fraction * 1_000_000)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        elif micros < 0:
            second, micros = second - 1, micros + 1_000_000
        if second != self._second:
            moment = datetime.fromtimestamp(second, UTC)
            self._second, self._second_text = second, moment.isoformat()[:19]
        return f"{self._second_text}.{micros // 1000:03d}+00:00"

    def write(self, fields: dict[str, Any]) -> None:
        entry = {
            "ts": self._timestamp(time.time()),
            "level": "info",
            "logger": ACCESS_LOGGER,
            "msg": "access",
            "process": self._process,
            **fields,
        }
        self._pending += orjson.dumps(entry)
        self._pending += b"\n"
        if len(self._pending) >= self._max_bytes:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a tool, a test): nothing would flush it later
                self.flush()
                return
            self._timer = loop.call_later(self._flush_s, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        lines, self._pending = bytes(self._pending), bytearray()
        stream = self._stream or sys.stderr.buffer
        try:
            stream.write(lines)
            stream.flush()
        except (OSError, ValueError) as exc:  # a closed or full stream must not stop requests
            log.warning("access log lines lost: %s", exc.__class__.__name__)


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp calls `log` after each response; the runner built by `access_log_options` hands
    it an AccessLogWriter where aiohttp expects a logger."""

    __slots__ = ()

    @property
    def enabled(self) -> bool:
        return True

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        try:
            # Every field is already safe (the path masked, the channel a checked id, the
            # staff name from a valid token): written as it is.
            self.logger.write(access_fields(request, response, time))  # type: ignore[attr-defined]
        except Exception:  # a log line must never break the connection
            log.warning("access log line failed", exc_info=True)


def access_fields(
    request: web.BaseRequest, response: web.StreamResponse, time: float
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "method": request.method[:16],
        "path": _path(request),
        "status": response.status,
        "ms": round(time * 1000, 2),
        "bytes": response.body_length,
        "client": client_address(request),
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


def client_address(request: web.BaseRequest) -> str | None:
    """The client's address: the last X-Forwarded-For entry when the peer is a trusted proxy
    (the one the proxy added; entries before it are whatever the client sent), else the peer.
    Only a well-formed address is written ("?" otherwise)."""
    peer = request.remote
    forwarded = request.headers.get("X-Forwarded-For") if peer in TRUSTED_PROXIES else None
    if not forwarded:
        return peer
    try:
        return str(ipaddress.ip_address(forwarded.rsplit(",", 1)[-1].strip()))
    except ValueError:
        return "?"


def _path(request: web.BaseRequest) -> str:
    path = request.path
    if request.query_string:
        query = request.query
        safe = [f"{k}={query[k][:_MAX_VALUE]}" for k in SAFE_QUERY_KEYS if k in query]
        if safe:
            path = f"{path}?{'&'.join(safe)}"
    return mask_pans(path[:512])


def access_log_options(settings: Settings, writer: AccessLogWriter | None = None) -> dict[str, Any]:
    """What an aiohttp runner takes to write (or, when turned off, not write) the access log;
    the writer is the runner's to flush at cleanup."""
    if not settings.access_log:
        return {"access_log": None}
    return {"access_log": writer or AccessLogWriter(), "access_log_class": JsonAccessLogger}
