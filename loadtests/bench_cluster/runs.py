"""The cluster benchmark's runs: for each target (a Redis of some masters, some shards) and
each number of API processes, fresh stores, `quanyi serve` and `quanyi worker ledger` started,
wrk replaying unique signed claims over the campaigns, the ledger caught up, CPU read, then
the in-process figure (ClaimService alone, no HTTP) against the same stores, and the
invariants checked over everything that was granted."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from loadtests.bench.results import BenchError
from loadtests.bench_cluster import stores
from loadtests.drivers import WrkRun, run_wrk
from loadtests.procs import HOST, ChildError, free_port, quanyi_argv, running, wait_http
from loadtests.scratch_redis import ScratchServers
from loadtests.stats import per_unit_us
from quanyi.core.errors import QuanyiError
from quanyi.issuance.claims import Claim, ClaimService
from quanyi.stores.keys import Keys
from quanyi.stores.redis import open_redis

LEDGER_TIMEOUT_S = 60.0
# Claims the in-process figure keeps in flight: enough that ClaimService batches them.
MICRO_IN_FLIGHT = 256


@dataclass(frozen=True)
class Target:
    masters: int
    shards: int

    @property
    def name(self) -> str:
        return f"{self.masters} master{'s' if self.masters > 1 else ''}, {self.shards} shard(s)"


TARGETS = (Target(1, 1), Target(1, stores.SHARDS), Target(3, stores.SHARDS))


@dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    api: tuple[int, ...]  # numbers of API processes
    connections: int
    max_rate: float  # claims/s the claim files hold
    micro_s: int  # 0: no in-process figure


@dataclass(frozen=True)
class HttpRun:
    target: Target
    api: int
    wrk: WrkRun
    granted: int
    redis_cpu_us: float | None  # per grant, until the ledger caught up
    api_cpu_us: float | None
    # Redis commands per grant, over the masters: the most frequent few
    commands: dict[str, float] = field(default_factory=dict)

    @property
    def claims_per_s(self) -> float:
        return self.granted / self.wrk.seconds if self.wrk.seconds else 0.0


@dataclass(frozen=True)
class MicroRun:
    target: Target
    granted: int
    failed: int
    seconds: float
    redis_cpu_us: float | None

    @property
    def claims_per_s(self) -> float:
        return self.granted / self.seconds if self.seconds else 0.0


@dataclass
class Results:
    http: dict[tuple[Target, int], HttpRun] = field(default_factory=dict)
    micro: dict[Target, MicroRun] = field(default_factory=dict)
    checked: dict[tuple[Target, int], tuple[int, int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


class Runner:
    def __init__(self, opts: Options, work_dir: Path, servers: dict[int, ScratchServers]) -> None:
        self.opts = opts
        self.dir = work_dir
        self.servers = servers
        self.campaigns = stores.campaign_ids()
        self.results = Results()
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f}s] {message}", flush=True)

    async def run(self) -> Results:
        for api, target in itertools.product(self.opts.api, TARGETS):
            name = f"{target.name}, {api} API process(es)"
            try:
                await self.one(target, api)
            except (BenchError, ChildError, QuanyiError, OSError, TimeoutError) as exc:
                # One broken run must not hide the figures of the others.
                self.results.failures[name] = f"{exc.__class__.__name__}: {str(exc).strip()}"
                self.say(f"{name}: FAILED: {self.results.failures[name][:2000]}")
        return self.results

    async def one(self, target: Target, api: int) -> None:
        redis = self.servers[target.masters]
        tag = f"m{target.masters}-s{target.shards}-a{api}"
        await stores.fresh_stores(redis, target.shards, self.campaigns)
        port = free_port()
        extra = {}
        if api > 1:
            prom = self.dir / f"prometheus-{tag}"
            prom.mkdir()
            extra["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
        env = stores.service_env(redis, target.shards, port, **extra)
        serve = quanyi_argv("serve", "--port", str(port), "--workers", str(api))
        async with contextlib.AsyncExitStack() as stack:
            ledger = await stack.enter_async_context(
                running(f"ledger-{tag}", quanyi_argv("worker", "ledger"), env, self.dir)
            )
            server = await stack.enter_async_context(running(f"api-{tag}", serve, env, self.dir))
            url = f"http://{HOST}:{port}"
            await wait_http(server, f"{url}/healthz", timeout_s=60.0)
            client = await open_redis(stores.settings(redis, target.shards))
            stack.push_async_callback(client.aclose)
            pool = await asyncpg.create_pool(stores.DATABASE_URL, min_size=1, max_size=2)
            stack.push_async_callback(pool.close)
            nodes = stores.masters(redis)
            for node in nodes:
                stack.push_async_callback(node.aclose)
            keys = Keys(stores.PREFIX, shards=target.shards)

            async def caught_up() -> tuple[int, int]:
                if not ledger.alive():
                    raise BenchError(f"the ledger worker exited:\n{ledger.tail()}")
                return await stores.check_invariants(
                    pool, client, keys, self.campaigns, LEDGER_TIMEOUT_S
                )

            warm = await self.claims(f"{tag}-warm", self.opts.warmup, 1)
            await run_wrk(url, warm, self.opts.warmup, 1, self.opts.connections)
            granted_before, _ = await caught_up()
            measured = await self.claims(tag, self.opts.duration, 2)
            redis_cpu, api_cpu = await stores.redis_cpu_s(nodes), server.cpu_s()
            calls = await stores.command_calls(nodes)
            wrk = await run_wrk(url, measured, self.opts.duration, 1, self.opts.connections)
            api_after = server.cpu_s()
            if not server.alive():
                raise BenchError(f"the API exited under load:\n{server.tail()}")
            granted_after, _ = await caught_up()
            granted = granted_after - granted_before
            redis_after = await stores.redis_cpu_s(nodes)
            calls_after = await stores.command_calls(nodes)
            run = HttpRun(
                target=target,
                api=api,
                wrk=wrk,
                granted=granted,
                redis_cpu_us=per_unit_us(redis_cpu, redis_after, granted),
                api_cpu_us=per_unit_us(api_cpu, api_after, granted),
                commands=per_grant(calls, calls_after, granted),
            )
            self.results.http[(target, api)] = run
            self.say(
                f"{target.name}, {api} API: {run.claims_per_s:,.0f} claims/s, p50"
                f" {wrk.p50_ms:.1f} ms, p99 {wrk.p99_ms:.1f} ms, Redis"
                f" {_us(run.redis_cpu_us)}/claim, {wrk.non_2xx} non-2xx,"
                f" {max(wrk.ok - granted, 0)} replayed"
            )
            if self.opts.micro_s and target not in self.results.micro:
                micro = await self.micro(target, client, keys, nodes, caught_up)
                self.results.micro[target] = micro
                self.say(
                    f"{target.name}, in process: {micro.claims_per_s:,.0f} claims/s, Redis"
                    f" {_us(micro.redis_cpu_us)}/claim, {micro.failed} failed"
                )
            self.results.checked[(target, api)] = await caught_up()

    async def claims(self, name: str, seconds: int, seed: int) -> Path:
        path = self.dir / f"{name}.claims"
        count = int(self.opts.max_rate * seconds) + 1
        await asyncio.to_thread(stores.write_claims, path, self.campaigns, count, name, seed)
        return path

    async def micro(
        self,
        target: Target,
        client: Redis,
        keys: Keys,
        nodes: list[Redis],
        caught_up: Callable[[], Awaitable[tuple[int, int]]],
    ) -> MicroRun:
        """ClaimService in this process, MICRO_IN_FLIGHT claims at once over the campaigns:
        the claim path without HTTP, so Redis does the same work per claim and this process's
        Python is the only client (it, not Redis, is what bounds the rate)."""
        service = ClaimService(
            client, keys, stores.settings(self.servers[target.masters], target.shards), time.time
        )
        await service.start()
        granted = failed = 0
        rng = random.Random(3)
        seq = itertools.count()
        end = time.monotonic() + self.opts.micro_s

        async def lane() -> None:
            nonlocal granted, failed
            while time.monotonic() < end:
                i = next(seq)
                claim = Claim(
                    channel_id=stores.CHANNEL,
                    request_id=f"micro-{target.masters}-{i}",
                    campaign_id=self.campaigns[i % len(self.campaigns)],
                    customer_id=f"cu{rng.randrange(stores.CUSTOMERS):07d}",
                    reward_id=None,
                )
                try:
                    await service.claim(claim)
                    granted += 1
                except QuanyiError:
                    failed += 1

        try:
            await caught_up()
            cpu, started = await stores.redis_cpu_s(nodes), time.monotonic()
            await asyncio.gather(*(lane() for _ in range(MICRO_IN_FLIGHT)))
            seconds = time.monotonic() - started
            await caught_up()
            cpu_us = per_unit_us(cpu, await stores.redis_cpu_s(nodes), granted)
        finally:
            await service.close()
        return MicroRun(target, granted, failed, seconds, cpu_us)


def per_grant(before: dict[str, int], after: dict[str, int], granted: int) -> dict[str, float]:
    """The five commands sent most per grant between two readings of INFO commandstats."""
    if granted <= 0:
        return {}
    grown = {c: (n - before.get(c, 0)) / granted for c, n in after.items()}
    top = sorted(grown.items(), key=lambda kv: -kv[1])[:5]
    return {c: n for c, n in top if n > 0}


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} us"
