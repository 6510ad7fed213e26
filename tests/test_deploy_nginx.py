"""deploy/nginx/: Debian's nginx running the shipped quanyi.conf and quanyi-proxy.conf (only the
upstream ports, the listening port and the log paths rendered for a scratch run) in front of
real `quanyi serve` processes. Signed claims through it reach both processes over upstream
connections kept alive, with the client's address and not one it made up; with one process
killed they still succeed through the other. What nginx refuses itself is our JSON error, and
neither /metrics nor a card number gets out."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import pytest

from quanyi.access.signing import signed_headers
from tests.support.deploy import api_process, nginx, until_api_answers
from tests.support.scratch import free_port
from tests.support.settings import CHANNEL, CHANNEL_SECRET

pytestmark = pytest.mark.usefixtures("signed_in")

# The test's client connects from this loopback address, nginx to the API from 127.0.0.1: the
# address the API writes can only have come through nginx's X-Forwarded-For.
CLIENT_ADDRESS = "127.0.0.2"
SPOOFED = "203.0.113.9"


async def signed_claim(
    http: aiohttp.ClientSession, base: str, request_id: str, customer_id: str
) -> tuple[int, Any]:
    body = orjson.dumps({"request_id": request_id, "campaign_id": "c1", "customer_id": customer_id})
    headers = signed_headers(CHANNEL, CHANNEL_SECRET, "POST", "/v1/claims", int(time.time()), body)
    headers["X-Forwarded-For"] = SPOOFED  # what a client may send: never taken as its address
    async with http.post(f"{base}/v1/claims", data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def claims(http: aiohttp.ClientSession, base: str, prefix: str, n: int) -> list[int]:
    """`n` claims one after another (one client connection to nginx), their statuses."""
    return [
        (await signed_claim(http, base, f"{prefix}-{i}", f"{prefix}-C{i}"))[0] for i in range(n)
    ]


def access_lines(log: Path, path: str = "/v1/claims") -> list[dict[str, Any]]:
    """The access-log lines of requests to `path` an API process wrote to its stderr."""
    lines = []
    for raw in log.read_bytes().splitlines():
        if raw.startswith(b"{"):
            line = orjson.loads(raw)
            if line.get("msg") == "access" and line.get("path") == path:
                lines.append(line)
    return lines


async def until_claim_lines(logs: list[Path], total: int) -> list[list[dict[str, Any]]]:
    """Each process's claim lines, once `total` were written (the log flushes every 0.2 s)."""
    for _ in range(100):
        found = [access_lines(log) for log in logs]
        if sum(map(len, found)) >= total:
            return found
        await asyncio.sleep(0.1)
    return found


def upstream_peers(pid: int, port: int) -> set[int]:
    """The ports nginx's open connections to this API process come from."""
    return {
        c.raddr.port
        for c in psutil.Process(pid).net_connections("tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port and c.raddr
    }


def from_client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(CLIENT_ADDRESS, 0)))


async def test_claims_reach_both_processes_over_kept_alive_connections_and_survive_one_killed(
    api, tmp_path
):
    await api.create_right()
    await api.create_campaign()  # stock 100, one per customer
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"api-{port}.log" for port in ports]
    with api_process(ports[0], logs[0]) as first, api_process(ports[1], logs[1]) as second:
        procs = [first, second]
        for port, proc, log in zip(ports, procs, logs, strict=True):
            await until_api_answers(port, proc, log)
        async with nginx(tmp_path / "nginx", ports) as (base, _access), from_client() as http:
            assert await claims(http, base, "round1", 30) == [201] * 30
            peers = [upstream_peers(p.pid, port) for p, port in zip(procs, ports, strict=True)]
            assert all(peers), peers  # nginx holds its connections to both open, idle
            assert await claims(http, base, "round2", 10) == [201] * 10
            # The same connections carried the second round: nginx opened none.
            assert [upstream_peers(p.pid, port) for p, port in zip(procs, ports, strict=True)] == (
                peers
            )

            lines = await until_claim_lines(logs, 40)
            assert [len(found) for found in lines] == [20, 20]  # round robin over both
            assert {line["client"] for found in lines for line in found} == {CLIENT_ADDRESS}
            assert {line["status"] for found in lines for line in found} == {201}

            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, 10)
            statuses = await claims(http, base, "after-kill", 20)
            assert statuses == [201] * 20, statuses
            lines = await until_claim_lines(logs, 60)
            assert [len(found) for found in lines] == [20, 40]  # all 20 on the survivor


async def test_nginx_refuses_in_json_and_keeps_metrics_and_card_numbers_in(api, tmp_path):
    port, log = free_port(), tmp_path / "api.log"
    with api_process(port, log) as proc:
        await until_api_answers(port, proc, log)
        async with nginx(tmp_path / "nginx", [port]) as (base, access_log), from_client() as http:
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["status"] == "ready"
            for path in ("/metrics", "//metrics", "/%6Detrics"):
                async with http.get(f"{base}{path}") as resp:
                    assert resp.status == 404, path
                    assert (await resp.json())["error"]["code"] == "not_found"
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200  # Prometheus scrapes the process itself
            # Straight to the API, not through nginx: its X-Forwarded-For is not believed.
            direct = f"http://127.0.0.1:{port}/readyz"
            async with http.get(direct, headers={"X-Forwarded-For": SPOOFED}) as resp:
                assert resp.status == 200
            for _ in range(50):  # the API writes its access log every 0.2 s
                if len(access_lines(log, "/readyz")) == 2:
                    break
                await asyncio.sleep(0.1)
            assert [line["client"] for line in access_lines(log, "/readyz")] == [CLIENT_ADDRESS] * 2

            # Over the route's limit: refused by nginx before the API reads it, in our JSON.
            big = b'{"request_id": "' + b"x" * 70_000 + b'"}'
            async with http.post(f"{base}/v1/claims", data=big) as resp:
                assert resp.status == 413
                assert (await resp.json())["error"]["code"] == "payload_too_large"

            pan = "4111111111111111"
            async with http.get(f"{base}/v1/customers/{pan}/grants") as resp:
                assert resp.status == 401  # the API's own answer, passed through
                assert (await resp.json())["error"]["code"] == "unauthorized"

            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
            status, body = await signed_claim(http, base, "no-api", "C1")
            assert status == 503 and body["error"]["code"] == "unavailable", body

        logged = access_log.read_text()  # complete once nginx stopped
        assert pan not in logged
        assert '"path":"/v1/customers/[masked]/grants"' in logged
        assert '"client":"127.0.0.2"' in logged
