"""Claims that wait for their fulfilment (wait_ms), with every worker running."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from loadtests import seed
from loadtests.bench_fulfil.plan import WAIT_LATENCY_MS, WAIT_MS, WAIT_PHASE_MAX_S, Lane, Options
from loadtests.clients import new_id
from loadtests.scenario import CampaignPlan
from loadtests.stack import Stack, sim_config
from quanyi.access.signing import signed_headers


@dataclass
class WaitRun:
    claims: int
    seconds: float
    latencies_ms: list[float]
    statuses: dict[str, int]
    errors: int


async def wait_phase(
    stack: Stack,
    http: aiohttp.ClientSession,
    secret: str,
    lane: Lane,
    opts: Options,
    say: Callable[[str], None],
) -> WaitRun:
    """Everything running, the lane's vendor at WAIT_LATENCY_MS: claims that wait."""
    await stack.stop("fulfil")
    await stack.stop("worker")
    await sim_config(http, lane.sim_url, latency_ms=WAIT_LATENCY_MS)
    await stack.start_ledger()
    await stack.start_fulfil()
    await asyncio.sleep(1.0)  # both workers past their start-up, at their first read
    stack.raise_if_died()
    say(f"{opts.claims:,} claims with wait_ms {WAIT_MS}, {opts.concurrency} at a time")
    wait = await _wait_claims(http, stack.base_url, secret, lane.plan, opts)
    stack.raise_if_died()
    return wait


async def _wait_claims(
    http: aiohttp.ClientSession, base_url: str, secret: str, plan: CampaignPlan, opts: Options
) -> WaitRun:
    """`opts.claims` signed claims with wait_ms, `opts.concurrency` at a time, new customers
    each (beyond those the backlog used), timed from send to the full answer. No new claim is
    sent after WAIT_PHASE_MAX_S."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    queue = iter(range(opts.claims))
    offset = 5_000_000  # customer numbers the throughput phase never reached
    deadline = time.monotonic() + WAIT_PHASE_MAX_S

    async def client() -> None:
        nonlocal errors
        for n in queue:
            if time.monotonic() > deadline:
                return
            body = json.dumps(
                {
                    # Not uuid4().hex: one in a few hundred holds a digit run the API refuses
                    # as a possible card number (400).
                    "request_id": new_id(),
                    "campaign_id": plan.id,
                    "customer_id": f"{plan.customer_prefix}{offset + n:07d}",
                    "reward_id": plan.reward.id,
                    "wait_ms": WAIT_MS,
                }
            ).encode()
            headers = signed_headers(
                seed.CHANNEL_ID, secret, "POST", "/v1/claims", int(time.time()), body
            )
            headers["Content-Type"] = "application/json"
            sent = time.perf_counter()
            try:
                async with http.post(f"{base_url}/v1/claims", data=body, headers=headers) as resp:
                    reply = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                errors += 1
                statuses["no answer"] = statuses.get("no answer", 0) + 1
                continue
            latencies.append((time.perf_counter() - sent) * 1000)
            status = str(reply.get("status")) if resp.status == 201 else f"HTTP {resp.status}"
            errors += resp.status != 201
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(opts.concurrency)))
    sent = sum(statuses.values())
    return WaitRun(sent, time.perf_counter() - started, latencies, statuses, errors)
