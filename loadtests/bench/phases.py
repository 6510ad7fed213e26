"""The claim benchmark's phases, in order, each recorded in Results: a phase that fails is
reported as such and the others still run."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from loadtests.bench.lua import claim_lua_variant
from loadtests.bench.metrics import LagGauge, histogram_totals
from loadtests.bench.report import fmt_n, fmt_s
from loadtests.bench.results import (
    ApiRun,
    BenchError,
    LuaRun,
    MemoryRun,
    Options,
    Results,
    RowLockRun,
)
from loadtests.bench.rowlock import rowlock_claims
from loadtests.bench.runner import PhaseRunner
from loadtests.bench.stores import (
    API_REDIS_DB,
    DATABASE_URL,
    LUA_REDIS_DB,
    PREFIX,
    caught_up,
    create_campaign,
    drop_database,
    fresh_database,
    granted_total,
    ledger_lag,
    outbox_groups,
    redis_client,
    redis_cpu_s,
    service_env,
    settled,
)
from loadtests.drivers import WrkRun, noop_run, run_wrk, write_claims
from loadtests.procs import (
    Child,
    free_port,
    postgres_cpu_s,
    quanyi_argv,
    running,
    wait_http,
)
from loadtests.seeding import SIGNER
from loadtests.stats import mean_between, per_unit_us
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import FULFIL_GROUP

CLAIM_BATCH, LEDGER_BATCH = "quanyi_claim_batch_size", "quanyi_ledger_batch_size"


@dataclass(frozen=True)
class ApiServer:
    workers: int
    child: Child
    url: str


@dataclass(frozen=True)
class Rig:
    """What an API run measures besides the API."""

    redis: Redis
    pool: asyncpg.Pool
    ledger: Child
    gauge_url: str


class Bench(PhaseRunner):
    def __init__(self, opts: Options, work_dir: Path) -> None:
        self.opts = opts
        self.dir = work_dir
        self.results = Results()
        super().__init__(self.results.failures)

    async def run(self) -> Results:
        self.say("preparing scratch stores (database quanyi_bench, Redis db 11 and 12)")
        api_redis, lua_redis = redis_client(API_REDIS_DB), redis_client(LUA_REDIS_DB)
        try:
            pool = await self.phase("setup", lambda: self.prepare(api_redis, lua_redis))
            if pool is None:
                return self.results
            try:
                await self.phase("noop", self.noop)
                await self.phase("lua", lambda: self.lua(lua_redis, pool))
                await lua_redis.flushdb()
                await self.phase("api", lambda: self.api_and_ledger(api_redis, pool))
            finally:
                await pool.close()
            await self.phase("rowlock", self.rowlock)
        finally:
            if not self.opts.keep:
                with contextlib.suppress(Exception):  # best effort: the next run starts afresh
                    await api_redis.flushdb()
                    await lua_redis.flushdb()
                    await drop_database()
            await api_redis.aclose()
            await lua_redis.aclose()
        return self.results

    async def prepare(self, api_redis: Redis, lua_redis: Redis) -> asyncpg.Pool:
        await api_redis.flushdb()
        await lua_redis.flushdb()
        await fresh_database()
        pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=4)
        try:
            await create_campaign(pool, api_redis)
        except BaseException:
            await pool.close()
            raise
        return pool

    async def wrk(self, url: str, claims: Path, seconds: int) -> WrkRun:
        return await run_wrk(url, claims, seconds, self.opts.threads, self.opts.connections)

    # no-op endpoint

    async def noop(self) -> WrkRun:
        opts = self.opts
        run = await noop_run(
            self.dir, SIGNER, opts.warmup, opts.duration, opts.threads, opts.connections
        )
        self.results.noop = run
        self.say(f"no-op endpoint: {run.rps:,.0f} req/s, p99 {run.p99_ms:.1f} ms")
        return run

    # claim.lua alone

    async def lua(self, redis: Redis, pool: asyncpg.Pool) -> list[LuaRun]:
        scale = self.opts.lua_scale
        variants = [
            ("1 claim per call", 1, 1, int(120_000 * scale)),
            ("1 claim per call, -P 16", 16, 1, int(300_000 * scale)),
            ("16 claims per call", 1, 16, int(15_000 * scale)),
        ]
        for label, pipeline, claims, calls in variants:
            shape = (pipeline, claims, max(calls, 1000))
            run = await claim_lua_variant(
                redis, pool, label, shape, self.opts.connections, self.say
            )
            self.results.lua.append(run)
            self.say(f"claim.lua {run.label}: {run.claims_per_s:,.0f} claims/s")
            await redis.flushdb()
        return self.results.lua

    # the API and the ledger

    async def api_and_ledger(self, redis: Redis, pool: asyncpg.Pool) -> None:
        before = await settled(redis, pool)
        metrics_port = free_port()
        gauge_url = f"http://127.0.0.1:{metrics_port}/metrics"
        env = service_env(QUANYI_WORKER_METRICS_PORT=str(metrics_port))
        async with running("ledger", quanyi_argv("worker", "ledger"), env, self.dir) as ledger:
            await wait_http(ledger, gauge_url)
            rig = Rig(redis, pool, ledger, gauge_url)
            # Enough unique claims that no run comes back to its first ones: the API cannot
            # beat the no-op endpoint per process.
            noop_rps = self.results.noop.rps if self.results.noop else 20_000
            cap = max(1.3 * noop_rps, 8_000)
            await self.phase("api-1", lambda: self.api(1, rig, cap))
            middle = await settled(redis, pool)
            one = self.results.api.get(1)
            cap = max(1.6 * noop_rps, 2.2 * (one.wrk.rps if one else 0), 12_000)
            await self.phase("api-2", lambda: self.api(2, rig, cap))
            if not ledger.alive():
                raise BenchError(f"the ledger worker died:\n{ledger.tail()}")
            await settled(redis, pool)
            # The outbox is trimmed only once every consumer group is done with it: let the
            # fulfilment worker (these grants need no vendor) catch up too, then measure.
            fulfil_argv = quanyi_argv("worker", "fulfil")
            # No metrics server: its port (the ledger's + 1) is not known to be free.
            fulfil_env = {**env, "QUANYI_WORKER_METRICS_PORT": "0"}
            async with running("fulfil", fulfil_argv, fulfil_env, self.dir) as fulfil:
                await self.phase("fulfil-drain", lambda: self.drain_fulfil(redis, fulfil))
            # The ledger records the fulfilments too before it stops.
            await settled(redis, pool, timeout_s=120.0)
        # used_memory again with every client gone, so connection buffers do not count as
        # grant data.
        memory = MemoryRun(before, await settled(redis, pool), middle)
        self.results.memory = memory
        self.say(
            f"memory: {fmt_n(memory.per_grant, ',.0f')} B/grant (used_memory), "
            f"{fmt_n(memory.keys_per_grant, ',.0f')} B/grant (MEMORY USAGE of this run's keys)"
        )

    async def drain_fulfil(self, redis: Redis, fulfil: Child, timeout_s: float = 300.0) -> None:
        keys = Keys(PREFIX)
        outstanding = (await outbox_groups(redis, keys)).get(FULFIL_GROUP, 0)
        started = time.monotonic()
        while (await outbox_groups(redis, keys)).get(FULFIL_GROUP, 0):
            if not fulfil.alive():
                raise BenchError(f"the fulfilment worker died:\n{fulfil.tail()}")
            if time.monotonic() - started > timeout_s:
                raise BenchError(f"fulfilment not caught up after {timeout_s:.0f} s")
            await asyncio.sleep(0.2)
        took = time.monotonic() - started
        self.say(
            f"fulfilment worker caught up on {outstanding:,} grants (no vendor) in {took:.1f} s"
            f" ({outstanding / max(took, 1e-9):,.0f}/s)"
        )

    @contextlib.asynccontextmanager
    async def api_server(self, workers: int, port: int) -> AsyncIterator[ApiServer]:
        argv = quanyi_argv("serve", "--port", str(port), "--workers", str(workers))
        extra = {"QUANYI_HTTP_PORT": str(port)}
        if workers > 1:
            # Set here rather than by the CLI, so the metric files go with the work directory.
            prom = self.dir / f"prometheus-{workers}"
            prom.mkdir()
            extra["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
        async with running(f"api-{workers}", argv, service_env(**extra), self.dir) as child:
            yield ApiServer(workers, child, f"http://127.0.0.1:{port}")

    async def api(self, workers: int, rig: Rig, cap_rps: float) -> ApiRun:
        async with self.api_server(workers, free_port()) as server:
            await wait_http(server.child, f"{server.url}/healthz")
            return await self.api_run(server, rig, cap_rps)

    async def api_run(self, server: ApiServer, rig: Rig, cap_rps: float) -> ApiRun:
        opts = self.opts
        tag = f"w{server.workers}"
        warm, measured = self.dir / f"{tag}-warm.claims", self.dir / f"{tag}.claims"
        warm_count, count = int(cap_rps * opts.warmup) + 1, int(cap_rps * opts.duration)
        await asyncio.to_thread(write_claims, warm, SIGNER, warm_count, f"{tag}w", 2)
        await asyncio.to_thread(write_claims, measured, SIGNER, count, tag, 3)
        await self.wrk(server.url, warm, opts.warmup)

        granted_before = await granted_total(rig.redis)
        batches_before = await histogram_totals(f"{server.url}/metrics", CLAIM_BATCH)
        ledger_before = await histogram_totals(rig.gauge_url, LEDGER_BATCH)
        api_cpu, ledger_cpu, pg_cpu = server.child.cpu_s(), rig.ledger.cpu_s(), postgres_cpu_s()
        redis_cpu = await redis_cpu_s(rig.redis)
        async with LagGauge(rig.gauge_url) as gauge:
            wrk = await self.wrk(server.url, measured, opts.duration)
            ended = time.monotonic()
            api_cpu_after = server.child.cpu_s()
            granted = await granted_total(rig.redis) - granted_before
            batches_after = await histogram_totals(f"{server.url}/metrics", CLAIM_BATCH)
            catch_up = await caught_up(rig.redis, rig.pool, ended)
            ledger_after = await histogram_totals(rig.gauge_url, LEDGER_BATCH)
        ledger_cpu_after, pg_cpu_after = rig.ledger.cpu_s(), postgres_cpu_s()
        redis_cpu_after = await redis_cpu_s(rig.redis)
        if not server.child.alive():
            raise BenchError(f"the API died under load:\n{server.child.tail()}")

        lag_max, lag_p99 = await ledger_lag(rig.pool, tag)
        run = ApiRun(
            workers=server.workers,
            wrk=wrk,
            granted=granted,
            claims_per_call=mean_between(batches_before, batches_after),
            grants_per_ledger_batch=mean_between(ledger_before, ledger_after),
            catch_up_s=catch_up,
            lag_max_s=lag_max,
            lag_p99_s=lag_p99,
            lag_gauge_max_s=gauge.max_seconds,
            api_cpu_us=per_unit_us(api_cpu, api_cpu_after, granted),
            redis_cpu_us=per_unit_us(redis_cpu, redis_cpu_after, granted),
            ledger_cpu_us=per_unit_us(ledger_cpu, ledger_cpu_after, granted),
            postgres_cpu_us=per_unit_us(pg_cpu, pg_cpu_after, granted),
        )
        self.results.api[server.workers] = run
        self.say(
            f"API, {server.workers} process(es): {wrk.rps:,.0f} claims/s, p99 {wrk.p99_ms:.1f} ms,"
            f" {wrk.non_2xx} non-2xx, {granted:,} granted; ledger caught up {fmt_s(catch_up)}"
            " after the run"
        )
        return run

    # PostgreSQL row lock

    async def rowlock(self) -> RowLockRun:
        run = await rowlock_claims(self.opts.rowlock_s, warmup_s=1.0)
        self.results.rowlock = run
        self.say(f"PostgreSQL row lock: {run.rps:,.0f} claims/s, p99 {run.p99_ms:.1f} ms")
        return run
