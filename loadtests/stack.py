"""The service under test, started from scratch: its own database and Redis db (or a scratch
Redis Cluster of its own), wiped first, then a simulated vendor, the API, the ledger worker and
the fulfilment worker as child processes that are always stopped on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from redis.asyncio import Redis, RedisCluster

from loadtests.procs import HOST, Child, answers_200, free_port, quanyi_argv
from loadtests.scratch_redis import CLUSTER_PORTS
from quanyi.stores.redis import cluster_client
from quanyi.vendors.rsa import generate_keypair

DATABASE_URL = "postgresql://127.0.0.1:5432/quanyi_loadtest"
REDIS_URL = "redis://127.0.0.1:6379/10"
KEY_PREFIX = "qylt"
STOP_GRACE_S = 10.0
LOCK_PATH = Path(tempfile.gettempdir()) / "quanyi-loadtest.lock"
# Only these databases are ever dropped and recreated.
SCRATCH_DATABASES = ("quanyi_loadtest", "quanyi_benchfulfil")
# Children that run until told to stop; any of them dying fails the run.
LONG_RUNNING = ("vendor-sim", "api", "worker", "fulfil")


class SetupError(RuntimeError):
    """The service or its data could not be set up: the run stops before any load."""


@contextlib.contextmanager
def exclusive(path: Path = LOCK_PATH) -> Iterator[None]:
    """One run at a time on this machine: a second one would wipe the first one's stores."""
    with path.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SetupError("another load test is running on this machine") from None
        yield


async def reset_database(url: str = DATABASE_URL) -> None:
    """Drop and recreate a scratch database. Refuses any other name, so a typo in the URL can
    never wipe a real one."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if name not in SCRATCH_DATABASES or parts.hostname not in ("127.0.0.1", "localhost"):
        raise SetupError(f"refusing to drop {url}: only local {', '.join(SCRATCH_DATABASES)}")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def reset_redis(url: str = REDIS_URL, cluster: bool = False) -> None:
    """Empty the load-test Redis db (db 10 only: other dbs on the server are left alone), or with
    `cluster` every master of a scratch cluster (loadtests/scratch_redis.py: only its ports)."""
    if cluster:
        parts = urlsplit(url)
        if parts.hostname != HOST or parts.port not in CLUSTER_PORTS:
            raise SetupError(f"refusing to flush {url}: only a local scratch cluster is flushed")
        nodes = cluster_client(url)
        try:
            await nodes.flushall(target_nodes=RedisCluster.PRIMARIES)
        finally:
            await nodes.aclose()
        return
    if not url.startswith(f"redis://{HOST}:") or not url.endswith("/10"):
        raise SetupError(f"refusing to flush {url}: only the local db 10 is flushed")
    redis = Redis.from_url(url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


@dataclass(frozen=True)
class VendorKeys:
    """A throwaway key pair each side, in the run's folder."""

    vendor_private: Path  # the simulator signs its responses and callbacks with it
    vendor_public: str  # registered with the vendor: verifies those
    ours_private: Path  # registered as the vendor's signing_key: signs our calls to it

    @property
    def signing_key(self) -> str:
        return f"file:{self.ours_private}"


def make_vendor_keys(folder: Path) -> VendorKeys:
    """Fresh pairs for the simulator and for us; the private halves readable by us only."""
    vendor_private, vendor_public = generate_keypair()
    ours_private, _ours_public = generate_keypair()
    paths = folder / "vendor-private.pem", folder / "our-private.pem"
    for path, pem in zip(paths, (vendor_private, ours_private), strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pem)
    return VendorKeys(paths[0], vendor_public, paths[1])


