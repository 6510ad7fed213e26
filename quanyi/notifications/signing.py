"""The webhook signature: what we send, and how a receiver checks it (README "Webhooks").

    X-Quanyi-Delivery:  01MA3Q...
    X-Quanyi-Timestamp: 1796000000
    X-Quanyi-Signature: v1=hex(HMAC-SHA256(secret, TIMESTAMP "." DELIVERY "." BODY))

BODY is the raw request body, byte for byte. The timestamp and the delivery id are signed with
it: a captured request cannot be replayed later than the receiver's window allows, nor under
another delivery id to pass a receiver's dedupe. While a secret is rotated
(QUANYI_WEBHOOK_SECRET="new,old") each request carries one signature per secret,
`v1=<new>,v1=<old>`, and a receiver holding either accepts it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from quanyi.access.signing import is_fresh

TIMESTAMP_HEADER = "X-Quanyi-Timestamp"
SIGNATURE_HEADER = "X-Quanyi-Signature"
DELIVERY_HEADER = "X-Quanyi-Delivery"
EVENT_HEADER = "X-Quanyi-Event"
SCHEME = "v1"
# A DEMO secret, public: for the README's receiver and tests, never for a bank's webhook.
DEMO_WEBHOOK_SECRET = "demo-webhook-secret-not-for-production"


def secrets_of(setting: str) -> tuple[str, ...]:
    """QUANYI_WEBHOOK_SECRET as its secrets, the one to sign with first: "new,old" while rotating."""
    return tuple(s.strip() for s in setting.split(",") if s.strip())


def signature(secrets: str | Sequence[str], timestamp: int, delivery_id: str, body: bytes) -> str:
    """The X-Quanyi-Signature value of `body` sent at `timestamp` (unix seconds) as delivery
    `delivery_id`: one `v1=` signature per secret, comma-separated."""
    signed = f"{timestamp}.{delivery_id}.".encode() + body
    return ",".join(
        f"{SCHEME}={hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()}"
        for s in ([secrets] if isinstance(secrets, str) else secrets)
    )


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, now: float, window_s: int = 300
) -> bool:
    """What a receiver does, step for step as the README shows it: headers found whatever
    their case; the timestamp (ASCII digits) within `window_s` of its clock, checked first;
    then the signature over timestamp, delivery id and raw body, compared as bytes in constant
    time with each `v1=` value sent."""
    h = {k.lower(): v for k, v in headers.items()}
    ts = h.get("x-quanyi-timestamp", "")
    if not is_fresh(ts, now, window_s):
        return False
    delivery, sent = h.get("x-quanyi-delivery", ""), h.get("x-quanyi-signature", "")
    if not (delivery.isascii() and sent.isascii()):
        return False
    signed = f"{ts}.{delivery}.".encode() + body
    expected = b"v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
    return any([hmac.compare_digest(expected, s.strip().encode()) for s in sent.split(",")])
