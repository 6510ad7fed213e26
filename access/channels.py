"""Channels (APP, WeChat, H5, branch counters) and the check of their signed requests."""

from __future__ import annotations

import logging
import secrets

import asyncpg
from aiohttp import web

from access import queries
from access.signing import signature_matches
from quanyi.clock import Clock
from quanyi.db import keep_refreshed
from quanyi.errors import AlreadyExists, Unauthorized
from quanyi.validation import is_digits

log = logging.getLogger(__name__)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


async def create_channel(
    pool: asyncpg.Pool, channel_id: str, secret: str | None = None, *, replace: bool = False
) -> str:
    """Registers a channel; returns its secret (generated when not given)."""
    secret = secret or new_secret()
    try:
        await pool.execute(
            queries.upsert_channel if replace else queries.insert_channel,
            channel_id,
            channel_id,
            secret,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"channel {channel_id} exists") from None
    return secret


class ChannelDirectory:
    """Channel secrets held in memory, so that checking a claim needs no database round trip.
    Reloaded from PostgreSQL in the background."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock, window_s: int) -> None:
        self._pool = pool
        self._clock = clock
        self._window_s = window_s
        self._secrets: dict[str, str] = {}

    async def refresh(self) -> None:
        rows = await self._pool.fetch(queries.active_channels)
        self._secrets = {r["id"]: r["secret"] for r in rows}

    async def keep_fresh(self, interval_s: float) -> None:
        await keep_refreshed(self.refresh, interval_s, "channel")

    async def authenticate(self, request: web.Request) -> tuple[str, bytes]:
        """The calling channel's id and the raw body, once the signature over it is verified."""
        headers = request.headers
        channel_id = headers.get("X-Channel-Id", "")
        timestamp = headers.get("X-Timestamp", "")
        signature = headers.get("X-Signature", "")
        if not (channel_id and timestamp and signature):
            raise Unauthorized("X-Channel-Id, X-Timestamp and X-Signature are required")
        if (
            not is_digits(timestamp)
            or len(timestamp) > 12  # int() of thousands of digits is slow, then overflows
            or abs(int(self._clock()) - int(timestamp)) > self._window_s
        ):
            raise Unauthorized(f"X-Timestamp must be unix seconds within {self._window_s} s of now")
        secret = self._secrets.get(channel_id)
        body = await request.read()
        if secret is None or not signature_matches(
            secret, request.method, request.raw_path, timestamp, body, signature
        ):
            raise Unauthorized("unknown channel or bad signature")
        return channel_id, body
