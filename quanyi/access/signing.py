"""Channel request signatures: HMAC-SHA256 over METHOD, path with query, timestamp and body hash.

signature = hex(HMAC-SHA256(secret, METHOD "\\n" PATH_WITH_QUERY "\\n" TIMESTAMP "\\n" hex(SHA-256(body))))
"""

from __future__ import annotations

import hashlib
import hmac


def is_fresh(timestamp: str, now: float, window_s: int) -> bool:
    """Whether a signed request's timestamp is unix seconds within `window_s` of `now`: the
    one check of channel requests and vendor callbacks alike, made before any other work."""
    return (
        timestamp.isascii()
        and timestamp.isdigit()
        and len(timestamp) <= 12  # int() of thousands of digits is slow, then overflows
        and abs(int(now) - int(timestamp)) <= window_s
    )


def string_to_sign(method: str, path_qs: str, timestamp: str, body: bytes) -> bytes:
    return f"{method.upper()}\n{path_qs}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()


def sign(secret: str, method: str, path_qs: str, timestamp: str, body: bytes = b"") -> str:
    message = string_to_sign(method, path_qs, timestamp, body)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(
    channel_id: str, secret: str, method: str, path_qs: str, timestamp: int, body: bytes = b""
) -> dict[str, str]:
    """Headers a channel sends; used by the CLI, the load tests and the test suite."""
    ts = str(timestamp)
    return {
        "X-Channel-Id": channel_id,
        "X-Timestamp": ts,
        "X-Signature": sign(secret, method, path_qs, ts, body),
    }


def signature_matches(
    secret: str, method: str, path_qs: str, timestamp: str, body: bytes, signature: str
) -> bool:
    if not signature.isascii():
        return False
    return hmac.compare_digest(sign(secret, method, path_qs, timestamp, body), signature.lower())


class SigningKey:
    """One secret's HMAC-SHA256, keyed once: checking a request copies it rather than keying
    HMAC again (the key schedule was a third of a claim's signature check). The same check
    as `signature_matches`, for a secret held across many requests (a channel's)."""

    __slots__ = ("_keyed",)

    def __init__(self, secret: str) -> None:
        self._keyed = hmac.new(secret.encode(), digestmod=hashlib.sha256)

    def __repr__(self) -> str:  # never the secret
        return "SigningKey(...)"

    def sign(self, method: str, path_qs: str, timestamp: str, body: bytes = b"") -> str:
        mac = self._keyed.copy()
        mac.update(string_to_sign(method, path_qs, timestamp, body))
        return mac.hexdigest()

    def matches(
        self, method: str, path_qs: str, timestamp: str, body: bytes, signature: str
    ) -> bool:
        if not signature.isascii():
            return False
        return hmac.compare_digest(self.sign(method, path_qs, timestamp, body), signature.lower())
