"""`python -m loadtests.bench_fulfil [--quick]`: how fast one fulfilment worker empties a backlog,
and how long claims that wait for their fulfilment take.

Self-contained like the load test: database quanyi_benchfulfil (recreated), Redis db 12 (only
keys under the `qybf` prefix are touched), free ports, children always stopped.

  throughput   N grants made before one fulfilment worker starts, against a vendor answering in
               50 ms with max_in_flight 256: fulfilments/s against the bound in-flight/latency.
               Once unsigned (the worker's own cost), once RSA-signed both ways as registered
               vendors are (each side signs every call: CPU the unsigned run does not spend).
  wait_ms      API, ledger and fulfilment workers running, a 20 ms signed vendor: claims with
               wait_ms 800 at modest concurrency, latency and the share that came back fulfilled.

The ledger worker is off while a backlog drains, so the figure is the fulfilment worker's alone;
it starts afterwards and its catch-up time is reported too. Everything shares the machine's
cores with the load generator, Redis and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from redis.asyncio import Redis

from access.signing import signed_headers
from inventory.keys import Keys
from issuance.claims import Claim, ClaimService
from ledger.lag import outbox_lag
from loadtests import seed
from loadtests.scenario import CampaignPlan, RewardPlan
from loadtests.stack import (
    BIN,
    HOST,
    SetupError,
    Stack,
    exclusive,
    free_port,
    make_vendor_keys,
    reset_database,
)
from quanyi.clock import system_clock
from quanyi.settings import Settings
from vendors.fulfil import FULFIL_GROUP

DATABASE_URL = "postgresql://127.0.0.1:5432/quanyi_benchfulfil"
REDIS_URL = "redis://127.0.0.1:6379/12"
KEY_PREFIX = "qybf"
LOCK_PATH = Path(tempfile.gettempdir()) / "quanyi-benchfulfil.lock"

THROUGHPUT_LATENCY_MS = 50.0
MAX_IN_FLIGHT = 256
WAIT_LATENCY_MS = 20.0
WAIT_MS = 800
TARGET_PER_S = 2_000.0
# Phases that overrun these are reported as they stand rather than waited for, so a broken
# worker cannot stretch the run past a couple of minutes.
DRAIN_TIMEOUT_S = 40.0
LEDGER_TIMEOUT_S = 20.0
WAIT_PHASE_MAX_S = 30.0
POLL_S = 0.05
CLAIM_CHUNK = 2_000


@dataclass(frozen=True)
class Options:
    grants: int
    signed_grants: int
    claims: int
    concurrency: int


@dataclass(frozen=True)
class Lane:
    """One vendor the benchmark sends grants to: its simulator, its campaign."""

    name: str
    vendor_id: str
    sim_url: str
    plan: CampaignPlan
    signed: bool


@dataclass
class Drain:
    """One backlog: times are from the worker's start, as the polls of the outbox saw them."""

    grants: int
    fulfilled: int = 0
    first_s: float = 0.0  # the first outcome recorded
    p99_s: float | None = None  # 99% of them recorded
    last_s: float = 0.0  # the last poll
    in_window: int = 0  # outcomes recorded between the first poll that saw one and the last
    cpu_window_s: float | None = None  # the worker's CPU in that window
    busy_cores: float | None = None  # the whole machine's, in that window
    peak_in_flight: int = 0
    calls: int = 0
    issued: int = 0
    issued_twice: int = 0
    dead: int = 0
    errors: int = 0  # error lines the worker logged meanwhile
    carried_over: int = 0  # outbox entries or retries an earlier drain left, done in this one
    ledger_s: float | None = None

    @property
    def complete(self) -> bool:
        return self.fulfilled == self.grants

    @property
    def per_s(self) -> float:
        # Start-up (imports, connections, loading vendors and routes) is not fulfilling.
        window = self.last_s - self.first_s
        return self.in_window / window if window > 0 else 0.0

    @property
    def overall_per_s(self) -> float:
        return self.fulfilled / self.last_s if self.last_s else 0.0

    @property
    def cpu_us(self) -> float | None:
        if self.cpu_window_s is None or not self.in_window:
            return None
        return self.cpu_window_s / self.in_window * 1e6


