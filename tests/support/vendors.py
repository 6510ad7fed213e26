"""The vendor side of the tests: RSA key pairs, the simulated vendor (a real HTTP server) and
what a vendor sends us (signed redemption callbacks, daily statements)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import orjson

from quanyi.core.clock import system_clock
from quanyi.fulfilment.fulfiller import order_of
from quanyi.vendors import rsa
from quanyi.vendors.adapters import Fulfilment, HttpAdapter
from quanyi.vendors.registry import VendorRegistry
from quanyi.vendors.simulator import SimulatorConfig, create_simulator
from tests.support.clients import Api, grant_view, send
from tests.support.clock import SHANGHAI

SIM = "sim"
CALLBACK = f"/v1/vendors/{SIM}/redemptions"


@dataclass(frozen=True)
class KeyPairs:
    vendor_private: str
    vendor_public: str
    ours_private: str
    ours_public: str
    rotated_private: str
    rotated_public: str


def new_key_pairs() -> KeyPairs:
    """RSA pairs for a vendor, for us, and the vendor's next key (a rotation)."""
    return KeyPairs(*rsa.generate_keypair(), *rsa.generate_keypair(), *rsa.generate_keypair())


def simulator_starter(aiohttp_server: Any, key_pairs: KeyPairs) -> Callable[..., Awaitable[str]]:
    """start(**config) starts a simulated vendor (a real HTTP server) and returns its base URL;
    it signs with the vendor key and trusts ours unless `config` says otherwise."""

    async def start(**config: Any) -> str:
        config.setdefault("latency_ms", 5)
        config.setdefault("private_key_pem", key_pairs.vendor_private)
        config.setdefault("client_public_key_pem", key_pairs.ours_public)
        server = await aiohttp_server(create_simulator(SimulatorConfig(**config)))
        return str(server.make_url("")).rstrip("/")

    return start


async def sim_stats(base_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/_sim/stats") as resp:
        return await resp.json()


async def sim_config(base_url: str, **config: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base_url}/_sim/config", json=config) as resp,
    ):
        assert resp.status == 200, await resp.text()


@functools.cache
def _key(pem: str) -> rsa.RsaKey:
    return rsa.load_key(pem)


async def sim_grant(base_url: str, key_pairs: KeyPairs, grant_id: str) -> dict[str, Any]:
    """The grant as the simulated vendor has it (GET /grants/{id}, signed with our key)."""
    timestamp = str(int(time.time()))
    headers = {
        "X-Quanyi-Timestamp": timestamp,
        "X-Quanyi-Signature": rsa.sign(_key(key_pairs.ours_private), timestamp, b""),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url}/grants/{grant_id}", headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


def vendor_headers(private_pem: str, timestamp: str, raw: bytes, **extra: str) -> dict[str, str]:
    return {
        "X-Vendor-Timestamp": timestamp,
        "X-Vendor-Signature": rsa.sign(_key(private_pem), timestamp, raw),
        "Content-Type": "application/json",
        **extra,
    }


async def post_signed(
    api: Api,
    path: str,
    raw: bytes,
    private_pem: str,
    *,
    ts: int | None = None,
) -> tuple[int, Any]:
    """POSTs these bytes signed by `private_pem` at `ts` (default: the app clock)."""
    timestamp = str(int(api.clock()) if ts is None else ts)
    return await send(api, "POST", path, raw, headers=vendor_headers(private_pem, timestamp, raw))


def redemption(
    redemption_id: str, grant_id: str | None = None, *, code: str | None = None
) -> bytes:
    body: dict[str, Any] = {
        "redemption_id": redemption_id,
        "redeemed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if grant_id is not None:
        body["grant_id"] = grant_id
    if code is not None:
        body["code"] = code
    return orjson.dumps(body)


async def redeem(
    api: Api,
    key_pairs: KeyPairs,
    redemption_id: str,
    grant_id: str | None = None,
    *,
    code: str | None = None,
    vendor_id: str = SIM,
    private_pem: str | None = None,
) -> tuple[int, Any]:
    raw = redemption(redemption_id, grant_id, code=code)
    return await post_signed(
        api,
        f"/v1/vendors/{vendor_id}/redemptions",
        raw,
        private_pem or key_pairs.vendor_private,
    )


def statement(*rows: tuple[str, str, str]) -> str:
    lines = ["grant_id,code,status,redeemed_at"]
    lines += [f"{gid},{code},{status}," for gid, code, status in rows]
    return "\n".join(lines) + "\n"


async def upload(api: Api, day: str, text: str | bytes, vendor_id: str = SIM) -> tuple[int, Any]:
    """Staff (the approver) upload a vendor's statement of `day`."""
    token = await api.login("approver")
    resp = await api.client.post(
        f"/admin/v1/vendors/{vendor_id}/statements",
        params={"day": day},
        data=text.encode() if isinstance(text, str) else text,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    return resp.status, await resp.json()


def today(api: Api) -> str:
    """The app clock's local day at head office, as statements name days."""
    return datetime.fromtimestamp(api.clock(), SHANGHAI).date().isoformat()


async def redemption_rows(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    """(vendor, redemption id, grant id, code, outcome, reason) of every callback kept."""
    rows = await pool.fetch(
        "SELECT vendor_id, redemption_id, grant_id, code, outcome, reason FROM redemptions"
        " ORDER BY received_at, redemption_id"
    )
    return [tuple(r) for r in rows]


async def assert_untouched(api: Api, pool: asyncpg.Pool, grant_id: str) -> None:
    """The grant is still fulfilled with nothing after it, and no callback was kept."""
    grant = await grant_view(api, grant_id)
    assert grant["status"] == "fulfilled", grant
    assert [e["event"] for e in grant["timeline"]] == ["granted", "fulfilled"]
    assert await redemption_rows(pool) == []


async def at_vendor(
    pool: asyncpg.Pool, vendor_id: str, grant_ids: list[str]
) -> dict[str, dict | None]:
    """What the vendor itself holds for each grant, asked with a signed look-up."""
    vendor = await VendorRegistry(pool).get(vendor_id)
    async with aiohttp.ClientSession() as session:
        adapter = HttpAdapter(vendor, session, system_clock)
        found = await asyncio.gather(*(adapter.lookup(g) for g in grant_ids))
    return dict(zip(grant_ids, found, strict=True))


async def issue_at_vendor(
    pool: asyncpg.Pool, vendor_id: str, event: dict[str, Any], face_value: int
) -> Fulfilment:
    """What a fulfilment worker does with a grant's outbox event before it records the outcome:
    the vendor asked to issue it, with a signed call."""
    vendor = await VendorRegistry(pool).get(vendor_id)
    order = order_of(event, face_value)
    async with aiohttp.ClientSession() as session:
        return await HttpAdapter(vendor, session, system_clock).issue(order)
