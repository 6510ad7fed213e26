"""Channels (APP, WeChat, H5, branch counters) and the check of their signed requests.

A channel's secret is stored sealed (quanyi/access/secret_box.py), never in clear; rows an older
version wrote in clear are sealed, and their plaintext cleared, by the first process that
loads them.

A channel may call only what its scopes allow: `claims` (claims, grant reads and revocations,
offers, goal progress) and `events` (the card system's `POST /v1/events`). The card system
holds `events` alone, so its secret cannot claim rewards, nor an app's secret feed card events.

A rotation (`rotate_secret`) seals a new secret and keeps the one it replaces signing for a
grace period, so the channel's callers can switch over without a failed request. Each API
process learns of it on its next refresh (settings.channel_refresh_s): the new secret signs
everywhere at most that long after the rotation, the old one until its grace ends.

Once a request's signature and scope are checked, the channel's rate limit (rate_limits.py) is
taken from its shared budget in Redis."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web

from quanyi.access import queries
from quanyi.access.rate_limits import RateLimit, RateLimiter
from quanyi.access.secret_box import SecretBox, secret_box
from quanyi.access.signing import SigningKey, is_fresh
from quanyi.access.staff import Actor, audit
from quanyi.core import metrics
from quanyi.core.clock import Clock
from quanyi.core.errors import AlreadyExists, Forbidden, NotFound, SecretsKeyError, Unauthorized
from quanyi.core.http import read_limited
from quanyi.core.reloads import Reloads
from quanyi.core.settings import Settings
from quanyi.stores.db import keep_refreshed

log = logging.getLogger(__name__)

CLAIMS, EVENTS = "claims", "events"
# Every scope a channel may hold (channels.scopes, migration 0007).
SCOPES = (CLAIMS, EVENTS)


# The longest grace period a rotation gives the secret it replaces.
MAX_GRACE_S = 30 * 86400.0


def new_secret() -> str:
    return secrets.token_urlsafe(32)


# The channel ids grants of the service's own making carry: card-event goals ("goal") and bulk
# issuance jobs ("bulk", allowed on a campaign while its job runs). A channel registered under
# one of them could claim as that kind of grant.
RESERVED_CHANNELS = frozenset({"goal", "bulk"})


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
    if channel_id in RESERVED_CHANNELS:
        raise ValueError(
            f"channel id {channel_id} is the service's own (goal and bulk grants): choose another"
        )
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


async def rotate_secret(
    pool: asyncpg.Pool,
    channel_id: str,
    box: SecretBox,
    *,
    grace_s: float,
    now: float,
    actor: Actor,
) -> tuple[str, float]:
    """Seals a new secret for the channel; the one it replaces keeps signing until `now` +
    `grace_s` (0: it stops at once), and one still in grace from an earlier rotation stops.
    Audited in the same transaction, without either secret. Returns the new secret (to be shown
    once) and until when the old one signs (unix s)."""
    if not 0 <= grace_s <= MAX_GRACE_S:
        raise ValueError(f"the grace period must be from 0 to {MAX_GRACE_S:.0f} s")
    secret = new_secret()
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            queries.rotate_channel_secret,
            channel_id,
            box.seal(secret, channel_id),
            now + grace_s,
            grace_s > 0,
        )
        if row is None:
            raise NotFound(f"no channel {channel_id}")
        until = now if row["previous_until"] is None else row["previous_until"]
        detail = {"grace_s": grace_s, "previous_until": until}
        await audit(conn, actor, "channel.rotate", f"channel:{channel_id}", detail)
    return secret, until


async def rekey_secrets(pool: asyncpg.Pool, box: SecretBox, *, actor: Actor) -> list[str]:
    """Seals again under the box's key every stored channel secret, the current one and a
    rotated-out one still kept, that the previous key sealed (disabled channels too: one
    enabled again must still open), and seals any still in clear. One transaction with the
    rows locked, so a rotation at the same moment waits and is never overwritten; audited
    without a secret. Returns the channels sealed again; run again, it finds none."""
    rekeyed = []
    async with pool.acquire() as conn, conn.transaction():
        for row in await conn.fetch(queries.lock_sealed_secrets):
            channel_id = row["id"]
            secret, current = box.open_with_key(row["secret_sealed"], channel_id)
            previous, previous_current = None, True
            if row["previous_secret_sealed"] is not None:
                previous, previous_current = box.open_with_key(
                    row["previous_secret_sealed"], channel_id
                )
            if current and previous_current:
                continue
            await conn.execute(
                queries.reseal_channel_secrets,
                channel_id,
                box.seal(secret, channel_id),
                None if previous is None else box.seal(previous, channel_id),
            )
            rekeyed.append(channel_id)
        if rekeyed:
            await audit(conn, actor, "channel.rekey", "channels", {"channels": rekeyed})
    return rekeyed + await seal_plaintext_secrets(pool, box)


async def list_channels(pool: asyncpg.Pool, now: float) -> list[dict[str, Any]]:
    """Every channel as staff see it: never a secret, only when it was last rotated and until
    when the secret it replaced still signs."""
    return [
        {
            "id": row["id"],
            "name": row["name"],
            "scopes": sorted(row["scopes"]),
            "disabled": row["disabled"],
            "rate_limit": (
                None
                if row["rate_per_s"] is None
                else {"per_second": row["rate_per_s"], "burst": row["burst"]}
            ),
            "rotated_at": row["rotated_at"].isoformat() if row["rotated_at"] else None,
            "previous_secret_until": (
                row["previous_until"].isoformat() if row["previous_until"] else None
            ),
        }
        for row in await pool.fetch(queries.list_channels, now)
    ]


@dataclass(frozen=True, slots=True)
class KnownChannel:
    """A channel as the directory holds it: what checking one of its requests needs."""

    secret: str
    scopes: frozenset[str]
    # The secret a rotation replaced, accepted until `previous_until` (unix s).
    previous: str | None
    previous_until: float
    # None: no limit.
    limit: RateLimit | None
    # The secrets keyed for HMAC once per load (a rotation or a refresh makes a new
    # KnownChannel), not once per request.
    key: SigningKey = field(init=False, repr=False, compare=False)
    previous_key: SigningKey | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", SigningKey(self.secret))
        previous = None if self.previous is None else SigningKey(self.previous)
        object.__setattr__(self, "previous_key", previous)


class ChannelDirectory:
    """Channel secrets, scopes and rate limits held in memory, so that checking a claim needs
    no database round trip. Reloaded from PostgreSQL in the background."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        clock: Clock,
        window_s: int,
        box: SecretBox,
        *,
        limiter: RateLimiter | None = None,
        default_limit: RateLimit | None = None,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._window_s = window_s
        self._box = box
        self._limiter = limiter
        self._default_limit = default_limit
        self._channels: dict[str, KnownChannel] = {}
        self._loaded = False
        self._reloads = Reloads()

    @property
    def box(self) -> SecretBox:
        """What this process seals and opens channel secrets with."""
        return self._box

    def known(self, channel_id: str) -> KnownChannel | None:
        return self._channels.get(channel_id)

    async def refresh(self) -> None:
        """Loads every active channel's secrets, scopes and limit. The first load refuses a
        secret that does not open (SecretsKeyError: the wrong key is configured); later ones
        keep what was loaded for that channel and say so."""
        ticket = self._reloads.start()
        await seal_plaintext_secrets(self._pool, self._box)
        now = self._clock()
        loaded: dict[str, KnownChannel] = {}
        expired = False
        for row in await self._pool.fetch(queries.active_channels):
            channel_id = row["id"]
            try:
                secret = self._box.open(row["secret_sealed"], channel_id)
            except SecretsKeyError as exc:
                if not self._loaded:
                    raise SecretsKeyError(f"channel {exc}") from exc
                log.error("channel %s", exc)
                if channel_id in self._channels:
                    loaded[channel_id] = self._channels[channel_id]
                continue
            previous, until = None, 0.0
            if row["previous_secret_sealed"] is not None:
                if row["previous_until"] <= now:
                    expired = True
                else:
                    try:
                        previous = self._box.open(row["previous_secret_sealed"], channel_id)
                        until = row["previous_until"]
                    except SecretsKeyError as exc:
                        log.error("channel %s (its rotated-out secret: not accepted)", exc)
            limit = (
                self._default_limit
                if row["rate_per_s"] is None
                else RateLimit(row["rate_per_s"], row["burst"])
            )
            loaded[channel_id] = KnownChannel(
                secret, frozenset(row["scopes"]), previous, until, limit
            )
        if self._reloads.may_apply(ticket):
            self._channels = loaded
            self._loaded = True
        if expired:
            await self._pool.execute(queries.drop_expired_previous_secrets, now)

    async def keep_fresh(self, interval_s: float) -> None:
        await keep_refreshed(self.refresh, interval_s, "channel")

    async def authenticate(
        self, request: web.Request, scope: str = CLAIMS, *, max_bytes: int | None = None
    ) -> tuple[str, bytes]:
        """The calling channel's id and the raw body, once the signature over it is verified
        (with its secret, or the one a rotation replaced while that is in grace), the channel
        is found to hold `scope` (else Forbidden: who it is is known by then) and its rate
        limit lets the request through (else RateLimited).
        `max_bytes`: a route whose bodies may be larger than the app-wide limit (card events)."""
        headers = request.headers
        channel_id = headers.get("X-Channel-Id", "")
        timestamp = headers.get("X-Timestamp", "")
        signature = headers.get("X-Signature", "")
        if not (channel_id and timestamp and signature):
            raise Unauthorized("X-Channel-Id, X-Timestamp and X-Signature are required")
        now = self._clock()
        if not is_fresh(timestamp, now, self._window_s):
            raise Unauthorized(f"X-Timestamp must be unix seconds within {self._window_s} s of now")
        channel = self._channels.get(channel_id)
        if channel is None:  # not worth reading the body of
            raise Unauthorized("unknown channel or bad signature")
        body = await (read_limited(request, max_bytes) if max_bytes else request.read())
        method, path = request.method, request.raw_path
        if not channel.key.matches(method, path, timestamp, body, signature):
            previous = channel.previous_key
            if not (
                previous is not None
                and now < channel.previous_until
                and previous.matches(method, path, timestamp, body, signature)
            ):
                raise Unauthorized("unknown channel or bad signature")
            metrics.CHANNEL_PREVIOUS_SECRET.labels(channel_id).inc()
        if scope not in channel.scopes:
            raise Forbidden(f"channel {channel_id} may not call this: it lacks the {scope} scope")
        if self._limiter is not None:
            await self._limiter.take(channel_id, channel.limit)
        return channel_id, body