@dataclass
class WaitRun:
    claims: int
    seconds: float
    latencies_ms: list[float]
    statuses: dict[str, int]
    errors: int


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_fulfil", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller backlogs and fewer claims")
    p.add_argument("--grants", type=int, help="unsigned backlog (default 20,000; quick 5,000)")
    p.add_argument("--signed-grants", type=int, help="signed backlog (default 4,000; quick 1,000)")
    p.add_argument("--claims", type=int, help="claims with wait_ms (default 2,000; quick 500)")
    p.add_argument("--concurrency", type=int, default=16, help="claims in flight (default 16)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    opts = Options(
        grants=args.grants or (5_000 if args.quick else 20_000),
        signed_grants=args.signed_grants or (1_000 if args.quick else 4_000),
        claims=args.claims or (500 if args.quick else 2_000),
        concurrency=args.concurrency,
    )
    if min(opts.grants, opts.signed_grants, opts.claims, opts.concurrency) < 1:
        print("grants, claims and concurrency must be positive", file=sys.stderr)
        return 2
    try:
        with exclusive(LOCK_PATH):
            return asyncio.run(_bench(opts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench_fulfil: stopped; the children were shut down", file=sys.stderr)
        return 130
    except SetupError as exc:
        print(f"bench_fulfil: {exc}", file=sys.stderr)
        return 1
    except aiohttp.ClientError as exc:
        print(f"bench_fulfil: lost a child: {exc!r}", file=sys.stderr)
        return 1


async def _bench(opts: Options) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    stack = Stack(
        Path(tempfile.mkdtemp(prefix="quanyi-benchfulfil-")),
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        key_prefix=KEY_PREFIX,
    )
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {message}", flush=True)

    say(f"logs in {stack.workdir}")
    await reset_database(DATABASE_URL)
    await clear_prefix(REDIS_URL, KEY_PREFIX)
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            secret, plain, signed = await _setup(stack, http)
            drains = {}
            for lane, count in ((plain, opts.grants), (signed, opts.signed_grants)):
                drains[lane.name] = await _drain(stack, redis, http, lane, count, say)
            wait = await _wait_phase(stack, http, secret, signed, opts, say)
    finally:
        await redis.aclose()
        await stack.stop_all()
    print(_report(opts, drains, wait))
    return 0


async def _setup(stack: Stack, http: aiohttp.ClientSession) -> tuple[str, Lane, Lane]:
    """Schema, accounts, two simulators (one signing), the API, and a vendor and a campaign
    for each simulator. Returns the channel secret and the two lanes."""
    await stack.run("migrate", str(BIN / "quanyi"), "migrate")
    passwords, secret = await seed.accounts(DATABASE_URL)
    keys = make_vendor_keys(stack.workdir)
    plain_url = await stack.start_vendor_sim(None, THROUGHPUT_LATENCY_MS)
    signed_url = await stack.start_vendor_sim(
        keys, THROUGHPUT_LATENCY_MS, name="vendor-sim-signed", port=free_port()
    )
    await stack.start_api()
    await stack.wait_ready()
    plain = Lane("unsigned", "bf-plain", plain_url, _plan("bf-plain", "bf-plain"), signed=False)
    signed = Lane("RSA-signed", "bf-signed", signed_url, _plan("bf-signed", "bf-signed"), True)
    admin, marketer, approver = [
        await seed.Admin.login(http, stack.base_url, user, passwords[user])
        for user in (seed.ADMIN, seed.MARKETER, seed.APPROVER)
    ]
    for lane in (plain, signed):
        vendor_keys = keys if lane.signed else None
        await seed.vendor(admin, lane.vendor_id, lane.sim_url, vendor_keys, MAX_IN_FLIGHT)
        await seed.campaign(marketer, approver, lane.plan)
    return secret, plain, signed


async def _wait_phase(
    stack: Stack, http: aiohttp.ClientSession, secret: str, lane: Lane, opts: Options, say: Any
) -> WaitRun:
    """Everything running, the lane's vendor at WAIT_LATENCY_MS: claims that wait."""
    await stack.stop("fulfil")
    await stack.stop("worker")
    await _sim_config(http, lane.sim_url, latency_ms=WAIT_LATENCY_MS)
    await stack.start("worker", str(BIN / "quanyi"), "worker", "ledger")
    await stack.start_fulfil()
    await asyncio.sleep(1.0)  # both workers past their start-up, at their first read
    stack.raise_if_died()
    say(f"{opts.claims:,} claims with wait_ms {WAIT_MS}, {opts.concurrency} at a time")
    wait = await _wait_claims(http, stack.base_url, secret, lane.plan, opts)
    stack.raise_if_died()
    return wait


def _settings() -> Settings:
    return Settings(redis_url=REDIS_URL, database_url=DATABASE_URL, key_prefix=KEY_PREFIX)


def _plan(campaign_id: str, vendor_id: str) -> CampaignPlan:
    """Stock and budget nobody exhausts; one grant per customer, each claim a new customer."""
    reward = RewardPlan(
        "r1", f"{campaign_id}-voucher", 10, 10_000_000, per_customer_limit=1, vendor_id=vendor_id
    )
    return CampaignPlan(
        id=campaign_id,
        name=f"Fulfilment benchmark {campaign_id}",
        reward=reward,
        budget=reward.unit_cost * reward.stock,
        customers=reward.stock,
        customer_prefix=f"{campaign_id}-c-",
    )


async def clear_prefix(url: str, prefix: str) -> None:
    """Delete this benchmark's keys only: db 12 is shared with `make bench`."""
    if not url.startswith(f"redis://{HOST}:") or prefix != KEY_PREFIX:
        raise SetupError(f"refusing to clear {prefix}:* at {url}")
    redis = Redis.from_url(url)
    try:
        batch = []
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await redis.unlink(*batch)
                batch.clear()
        if batch:
            await redis.unlink(*batch)
    finally:
        await redis.aclose()


# --- throughput ---------------------------------------------------------------------------


async def _drain(
    stack: Stack, redis: Redis, http: aiohttp.ClientSession, lane: Lane, count: int, say: Any
) -> Drain:
    """With no worker running: make `count` grants, start one fulfilment worker and time it
    through the backlog; then stop it and let the ledger worker catch up."""
    await stack.stop("fulfil")
    await stack.stop("worker")
    await _sim_config(http, lane.sim_url, latency_ms=THROUGHPUT_LATENCY_MS)
    made = time.monotonic()
    await _make_grants(redis, lane.plan, count)
    say(f"{lane.name}: {count:,} grants made in {time.monotonic() - made:.1f} s; worker starts")
    keys = Keys(KEY_PREFIX)
    outcomes = await _Outcomes.from_now(redis, keys, lane.plan.id)
    errors_before = _error_lines(stack, "fulfil")
    result = Drain(grants=count, carried_over=await _unfinished(redis, keys) - count)
    start = time.monotonic()
    await stack.start_fulfil()
    pid = stack.procs["fulfil"].pid
    at_first: tuple[int, float | None, tuple[int, int] | None] | None = None
    while True:
        await asyncio.sleep(POLL_S)
        stack.raise_if_died()
        now = time.monotonic() - start
        done = await outcomes.count()
        if done and at_first is None:
            at_first = done, _cpu_s(pid), _machine_ticks()
            result.first_s = now
        if result.p99_s is None and done >= 0.99 * count:
            result.p99_s = now
        if done >= count or now > DRAIN_TIMEOUT_S:
            break
    result.fulfilled, result.last_s = done, now
    if at_first is not None:
        result.in_window = done - at_first[0]
        result.cpu_window_s = _delta(at_first[1], _cpu_s(pid))
        result.busy_cores = _busy_cores(at_first[2], _machine_ticks())
    stats = await _sim_stats(http, lane.sim_url)
    # Each lane has a simulator of its own, fresh for its backlog: its peak is this drain's.
    result.peak_in_flight = stats["max_in_flight"]
    result.calls = sum(stats["calls"].values())
    result.issued = stats["issued"]
    result.issued_twice = sum(1 for n in stats["effects"].values() if n > 1)
    result.dead = await redis.xlen(keys.fulfil_dead)
    result.errors = _error_lines(stack, "fulfil") - errors_before
    say(
        f"{lane.name}: {done:,}/{count:,} fulfilled in {now:.1f} s"
        f" ({result.per_s:,.0f}/s after the first, at {result.first_s:.1f} s)"
    )
    await _worker_idle(redis, keys)
    await stack.stop("fulfil")
    result.ledger_s = await _ledger_catch_up(stack, lane.plan.id, count, done)
    say(f"{lane.name}: ledger caught up in {_fmt_s(result.ledger_s)}")
    return result


class _Outcomes:
    """Fulfilments and failures of one campaign appended to the outbox since a point: an outcome
    appends exactly one entry, so each is counted once, whatever else the outbox holds."""

    def __init__(self, redis: Redis, keys: Keys, campaign_id: str, after_id: str) -> None:
        self._redis = redis
        self._outbox = keys.outbox
        self._campaign_id = campaign_id
        self._after = after_id
        self._seen = 0

    @classmethod
    async def from_now(cls, redis: Redis, keys: Keys, campaign_id: str) -> _Outcomes:
        last = await redis.xrevrange(keys.outbox, "+", "-", count=1)
        return cls(redis, keys, campaign_id, last[0][0] if last else "0-0")

    async def count(self) -> int:
        """Reads only what was appended since the last call."""
        while entries := await self._redis.xrange(self._outbox, f"({self._after}", "+", 1000):
            for _entry_id, fields in entries:
                event = orjson.loads(fields["e"]) if "e" in fields else {}
                if event.get("campaign_id") == self._campaign_id and event.get("event") in (
                    "fulfilled",
                    "failed",
                ):
                    self._seen += 1
            self._after = entries[-1][0]
        return self._seen


async def _unfinished(redis: Redis, keys: Keys) -> int:
    """Outbox entries the fulfil group has yet to finish, and grants parked for a retry."""
    lag = await outbox_lag(redis, keys, FULFIL_GROUP)
    return lag.entries + await redis.zcard(keys.fulfil_retry)


async def _worker_idle(redis: Redis, keys: Keys, timeout_s: float = 10.0) -> None:
    """The worker also reads back the outcomes it appended (to acknowledge them): let it, so the
    next drain does not start with this one's leftovers. Bounded: a stalled worker's are
    reported by the next drain instead."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not await _unfinished(redis, keys):
            return
        await asyncio.sleep(0.1)


async def _make_grants(redis: Redis, plan: CampaignPlan, count: int) -> None:
    """Straight through ClaimService (claim.lua in batches, as the API would), which is faster
    than the API and not what is being measured."""
    claims = ClaimService(redis, Keys(KEY_PREFIX), _settings(), system_clock)
    await claims.start()
    try:
        for low in range(0, count, CLAIM_CHUNK):
            await asyncio.gather(
                *(
                    claims.claim(
                        Claim(
                            channel_id=seed.CHANNEL_ID,
                            request_id=uuid.uuid4().hex,
                            campaign_id=plan.id,
                            customer_id=f"{plan.customer_prefix}{i:07d}",
                            reward_id=plan.reward.id,
                        )
                    )
                    for i in range(low, min(low + CLAIM_CHUNK, count))
                )
            )
    finally:
        await claims.close()


async def _ledger_catch_up(
    stack: Stack, campaign_id: str, grants: int, outcomes: int
) -> float | None:
    """Start the ledger worker and time it until the campaign's grants and the outcomes the
    fulfilment worker recorded for them are all in the ledger."""
    started = time.monotonic()
    await stack.start("worker", str(BIN / "quanyi"), "worker", "ledger")
    db = await asyncpg.connect(DATABASE_URL)
    try:
        while time.monotonic() - started < LEDGER_TIMEOUT_S:
            stack.raise_if_died()
            rows, settled = await db.fetchrow(
                "SELECT count(*), count(*) FILTER (WHERE status <> 'granted') FROM grants"
                " WHERE campaign_id = $1",
                campaign_id,
            )
            if rows >= grants and settled >= outcomes:
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        return None
    finally:
        await db.close()


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far, from /proc (Linux only)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    try:
        ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


def _busy_cores(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """How many cores were busy between two readings: other people's work shows here."""
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def _delta(before: float | None, after: float | None) -> float | None:
    return after - before if before is not None and after is not None else None


def _error_lines(stack: Stack, name: str) -> int:
    """Lines a child logged at error level: a fulfilment task that crashed logs one."""
    try:
        text = stack.log_path(name).read_text(errors="replace")
    except OSError:
        return 0
    return text.count('"level":"error"')


async def _sim_stats(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/_sim/stats") as resp:
        if resp.status != 200:
            raise SetupError(f"simulator stats: HTTP {resp.status}")
        return await resp.json()


async def _sim_config(http: aiohttp.ClientSession, url: str, **config: Any) -> None:
    async with http.post(f"{url}/_sim/config", json=config) as resp:
        if resp.status != 200:
            raise SetupError(f"simulator config: HTTP {resp.status} {await resp.text()}")


# --- claims that wait ---------------------------------------------------------------------


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
                    "request_id": uuid.uuid4().hex,
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


# --- report -------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p of them at or below it."""
    ordered = sorted(values)
    rank = min(max(math.ceil(p * len(ordered)), 1), len(ordered))
    return ordered[rank - 1]


def _fmt_s(seconds: float | None) -> str:
    return f"{seconds:.1f} s" if seconds is not None else "not within the timeout"


def _drain_rows(name: str, d: Drain, bound: float) -> list[tuple[str, str]]:
    rate = d.per_s
    p99 = f"{d.p99_s:.1f} s" if d.p99_s is not None else "-"
    rows = [
        ("", ""),
        (f"one fulfilment worker, {name}", f"vendor {THROUGHPUT_LATENCY_MS:g} ms"),
        ("  backlog", f"{d.grants:,} grants, made before the worker started"),
        (
            "  recorded (from worker start)",
            f"first {d.first_s:.1f} s, 99% {p99}, "
            + (
                f"all {d.last_s:.1f} s"
                if d.complete
                else f"only {d.fulfilled:,} by {d.last_s:.0f} s"
            ),
        ),
        ("  fulfilments/s after the first", f"{rate:,.0f}  ({d.overall_per_s:,.0f} from start)"),
        ("  bound: max_in_flight / latency", f"{bound:,.0f}  ({MAX_IN_FLIGHT} / 50 ms)"),
        ("  ratio to the bound", f"{rate / bound:.2f}"),
        (f"  target >= {TARGET_PER_S:,.0f}/s", "met" if rate >= TARGET_PER_S else "NOT met"),
    ]
    if d.cpu_us is not None:
        ceiling = 1e6 / d.cpu_us
        rows.append(
            ("  worker CPU per fulfilment", f"{d.cpu_us:,.0f} us: {ceiling:,.0f}/s on a whole core")
        )
    if d.busy_cores is not None:
        rows.append(("  machine busy meanwhile", f"{d.busy_cores:.1f} of {os.cpu_count()} cores"))
    if d.carried_over > 0:
        rows.append(("  left by the drain before", f"{d.carried_over:,} entries or retries"))
    once = d.issued == d.grants and not d.issued_twice
    rows += [
        ("  most calls in flight at the vendor", str(d.peak_in_flight)),
        ("  vendor calls", f"{d.calls:,} ({d.calls - d.issued:,} repeated a grant)"),
        (
            "  issued exactly once at the vendor",
            f"{'yes' if once else 'NO'} ({d.issued:,} issued, {d.issued_twice} more than once)",
        ),
        ("  worker errors logged / dead letters", f"{d.errors:,} / {d.dead:,}"),
        ("  ledger catch-up afterwards", _fmt_s(d.ledger_s)),
    ]
    return rows


def _wait_rows(opts: Options, wait: WaitRun) -> list[tuple[str, str]]:
    rows = [
        ("", ""),
        (
            f"claims with wait_ms {WAIT_MS}, {WAIT_LATENCY_MS:g} ms signed vendor",
            f"API + ledger + fulfil, {opts.concurrency} at a time",
        ),
        (
            "  claims",
            f"{wait.claims:,} in {wait.seconds:.1f} s ({wait.claims / wait.seconds:,.0f}/s)",
        ),
    ]
    if wait.claims < opts.claims:
        rows.append(("  not sent", f"{opts.claims - wait.claims:,} (past {WAIT_PHASE_MAX_S:g} s)"))
    lat = wait.latencies_ms
    if lat:
        p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
        rows.append(("  latency p50 / p99 / max", f"{p50:.0f} / {p99:.0f} / {max(lat):.0f} ms"))
    fulfilled = wait.statuses.get("fulfilled", 0)
    share = fulfilled / wait.claims if wait.claims else 0.0
    others = ", ".join(f"{k} {v:,}" for k, v in sorted(wait.statuses.items()) if k != "fulfilled")
    rows += [
        ("  returned fulfilled", f"{share:.1%} ({fulfilled:,})"),
        ("  otherwise", others or "none"),
    ]
    return rows


def _report(opts: Options, drains: dict[str, Drain], wait: WaitRun) -> str:
    bound = MAX_IN_FLIGHT / (THROUGHPUT_LATENCY_MS / 1000)
    rows: list[tuple[str, str]] = []
    for name, d in drains.items():
        rows += _drain_rows(name, d, bound)
    rows += _wait_rows(opts, wait)
    width = max(len(label) for label, _ in rows) + 2
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = ["", "=" * 78, "Quanyi fulfilment benchmark", "=" * 78]
    lines.append(
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores shared by every process"
        f" (load average {load})"
    )
    lines += [f"{label:<{width}}{value}".rstrip() for label, value in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
