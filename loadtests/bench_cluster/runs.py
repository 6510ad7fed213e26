"""The cluster benchmark's runs: for each target (a Redis of some masters, some shards) and
each number of API processes, fresh stores, `quanyi serve` and `quanyi worker ledger` started,
wrk replaying unique signed claims over the campaigns, the ledger caught up, CPU read, then
the in-process figure (ClaimService alone, no HTTP) against the same stores, and the
invariants checked over everything that was granted. Then the hot runs: every claim to one
campaign on the cluster, published in 1 stock part and then in 3, each master's CPU read."""

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
from quanyi.stores.keys import Keys, part_ids, shard_of
from quanyi.stores.redis import open_redis

LEDGER_TIMEOUT_S = 60.0
# Claims the in-process figure keeps in flight: enough that ClaimService batches them.
MICRO_IN_FLIGHT = 256


@dataclass(frozen=True)
class Target:
    masters: int
    shards: int
    # 0: the campaigns round-robin; K: every claim to the one hot campaign, in K stock parts
    hot_parts: int = 0

    @property
    def name(self) -> str:
        if self.hot_parts:
            return f"hot, {self.hot_parts} part{'s' if self.hot_parts > 1 else ''}"
        return f"{self.masters} master{'s' if self.masters > 1 else ''}, {self.shards} shard(s)"


TARGETS = (Target(1, 1), Target(1, stores.SHARDS), Target(3, stores.SHARDS))
# The hot campaign on the cluster, whole and split: whether splitting spreads its work.
HOT_TARGETS = (Target(3, stores.SHARDS, hot_parts=1), Target(3, stores.SHARDS, hot_parts=3))


@dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    api: tuple[int, ...]  # numbers of API processes
    connections: int
    max_rate: float  # claims/s the claim files hold
    micro_s: int  # 0: no in-process figure
    hot: bool = True  # the hot campaign's runs, 1 part and 3


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
    # Each master's share of the Redis CPU over the run (its INFO cpu growth over the sum)
    cpu_shares: tuple[float, ...] = ()
    # A hot run: the master (an index of cpu_shares) each stock part is on
    part_masters: tuple[int, ...] = ()

    @property
    def claims_per_s(self) -> float:
        return self.granted / self.wrk.seconds if self.wrk.seconds else 0.0

    @property
    def busiest_share(self) -> float | None:
        return max(self.cpu_shares) if self.cpu_shares else None


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
        self.hot_campaign: str | None = None
        self.shard_masters: list[int] = []
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f}s] {message}", flush=True)

    async def run(self) -> Results:
        # The hot runs with the most API processes only: the one pair keeps the run as long
        # as two more runs, and more API processes put more load on the hot campaign.
        runs = list(itertools.product(self.opts.api, TARGETS))
        runs += [(max(self.opts.api), t) for t in HOT_TARGETS if self.opts.hot]
        for api, target in runs:
            name = f"{target.name}, {api} API process(es)"
            try:
                await self.one(target, api)
            except (BenchError, ChildError, QuanyiError, OSError, TimeoutError) as exc:
                # One broken run must not hide the figures of the others.
                self.results.failures[name] = f"{exc.__class__.__name__}: {str(exc).strip()}"
                self.say(f"{name}: FAILED: {self.results.failures[name][:2000]}")
        return self.results

    async def hot_campaign_id(self, redis: ScratchServers, shards: int) -> str:
        """The hot campaign, picked once so its parts are on distinct masters."""
        if self.hot_campaign is None:
            self.shard_masters = await stores.shard_masters(redis, shards)
            parts = max(t.hot_parts for t in HOT_TARGETS)
            self.hot_campaign = stores.hot_campaign_id(self.shard_masters, parts)
        return self.hot_campaign

    async def one(self, target: Target, api: int) -> None:
        redis = self.servers[target.masters]
        tag = f"m{target.masters}-s{target.shards}-a{api}"
        campaigns = self.campaigns
        if target.hot_parts:
            tag += f"-h{target.hot_parts}"
            campaigns = [await self.hot_campaign_id(redis, target.shards)]
        await stores.fresh_stores(redis, target.shards, campaigns, target.hot_parts)
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
                    pool, client, keys, campaigns, LEDGER_TIMEOUT_S, target.hot_parts
                )

            hot = bool(target.hot_parts)
            warm = await self.claims(f"{tag}-warm", self.opts.warmup, 1, campaigns, hot)
            await run_wrk(url, warm, self.opts.warmup, 1, self.opts.connections)
            granted_before, _ = await caught_up()
            measured = await self.claims(tag, self.opts.duration, 2, campaigns, hot)
            by_node, api_cpu = await stores.redis_cpu_by_node(nodes), server.cpu_s()
            redis_cpu = sum(by_node)
            calls = await stores.command_calls(nodes)
            wrk = await run_wrk(url, measured, self.opts.duration, 1, self.opts.connections)
            api_after = server.cpu_s()
            if not server.alive():
                raise BenchError(f"the API exited under load:\n{server.tail()}")
            granted_after, _ = await caught_up()
            granted = granted_after - granted_before
            by_node_after = await stores.redis_cpu_by_node(nodes)
            redis_after = sum(by_node_after)
            calls_after = await stores.command_calls(nodes)
            run = HttpRun(
                target=target,
                api=api,
                wrk=wrk,
                granted=granted,
                redis_cpu_us=per_unit_us(redis_cpu, redis_after, granted),
                api_cpu_us=per_unit_us(api_cpu, api_after, granted),
                commands=per_grant(calls, calls_after, granted),
                cpu_shares=shares(by_node, by_node_after),
                part_masters=tuple(
                    self.shard_masters[shard_of(p, target.shards)]
                    for p in part_ids(campaigns[0], target.hot_parts)
                )
                if hot
                else (),
            )
            self.results.http[(target, api)] = run
            self.say(
                f"{target.name}, {api} API: {run.claims_per_s:,.0f} claims/s, p50"
                f" {wrk.p50_ms:.1f} ms, p99 {wrk.p99_ms:.1f} ms, Redis"
                f" {_us(run.redis_cpu_us)}/claim, {wrk.non_2xx} non-2xx,"
                f" {max(wrk.ok - granted, 0)} replayed"
                + (f", busiest master {run.busiest_share:.2f} of Redis CPU" if hot else "")
            )
            if self.opts.micro_s and not hot and target not in self.results.micro:
                micro = await self.micro(target, client, keys, nodes, caught_up)
                self.results.micro[target] = micro
                self.say(
                    f"{target.name}, in process: {micro.claims_per_s:,.0f} claims/s, Redis"
                    f" {_us(micro.redis_cpu_us)}/claim, {micro.failed} failed"
                )
            self.results.checked[(target, api)] = await caught_up()

    async def claims(
        self, name: str, seconds: int, seed: int, campaigns: list[str], unique: bool
    ) -> Path:
        path = self.dir / f"{name}.claims"
        count = int(self.opts.max_rate * seconds) + 1
        await asyncio.to_thread(stores.write_claims, path, campaigns, count, name, seed, unique)
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


def shares(before: list[float], after: list[float]) -> tuple[float, ...]:
    """Each master's share of the CPU the masters used between two readings (none when they
    used none)."""
    used = [max(a - b, 0.0) for b, a in zip(before, after, strict=True)]
    total = sum(used)
    return tuple(u / total for u in used) if total > 0 else ()


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} us"
