"""The vendor simulator, driven over real HTTP as the service and the load tests drive it."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from quanyi.vendors import rsa
from quanyi.vendors.simulator import SimulatorConfig, create_simulator, run_simulator

MakeSim = Callable[..., Awaitable[TestClient]]


@dataclass(frozen=True)
class Keys:
    vendor_private: str
    vendor_public: str
    client_private: str
    client_public: str


@pytest.fixture(scope="module")
def keys() -> Keys:
    # 2048-bit generation takes a noticeable fraction of a second: once per module.
    return Keys(*rsa.generate_keypair(), *rsa.generate_keypair())


@pytest.fixture
def make_sim(aiohttp_client: Any) -> MakeSim:
    async def make(**settings: Any) -> TestClient:
        settings.setdefault("latency_ms", 0)
        return await aiohttp_client(create_simulator(SimulatorConfig(**settings)))

    return make


def grant_body(grant_id: str) -> bytes:
    return orjson.dumps(
        {
            "grant_id": grant_id,
            "right_id": "r-1",
            "customer_id": "c-1",
            "campaign_id": "camp-1",
            "face_value": 50,
        }
    )


async def issue(
    sim: TestClient, grant_id: str, headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    return await sim.post(
        "/grants",
        data=grant_body(grant_id),
        headers={"Idempotency-Key": grant_id, **(headers or {})},
    )


async def stats(sim: TestClient) -> dict[str, Any]:
    resp = await sim.get("/_sim/stats")
    assert resp.status == 200
    return await resp.json()


async def configure(sim: TestClient, **changes: Any) -> dict[str, Any]:
    resp = await sim.post("/_sim/config", json=changes)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def client_signed(key_pem: str, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {
        "X-Quanyi-Timestamp": timestamp,
        "X-Quanyi-Signature": rsa.sign(rsa.load_key(key_pem), timestamp, body),
    }


async def test_issue_is_idempotent_per_key(make_sim: MakeSim) -> None:
    sim = await make_sim()
    first = await issue(sim, "g-1")
    second = await issue(sim, "g-1")
    assert first.status == second.status == 200
    body = await first.json()
    assert await second.json() == body
    assert body["state"] == "issued" and body["grant_id"] == "g-1"
    assert (await stats(sim))["calls"] == {"g-1": 2}
    assert (await stats(sim))["effects"] == {"g-1": 1}


async def test_distinct_keys_get_distinct_well_formed_vouchers(make_sim: MakeSim) -> None:
    sim = await make_sim(code_prefix="LNG", validity_days=7)
    bodies = [await (await issue(sim, f"g-{i}")).json() for i in range(3)]
    codes = {b["code"] for b in bodies}
    assert len(codes) == 3
    assert all(re.fullmatch(r"LNG-[A-Z0-9]{12}", code) for code in codes)
    assert len({b["reference"] for b in bodies}) == 3
    expires = datetime.fromisoformat(bodies[0]["expires_at"])
    assert bodies[0]["expires_at"].endswith("Z")
    assert abs(expires - (datetime.now(UTC) + timedelta(days=7))) < timedelta(minutes=1)
    assert (await stats(sim))["issued"] == 3


async def test_error_rate_answers_500_before_any_effect(make_sim: MakeSim) -> None:
    sim = await make_sim(error_rate=1.0)
    resp = await issue(sim, "g-1")
    assert resp.status == 500
    assert "error" in await resp.json()
    assert (await sim.get("/grants/g-1")).status == 500
    await configure(sim, error_rate=0.0)
    assert (await sim.get("/grants/g-1")).status == 404
    counts = await stats(sim)
    assert counts["calls"] == {"g-1": 1} and counts["effects"] == {} and counts["issued"] == 0


async def test_outage_answers_503_except_control(make_sim: MakeSim) -> None:
    sim = await make_sim(outage=True)
    assert (await issue(sim, "g-1")).status == 503
    assert (await sim.get("/no/such/route")).status == 503
    assert (await sim.post("/points/credits", data=b"{not json")).status == 503
    counts = await stats(sim)  # control endpoints still answer
    assert counts["calls"] == {"g-1": 1} and counts["issued"] == 0
    await configure(sim, outage=False)
    assert (await issue(sim, "g-1")).status == 200


async def test_timeout_hangs_then_504_without_effect(make_sim: MakeSim) -> None:
    sim = await make_sim(timeout_rate=1.0, hang_s=0.2)
    started = time.monotonic()
    resp = await issue(sim, "g-1")
    assert resp.status == 504
    assert time.monotonic() - started >= 0.2
    counts = await stats(sim)
    assert counts["calls"] == {"g-1": 1} and counts["effects"] == {}


async def test_responses_are_signed_by_the_vendor_key(make_sim: MakeSim, keys: Keys) -> None:
    sim = await make_sim(private_key_pem=keys.vendor_private)
    resp = await issue(sim, "g-1")
    assert resp.status == 200
    raw = await resp.read()
    timestamp = resp.headers["X-Vendor-Timestamp"]
    signature = resp.headers["X-Vendor-Signature"]
    assert abs(int(timestamp) - time.time()) < 60
    assert rsa.verify([rsa.load_key(keys.vendor_public)], timestamp, raw, signature)
    assert not rsa.verify([rsa.load_key(keys.client_public)], timestamp, raw, signature)
    # Errors are not vendor statements: unsigned.
    missing = await sim.get("/grants/unknown")
    assert missing.status == 404 and "X-Vendor-Signature" not in missing.headers


async def test_request_signature_enforced_with_client_key(make_sim: MakeSim, keys: Keys) -> None:
    sim = await make_sim(client_public_key_pem=keys.client_public)
    body = grant_body("g-1")
    unsigned = await issue(sim, "g-1")
    assert unsigned.status == 401
    assert await unsigned.json() == {"error": "bad signature"}
    wrong_key = await issue(sim, "g-1", client_signed(keys.vendor_private, body))
    assert wrong_key.status == 401
    tampered = client_signed(keys.client_private, body)
    tampered["X-Quanyi-Timestamp"] = str(int(tampered["X-Quanyi-Timestamp"]) + 1)
    assert (await issue(sim, "g-1", tampered)).status == 401
    good = await issue(sim, "g-1", client_signed(keys.client_private, body))
    assert good.status == 200
    counts = await stats(sim)
    assert counts["calls"] == {"g-1": 4} and counts["effects"] == {"g-1": 1}


async def test_points_credit_is_idempotent_and_reversible(make_sim: MakeSim) -> None:
    sim = await make_sim()
    request = {"account": "acct-9", "points": 500, "idempotency_key": "pk-1"}
    first = await (await sim.post("/points/credits", json=request)).json()
    again = await (await sim.post("/points/credits", json=request)).json()
    assert first == again
    assert first["state"] == "credited" and first["points"] == 500 and first["credit_id"]
    counts = await stats(sim)
    assert counts["calls"] == {"pk-1": 2} and counts["effects"] == {"pk-1": 1}
    reversed_ = await sim.post("/points/credits/pk-1/reverse")
    assert reversed_.status == 200
    assert (await reversed_.json())["state"] == "reversed"
    assert (await sim.post("/points/credits/nope/reverse")).status == 404
    bad = await sim.post("/points/credits", json={**request, "points": 0})
    assert bad.status == 400


async def test_revoke_and_lookup(make_sim: MakeSim) -> None:
    sim = await make_sim()
    issued = await (await issue(sim, "g-1")).json()
    for _ in range(2):  # revoking twice is fine
        resp = await sim.post("/grants/g-1/revoke")
        assert resp.status == 200
        assert await resp.json() == {"grant_id": "g-1", "state": "revoked"}
    current = await (await sim.get("/grants/g-1")).json()
    assert current == {**issued, "state": "revoked"}
    assert (await sim.post("/grants/unknown/revoke")).status == 404
    assert (await sim.get("/grants/unknown")).status == 404
    assert (await stats(sim))["issued"] == 1


async def test_bad_requests_answer_400_json(make_sim: MakeSim) -> None:
    sim = await make_sim()
    cases = [
        sim.post("/grants", data=b"{oops", headers={"Idempotency-Key": "g-1"}),
        sim.post("/grants", data=grant_body("g-1")),  # no Idempotency-Key
        sim.post("/grants", data=b"{}", headers={"Idempotency-Key": "g-1"}),  # no grant_id
        sim.post("/grants", data=grant_body("g-2"), headers={"Idempotency-Key": "g-1"}),
        sim.post("/grants", data=b"[1]", headers={"Idempotency-Key": "g-1"}),
        sim.post("/points/credits", data=b"\xff"),
        sim.post("/_sim/config", data=b"nope"),
        sim.post("/_sim/config", json={"error_rate": 2}),
        sim.post("/_sim/config", json={"latency": 5}),
        sim.post("/_sim/redeem", json={"callback_url": "http://127.0.0.1:9/cb"}),
    ]
    for pending in cases:
        resp = await pending
        assert resp.status == 400, await resp.text()
        assert "error" in await resp.json()
    assert (await stats(sim))["issued"] == 0


async def test_config_and_reset(make_sim: MakeSim) -> None:
    sim = await make_sim()
    shown = await configure(sim, latency_ms=5, jitter_ms=1, hang_s=0.5)
    assert shown["latency_ms"] == 5 and shown["hang_s"] == 0.5 and shown["outage"] is False
    assert "private_key_pem" not in shown
    await issue(sim, "g-1")
    reset = await sim.post("/_sim/reset")
    assert reset.status == 200
    counts = await stats(sim)
    assert counts["calls"] == {} and counts["issued"] == 0 and counts["max_in_flight"] == 0
    assert (await sim.get("/grants/g-1")).status == 404


async def test_redeem_posts_a_signed_callback(
    make_sim: MakeSim, keys: Keys, aiohttp_server: Any
) -> None:
    received: list[tuple[dict[str, str], bytes, bool]] = []
    vendor_key = rsa.load_key(keys.vendor_public)

    async def callback(request: web.Request) -> web.Response:
        raw = await request.read()
        ok = rsa.verify(
            [vendor_key],
            request.headers.get("X-Vendor-Timestamp", ""),
            raw,
            request.headers.get("X-Vendor-Signature", ""),
        )
        received.append((dict(request.headers), raw, ok))
        return web.json_response({"accepted": ok}, status=200 if ok else 401)

    receiver = web.Application()
    receiver.router.add_post("/callbacks/redemption", callback)
    server = await aiohttp_server(receiver)
    sim = await make_sim(private_key_pem=keys.vendor_private)

    resp = await sim.post(
        "/_sim/redeem",
        json={
            "callback_url": str(server.make_url("/callbacks/redemption")),
            "grant_id": "g-1",
            "redemption_id": "red-1",
        },
    )
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["status"] == 200 and result["body"] == {"accepted": True}
    sent = result["sent"]
    assert sent["redemption_id"] == "red-1" and sent["grant_id"] == "g-1"
    assert sent["redeemed_at"].endswith("Z")
    headers, raw, ok = received[0]
    assert ok and orjson.loads(raw) == sent
    assert headers["Content-Type"] == "application/json"

    by_code = await (
        await sim.post(
            "/_sim/redeem", json={"callback_url": str(server.make_url("/")), "code": "SIM-X"}
        )
    ).json()
    assert by_code["status"] == 404  # the receiver has no route at "/"
    assert by_code["sent"]["code"] == "SIM-X" and len(by_code["sent"]["redemption_id"]) == 32

    # A simulator without a vendor key sends unsigned callbacks, which the receiver refuses.
    unkeyed = await make_sim()
    unsigned = await (
        await unkeyed.post(
            "/_sim/redeem",
            json={"callback_url": str(server.make_url("/callbacks/redemption")), "code": "C"},
        )
    ).json()
    assert unsigned["status"] == 401 and unsigned["body"] == {"accepted": False}


async def test_redeem_reports_an_unreachable_callback(make_sim: MakeSim) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sim = await make_sim()
    resp = await sim.post(
        "/_sim/redeem",
        json={"callback_url": f"http://127.0.0.1:{closed_port}/cb", "grant_id": "g-1"},
    )
    assert resp.status == 502
    body = await resp.json()
    assert "callback failed" in body["error"] and body["sent"]["grant_id"] == "g-1"


async def test_max_in_flight_counts_concurrent_calls(make_sim: MakeSim) -> None:
    sim = await make_sim(latency_ms=100)
    responses = await asyncio.gather(*(issue(sim, f"g-{i}") for i in range(10)))
    assert all(r.status == 200 for r in responses)
    counts = await stats(sim)
    assert counts["max_in_flight"] == 10 and counts["in_flight"] == 0
    assert counts["issued"] == 10


async def test_run_simulator_serves_until_cancelled() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    task = asyncio.create_task(run_simulator("127.0.0.1", port, SimulatorConfig(latency_ms=0)))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/_sim/stats") as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
            else:
                pytest.fail("the simulator never started listening")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
