"""The customer H5 page (统一前台界面): a channel's backend, having signed its customer in, asks for
a short session (`POST /v1/h5/sessions`); the page then shows that customer's offers and rights
and claims for them with nothing but the session's token.

A token is stateless: HMAC-SHA256 under a server key over its version, channel, customer and
expiry, checked in constant time. Chosen over a random id kept in Redis because opening the
page writes nothing, a check needs no round trip, and a Redis rebuilt from the ledger loses no
session. The price is that a token cannot be withdrawn before it expires: the lifetime is short
(settings.h5_session_ttl_s, 15 minutes) and a disabled channel's tokens stop being accepted
(the API checks the channel is still active and holds the claims scope).

The customer always comes from the token, never from the request: nothing a page sends can
read or claim for another customer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any

from quanyi.access.secret_box import DEMO_KEY_FILE, parse_key, read_key, write_key_file
from quanyi.core.clock import Clock, rfc3339
from quanyi.core.errors import Unauthorized
from quanyi.core.schemas import is_ident
from quanyi.core.settings import Settings
from quanyi.issuance.claims import Claim, ClaimService, Grant
from quanyi.issuance.grants import GrantReader
from quanyi.issuance.offers import OfferService

log = logging.getLogger(__name__)

VERSION = "v1"
# What the server key is derived for: a key made for one use never signs another.
DERIVATION = b"quanyi h5 session token v1"
# A token is about 120 characters; anything much longer is not one (and not worth hashing).
MAX_TOKEN_CHARS = 512
# The rights the page lists, newest first.
RIGHTS_LIMIT = 50
# Statuses whose grant carries the vendor's code (and its expiry) to show.
WITH_CODE = frozenset({"fulfilled", "redeemed", "expired"})
READS_AT_ONCE = 4


class SessionExpired(Unauthorized):
    code = "session_expired"


@dataclass(frozen=True, slots=True)
class Session:
    channel_id: str
    customer_id: str
    expires_at: int  # unix s


def session_key(settings: Settings) -> bytes:
    """The key tokens are signed with: h5_session_key, else one derived from the secrets key
    (the DEMO key when none is configured: development only)."""
    if settings.h5_session_key:
        return read_key(settings.h5_session_key)
    if settings.secrets_key:
        base = read_key(settings.secrets_key)
    else:
        if not DEMO_KEY_FILE.exists():
            write_key_file(DEMO_KEY_FILE)
        log.warning("H5 session tokens are signed with a key derived from the DEMO secrets key")
        base = parse_key(DEMO_KEY_FILE.read_text())
    return _derived(base)


def previous_session_key(settings: Settings) -> bytes | None:
    """While a key is rolled out, the key tokens were signed with before it, still accepted
    (never used to sign): h5_session_key_previous, else the one derived from
    secrets_key_previous when the session key is derived from the secrets key."""
    if settings.h5_session_key:
        previous = settings.h5_session_key_previous
        return read_key(previous) if previous else None
    if settings.secrets_key and settings.secrets_key_previous:
        return _derived(read_key(settings.secrets_key_previous))
    return None


def _derived(base: bytes) -> bytes:
    return hmac.new(base, DERIVATION, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionTokens:
    """Issues and checks session tokens: `v1.<payload>.<mac>`, base64url, the payload being
    channel, customer and expiry (unix s) joined by newlines (an id holds none). Signed with
    `key`; while a new key is rolled out, tokens `previous` signed are accepted too, so the
    sessions open at the switch last their few minutes."""

    def __init__(self, key: bytes, clock: Clock, ttl_s: int, previous: bytes | None = None) -> None:
        self._key = key
        self._previous = previous if previous != key else None
        self._clock = clock
        self._ttl_s = ttl_s

    def _mac(self, signed: str, key: bytes | None = None) -> bytes:
        return hmac.new(key or self._key, signed.encode(), hashlib.sha256).digest()

    def _signed_by_us(self, signed: str, mac: str) -> bool:
        # The MAC's text, not its decoded bytes: base64 has spare bits, and a token with other
        # characters is another token, refused.
        for key in (self._key, self._previous):
            if key is not None and hmac.compare_digest(
                mac.encode(), _b64(self._mac(signed, key)).encode()
            ):
                return True
        return False

    def issue(self, channel_id: str, customer_id: str) -> tuple[str, Session]:
        expires_at = int(self._clock()) + self._ttl_s
        payload = _b64(f"{channel_id}\n{customer_id}\n{expires_at}".encode())
        signed = f"{VERSION}.{payload}"
        return f"{signed}.{_b64(self._mac(signed))}", Session(channel_id, customer_id, expires_at)

    def check(self, token: str) -> Session:
        """The session the token holds, if it is ours, unaltered and not expired."""
        bad = Unauthorized("not a valid session: open the page again from the app")
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise bad
        version, _, rest = token.partition(".")
        payload, _, mac = rest.partition(".")
        if version != VERSION or not payload or not mac:
            raise bad
        if not self._signed_by_us(f"{version}.{payload}", mac):
            raise bad
        # Ours from here on; the shape is checked all the same, should the format ever move.
        channel_id, customer_id, expiry = _unb64(payload).decode().split("\n")
        if not (is_ident(channel_id) and is_ident(customer_id) and expiry.isdigit()):
            raise bad
        if int(expiry) <= self._clock():
            raise SessionExpired("the session has expired: open the page again from the app")
        return Session(channel_id, customer_id, int(expiry))


def page_request_id(customer_id: str, request_id: str) -> str:
    """The claim's request id, from the id the page made for the tap: the same tap sent twice
    is one claim, and no page id meets another customer's or the channel backend's own ids
    (theirs never start `h5:`)."""
    digest = hashlib.blake2b(f"{customer_id}\0{request_id}".encode(), digest_size=12)
    return f"h5:{digest.hexdigest()}"


def right_view(grant: dict[str, Any]) -> dict[str, Any]:
    """A grant as the customer's page shows it: no channel, request or vendor details."""
    return {
        "grant_id": grant["grant_id"],
        "campaign_id": grant["campaign_id"],
        "reward_id": grant["reward_id"],
        "right_id": grant["right_id"],
        "status": grant["status"],
        "granted_at": grant["granted_at"],
        "code": grant.get("code"),
        "expires_at": grant.get("expires_at"),
    }


