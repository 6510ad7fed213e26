"""`python -m loadtests.bench_goals`: card events into one API process, and what an audience
check adds to a claim, each against its target.

1. Events: `quanyi serve` (one process) on its own stores, batches of 1,000 card events over
   20,000 customers (repeats and reversals among them) sent by wrk four at a time, every goal
   evaluated: first with the two goal campaigns of a typical month live (a monthly count with
   a minimum amount, an amount over the campaign), then with four (also a weekly count of
   dining MCCs claimed by channels, and one for an audience's members). Target: >= 20,000
   events/s with the two.
2. Audience check: claims through ClaimService, in process, on two campaigns alike but for an
   audience on one, alternately, every claim a grant. The cost of a claim is the CPU this
   process and Redis spend on it; target: the audience's claims cost <= 10 % more.

Runs on database quanyi_benchgoals (migrated) and Redis db 15 under prefix qybg; it deletes
only that prefix's keys and drops only that database."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from loadtests import scratch
from loadtests.bench.metrics import http_text, metric
from loadtests.bench.report import RULE, verdict
from loadtests.drivers import run_wrk
from loadtests.procs import cpu_s, free_port, quanyi_argv, running, service_env, wait_http
from quanyi.access.channels import create_channel
from quanyi.access.signing import sign, signed_headers
from quanyi.access.staff import Staff, create_staff
from quanyi.audiences.members import body_source
from quanyi.campaigns.service import CampaignService
from quanyi.core.settings import Settings
from quanyi.inventory.readiness import mark_store_ready
from quanyi.issuance.claims import Claim, ClaimService
from quanyi.runtime import open_stores

DATABASE = "quanyi_benchgoals"
DATABASE_URL = f"postgresql://127.0.0.1:5432/{DATABASE}"
REDIS_URL = "redis://127.0.0.1:6379/15"
PREFIX = "qybg"
CORE, CORE_SECRET = "bench-core", "bench-core-secret-not-for-production"
APP, APP_SECRET = "bench-app", "bench-app-secret-not-for-production"
MARKETER = Staff("bench-marketer", "marketer", "HQ")
APPROVER = Staff("bench-approver", "approver", "HQ")
EVENTS_TARGET = 20_000.0
AUDIENCE_TARGET = 1.10
CUSTOMERS = 20_000
BATCH = 1000
IN_FLIGHT = 4
# The fastest rate the run is sized for: on a quiet day this machine took 43,000 events/s with
# the two goal campaigns, and a run that sends every batch before its time is up measures nothing.
MAX_EVENTS_PER_S = 80_000
EVENTS_DEFAULT = 700_000
# Alternate rounds of claims with and without the audience check: their medians are compared.
ROUNDS = 5
MCCS = ("5812", "5814", "5411", "5541", "4829", "5999")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_goals", description=__doc__)
    p.add_argument("--events", type=int, default=EVENTS_DEFAULT, help="card events to send")
    p.add_argument("--claims", type=int, default=20_000, help="claims per audience round")
    p.add_argument("--quick", action="store_true", help="a smoke run: 100,000 events, 3,000 claims")
    return p


def settings() -> Settings:
    return Settings(redis_url=REDIS_URL, database_url=DATABASE_URL, key_prefix=PREFIX)


async def fresh_stores() -> None:
    await scratch.fresh_database(DATABASE_URL)
    async with open_stores(settings(), consumer_groups=False) as stores:
        await clear(stores.redis)


async def clear(redis: Any) -> None:
    await scratch.clear_prefix(redis, PREFIX)


def campaign(campaign_id: str, rewards: list[dict[str, Any]]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": campaign_id,
        "name": f"bench {campaign_id}",
        "branch": "HQ",
        "starts_at": (now - timedelta(days=1)).isoformat(),
        "ends_at": (now + timedelta(days=20)).isoformat(),
        "channels": [APP],
        "rewards": rewards,
    }


def reward(reward_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": reward_id,
        "right_id": "bench-voucher",
        "stock": 100_000_000,
        "per_customer_limit": 1000,
        **fields,
    }


async def seed(members: int) -> None:
    """Staff, channels, the right, an audience of `members` customers (c0.. of the claims) and
    the live campaigns."""
    async with open_stores(settings()) as stores:
        pool = stores.pool
        for staff in (MARKETER, APPROVER):
            await create_staff(pool, staff.username, "bench-password", staff.role, "HQ")
        await create_channel(pool, CORE, CORE_SECRET, scopes=("events",))
        await create_channel(pool, APP, APP_SECRET)
        audiences = stores.audiences()
        await audiences.create(MARKETER, "bench-aud", "bench audience", "HQ")
        ids = b"".join(f"m{i:07d}\n".encode() for i in range(members))
        # The event customers e0.. are members for every other one.
        ids += b"".join(f"e{i:06d}\n".encode() for i in range(0, CUSTOMERS, 2))
        await audiences.import_members(MARKETER, "bench-aud", body_source(ids, "text/csv"))
        service = CampaignService(pool, stores.redis, stores.keys)
        await service.create_right(
            MARKETER,
            {
                "id": "bench-voucher",
                "name": "v",
                "kind": "voucher",
                "face_value": 2,
                "unit_cost": 1,
            },
        )
        await service.rights.transition(APPROVER, "bench-voucher", "admit")
        definitions = [
            campaign(
                "g-count",
                [reward("r1", goal={"window": "month", "count": 5, "min_amount": 10_000})],
            ),
            campaign(
                "g-amount",
                [
                    reward(
                        "r1", goal={"window": "campaign", "amount": 500_000, "mcc_not_in": ["4829"]}
                    )
                ],
            ),
            campaign(
                "g-dining",
                [
                    reward(
                        "r1",
                        goal={"window": "week", "count": 3, "mcc_in": ["5812", "5814"]},
                        grant="claim",
                    )
                ],
            ),
            campaign(
                "g-members",
                [reward("r1", audience_id="bench-aud", goal={"window": "month", "count": 2})],
            ),
            campaign("open", [reward("r1")]),
            campaign("members", [reward("r1", audience_id="bench-aud")]),
        ]
        for body in definitions:
            await service.create(MARKETER, body)
            await service.transition(MARKETER, body["id"], "submit")
            await service.transition(APPROVER, body["id"], "approve")
        await mark_store_ready(
            stores.redis, stores.keys, "bench: a fresh scratch store", time.time()
        )


def event_batches(total: int, tag: str) -> list[list[dict[str, Any]]]:
    """`total` events (ids starting `tag`): purchases of 20,000 customers this week, 2 % repeats,
    1 % reversals."""
    rng = random.Random(8)
    occurred = datetime.now(UTC) - timedelta(minutes=5)
    at = occurred.isoformat()
    events: list[dict[str, Any]] = []
    reversed_ids: set[str] = set()
    for i in range(total):
        roll = rng.random()
        if events and roll < 0.02:
            events.append(dict(rng.choice(events)))
            continue
        if events and roll < 0.03:
            original = rng.choice(events)
            if "reversal_of" not in original and original["event_id"] not in reversed_ids:
                reversed_ids.add(original["event_id"])
                events.append(
                    {**original, "event_id": f"{tag}rv{i}", "reversal_of": original["event_id"]}
                )
                continue
        events.append(
            {
                "event_id": f"{tag}tx{i}",
                "type": "card_transaction",
                "customer_id": f"e{rng.randrange(CUSTOMERS):06d}",
                "amount": rng.randrange(5_000, 30_000),
                "mcc": rng.choice(MCCS),
                "occurred_at": at,
            }
        )
    return [events[i : i + BATCH] for i in range(0, total, BATCH)]


async def send_events(
    url: str, batches: list[list[dict[str, Any]]]
) -> tuple[float, dict[str, int]]:
    bodies = [orjson.dumps({"events": b}) for b in batches]
    statuses: dict[str, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def sender(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            headers = signed_headers(
                CORE, CORE_SECRET, "POST", "/v1/events", int(time.time()), body
            )
            headers["Content-Type"] = "application/json"
            async with http.post(f"{url}/v1/events", data=body, headers=headers) as resp:
                reply = orjson.loads(await resp.read())
                if resp.status != 200:
                    raise RuntimeError(f"POST /v1/events answered {resp.status}: {reply}")
            # The client shares the cores with the API and Redis: it counts, and no more.
            for result in reply["results"]:
                status = result["status"]
                statuses[status] = statuses.get(status, 0) + 1
                if "granted" in result:
                    statuses["grants"] = statuses.get("grants", 0) + len(result["granted"])

    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        await asyncio.gather(*(sender(http) for _ in range(IN_FLIGHT)))
        seconds = time.perf_counter() - started
    return seconds, statuses


@dataclass(frozen=True)
class EventsRun:
    goal_campaigns: int
    events_per_s: float
    api_cpu_us: float | None  # per event
    script_us: float  # record_events.lua's time in Redis per event
    outcomes: dict[str, int]


# The goal campaigns live in each run: the two of a typical month, then all four.
SCENARIOS = (("g-count", "g-amount"), ("g-count", "g-amount", "g-dining", "g-members"))
GOAL_CAMPAIGNS = SCENARIOS[-1]


async def live_only(campaign_ids: tuple[str, ...]) -> None:
    """Pause the goal campaigns not named, resume those named."""
    async with open_stores(settings()) as stores:
        service = CampaignService(stores.pool, stores.redis, stores.keys)
        for campaign_id in GOAL_CAMPAIGNS:
            state = (await service.get(MARKETER, campaign_id))["status"]
            if campaign_id in campaign_ids and state == "paused":
                await service.transition(MARKETER, campaign_id, "resume")
            elif campaign_id not in campaign_ids and state == "approved":
                await service.transition(MARKETER, campaign_id, "pause")


async def script_usec() -> int:
    """Microseconds Redis spent in EVALSHA so far (every client's: the bench runs alone)."""
    async with open_stores(settings(), consumer_groups=False) as stores:
        stats = await stores.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("usec", 0))


