"""Adapters: one small protocol to issue a grant at a vendor, revoke it and look it up.

The grant id is the idempotency key every vendor sees, on every attempt, so a retry after a
timeout never issues twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from redis.asyncio import Redis

from quanyi.core.clock import Clock
from quanyi.stores.keys import Keys
from quanyi.stores.scripts import Scripts
from quanyi.vendors.registry import Vendor
from quanyi.vendors.rsa import sign, verify


class VendorError(Exception):
    """A call that did not succeed. Retryable ones may succeed later with the same key."""

    retryable = True


class VendorUnavailable(VendorError):
    """Timeouts, connection errors, 5xx, 408, 429, an empty code pool."""


class VendorRejected(VendorError):
    """The vendor refused the request itself (4xx): retrying will not help."""

    retryable = False


@dataclass(frozen=True)
class Order:
    grant_id: str
    campaign_id: str
    reward_id: str
    right_id: str
    customer_id: str
    face_value: int


@dataclass(frozen=True)
class Fulfilment:
    code: str | None = None
    reference: str | None = None
    expires_at: str | None = None


class Adapter(Protocol):
    async def issue(self, order: Order) -> Fulfilment: ...

    async def revoke(self, grant_id: str) -> None: ...

    async def lookup(self, grant_id: str) -> dict[str, Any] | None: ...


class HttpAdapter:
    """A generic JSON vendor API. Requests are signed SHA256withRSA over timestamp and body;
    responses are verified when the vendor has registered public keys."""

    def __init__(self, vendor: Vendor, session: aiohttp.ClientSession, clock: Clock) -> None:
        assert vendor.base_url
        self._vendor = vendor
        self._base = vendor.base_url.rstrip("/")
        self._session = session
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=vendor.timeout_ms / 1000)
        self._private_key = vendor.private_key()
        self._public_keys = vendor.verifying_keys()

    async def issue(self, order: Order) -> Fulfilment:
        body = {
            "grant_id": order.grant_id,
            "right_id": order.right_id,
            "customer_id": order.customer_id,
            "campaign_id": order.campaign_id,
            "face_value": order.face_value,
        }
        reply = await self._call("POST", "/grants", body, idempotency_key=order.grant_id)
        assert reply is not None
        return Fulfilment(reply.get("code"), reply.get("reference"), reply.get("expires_at"))

    async def revoke(self, grant_id: str) -> None:
        await self._call("POST", f"/grants/{grant_id}/revoke", {}, missing_ok=True)

    async def lookup(self, grant_id: str) -> dict[str, Any] | None:
        return await self._call("GET", f"/grants/{grant_id}", None, missing_ok=True)

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        idempotency_key: str | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        data = orjson.dumps(body) if body is not None else b""
        headers = {"Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if self._private_key is not None:
            timestamp = str(int(self._clock()))
            headers["X-Quanyi-Timestamp"] = timestamp
            headers["X-Quanyi-Signature"] = sign(self._private_key, timestamp, data)
        try:
            async with self._session.request(
                method, self._base + path, data=data or None, headers=headers, timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
                reply_ts = resp.headers.get("X-Vendor-Timestamp", "")
                reply_sig = resp.headers.get("X-Vendor-Signature", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise VendorUnavailable(f"{method} {path}: {exc.__class__.__name__} {exc}") from exc
        if status == 404 and missing_ok:
            return None
        if status >= 500 or status in (408, 429):
            raise VendorUnavailable(f"{method} {path}: HTTP {status}")
        if status >= 400:
            raise VendorRejected(f"{method} {path}: HTTP {status} {raw[:200]!r}")
        if self._public_keys and not verify(self._public_keys, reply_ts, raw, reply_sig):
            # Not from the vendor, or altered on the way: treat as not answered.
            raise VendorUnavailable(f"{method} {path}: response signature does not verify")
        try:
            reply = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            raise VendorUnavailable(f"{method} {path}: response is not JSON") from exc
        if not isinstance(reply, dict):
            raise VendorUnavailable(f"{method} {path}: response is not a JSON object")
        return reply


class PointsAdapter(HttpAdapter):
    """Credits the card's points account through the points system's HTTP API."""

    async def issue(self, order: Order) -> Fulfilment:
        body = {
            "account": order.customer_id,
            "points": order.face_value,
            "idempotency_key": order.grant_id,
        }
        reply = await self._call("POST", "/points/credits", body, idempotency_key=order.grant_id)
        assert reply is not None
        return Fulfilment(reference=reply.get("credit_id"))

    async def revoke(self, grant_id: str) -> None:
        await self._call("POST", f"/points/credits/{grant_id}/reverse", {}, missing_ok=True)

    async def lookup(self, grant_id: str) -> dict[str, Any] | None:
        return None


class CodePoolAdapter:
    """Voucher codes the vendor delivered up front: one per grant, popped atomically."""

    def __init__(self, vendor: Vendor, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self._vendor = vendor
        self._redis = redis
        self._keys = keys
        self._assign = scripts.assign_code

    async def issue(self, order: Order) -> Fulfilment:
        code = await self._assign(
            keys=[
                self._keys.code_pool(self._vendor.id, order.right_id),
                self._keys.codes_assigned(self._vendor.id),
            ],
            args=[order.grant_id],
        )
        if not code:
            raise VendorUnavailable(f"code pool of {order.right_id} at {self._vendor.id} is empty")
        return Fulfilment(code=code)

    async def revoke(self, grant_id: str) -> None:
        """A delivered code cannot be taken back from the vendor; the ledger voids it."""

    async def lookup(self, grant_id: str) -> dict[str, Any] | None:
        code = await self._redis.hget(self._keys.codes_assigned(self._vendor.id), grant_id)
        return {"grant_id": grant_id, "code": code} if code else None


def make_adapter(
    vendor: Vendor,
    session: aiohttp.ClientSession | None,
    redis: Redis,
    keys: Keys,
    clock: Clock,
    scripts: Scripts,
) -> Adapter:
    if vendor.adapter == "codepool":
        return CodePoolAdapter(vendor, redis, keys, scripts)
    assert session is not None
    if vendor.adapter == "points":
        return PointsAdapter(vendor, session, clock)
    return HttpAdapter(vendor, session, clock)  # http and simulated speak the same protocol
