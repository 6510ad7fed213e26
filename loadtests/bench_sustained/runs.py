"""The sustained benchmark's runs: the no-op endpoint, then each topology of the service against
fresh stores, loaded for the whole measured window with its workers running, then drained; and,
when asked, a profile of every process under the same load afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import replace
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from loadtests.bench.results import BenchError
from loadtests.bench.runner import PhaseRunner
from loadtests.bench.stores import redis_cpu_s
from loadtests.bench_sustained import profile
from loadtests.bench_sustained.results import (
    SCENARIOS,
    Options,
    Results,
    Scenario,
    SustainedRun,
)
from loadtests.bench_sustained.stores import (
    DATABASE_URL,
    PREFIX,
    PostgresCpu,
    fresh_stores,
    granted_total,
    ledger_rows,
    service_env,
    wait_ledger,
)
from loadtests.bench_sustained.watch import Watch, boundedness, drained, lags
from loadtests.drivers import WrkRun, noop_run, run_wrk, write_claims
from loadtests.procs import HOST, Child, ChildError, free_port, quanyi_argv, running, wait_http
from loadtests.seeding import SIGNER
from loadtests.stats import per_unit_us
from quanyi.stores.keys import Keys

# The claim files hold this share of the no-op endpoint's rate: above the targets (0.35 of it),
# and a run that goes faster is noticed (2xx answers beyond the grants) rather than hidden.
FILE_SHARE_OF_NOOP = 0.6
MIN_FILE_RATE = 5_000.0
LEDGER_TIMEOUT_S = 30.0


class Runner(PhaseRunner):
    """Each run a phase: one broken run must not hide the figures of the others."""

    def __init__(self, opts: Options, work_dir: Path, redis: Redis) -> None:
        self.opts = opts
        self.dir = work_dir
        self.redis = redis
        self.keys = Keys(PREFIX)
        self.results = Results()
        super().__init__(self.results.failures)

    async def wrk(self, url: str, claims: Path, seconds: int) -> WrkRun:
        return await run_wrk(url, claims, seconds, self.opts.threads, self.opts.connections)

    async def claims(self, name: str, seconds: int, seed: int) -> Path:
        """Unique signed claims for `seconds` at the file rate, signed now (the API takes a
        timestamp within 300 s, so each file is written just before it is used)."""
        path = self.dir / f"{name}.claims"
        count = int(self.file_rate() * seconds) + 1
        await asyncio.to_thread(write_claims, path, SIGNER, count, name, seed)
        return path

    def file_rate(self) -> float:
        if self.opts.max_rate:
            return self.opts.max_rate
        noop = self.results.noop.rps if self.results.noop else 20_000.0
        return max(FILE_SHARE_OF_NOOP * noop, MIN_FILE_RATE)

    async def run(self) -> Results:
        await self.phase("noop", self.noop)
        for scenario_name in self.opts.scenarios:
            scenario = SCENARIOS[scenario_name]
            for topology in self.opts.topologies:
                name = f"{scenario.name}/{topology}"
                run = await self.phase(name, functools.partial(self.sustained, scenario, topology))
                if run is not None:
                    self.results.runs[(scenario.name, topology)] = run
        return self.results

    async def noop(self) -> WrkRun:
        opts = self.opts
        run = await noop_run(
            self.dir, SIGNER, opts.warmup, opts.noop_s, opts.threads, opts.connections
        )
        self.results.noop = run
        self.say(f"no-op endpoint: {run.rps:,.0f} req/s, p99 {run.p99_ms:.1f} ms")
        return run

    async def sustained(self, scenario: Scenario, topology: str) -> SustainedRun:
        tag = f"{scenario.name}-{topology}"
        async with contextlib.AsyncExitStack() as stack:
            children: dict[str, Child] = {}

            async def start(name: str, argv: list[str], env: dict[str, str]) -> Child:
                child = await stack.enter_async_context(running(name, argv, env, self.dir))
                children[name] = child
                return child

            api_port = free_port()
            env = service_env(api_port)
            vendor_url = None
            if scenario.vendor:
                sim_port = free_port()
                vendor_url = f"http://{HOST}:{sim_port}"
                sim_argv = quanyi_argv("vendor-sim", "--host", HOST, "--port", str(sim_port))
                sim = await start("vendor-sim", sim_argv, env)
                await wait_http(sim, f"{vendor_url}/_sim/stats")
            await fresh_stores(self.redis, vendor_url)
            if topology == "run":
                api = await start("API", quanyi_argv("run", "--port", str(api_port)), env)
            else:
                api = await start("API", quanyi_argv("serve", "--port", str(api_port)), env)
                await start("ledger", quanyi_argv("worker", "ledger"), env)
                await start("fulfil", quanyi_argv("worker", "fulfil"), env)
            url = f"http://{HOST}:{api_port}"
            await wait_http(api, f"{url}/healthz", timeout_s=60.0)
            pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=2)
            stack.push_async_callback(pool.close)
            return await self.measure(scenario, topology, tag, url, children, pool)

    async def measure(
        self,
        scenario: Scenario,
        topology: str,
        tag: str,
        url: str,
        children: dict[str, Child],
        pool: asyncpg.Pool,
    ) -> SustainedRun:
        opts = self.opts

        def died() -> list[str]:
            return [f"{n} exited {c.returncode}" for n, c in children.items() if not c.alive()]

        def dead_tail() -> str:
            return next((c.tail() for c in children.values() if not c.alive()), "")

        warm = await self.claims(f"{tag}-warm", opts.warmup, 2)
        measured = await self.claims(tag, opts.duration, 3)
        await self.wrk(url, warm, opts.warmup)
        # Every group caught up with the warm-up: the workers run, and the window starts clean.
        await drained(self.redis, self.keys, opts.drain_timeout_s, died)

        pg = PostgresCpu(pool)
        cpu_before = {name: child.cpu_s() for name, child in children.items()}
        pg_before, redis_before = await pg.read(), await redis_cpu_s(self.redis)
        granted_before = await granted_total(self.redis)
        async with Watch(self.redis, self.keys, opts.sample_every_s) as watch:
            wrk = await self.wrk(url, measured, opts.duration)
            end_lags = await lags(self.redis, self.keys)
        granted = await granted_total(self.redis) - granted_before
        drain_s = await drained(self.redis, self.keys, opts.drain_timeout_s, died)
        cpu_after = {name: child.cpu_s() for name, child in children.items()}
        pg_after, redis_after = await pg.read(), await redis_cpu_s(self.redis)
        if dead := died():
            raise BenchError(f"{', '.join(dead)} under load:\n{dead_tail()}")
        await wait_ledger(pool, self.redis, LEDGER_TIMEOUT_S)

        cpu_us: dict[str, float | None] = {"wrk": wrk.client_cpu_us}
        for name in children:
            cpu_us[name] = per_unit_us(cpu_before[name], cpu_after[name], granted)
        cpu_us["Redis"] = per_unit_us(redis_before, redis_after, granted)
        cpu_us["PG"] = per_unit_us(0.0, PostgresCpu.used(pg_before, pg_after), granted)
        run = SustainedRun(
            scenario=scenario.name,
            topology=topology,
            wrk=wrk,
            granted=granted,
            end_lags=end_lags,
            worst_lag_s=watch.worst_lag_s(),
            samples=list(watch.samples),
            bounded=boundedness(watch.samples, wrk.seconds),
            drain_s=drain_s,
            ledger_rows=await ledger_rows(pool),
            cpu_us=cpu_us,
        )
        lag_text = ", ".join(
            f"{n} {lag.entries:,}/{lag.seconds:.2f} s" for n, lag in end_lags.items()
        )
        self.say(
            f"{scenario.name}, {topology}: {run.claims_per_s:,.0f} claims/s, p99"
            f" {wrk.p99_ms:.1f} ms; lag at the end {lag_text or 'n/a'}; drained in {drain_s:.1f} s"
        )
        if opts.profile_s:
            try:
                profiles = await self.profile(tag, url, children)
                run = replace(run, profiles=profiles)
            except (ChildError, OSError) as exc:
                run = replace(run, profile_error=str(exc).strip()[:300])
                self.say(f"profile: FAILED: {run.profile_error}")
        return run

    async def profile(
        self, tag: str, url: str, children: dict[str, Child]
    ) -> list[profile.Profile]:
        """py-spy on every process of ours while wrk sends the same load again."""
        tool = profile.py_spy()
        if tool is None:
            raise ChildError("py-spy not found (pip install -e '.[dev]')")
        seconds = self.opts.profile_s
        claims = await self.claims(f"{tag}-profile", seconds + 2, 4)
        load = asyncio.create_task(self.wrk(url, claims, seconds + 2))
        try:
            await asyncio.sleep(1.0)  # the load is on before sampling starts
            return list(
                await asyncio.gather(
                    *(
                        profile.record(
                            tool, child.pid, name, seconds, self.dir / f"{tag}-{name}.spy"
                        )
                        for name, child in children.items()
                    )
                )
            )
        finally:
            with contextlib.suppress(Exception):
                await load
