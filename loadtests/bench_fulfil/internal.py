"""Grants of a right with no vendor: what they cost the two workers once claimed. Both workers
run and are idle first; then N grants are claimed (straight through ClaimService, in this
process), and the workers' CPU is summed from just before the claims until the ledger holds every
grant fulfilled and the fulfil group has acknowledged every entry. Redis and PostgreSQL are
shared with others on this machine: their CPU is reported beside, as measured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from loadtests.bench_fulfil.drain import _make_grants
from loadtests.bench_fulfil.plan import DATABASE_URL, KEY_PREFIX, POLL_S
from loadtests.procs import cpu_s
from loadtests.scenario import CampaignPlan
from loadtests.stack import Stack
from loadtests.stats import delta
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import FULFIL_GROUP, LEDGER_GROUP, outbox_lag

INTERNAL_TIMEOUT_S = 60.0


@dataclass
class InternalRun:
    grants: int
    seconds: float | None = None  # from the first claim until both workers were done
    fulfil_cpu_s: float | None = None
    ledger_cpu_s: float | None = None
    redis_cpu_s: float | None = None
    postgres_cpu_s: float | None = None

    def per_grant_us(self, cpu: float | None) -> float | None:
        return None if cpu is None else cpu / self.grants * 1e6


async def internal_phase(
    stack: Stack, redis: Redis, plan: CampaignPlan, count: int, say: Callable[[str], None]
) -> InternalRun:
    keys = Keys(KEY_PREFIX)
    await stack.start_fulfil()
    await stack.start_ledger()
    await _until_idle(stack, redis, keys)
    fulfil, ledger = stack.procs["fulfil"].pid, stack.procs["worker"].pid
    before = (
        cpu_s(pid=fulfil),
        cpu_s(pid=ledger),
        cpu_s(comm="redis-server"),
        cpu_s(comm="postgres"),
    )
    run = InternalRun(grants=count)
    started = time.monotonic()
    await _make_grants(redis, plan, count)
    db = await asyncpg.connect(DATABASE_URL)
    try:
        while time.monotonic() - started < INTERNAL_TIMEOUT_S:
            stack.raise_if_died()
            done = await db.fetchval(
                "SELECT count(*) FROM grants WHERE campaign_id = $1 AND status = 'fulfilled'",
                plan.id,
            )
            lag = await outbox_lag(redis, keys, FULFIL_GROUP)
            if done >= count and lag.entries == 0:
                run.seconds = time.monotonic() - started
                break
            await asyncio.sleep(POLL_S)
    finally:
        await db.close()
    after = (
        cpu_s(pid=fulfil),
        cpu_s(pid=ledger),
        cpu_s(comm="redis-server"),
        cpu_s(comm="postgres"),
    )
    run.fulfil_cpu_s, run.ledger_cpu_s, run.redis_cpu_s, run.postgres_cpu_s = (
        delta(b, a) for b, a in zip(before, after, strict=True)
    )
    say(
        f"internal: {count:,} grants claimed, fulfilled and in the ledger in {run.seconds:.1f} s"
        if run.seconds is not None
        else "internal: not within the timeout"
    )
    await stack.stop("fulfil")
    await stack.stop("worker")
    return run


async def _until_idle(stack: Stack, redis: Redis, keys: Keys, timeout_s: float = 30.0) -> None:
    """Both workers started (imports, connections: seconds of CPU that are not the grants') and
    through what earlier phases left: nothing lags, and neither spent 5% of a core over half a
    second."""
    deadline = time.monotonic() + timeout_s
    pids = [stack.procs[name].pid for name in ("fulfil", "worker")]
    while time.monotonic() < deadline:
        stack.raise_if_died()
        before = [cpu_s(pid=pid) for pid in pids]
        await asyncio.sleep(0.5)
        spent = [delta(b, cpu_s(pid=pid)) for b, pid in zip(before, pids, strict=True)]
        lags = [await outbox_lag(redis, keys, g) for g in (FULFIL_GROUP, LEDGER_GROUP)]
        if all(lag.entries == 0 for lag in lags) and all(
            s is not None and s < 0.025 for s in spent
        ):
            return