class CustomerPage:
    """What the page reads and does, for the customer of a session only."""

    def __init__(self, offers: OfferService, claims: ClaimService, grants: GrantReader) -> None:
        self._offers = offers
        self._claims = claims
        self._grants = grants

    async def offers(self, session: Session) -> list[dict[str, Any]]:
        return await self._offers.offers(session.channel_id, session.customer_id)

    async def claim(
        self, session: Session, request_id: str, campaign_id: str, reward_id: str
    ) -> Grant:
        """Through the claim path every channel uses: the same limits, stock and idempotency."""
        return await self._claims.claim(
            Claim(
                channel_id=session.channel_id,
                request_id=page_request_id(session.customer_id, request_id),
                campaign_id=campaign_id,
                customer_id=session.customer_id,
                reward_id=reward_id,
            )
        )

    async def rights(self, session: Session) -> list[dict[str, Any]]:
        """The customer's grants, newest first, at most RIGHTS_LIMIT; with its code and expiry
        once the vendor fulfilled one (read as a single grant read reads it: the latest state,
        even before the ledger stored it)."""
        listed = await self._grants.of_customer(session.customer_id, RIGHTS_LIMIT)
        # A few reads at a time: one page must not take every connection of the pool.
        gate = asyncio.Semaphore(READS_AT_ONCE)

        async def read(grant_id: str) -> dict[str, Any]:
            async with gate:
                return await self._grants.get(grant_id)

        full = await asyncio.gather(
            *(read(g["grant_id"]) for g in listed if g["status"] in WITH_CODE)
        )
        by_id = {g["grant_id"]: g for g in full}
        return [right_view(by_id.get(g["grant_id"], g)) for g in listed]


def expires_iso(session: Session) -> str:
    return rfc3339(session.expires_at * 1000)