EVENTS_PATH = "/v1/events"
WRK_SECONDS = 8


def write_event_requests(path: Path, batches: list[list[dict[str, Any]]]) -> None:
    """The batches as pre-signed requests for loadtests/wrk_claims.lua (it replays any signed
    POST), signed now: the API takes a timestamp within 300 s, so write them just before."""
    ts = str(int(time.time()))
    lines = [f"{ts} {CORE} {EVENTS_PATH}"]
    for batch in batches:
        body = orjson.dumps({"events": batch})
        lines.append(f"{sign(CORE_SECRET, 'POST', EVENTS_PATH, ts, body)} {body.decode()}")
    path.write_text("\n".join(lines) + "\n")


async def outcome_counts(url: str) -> dict[str, float]:
    """The API's card-event outcomes and goal grants so far, from its /metrics."""
    text = await http_text(f"{url}/metrics")
    counts = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^quanyi_card_events_total\{status="(\w+)"\} (\S+)$', text, re.M)
    }
    counts["grants"] = metric(text, "quanyi_goal_grants_total") or 0.0
    return counts


async def events_phase(total: int, work_dir: Path) -> list[EventsRun]:
    port = free_port()
    env = service_env(REDIS_URL, DATABASE_URL, PREFIX, port, QUANYI_ACCESS_LOG="false")
    runs = []
    argv = quanyi_argv("serve", "--port", str(port))
    async with running("api", argv, env, work_dir) as api:
        url = f"http://127.0.0.1:{port}"
        await wait_http(api, f"{url}/healthz")
        for n, live in enumerate(SCENARIOS):
            await live_only(live)
            batches = await asyncio.to_thread(event_batches, total, f"s{n}")
            await send_events(url, batches[:5])  # warm-up: the live list, the script cache
            # wrk sends them, as the claims bench does: the load generator must cost the two
            # cores it shares with the API and Redis as little as it can.
            requests = work_dir / f"events-{n}.requests"
            await asyncio.to_thread(write_event_requests, requests, batches[5:])
            before = await outcome_counts(url)
            cpu, script = api.cpu_s(), await script_usec()
            # Short enough that even MAX_EVENTS_PER_S would not use every batch up.
            seconds = max(1, min(WRK_SECONDS, (len(batches) - 5) * BATCH // MAX_EVENTS_PER_S))
            wrk = await run_wrk(url, requests, seconds, 1, IN_FLIGHT)
            cpu_after, script_after = api.cpu_s(), await script_usec()
            after = await outcome_counts(url)
            if wrk.non_2xx or wrk.socket_errors:
                raise RuntimeError(
                    f"POST /v1/events: {wrk.non_2xx} non-2xx, {wrk.socket_errors} errors"
                )
            if wrk.requests > len(batches) - 5:
                raise RuntimeError("wrk ran out of batches: send more (--events)")
            sent = wrk.ok * BATCH
            statuses = {k: int(v - before.get(k, 0.0)) for k, v in after.items()}
            per_event = None if cpu is None or cpu_after is None else (cpu_after - cpu) / sent * 1e6
            runs.append(
                EventsRun(
                    len(live),
                    sent / wrk.seconds,
                    per_event,
                    (script_after - script) / sent,
                    statuses,
                )
            )
            say(f"{len(live)} goal campaigns live: {sent / wrk.seconds:,.0f} events/s")
    return runs


async def audience_phase(claims: int) -> list[tuple[str, float, float]]:
    """(campaign, claims/s, CPU µs per claim of this process and Redis) per round."""
    rounds: list[tuple[str, float, float]] = []
    async with open_stores(settings()) as stores:
        service = ClaimService(stores.redis, stores.keys, stores.settings, time.time)
        await service.start()
        try:
            next_member = 0
            for campaign_id in ("open", "members") * ROUNDS:
                customers = [f"m{next_member + i:07d}" for i in range(claims)]
                next_member += claims
                redis_cpu = await _redis_cpu(stores.redis)
                own_cpu = cpu_s(pid=os.getpid()) or 0.0
                started = time.perf_counter()
                for start in range(0, claims, 500):
                    grants = await asyncio.gather(
                        *(
                            service.claim(Claim(APP, f"{campaign_id}-{c}", campaign_id, c, None))
                            for c in customers[start : start + 500]
                        )
                    )
                    if any(g.replayed for g in grants):
                        raise RuntimeError("a bench claim was replayed")
                seconds = time.perf_counter() - started
                used = (cpu_s(pid=os.getpid()) or 0.0) - own_cpu
                used += await _redis_cpu(stores.redis) - redis_cpu
                rounds.append((campaign_id, claims / seconds, used / claims * 1e6))
        finally:
            await service.close()
    return rounds


async def _redis_cpu(redis: Any) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def say(message: str) -> None:
    print(f"bench-goals: {message}", flush=True)


async def run(events: int, claims: int) -> int:
    say(f"scratch stores: database {DATABASE}, {REDIS_URL} prefix {PREFIX}")
    await fresh_stores()
    try:
        await seed(members=claims * 2 * ROUNDS)
        say(f"sending {events:,} card events to one API process, twice")
        with tempfile.TemporaryDirectory(prefix="quanyi-bench-goals-") as work_dir:
            runs = await events_phase(events, Path(work_dir))
        say(f"claims with and without an audience, {ROUNDS} rounds each")
        rounds = await audience_phase(claims)
    finally:
        async with open_stores(settings(), consumer_groups=False) as stores:
            await clear(stores.redis)
    cost = {c: statistics.median(r[2] for r in rounds if r[0] == c) for c in ("open", "members")}
    speed = {c: statistics.median(r[1] for r in rounds if r[0] == c) for c in ("open", "members")}
    ratio = cost["members"] / cost["open"]
    print(RULE)
    print("Quanyi goals: card events into one API process; a claim's audience check")
    print(RULE)
    for run in runs:
        met = run.events_per_s >= EVENTS_TARGET
        print(
            f"card events, {run.goal_campaigns} goal campaigns live   {run.events_per_s:>8,.0f}/s"
            + (f", API {run.api_cpu_us:.0f} µs CPU/event" if run.api_cpu_us is not None else "")
            + f", script {run.script_us:.0f} µs/event"
            + (f"  (target >= {EVENTS_TARGET:,.0f})  {verdict(met)}" if run is runs[0] else "")
        )
        print("    " + ", ".join(f"{k} {v:,}" for k, v in sorted(run.outcomes.items())))
    print(
        f"claims, no audience   {speed['open']:,.0f} claims/s, {cost['open']:.1f} µs CPU each"
        f" (median of {ROUNDS} rounds; this process + Redis)"
    )
    print(
        f"claims, audience      {speed['members']:,.0f} claims/s, {cost['members']:.1f} µs CPU each"
    )
    print(
        f"audience / none       {ratio:.3f} of the cost (target <= {AUDIENCE_TARGET:.2f})"
        f"  {verdict(ratio <= AUDIENCE_TARGET)}"
    )
    print(
        f"  batches of {BATCH} events sent by wrk, {IN_FLIGHT} in flight, 20,000 customers; the"
        " target is judged on the typical month's two goal campaigns"
    )
    rejected = sum(run.outcomes.get("rejected", 0) for run in runs)
    ok = runs[0].events_per_s >= EVENTS_TARGET and ratio <= AUDIENCE_TARGET and rejected == 0
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    events, claims = (100_000, 3_000) if args.quick else (args.events, args.claims)
    return asyncio.run(run(events, claims))


if __name__ == "__main__":
    sys.exit(main())