@dataclass
class Stack:
    """Stores, ports, environment and log files of one run."""

    workdir: Path
    database_url: str = DATABASE_URL
    redis_url: str = REDIS_URL
    # A Redis Cluster at redis_url (any node of it), and the service's virtual shards: the
    # settings redis_cluster and redis_shards of every process.
    redis_cluster: bool = False
    redis_shards: int = 1
    key_prefix: str = KEY_PREFIX
    api_port: int = field(default_factory=free_port)
    worker_metrics_port: int = field(default_factory=free_port)
    sim_port: int = field(default_factory=free_port)
    procs: dict[str, Child] = field(default_factory=dict)
    # Children that serve HTTP, with the URL that answers 200 once they do.
    health: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def sim_url(self) -> str:
        return f"http://{HOST}:{self.sim_port}"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUANYI_")}
        env.update(
            QUANYI_DATABASE_URL=self.database_url,
            QUANYI_REDIS_URL=self.redis_url,
            QUANYI_REDIS_CLUSTER="true" if self.redis_cluster else "false",
            QUANYI_REDIS_SHARDS=str(self.redis_shards),
            QUANYI_KEY_PREFIX=self.key_prefix,
            QUANYI_HTTP_HOST=HOST,
            QUANYI_HTTP_PORT=str(self.api_port),
            QUANYI_WORKER_METRICS_PORT=str(self.worker_metrics_port),
            QUANYI_LOG_LEVEL="WARNING",
            # New channels and campaigns are seen within a second.
            QUANYI_CHANNEL_REFRESH_S="1",
            # The seed approves its campaigns with one approver, whatever their amount (dual
            # control has its own tests: tests/test_dual_control.py).
            QUANYI_DUAL_APPROVAL_ABOVE="0",
        )
        env.update(extra or {})
        return env

    def redis_client(self) -> Redis:
        """A client on the run's Redis, replies decoded: a cluster client on a cluster, which
        answers what the audits send (typed as the one client they know, as the service does)."""
        if self.redis_cluster:
            return cast(Redis, cluster_client(self.redis_url))
        return Redis.from_url(self.redis_url, decode_responses=True)

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    async def run(self, name: str, *argv: str, timeout_s: float = 60.0) -> None:
        """Run a command to completion; its output goes to its log file."""
        child = await self.start(name, *argv)
        try:
            rc = await asyncio.wait_for(child.wait(), timeout_s)
        finally:
            await self.stop(name)
        if rc != 0:
            raise SetupError(f"{name} exited {rc}:\n{self.tail(name)}")

    async def start(
        self, name: str, *argv: str, env: Mapping[str, str] | None = None, log: bool = True
    ) -> Child:
        """Start a child; with `log`, its output goes to <workdir>/<name>.log, else to ours."""
        log_path = self.log_path(name) if log else None
        self.procs[name] = child = await Child.start(name, list(argv), self.env(env), log_path)
        return child

    async def stop(self, name: str) -> None:
        child = self.procs.pop(name, None)
        if child is not None:
            await child.stop(STOP_GRACE_S)

    async def stop_all(self) -> None:
        # Newest first, so the load stops before the API it targets. Shielded: this runs in
        # `finally` also when the run was cancelled (Ctrl-C, SIGTERM).
        for name in reversed(list(self.procs)):
            await asyncio.shield(self.stop(name))

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_path(name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    async def start_api(self) -> None:
        await self.start("api", *quanyi_argv("serve"))
        self.health["api"] = f"{self.base_url}/readyz"

    async def start_vendor_sim(
        self,
        keys: VendorKeys | None,
        latency_ms: float,
        name: str = "vendor-sim",
        port: int | None = None,
    ) -> str:
        """A simulated vendor (on `sim_port` unless given one); with `keys`, it signs its
        responses and callbacks. Returns its base URL."""
        port = port or self.sim_port
        url = f"http://{HOST}:{port}"
        argv = quanyi_argv("vendor-sim", "--host", HOST, "--port", str(port))
        argv += ["--latency-ms", f"{latency_ms:g}", "--error-rate", "0"]
        if keys is not None:
            argv += ["--key-file", str(keys.vendor_private)]
        await self.start(name, *argv)
        self.health[name] = f"{url}/_sim/stats"
        return url

    async def start_fulfil(self) -> None:
        # It would serve metrics on the ledger worker's port + 1, which free_port() never
        # checked: 0 turns them off.
        env = {"QUANYI_WORKER_METRICS_PORT": "0"}
        await self.start("fulfil", *quanyi_argv("worker", "fulfil"), env=env)

    async def start_ledger(self) -> None:
        await self.start("worker", *quanyi_argv("worker", "ledger"))

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until every child that serves HTTP answers 200 (the API's /readyz, the simulators'
        stats). Fails early when any child died. (The workers have nothing to ask: a consumer
        shows in its group only once it read an entry.)"""
        waiting = [name for name in self.health if name in self.procs]
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while waiting and time.monotonic() < deadline:
                self.raise_if_died()
                waiting = [n for n in waiting if not await answers_200(http, self.health[n])]
                if waiting:
                    await asyncio.sleep(0.2)
        if waiting:
            name = waiting[0]
            raise SetupError(f"{name} not ready after {timeout_s:g} s:\n{self.tail(name)}")

    def raise_if_died(self) -> None:
        """Any child still listed has not been told to stop: it exiting is a failure."""
        for name, child in self.procs.items():
            if child.returncode is not None:
                raise SetupError(f"{name} exited {child.returncode}:\n{self.tail(name)}")

    def check_alive(self, names: tuple[str, ...] = LONG_RUNNING) -> list[str]:
        """Those of the long-running children that died before being told to stop."""
        return [
            f"{name} exited {child.returncode if child else '(not started)'}"
            for name in names
            if (child := self.procs.get(name)) is None or child.returncode is not None
        ]


async def sim_stats(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """What a simulated vendor counted: calls, grants issued, effects, most in flight."""
    async with http.get(f"{url}/_sim/stats") as resp:
        if resp.status != 200:
            raise SetupError(f"simulator stats: HTTP {resp.status}")
        return await resp.json()


async def sim_config(http: aiohttp.ClientSession, url: str, **config: Any) -> None:
    """Change a simulated vendor's behaviour (latency, error rate) while it runs."""
    async with http.post(f"{url}/_sim/config", json=config) as resp:
        if resp.status != 200:
            raise SetupError(f"simulator config: HTTP {resp.status} {await resp.text()}")


@contextlib.asynccontextmanager
async def service(
    stack: Stack,
    before_start: Callable[[], Awaitable[None]],
    vendor_keys: VendorKeys,
    sim_latency_ms: float,
) -> AsyncIterator[Stack]:
    """Fresh stores and schema, `before_start` (accounts the API reads at start-up), then the
    vendor simulator, the API, the ledger and the fulfilment worker; all stopped however we
    leave (the simulator last, after the worker that calls it)."""
    await reset_database(stack.database_url)
    await reset_redis(stack.redis_url, stack.redis_cluster)
    try:
        await stack.run("migrate", *quanyi_argv("migrate"))
        await before_start()
        await stack.start_vendor_sim(vendor_keys, sim_latency_ms)
        await stack.start_api()
        await stack.start_ledger()
        await stack.start_fulfil()
        yield stack
    finally:
        await stack.stop_all()
