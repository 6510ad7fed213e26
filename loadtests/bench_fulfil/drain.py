"""Throughput: a backlog of grants made with no worker running, then one fulfilment worker
timed through it, and the ledger worker's catch-up afterwards."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import asyncpg
import orjson
from redis.asyncio import Redis

from loadtests import seed
from loadtests.bench_fulfil.plan import (
    CLAIM_CHUNK,
    DATABASE_URL,
    DRAIN_TIMEOUT_S,
    KEY_PREFIX,
    LEDGER_TIMEOUT_S,
    POLL_S,
    THROUGHPUT_LATENCY_MS,
    Lane,
    settings,
)
from loadtests.procs import busy_cores, cpu_s, machine_ticks
from loadtests.scenario import CampaignPlan
from loadtests.stack import Stack, sim_config, sim_stats
from loadtests.stats import delta
from quanyi.core.clock import system_clock
from quanyi.issuance.claims import Claim, ClaimService
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import FULFIL_GROUP, outbox_lag


def fmt_s(seconds: float | None) -> str:
    return f"{seconds:.1f} s" if seconds is not None else "not within the timeout"


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


async def drain(
    stack: Stack,
    redis: Redis,
    http: aiohttp.ClientSession,
    lane: Lane,
    count: int,
    say: Callable[[str], None],
) -> Drain:
    """With no worker running: make `count` grants, start one fulfilment worker and time it
    through the backlog; then stop it and let the ledger worker catch up."""
    await stack.stop("fulfil")
    await stack.stop("worker")
    await sim_config(http, lane.sim_url, latency_ms=THROUGHPUT_LATENCY_MS)
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
            at_first = done, cpu_s(pid=pid), machine_ticks()
            result.first_s = now
        if result.p99_s is None and done >= 0.99 * count:
            result.p99_s = now
        if done >= count or now > DRAIN_TIMEOUT_S:
            break
    result.fulfilled, result.last_s = done, now
    if at_first is not None:
        result.in_window = done - at_first[0]
        result.cpu_window_s = delta(at_first[1], cpu_s(pid=pid))
        result.busy_cores = busy_cores(at_first[2], machine_ticks())
    stats = await sim_stats(http, lane.sim_url)
    # Each lane has a simulator of its own, fresh for its backlog: its peak is this drain's.
    result.peak_in_flight = stats["max_in_flight"]
    result.calls = sum(stats["calls"].values())
    result.issued = stats["issued"]
    result.issued_twice = sum(1 for n in stats["effects"].values() if n > 1)
    result.dead = sum([await redis.xlen(shard.fulfil_dead) for shard in keys.shards])
    result.errors = _error_lines(stack, "fulfil") - errors_before
    say(
        f"{lane.name}: {done:,}/{count:,} fulfilled in {now:.1f} s"
        f" ({result.per_s:,.0f}/s after the first, at {result.first_s:.1f} s)"
    )
    await _worker_idle(redis, keys)
    await stack.stop("fulfil")
    result.ledger_s = await _ledger_catch_up(stack, lane.plan.id, count, done)
    say(f"{lane.name}: ledger caught up in {fmt_s(result.ledger_s)}")
    return result


class _Outcomes:
    """Fulfilments and failures of one campaign appended to the outbox since a point: an outcome
    appends exactly one entry, so each is counted once, whatever else the outbox holds. Every
    shard's stream is read from a point of its own (entry ids are per stream)."""

    def __init__(self, redis: Redis, campaign_id: str, after: dict[str, str]) -> None:
        self._redis = redis
        self._campaign_id = campaign_id
        self._after = after  # outbox stream -> the last entry id read
        self._seen = 0

    @classmethod
    async def from_now(cls, redis: Redis, keys: Keys, campaign_id: str) -> _Outcomes:
        after: dict[str, str] = {}
        for shard in keys.shards:
            last = await redis.xrevrange(shard.outbox, "+", "-", count=1)
            after[shard.outbox] = str(last[0][0]) if last else "0-0"
        return cls(redis, campaign_id, after)

    async def count(self) -> int:
        """Reads only what was appended since the last call."""
        for outbox, after in self._after.items():
            while entries := await self._redis.xrange(outbox, f"({after}", "+", 1000):
                for _entry_id, fields in entries:
                    event = orjson.loads(fields["e"]) if "e" in fields else {}
                    if event.get("campaign_id") == self._campaign_id and event.get("event") in (
                        "fulfilled",
                        "failed",
                    ):
                        self._seen += 1
                after = self._after[outbox] = str(entries[-1][0])
        return self._seen


async def _unfinished(redis: Redis, keys: Keys) -> int:
    """Outbox entries the fulfil group has yet to finish, and grants parked for a retry, over
    every shard."""
    lag = await outbox_lag(redis, keys, FULFIL_GROUP)
    return lag.entries + sum([await redis.zcard(shard.fulfil_retry) for shard in keys.shards])


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
    claims = ClaimService(redis, Keys(KEY_PREFIX), settings(), system_clock)
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
    await stack.start_ledger()
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


def _error_lines(stack: Stack, name: str) -> int:
    """Lines a child logged at error level: a fulfilment task that crashed logs one."""
    try:
        text = stack.log_path(name).read_text(errors="replace")
    except OSError:
        return 0
    return text.count('"level":"error"')
