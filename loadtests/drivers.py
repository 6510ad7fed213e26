"""Load generators and the baseline they are compared with: wrk replaying pre-signed claims
(wrk_claims.lua), redis-benchmark sending one command, and a no-op aiohttp + uvloop endpoint.

    python -m loadtests.drivers noop PORT     the no-op endpoint, until SIGTERM or SIGINT
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import resource
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from loadtests.procs import (
    HOST,
    ChildError,
    busy_cores,
    free_port,
    machine_ticks,
    run_tool,
    running,
    wait_http,
)
from loadtests.stats import per_unit_us
from quanyi.access.signing import sign

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_claims.lua"
CLAIM_PATH = "/v1/claims"
# What the no-op endpoint answers: a grant of the bench campaign, as the API would.
NOOP_GRANT = {
    "grant_id": "01HZY3Q4V5W6X7Y8Z9A0B1C2D3",
    "campaign_id": "bench",
    "reward_id": "r1",
    "right_id": "bench-voucher",
    "customer_id": "cu0000000",
    "channel_id": "bench-app",
    "status": "granted",
    "granted_at": "2025-01-01T00:00:00.000Z",
    "replayed": False,
}


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    client_cpu_us: float | None = None  # CPU of wrk per request
    busy_cores: float | None = None  # the whole machine's, during the run
    server_cpu_us: float | None = None  # CPU of the server per request

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        """2xx responses per second: a refused claim is not a claim served."""
        return self.ok / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class ClaimSigner:
    """Who the pre-signed claims come from and what they claim."""

    channel: str
    secret: str
    campaign: str
    customers: int  # drawn from cu0000000 up to this many


def write_claims(path: Path, signer: ClaimSigner, count: int, tag: str, seed: int) -> None:
    """`count` unique signed claims for wrk_claims.lua, signed now: the API accepts a
    timestamp within 300 s, so write them just before the run."""
    rng = random.Random(seed)
    ts = str(int(time.time()))
    lines = [f"{ts} {signer.channel} {CLAIM_PATH}"]
    for i in range(count):
        body = orjson.dumps(
            {
                "request_id": f"{tag}-{i}",
                "campaign_id": signer.campaign,
                "customer_id": f"cu{rng.randrange(signer.customers):07d}",
            }
        )
        lines.append(f"{sign(signer.secret, 'POST', CLAIM_PATH, ts, body)} {body.decode()}")
    path.write_text("\n".join(lines) + "\n")


async def run_wrk(url: str, claims: Path, seconds: int, threads: int, connections: int) -> WrkRun:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        str(claims),
        str(threads),
    ]
    # wrk is the only child reaped during the run, so the children's CPU grows by its alone.
    cpu, machine = resource.getrusage(resource.RUSAGE_CHILDREN), machine_ticks()
    out, err = await run_tool(argv)
    after, machine_after = resource.getrusage(resource.RUSAGE_CHILDREN), machine_ticks()
    wrk_cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    line = next((ln for ln in out.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if line is None:
        raise ChildError(f"wrk printed no result:\n{out}\n{err}")
    r = json.loads(line.removeprefix("WRK_RESULT "))
    return WrkRun(
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        non_2xx=r["status"],
        socket_errors=r["connect"] + r["read"] + r["write"] + r["timeout"],
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        p999_ms=r["p999_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        client_cpu_us=per_unit_us(0.0, wrk_cpu_s, r["requests"]),
        busy_cores=busy_cores(machine, machine_after),
    )


async def redis_benchmark(
    server: tuple[str, int, int], command: list[str], calls: int, pipeline: int, clients: int
) -> float:
    """Requests per second of `command` on (host, port, db); __rand_int__ spans 2e9 values."""
    host, port, db = server
    out, _ = await run_tool(
        [
            "redis-benchmark",
            *("-h", host, "-p", str(port), "--dbnum", str(db)),
            *("-c", str(clients), "-n", str(calls), "-P", str(pipeline), "-r", "2000000000"),
            "-q",
            *command,
        ]
    )
    rates = re.findall(r"([\d.]+) requests per second", out)
    if not rates:
        raise ChildError(f"redis-benchmark printed no rate:\n{out[-2000:]}")
    return float(rates[-1])


def noop_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "loadtests.drivers", "noop", str(port)]


async def noop_run(
    work_dir: Path, signer: ClaimSigner, warmup_s: int, seconds: int, threads: int, connections: int
) -> WrkRun:
    """The no-op endpoint started and loaded as the API is (wrk, claims of `signer`) for
    `seconds` after `warmup_s`, its server's CPU per request included; stopped after."""
    port = free_port()
    claims = work_dir / "noop.claims"
    await asyncio.to_thread(write_claims, claims, signer, 20_000, "noop", 1)
    async with running("noop", noop_argv(port), dict(os.environ), work_dir) as child:
        url = f"http://{HOST}:{port}"
        await wait_http(child, f"{url}/healthz")
        await run_wrk(url, claims, warmup_s, threads, connections)
        cpu = child.cpu_s()
        run = await run_wrk(url, claims, seconds, threads, connections)
        return replace(run, server_cpu_us=per_unit_us(cpu, child.cpu_s(), run.requests))


def serve_noop(port: int) -> None:
    """The framework alone: reads the body, answers 201 with a grant-sized JSON body."""
    import uvloop
    from aiohttp import web

    body = orjson.dumps(NOOP_GRANT)

    async def claim(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, status=201, content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def serve() -> None:
        app = web.Application()
        app.router.add_post(CLAIM_PATH, claim)
        app.router.add_get("/healthz", healthz)
        # The same server settings as `quanyi serve`, so only the handler differs.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    uvloop.run(serve())


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "noop":
        sys.exit("usage: python -m loadtests.drivers noop PORT")
    serve_noop(int(sys.argv[2]))
