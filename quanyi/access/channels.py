"""Channels (APP, WeChat, H5, branch counters) and the check of their signed requests.

A channel's secret is stored sealed (quanyi/access/secret_box.py), never in clear; rows an older
version wrote in clear are sealed, and their plaintext cleared, by the first process that
loads them.

A channel may call only what its scopes allow: `claims` (claims, grant reads and revocations,
offers, goal progress) and `events` (the card system's `POST /v1/events`). The card system
holds `events` alone, so its secret cannot claim rewards, nor an app's secret feed card events."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable

import asyncpg
from aiohttp import web

from quanyi.access import queries
from quanyi.access.secret_box import SecretBox, secret_box
from quanyi.access.signing import is_fresh, signature_matches
from quanyi.core.clock import Clock
from quanyi.core.errors import AlreadyExists, Forbidden, SecretsKeyError, Unauthorized
from quanyi.core.http import read_limited
from quanyi.core.settings import Settings
from quanyi.stores.db import keep_refreshed

log = logging.getLogger(__name__)

CLAIMS, EVENTS = "claims", "events"
# Every scope a channel may hold (channels.scopes, migration 0007).
SCOPES = (CLAIMS, EVENTS)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


async def create_channel(
    pool: asyncpg.Pool,
    channel_id: str,
    secret: str | None = None,
    *,
    replace: bool = False,
    box: SecretBox | None = None,
    scopes: Iterable[str] = (CLAIMS,),
) -> str:
    """Registers a channel that may call what `scopes` allow; returns its secret (generated
    when not given). The secret is sealed with `box`; without one, with the key of the default
    settings (the DEMO key: for development tools and load tests). `replace` also replaces the
    scopes of a channel that exists."""
    held = sorted(set(scopes))
    if not held or not set(held) <= set(SCOPES):
        raise ValueError(f"channel scopes must be some of {', '.join(SCOPES)}, not {held}")
    secret = secret or new_secret()
    box = box or secret_box(Settings())
    try:
        await pool.execute(
            queries.upsert_channel if replace else queries.insert_channel,
            channel_id,
            channel_id,
            box.seal(secret, channel_id),
            held,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"channel {channel_id} exists") from None
    return secret


async def seal_plaintext_secrets(pool: asyncpg.Pool, box: SecretBox) -> list[str]:
    """Seals every secret still stored in clear (written before migration 0005); returns the
    channels sealed."""
    sealed = []
    for row in await pool.fetch(queries.plaintext_channel_secrets):
        status = await pool.execute(
            queries.seal_channel_secret, row["id"], box.seal(row["secret"], row["id"])
        )
        if status.endswith(" 1"):
            sealed.append(row["id"])
            log.warning("channel %s: its secret was stored in clear; sealed it", row["id"])
    return sealed


class ChannelDirectory:
    """Channel secrets and scopes held in memory, so that checking a claim needs no database
    round trip. Reloaded from PostgreSQL in the background."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock, window_s: int, box: SecretBox) -> None:
        self._pool = pool
        self._clock = clock
        self._window_s = window_s
        self._box = box
        self._secrets: dict[str, str] = {}
        self._scopes: dict[str, frozenset[str]] = {}
        self._loaded = False

    async def refresh(self) -> None:
        """Loads every active channel's secret and scopes. The first load refuses a secret that
        does not open (SecretsKeyError: the wrong key is configured); later ones keep what was
        loaded for that channel and say so."""
        await seal_plaintext_secrets(self._pool, self._box)
        loaded: dict[str, str] = {}
        scopes: dict[str, frozenset[str]] = {}
        for row in await self._pool.fetch(queries.active_channels):
            scopes[row["id"]] = frozenset(row["scopes"])
            try:
                loaded[row["id"]] = self._box.open(row["secret_sealed"], row["id"])
            except SecretsKeyError as exc:
                if not self._loaded:
                    raise SecretsKeyError(f"channel {exc}") from exc
                log.error("channel %s", exc)
                if row["id"] in self._secrets:
                    loaded[row["id"]] = self._secrets[row["id"]]
        self._secrets = loaded
        self._scopes = scopes
        self._loaded = True

    async def keep_fresh(self, interval_s: float) -> None:
        await keep_refreshed(self.refresh, interval_s, "channel")

    async def authenticate(
        self, request: web.Request, scope: str = CLAIMS, *, max_bytes: int | None = None
    ) -> tuple[str, bytes]:
        """The calling channel's id and the raw body, once the signature over it is verified
        and the channel is found to hold `scope` (else Forbidden: who it is is known by then).
        `max_bytes`: a route whose bodies may be larger than the app-wide limit (card events)."""
        headers = request.headers
        channel_id = headers.get("X-Channel-Id", "")
        timestamp = headers.get("X-Timestamp", "")
        signature = headers.get("X-Signature", "")
        if not (channel_id and timestamp and signature):
            raise Unauthorized("X-Channel-Id, X-Timestamp and X-Signature are required")
        if not is_fresh(timestamp, self._clock(), self._window_s):
            raise Unauthorized(f"X-Timestamp must be unix seconds within {self._window_s} s of now")
        secret = self._secrets.get(channel_id)
        if secret is None:  # not worth reading the body of
            raise Unauthorized("unknown channel or bad signature")
        body = await (read_limited(request, max_bytes) if max_bytes else request.read())
        if not signature_matches(
            secret, request.method, request.raw_path, timestamp, body, signature
        ):
            raise Unauthorized("unknown channel or bad signature")
        if scope not in self._scopes.get(channel_id, ()):
            raise Forbidden(f"channel {channel_id} may not call this: it lacks the {scope} scope")
        return channel_id, body
