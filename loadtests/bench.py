"""`make bench`: throughput and latency of the claim path on this machine, all from one run.

Phases, each against scratch stores (database quanyi_bench, Redis db 11 and 12, prefix qyb):

  noop     a bare aiohttp + uvloop endpoint answering 201: the framework's ceiling
  lua      lua/claim.lua alone, driven by redis-benchmark with EVALSHA (FCALL of the same code
           when another client keeps flushing the script cache), with the arguments
           ClaimService builds, recorded rather than rebuilt here
  api-1    `quanyi serve`, one process, wrk replaying unique pre-signed claims
  api-2    `quanyi serve --workers 2`, the same
  ledger   `quanyi worker ledger` runs through both API phases: catch-up time and lag
  memory   Redis bytes per grant once the ledger has caught up and the outbox is trimmed
  rowlock  the same claim as a PostgreSQL row-lock transaction, 64 concurrent asyncpg tasks

The load generator shares the two cores with the service, Redis and PostgreSQL, so the ratios
between figures of one run, and the CPU time per claim of each process, mean more than any
absolute rate.

    python -m loadtests.bench [--duration S] [--quick] [--threads N] [--connections N] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from access.channels import create_channel
from access.signing import sign
from access.staff import Staff, create_staff
from campaigns.service import CampaignService
from inventory.keys import Keys
from issuance.claims import Claim, ClaimService
from ledger.lag import LEDGER_GROUP, trim_outbox
from quanyi.db import migrate
from quanyi.settings import Settings
from vendors.fulfil import FULFIL_GROUP

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = ROOT / "loadtests" / "wrk_claims.lua"
CLAIM_LUA = ROOT / "lua" / "claim.lua"

PG_ADMIN_URL = "postgresql://127.0.0.1:5432/postgres"
DATABASE = "quanyi_bench"
DATABASE_URL = f"postgresql://127.0.0.1:5432/{DATABASE}"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
API_REDIS_DB, LUA_REDIS_DB = 11, 12
PREFIX = "qyb"

CHANNEL = "bench-app"
CHANNEL_SECRET = "bench-channel-secret-not-for-production"
STAFF_PASSWORD = "bench-password"
RIGHT = "bench-voucher"
CAMPAIGN = "bench"
REWARD = "r1"
CLAIM_PATH = "/v1/claims"
# Customers are drawn from a pool this large; the limit is far above what a draw can reach, and
# the stock far above what a run can grant, so every claim is decided the whole way to a grant.
CUSTOMERS = 1_000_000
PER_CUSTOMER_LIMIT = 1_000
STOCK = 100_000_000

TARGET_API_RPS = 10_000
TARGET_API_P99_MS = 10.0
TARGET_NOOP_RATIO = 0.30
TARGET_WORKERS2_RPS = 16_000
TARGET_LEDGER_LAG_S = 1.0
TARGET_BYTES_PER_GRANT = 150

CATCH_UP_TIMEOUT_S = 60.0
CLAIM_LIBRARY, CLAIM_FUNCTION = "qyb_bench", "qyb_bench_claim"
CLAIM_BATCH, LEDGER_BATCH = "quanyi_claim_batch_size", "quanyi_ledger_batch_size"
ROWLOCK_TASKS = 64

T = TypeVar("T")


class BenchError(RuntimeError):
    """A phase could not run; the others still do."""


@dataclass(frozen=True)
class Options:
    duration: int  # measured seconds of each wrk phase
    warmup: int
    threads: int
    connections: int
    lua_scale: float  # redis-benchmark request counts, relative to a 15 s run
    rowlock_s: int
    keep: bool


# results


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    client_cpu_us: float | None = None  # CPU of wrk per request
    busy_cores: float | None = None  # the whole machine's, during the run
    server_cpu_us: float | None = None  # CPU of the server per request

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        """2xx responses per second: a refused claim is not a claim served."""
        return self.ok / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class ApiRun:
    workers: int
    wrk: WrkRun
    granted: int
    claims_per_call: float | None
    grants_per_ledger_batch: float | None
    catch_up_s: float | None
    lag_max_s: float | None
    lag_p99_s: float | None
    lag_gauge_max_s: float | None
    # CPU per grant, from the start of the measured run until the ledger caught up
    api_cpu_us: float | None
    redis_cpu_us: float | None
    ledger_cpu_us: float | None
    postgres_cpu_us: float | None

    @property
    def replayed(self) -> int:
        return max(self.wrk.ok - self.granted, 0)


@dataclass(frozen=True)
class LuaRun:
    label: str
    calls_per_s: float
    claims_per_call: int
    granted: int
    expected: int
    redis_cpu_us: float | None  # Redis CPU per claim

    @property
    def claims_per_s(self) -> float:
        return self.calls_per_s * self.claims_per_call


@dataclass(frozen=True)
class RowLockRun:
    claims: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.claims / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Settled:
    """Redis once the ledger has caught up and the outbox is trimmed as far as it may be."""

    used_memory: int
    held: dict[str, int]  # consumer group -> outbox entries it has not acknowledged
    grants: int
    keys: dict[str, tuple[int, int]]  # key family -> (keys, MEMORY USAGE bytes)

    def key_bytes(self, family: str | None = None, *, without: str | None = None) -> int:
        return sum(
            size
            for name, (_count, size) in self.keys.items()
            if (family is None or name == family) and name != without
        )


def per_grant(before: Settled, after: Settled, grown: int) -> float | None:
    grants = after.grants - before.grants
    return grown / grants if grants > 0 else None


@dataclass(frozen=True)
class MemoryRun:
    before: Settled
    after: Settled  # with the API and the worker stopped
    middle: Settled | None  # between the two API runs

    @property
    def grants(self) -> int:
        return self.after.grants - self.before.grants

    @property
    def per_grant(self) -> float | None:
        return per_grant(self.before, self.after, self.after.used_memory - self.before.used_memory)

    @property
    def per_grant_trimmed(self) -> float | None:
        """As if the outbox were trimmed: the grants' cost once every consumer caught up."""
        outbox = self.after.key_bytes("outbox") - self.before.key_bytes("outbox")
        grown = self.after.used_memory - self.before.used_memory - outbox
        return per_grant(self.before, self.after, grown)

    @property
    def keys_per_grant(self) -> float | None:
        return per_grant(self.before, self.after, self.after.key_bytes() - self.before.key_bytes())

    @property
    def marginal(self) -> float | None:
        """Key bytes per grant of the second API run alone, the outbox aside: what a grant costs
        once the buckets exist, as in a campaign under way."""
        if self.middle is None:
            return None
        grown = self.after.key_bytes(without="outbox") - self.middle.key_bytes(without="outbox")
        return per_grant(self.middle, self.after, grown)


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


@dataclass
class Results:
    noop: WrkRun | None = None
    lua: list[LuaRun] = field(default_factory=list)
    api: dict[int, ApiRun] = field(default_factory=dict)
    memory: MemoryRun | None = None
    rowlock: RowLockRun | None = None
    failures: dict[str, str] = field(default_factory=dict)


# child processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Child:
    """A child process in a session of its own, so stopping it also stops what it forked."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log = self.log_path.open("wb")
        try:
            self._proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait()
        # A forked API process outliving its parent would keep the port and Redis connections.
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def cpu_s(self) -> float | None:
        return processes_cpu_s(pgid=self._proc.pid)

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def processes_cpu_s(pgid: int | None = None, comm: str | None = None) -> float | None:
    """CPU seconds used so far by the live processes of a process group, or of a name
    (Linux /proc)."""
    ticks = 0
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # gone since the listing
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        values = fields.split()
        if (pgid is not None and int(values[2]) == pgid) or (comm is not None and name == comm):
            ticks += int(values[11]) + int(values[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s() -> float | None:
    """Every PostgreSQL process's, other users' sessions included."""
    return processes_cpu_s(comm="postgres")


def per_unit_us(before: float | None, after: float | None, units: int) -> float | None:
    if before is None or after is None or units <= 0:
        return None
    return (after - before) / units * 1e6


async def redis_cpu_s(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@contextlib.contextmanager
def running(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Iterator[Child]:
    child = Child(name, argv, env, log_dir)
    try:
        yield child
    finally:
        child.stop()


def quanyi_argv(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("quanyi")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "quanyi.cli"]
    return [*base, *args]


def service_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        QUANYI_REDIS_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/{API_REDIS_DB}",
        QUANYI_DATABASE_URL=DATABASE_URL,
        QUANYI_KEY_PREFIX=PREFIX,
        QUANYI_HTTP_HOST="127.0.0.1",
        QUANYI_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


async def wait_http(child: Child, url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if not child.alive():
                raise BenchError(f"{child.name} exited during start-up:\n{child.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise BenchError(f"{child.name} did not answer {url} within {timeout_s:.0f} s:\n{child.tail()}")


async def http_text(url: str) -> str:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return await resp.text()


def metric(text: str, name: str) -> float | None:
    """The value of an unlabelled sample in Prometheus text format."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


# the no-op endpoint


def serve_noop(port: int) -> None:
    """The framework alone: reads the body, answers 201 with a grant-sized JSON body."""
    import uvloop
    from aiohttp import web

    body = orjson.dumps(
        {
            "grant_id": "01HZY3Q4V5W6X7Y8Z9A0B1C2D3",
            "campaign_id": CAMPAIGN,
            "reward_id": REWARD,
            "right_id": RIGHT,
            "customer_id": "cu0000000",
            "channel_id": CHANNEL,
            "status": "granted",
            "granted_at": "2025-01-01T00:00:00.000Z",
            "replayed": False,
        }
    )

    async def claim(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, status=201, content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def serve() -> None:
        app = web.Application()
        app.router.add_post(CLAIM_PATH, claim)
        app.router.add_get("/healthz", healthz)
        # The same server settings as `quanyi serve`, so only the handler differs.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    uvloop.run(serve())


# pre-signed claims and wrk


def write_claims(path: Path, count: int, tag: str, seed: int) -> None:
    """`count` unique signed claims for wrk_claims.lua, signed now: the API accepts a
    timestamp within 300 s, so write them just before the run."""
    rng = random.Random(seed)
    ts = str(int(time.time()))
    lines = [f"{ts} {CHANNEL} {CLAIM_PATH}"]
    for i in range(count):
        body = orjson.dumps(
            {
                "request_id": f"{tag}-{i}",
                "campaign_id": CAMPAIGN,
                "customer_id": f"cu{rng.randrange(CUSTOMERS):07d}",
            }
        )
        lines.append(f"{sign(CHANNEL_SECRET, 'POST', CLAIM_PATH, ts, body)} {body.decode()}")
    path.write_text("\n".join(lines) + "\n")


async def run_wrk(url: str, claims: Path, seconds: int, opts: Options) -> WrkRun:
    argv = [
        "wrk",
        f"-t{opts.threads}",
        f"-c{opts.connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        str(claims),
        str(opts.threads),
    ]
    # wrk is the only child reaped during the run, so the children's CPU grows by its alone.
    cpu, machine = resource.getrusage(resource.RUSAGE_CHILDREN), machine_ticks()
    out, err = await run_tool(argv)
    after, machine_after = resource.getrusage(resource.RUSAGE_CHILDREN), machine_ticks()
    wrk_cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    line = next((ln for ln in out.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if line is None:
        raise BenchError(f"wrk printed no result:\n{out}\n{err}")
    r = json.loads(line.removeprefix("WRK_RESULT "))
    return WrkRun(
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        non_2xx=r["status"],
        socket_errors=r["connect"] + r["read"] + r["write"] + r["timeout"],
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        p999_ms=r["p999_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        client_cpu_us=per_unit_us(0.0, wrk_cpu_s, r["requests"]),
        busy_cores=busy_cores(machine, machine_after),
    )


def machine_ticks() -> tuple[int, int] | None:
    """(busy, all) CPU ticks of the whole machine so far, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    everything = user + nice + system + idle + iowait + irq + softirq + steal
    return everything - idle - iowait, everything


def busy_cores(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


async def run_tool(argv: list[str]) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled: do not leave the load generator running
            proc.kill()
            await proc.wait()
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"{argv[0]} exited {proc.returncode}:\n{stdout}\n{stderr}")
    return stdout, stderr


# scratch stores


def redis_client(db: int) -> Redis:
    return Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, decode_responses=True)


async def fresh_database() -> None:
    await drop_database()
    await migrate(DATABASE_URL)


async def drop_database() -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()


async def create_campaign(pool: asyncpg.Pool, redis: Redis) -> None:
    """A channel and an approved campaign, through the same workflow staff use."""
    await create_staff(pool, "bench-marketer", STAFF_PASSWORD, "marketer", "HQ")
    await create_staff(pool, "bench-approver", STAFF_PASSWORD, "approver", "HQ")
    marketer = Staff("bench-marketer", "marketer", "HQ")
    approver = Staff("bench-approver", "approver", "HQ")
    await create_channel(pool, CHANNEL, CHANNEL_SECRET)
    service = CampaignService(pool, redis, Keys(PREFIX))
    await service.create_right(
        marketer,
        {
            "id": RIGHT,
            "name": "bench voucher",
            "kind": "voucher",
            "face_value": 200,
            "unit_cost": 100,
        },
    )
    now = datetime.now(UTC)
    await service.create(
        marketer,
        {
            "id": CAMPAIGN,
            "name": "bench campaign",
            "branch": "HQ",
            "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(days=7)).isoformat(),
            "channels": [CHANNEL],
            "rewards": [
                {
                    "id": REWARD,
                    "right_id": RIGHT,
                    "stock": STOCK,
                    "per_customer_limit": PER_CUSTOMER_LIMIT,
                }
            ],
        },
    )
    await service.transition(marketer, CAMPAIGN, "submit")
    await service.transition(approver, CAMPAIGN, "approve")


async def granted_total(redis: Redis) -> int:
    return int(await redis.hget(Keys(PREFIX).campaign(CAMPAIGN), f"r:{REWARD}:granted") or 0)


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


def key_family(key: str) -> str:
    if key.startswith(f"{PREFIX}:idem:"):
        return "idempotency"
    if ":cu:" in key:
        return "customer totals"
    if ":cd:" in key or ":rd:" in key:
        return "daily counters"
    if key.startswith(f"{PREFIX}:outbox"):
        return "outbox"
    if key.startswith(f"{PREFIX}:pending"):
        return "pending grants"
    return "campaigns"


async def keys_memory(redis: Redis) -> dict[str, tuple[int, int]]:
    """(keys, bytes) per key family of this run: unlike used_memory, blind to other users of
    the server, but also blind to the server's own per-key tables (main and expires dicts)."""
    families: dict[str, tuple[int, int]] = {}
    batch: list[str] = []

    async def measure() -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.memory_usage(key, samples=0)
            sizes = await pipe.execute()
        for key, size in zip(batch, sizes, strict=True):
            count, total = families.get(key_family(key), (0, 0))
            families[key_family(key)] = (count + 1, total + (size or 0))
        batch.clear()

    async for key in redis.scan_iter(match=f"{PREFIX}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await measure()
    if batch:
        await measure()
    return families


async def settled(
    redis: Redis, pool: asyncpg.Pool, keys_of: Settled | None = None, timeout_s: float = 30.0
) -> Settled:
    """Waits for the ledger group to acknowledge every outbox entry, then trims the outbox the
    way the worker's house-keeping does: never past what any consumer group acknowledged.
    `keys_of`: an earlier measurement whose key sizes still hold, to skip a scan."""
    keys = Keys(PREFIX)
    deadline = time.monotonic() + timeout_s
    while (groups := await outbox_groups(redis, keys)).get(LEDGER_GROUP):
        if time.monotonic() > deadline:
            raise BenchError(f"the ledger still had outbox entries after {timeout_s:.0f} s")
        await asyncio.sleep(0.1)
    await trim_outbox(redis, keys)
    return Settled(
        used_memory=await used_memory(redis),
        held={name: n for name, n in groups.items() if name != LEDGER_GROUP and n},
        grants=await pool.fetchval("SELECT count(*) FROM grants"),
        keys=keys_of.keys if keys_of else await keys_memory(redis),
    )


async def outbox_groups(redis: Redis, keys: Keys) -> dict[str, int]:
    """Consumer group -> outbox entries it has not acknowledged (pending or not yet read)."""
    try:
        groups = await redis.xinfo_groups(keys.outbox)
    except ResponseError:  # no outbox yet
        return {}
    counts = {}
    for group in groups:
        lag = group.get("lag")
        if lag is None:  # Redis could not count it: count what follows the last delivery
            after = f"({group['last-delivered-id']}"
            lag = len(await redis.xrange(keys.outbox, after, "+"))
        counts[group["name"]] = int(group["pending"]) + int(lag)
    return counts


# phases


class Bench:
    def __init__(self, opts: Options, work_dir: Path) -> None:
        self.opts = opts
        self.dir = work_dir
        self.results = Results()
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f}s] {message}", flush=True)

    async def phase(self, name: str, work: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await work()
        except Exception as exc:  # one broken phase must not hide the figures of the others
            detail = str(exc).strip()
            self.results.failures[name] = (
                detail if isinstance(exc, BenchError) else f"{exc.__class__.__name__}: {detail}"
            )
            self.say(f"{name}: FAILED: {self.results.failures[name]}")
            return None

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

    # no-op endpoint

    async def noop(self) -> WrkRun:
        port = free_port()
        claims = self.dir / "noop.claims"
        await asyncio.to_thread(write_claims, claims, 20_000, "noop", 1)
        argv = [sys.executable, "-m", "loadtests.bench", "--noop-server", str(port)]
        with running("noop", argv, dict(os.environ), self.dir) as child:
            await wait_http(child, f"http://127.0.0.1:{port}/healthz")
            url = f"http://127.0.0.1:{port}"
            await run_wrk(url, claims, self.opts.warmup, self.opts)
            cpu = child.cpu_s()
            run = await run_wrk(url, claims, self.opts.duration, self.opts)
            run = replace(run, server_cpu_us=per_unit_us(cpu, child.cpu_s(), run.requests))
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
            run = await self.lua_variant(redis, pool, label, pipeline, claims, max(calls, 1000))
            self.results.lua.append(run)
            self.say(f"claim.lua {run.label}: {run.claims_per_s:,.0f} claims/s")
            await redis.flushdb()
        return self.results.lua

    async def lua_variant(
        self, redis: Redis, pool: asyncpg.Pool, label: str, pipeline: int, claims: int, calls: int
    ) -> LuaRun:
        # The bench campaign, published to the scratch db the way the API publishes it.
        await CampaignService(pool, redis, Keys(PREFIX)).publish_all()
        keys, argv = await recorded_claim_call(claims)
        # One call by hand first: a mistake in the arguments shows here, not as a silent rate.
        probe = [a.replace("__rand_int__", "000000000000") for a in argv]
        reply = await redis.register_script(CLAIM_LUA.read_text())(keys, probe)
        if reply[0][0] != "granted":
            raise BenchError(f"claim.lua answered {reply[0]} to the redis-benchmark arguments")
        return await self.claim_lua_run(redis, label, keys, argv, calls, pipeline)

    async def claim_lua_run(
        self, redis: Redis, label: str, keys: list[str], argv: list[str], calls: int, pipeline: int
    ) -> LuaRun:
        per_call = int(argv[1])  # ARGV[2] of claim.lua: the number of claims
        counter = (Keys(PREFIX).campaign(CAMPAIGN), f"r:{REWARD}:granted")

        async def attempt(command: list[str], how: str) -> LuaRun:
            granted, cpu = int(await redis.hget(*counter)), await redis_cpu_s(redis)
            rate = await redis_benchmark(command, calls, pipeline, self.opts.connections)
            granted = int(await redis.hget(*counter)) - granted
            cpu_us = per_unit_us(cpu, await redis_cpu_s(redis), calls * per_call)
            return LuaRun(f"{how}, {label}", rate, per_call, granted, calls * per_call, cpu_us)

        for _ in range(2):
            sha = await redis.script_load(CLAIM_LUA.read_text())
            try:
                return await attempt(["EVALSHA", sha, str(len(keys)), *keys, *argv], "EVALSHA")
            except BenchError as exc:
                # SCRIPT FLUSH is server-wide (the test suite sends one per test) and
                # redis-benchmark stops at the first NOSCRIPT.
                if "NOSCRIPT" not in str(exc):
                    raise
                self.say("claim.lua: another client flushed the script cache mid-run")
        # The same code as a function, which SCRIPT FLUSH leaves alone.
        self.say("claim.lua: running it as a Redis function (FCALL) instead")
        await redis.function_load(claim_function_source(), replace=True)
        try:
            return await attempt(["FCALL", CLAIM_FUNCTION, str(len(keys)), *keys, *argv], "FCALL")
        finally:
            await redis.function_delete(CLAIM_LIBRARY)

    # the API and the ledger

    async def api_and_ledger(self, redis: Redis, pool: asyncpg.Pool) -> None:
        before = await settled(redis, pool)
        metrics_port = free_port()
        gauge_url = f"http://127.0.0.1:{metrics_port}/metrics"
        env = service_env(QUANYI_WORKER_METRICS_PORT=str(metrics_port))
        with running("ledger", quanyi_argv("worker", "ledger"), env, self.dir) as ledger:
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
            with running("fulfil", quanyi_argv("worker", "fulfil"), env, self.dir) as fulfil:
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

    async def drain_fulfil(self, redis: Redis, fulfil: Any, timeout_s: float = 300.0) -> None:
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

    @contextlib.contextmanager
    def api_server(self, workers: int, port: int) -> Iterator[ApiServer]:
        argv = quanyi_argv("serve", "--port", str(port), "--workers", str(workers))
        extra = {"QUANYI_HTTP_PORT": str(port)}
        if workers > 1:
            # Set here rather than by the CLI, so the metric files go with the work directory.
            prom = self.dir / f"prometheus-{workers}"
            prom.mkdir()
            extra["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
        with running(f"api-{workers}", argv, service_env(**extra), self.dir) as child:
            yield ApiServer(workers, child, f"http://127.0.0.1:{port}")

    async def api(self, workers: int, rig: Rig, cap_rps: float) -> ApiRun:
        with self.api_server(workers, free_port()) as server:
            await wait_http(server.child, f"{server.url}/healthz")
            return await self.api_run(server, rig, cap_rps)

    async def api_run(self, server: ApiServer, rig: Rig, cap_rps: float) -> ApiRun:
        opts = self.opts
        tag = f"w{server.workers}"
        warm, measured = self.dir / f"{tag}-warm.claims", self.dir / f"{tag}.claims"
        await asyncio.to_thread(write_claims, warm, int(cap_rps * opts.warmup) + 1, f"{tag}w", 2)
        await asyncio.to_thread(write_claims, measured, int(cap_rps * opts.duration), tag, 3)
        await run_wrk(server.url, warm, opts.warmup, opts)

        granted_before = await granted_total(rig.redis)
        batches_before = await histogram_totals(f"{server.url}/metrics", CLAIM_BATCH)
        ledger_before = await histogram_totals(rig.gauge_url, LEDGER_BATCH)
        api_cpu, ledger_cpu, pg_cpu = server.child.cpu_s(), rig.ledger.cpu_s(), postgres_cpu_s()
        redis_cpu = await redis_cpu_s(rig.redis)
        async with LagGauge(rig.gauge_url) as gauge:
            wrk = await run_wrk(server.url, measured, opts.duration, opts)
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


async def redis_benchmark(command: list[str], calls: int, pipeline: int, clients: int) -> float:
    """Requests per second of `command` in the scratch db; __rand_int__ spans 2e9 values."""
    out, _ = await run_tool(
        [
            "redis-benchmark",
            *("-h", REDIS_HOST, "-p", str(REDIS_PORT), "--dbnum", str(LUA_REDIS_DB)),
            *("-c", str(clients), "-n", str(calls), "-P", str(pipeline), "-r", "2000000000"),
            "-q",
            *command,
        ]
    )
    rates = re.findall(r"([\d.]+) requests per second", out)
    if not rates:
        raise BenchError(f"redis-benchmark printed no rate:\n{out[-2000:]}")
    return float(rates[-1])


def claim_function_source() -> str:
    """claim.lua unchanged, as the body of a function taking KEYS and ARGV."""
    return (
        f"#!lua name={CLAIM_LIBRARY}\n"
        f"redis.register_function('{CLAIM_FUNCTION}', function(KEYS, ARGV)\n"
        f"{CLAIM_LUA.read_text()}\nend)\n"
    )


class RecordingRedis(Redis):
    """A client that records claim.lua calls instead of sending them, answering every claim
    "granted"; everything else (the campaign definition) it reads from Redis as usual."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[int, tuple[Any, ...]]] = []

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        self.calls.append((numkeys, keys_and_args))
        claims = int(keys_and_args[numkeys + 1])  # ARGV[2]: the number of claims
        return [["granted", "0" * 26] for _ in range(claims)]


async def recorded_claim_call(claims: int) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of one claim.lua call deciding `claims` claims, exactly as ClaimService
    builds them, so this follows the script's interface when it changes."""
    redis = RecordingRedis(host=REDIS_HOST, port=REDIS_PORT, db=LUA_REDIS_DB, decode_responses=True)
    service = ClaimService(redis, Keys(PREFIX), Settings(key_prefix=PREFIX), time.time)
    await service.start()
    try:

        def claim(i: int) -> Awaitable[Any]:
            return service.claim(
                Claim(
                    channel_id=CHANNEL,
                    request_id=f"luareq{i:04d}",
                    campaign_id=CAMPAIGN,
                    customer_id=f"luacu{i:04d}",
                    reward_id=None,
                )
            )

        await claim(9999)  # loads the definition, so the next claims queue up together
        redis.calls.clear()
        await asyncio.gather(*(claim(i) for i in range(claims)))
    finally:
        await service.close()
        await redis.aclose()
    if len(redis.calls) != 1:
        raise BenchError(f"{claims} claims went as {len(redis.calls)} claim.lua calls, not one")
    numkeys, keys_and_args = redis.calls[0]
    return randomised(list(keys_and_args[:numkeys]), list(keys_and_args[numkeys:]), claims)


GRANT_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


def randomised(keys: list[Any], argv: list[Any], claims: int) -> tuple[list[str], list[str]]:
    """The recorded call with redis-benchmark's __rand_int__ (12 digits, drawn anew for each
    occurrence in each call) in place of request ids, customers and grant ids, so every call
    decides new claims. Bucket keys stay as recorded: a few hot buckets, the worst case."""
    replace_text = {
        g: "01BENCH0000000__rand_int__"
        for g in argv
        if isinstance(g, str) and GRANT_ID.fullmatch(g)
    }
    replace_whole: dict[Any, str] = {}
    for i in range(claims):
        replace_text[f"luareq{i:04d}"] = "luareq__rand_int__"
        replace_text[f"luacu{i:04d}"] = "cu__rand_int__"
        # The idempotency field is a digest of the request id: any unique value will do.
        replace_whole[Keys(PREFIX).idempotency(CHANNEL, f"luareq{i:04d}")[1]] = "idem__rand_int__"

    def one(value: Any) -> str:
        if isinstance(value, bytes) and value in replace_whole:
            return replace_whole[value]
        text = value.decode() if isinstance(value, bytes) else str(value)
        for old, new in replace_text.items():
            text = text.replace(old, new)
        return text

    return [one(k) for k in keys], [one(a) for a in argv]


async def histogram_totals(metrics_url: str, name: str) -> tuple[float, float]:
    """(sum, count) so far of a Prometheus histogram."""
    text = await http_text(metrics_url)
    return metric(text, f"{name}_sum") or 0.0, metric(text, f"{name}_count") or 0.0


def mean_between(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    count = after[1] - before[1]
    return (after[0] - before[0]) / count if count else None


class LagGauge:
    """Polls the ledger worker's quanyi_outbox_lag_seconds and keeps the highest value seen."""

    def __init__(self, url: str, every_s: float = 0.25) -> None:
        self.url = url
        self.every_s = every_s
        self.max_seconds: float | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> LagGauge:
        self._task = asyncio.create_task(self._poll(), name="lag-gauge")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                value = metric(await http_text(self.url), "quanyi_outbox_lag_seconds")
                if value is not None:
                    self.max_seconds = max(self.max_seconds or 0.0, value)
            await asyncio.sleep(self.every_s)


async def caught_up(redis: Redis, pool: asyncpg.Pool, since: float) -> float | None:
    """Seconds from `since` until the ledger holds as many grants as Redis counted."""
    deadline = since + CATCH_UP_TIMEOUT_S
    while time.monotonic() < deadline:
        granted = await granted_total(redis)
        if await pool.fetchval("SELECT count(*) FROM grants") >= granted:
            return max(time.monotonic() - since, 0.0)
        await asyncio.sleep(0.05)
    return None


async def ledger_lag(pool: asyncpg.Pool, tag: str) -> tuple[float | None, float | None]:
    """Max and p99 of (persisted - granted) over the grants of one measured run."""
    row = await pool.fetchrow(
        "SELECT max(lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) FROM"
        " (SELECT extract(epoch FROM persisted_at - granted_at)::float8 AS lag"
        "  FROM grants WHERE channel_id = $1 AND request_id LIKE $2) AS g",
        CHANNEL,
        f"{tag}-%",
    )
    return row[0], row[1]


async def rowlock_claims(seconds: float, warmup_s: float) -> RowLockRun:
    """The claim "the usual way": every claim locks the one stock row for its transaction."""
    pool = await asyncpg.create_pool(DATABASE_URL, min_size=ROWLOCK_TASKS, max_size=ROWLOCK_TASKS)
    try:
        await pool.execute(
            "DROP TABLE IF EXISTS rowlock_grants, rowlock_stock;"
            " CREATE TABLE rowlock_stock (id int PRIMARY KEY, stock bigint NOT NULL,"
            "  granted bigint NOT NULL);"
            " CREATE TABLE rowlock_grants (request_id text PRIMARY KEY, customer_id text NOT NULL,"
            "  granted_at timestamptz NOT NULL DEFAULT now());"
            f" INSERT INTO rowlock_stock VALUES (1, {STOCK}, 0)"
        )
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + warmup_s
        until = measure_from + seconds
        latencies: list[float] = []
        errors = 0

        async def claimer(n: int) -> None:
            nonlocal errors
            rng = random.Random(n)
            i = 0
            while (started := loop.time()) < until:
                i += 1
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        row = await conn.fetchrow(
                            "SELECT stock, granted FROM rowlock_stock WHERE id = 1 FOR UPDATE"
                        )
                        if row["granted"] < row["stock"]:
                            await conn.execute(
                                "UPDATE rowlock_stock SET granted = granted + 1 WHERE id = 1"
                            )
                            await conn.execute(
                                "INSERT INTO rowlock_grants (request_id, customer_id)"
                                " VALUES ($1, $2)",
                                f"{n}-{i}",
                                f"cu{rng.randrange(CUSTOMERS):07d}",
                            )
                except asyncpg.PostgresError:
                    errors += 1
                    continue
                if started >= measure_from:
                    latencies.append(loop.time() - started)

        await asyncio.gather(*(claimer(n) for n in range(ROWLOCK_TASKS)))
        elapsed = loop.time() - measure_from
        await pool.execute("DROP TABLE rowlock_grants, rowlock_stock")
    finally:
        await pool.close()
    latencies.sort()
    return RowLockRun(
        claims=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        errors=errors,
    )


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


# the report


def fmt_s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s"


def fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_n(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


RULE = "=" * 100


def report(results: Results, opts: Options, context: str) -> str:
    lines = [
        "",
        RULE,
        *f"Quanyi bench: {context}".splitlines(),
        f"wrk -t{opts.threads} -c{opts.connections}, {opts.duration} s measured after "
        f"{opts.warmup} s of warm-up per HTTP run; all figures from this one run",
        RULE,
    ]
    for section in (
        throughput_lines,
        ratio_lines,
        target_lines,
        cpu_lines,
        ledger_lines,
        memory_lines,
        failure_lines,
    ):
        part = section(results)
        if part:
            lines += ["", *part]
    lines.append(RULE)
    return "\n".join(lines)


def throughput_lines(results: Results) -> list[str]:
    lines = [
        f"{'Throughput':44}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'errors':>9}"
    ]

    def http_row(label: str, run: WrkRun | None) -> None:
        if run is None:
            lines.append(f"{label:44}{'failed':>10}")
        else:
            lines.append(
                f"{label:44}{run.rps:>10,.0f}{run.p50_ms:>9.2f}{run.p99_ms:>9.2f}"
                f"{run.p999_ms:>10.2f}{run.non_2xx + run.socket_errors:>9,}"
            )

    api1, api2 = results.api.get(1), results.api.get(2)
    http_row("API claims, 1 process (quanyi serve)", api1.wrk if api1 else None)
    http_row("API claims, quanyi serve --workers 2", api2.wrk if api2 else None)
    http_row("no-op aiohttp+uvloop endpoint", results.noop)
    for run in results.lua:
        row = f"{'claim.lua ' + run.label:44}{run.claims_per_s:>10,.0f}"
        if run.granted < 0.99 * run.expected:
            row += f"   only {run.granted:,} of {run.expected:,} granted"
        lines.append(row)
    if "lua" in results.failures:
        lines.append(f"{'claim.lua via redis-benchmark':44}{'failed':>10}")
    rl = results.rowlock
    label = f"PostgreSQL row lock, {ROWLOCK_TASKS} asyncpg tasks"
    if rl is None:
        lines.append(f"{label:44}{'failed':>10}")
    else:
        lines.append(
            f"{label:44}{rl.rps:>10,.0f}{rl.p50_ms:>9.2f}{rl.p99_ms:>9.2f}{'-':>10}{rl.errors:>9,}"
        )
    lines.append("  per s: 2xx responses (API, no-op), claims (claim.lua, row lock)")
    lines.append("  errors: non-2xx responses and socket errors; row lock: failed transactions")
    for run in (api1, api2):
        if run and run.replayed:
            lines.append(
                f"  note: the {run.workers}-process run ran out of unique claims and replayed "
                f"{run.replayed:,} (answered 200 without a new grant)"
            )
    return lines


def ratio_lines(results: Results) -> list[str]:
    api1, api2 = results.api.get(1), results.api.get(2)
    a1 = api1.wrk.rps if api1 else None
    best = max(results.lua, key=lambda r: r.claims_per_s, default=None)
    rows = [
        ("API 1 process / no-op endpoint", ratio(a1, results.noop.rps if results.noop else None)),
        (
            f"API 1 process / claim.lua ceiling ({best.label if best else 'n/a'})",
            ratio(a1, best.claims_per_s if best else None),
        ),
        (
            "API 1 process / PostgreSQL row lock",
            ratio(a1, results.rowlock.rps if results.rowlock else None),
        ),
        ("API --workers 2 / API 1 process", ratio(api2.wrk.rps if api2 else None, a1)),
    ]
    return ["Ratios"] + [
        f"  {label:70}{'n/a' if value is None else f'{value:.2f}':>8}" for label, value in rows
    ]


def target_lines(results: Results) -> list[str]:
    api1, api2, mem = results.api.get(1), results.api.get(2), results.memory
    noop_ratio = ratio(api1.wrk.rps if api1 else None, results.noop.rps if results.noop else None)
    judged = judged_memory(mem) if mem else None
    runs = [run for run in (api1, api2) if run]
    lags = [v for run in runs for v in (run.lag_max_s, run.catch_up_s) if v is not None]
    worst_lag = max(lags, default=None)
    lag_shown, lag_ok = (
        fmt_s(worst_lag),
        None if worst_lag is None else worst_lag < TARGET_LEDGER_LAG_S,
    )
    if any(run.catch_up_s is None for run in runs):
        lag_shown, lag_ok = f"> {CATCH_UP_TIMEOUT_S:.0f} s", False
    rows: list[tuple[str, str, bool | None]] = [
        (
            f"API 1 process >= {TARGET_API_RPS:,} claims/s",
            f"{api1.wrk.rps:,.0f}" if api1 else "n/a",
            api1.wrk.rps >= TARGET_API_RPS if api1 else None,
        ),
        (
            f"API 1 process p99 <= {TARGET_API_P99_MS:.0f} ms",
            f"{api1.wrk.p99_ms:.1f} ms" if api1 else "n/a",
            api1.wrk.p99_ms <= TARGET_API_P99_MS if api1 else None,
        ),
        (
            f"API 1 process / no-op endpoint >= {TARGET_NOOP_RATIO:.2f}",
            "n/a" if noop_ratio is None else f"{noop_ratio:.2f}",
            None if noop_ratio is None else noop_ratio >= TARGET_NOOP_RATIO,
        ),
        (
            f"API --workers 2 >= {TARGET_WORKERS2_RPS:,} claims/s",
            f"{api2.wrk.rps:,.0f}" if api2 else "n/a",
            api2.wrk.rps >= TARGET_WORKERS2_RPS if api2 else None,
        ),
        (
            f"ledger lag < {TARGET_LEDGER_LAG_S:.0f} s (worst grant lag or catch-up)",
            lag_shown,
            lag_ok,
        ),
        (
            f"Redis memory <= {TARGET_BYTES_PER_GRANT} B per grant (used_memory"
            f"{', outbox aside' if mem and mem.after.held else ''})",
            f"{fmt_n(judged, ',.0f')} B",
            None if judged is None else judged <= TARGET_BYTES_PER_GRANT,
        ),
    ]
    return ["Targets (informational)"] + [
        f"  {label:58}{shown:>12}  {verdict(ok)}" for label, shown, ok in rows
    ]


def cpu_lines(results: Results) -> list[str]:
    if not (results.noop or results.api or results.lua):
        return []
    columns = ("wrk", "server", "Redis", "ledger", "PG", "sum")
    lines = [
        "CPU time per claim, microseconds, and the machine's cores during each HTTP run",
        f"  {'':42}" + "".join(f"{c:>7}" for c in columns) + f"{'busy':>7}{'ours':>7}",
    ]

    def row(label: str, costs: tuple[float | None, ...], wrk: WrkRun | None = None) -> None:
        costs = (*costs, *(None,) * (len(columns) - 1 - len(costs)))
        total = sum(v for v in costs if v is not None)
        shown = "".join(f"{fmt_us(v):>7}" for v in (*costs, total))
        if wrk is not None and wrk.busy_cores is not None:
            ours = total * wrk.ok / wrk.seconds / 1e6 if wrk.seconds else 0.0
            shown += f"{wrk.busy_cores:>7.2f}{ours:>7.2f}"
        lines.append(f"  {label:42}{shown}")

    if noop := results.noop:
        row("no-op endpoint (per request)", (noop.client_cpu_us, noop.server_cpu_us), noop)
    for run in results.api.values():
        label = "API, 1 process" if run.workers == 1 else f"API, --workers {run.workers}"
        costs = (
            run.wrk.client_cpu_us,
            run.api_cpu_us,
            run.redis_cpu_us,
            run.ledger_cpu_us,
            run.postgres_cpu_us,
        )
        row(label, costs, run.wrk)
    for lua in results.lua:
        row(f"claim.lua {lua.label}", (None, None, lua.redis_cpu_us))
    lines += [
        "  Redis and PG (PostgreSQL): the whole servers (claim.lua, the ledger's reads, acks and",
        "  inserts), so their other users add noise; busy: cores the machine used, of"
        f" {os.cpu_count()};",
        "  ours: cores the columns account for (the rest went to other work on the machine)",
    ]
    return lines


def ledger_lines(results: Results) -> list[str]:
    if not results.api:
        return []
    lines = [
        "Ledger (quanyi worker ledger running through both API runs)",
        f"  {'run':14}{'granted':>10}{'claims/call':>13}{'grants/batch':>14}{'catch-up':>11}"
        f"{'max lag':>10}{'p99 lag':>10}{'gauge max':>11}",
    ]
    for run in results.api.values():
        label = "1 process" if run.workers == 1 else f"--workers {run.workers}"
        lines.append(
            f"  {label:14}{run.granted:>10,}{fmt_n(run.claims_per_call, '.1f'):>13}"
            f"{fmt_n(run.grants_per_ledger_batch, '.0f'):>14}{fmt_s(run.catch_up_s):>11}"
            f"{fmt_s(run.lag_max_s):>10}{fmt_s(run.lag_p99_s):>10}{fmt_s(run.lag_gauge_max_s):>11}"
        )
    lines += [
        "  claims/call: claims per claim.lua call (quanyi_claim_batch_size)",
        "  grants/batch: grants per ledger transaction (quanyi_ledger_batch_size)",
        "  catch-up: from the end of the run until count(grants) = the Redis granted counter",
        "  lag: persisted_at - granted_at of each grant; gauge: polled quanyi_outbox_lag_seconds",
    ]
    return lines


def memory_lines(results: Results) -> list[str]:
    mem = results.memory
    if mem is None:
        return []
    before, after = mem.before, mem.after
    lines = [
        "Redis memory per grant (ledger caught up, outbox trimmed, API and worker stopped)",
        f"  used_memory {before.used_memory / 1e6:,.1f} MB -> {after.used_memory / 1e6:,.1f} MB "
        f"for {mem.grants:,} grants: {fmt_n(mem.per_grant, ',.0f')} B/grant",
    ]
    if after.held:
        held = ", ".join(f"{name} ({n:,} entries)" for name, n in after.held.items())
        lines += [
            f"  the outbox is held by consumer groups no worker here serves: {held}",
            f"  without the outbox: {fmt_n(mem.per_grant_trimmed, ',.0f')} B/grant",
        ]
    lines += [
        f"  MEMORY USAGE of this run's keys: {fmt_n(mem.keys_per_grant, ',.0f')} B/grant"
        " (used_memory also counts",
        "    the keyspace and expiry tables, and moves with other users of this Redis), by family:",
    ]
    for family, (count, size) in sorted(after.keys.items(), key=lambda kv: -kv[1][1]):
        lines.append(
            f"    {family:20}{count:>10,} keys{size / 1e6:>9,.1f} MB"
            f"{size / mem.grants if mem.grants else 0:>8,.0f} B/grant"
        )
    lines += [
        "  the --workers 2 run's grants alone, outbox aside (MEMORY USAGE; the buckets exist",
        f"    already, as in a campaign under way): {fmt_n(mem.marginal, ',.0f')} B/grant",
    ]
    return lines


def judged_memory(mem: MemoryRun) -> float | None:
    """Per grant once trimmed: when groups no worker serves hold the outbox, without it."""
    return mem.per_grant_trimmed if mem.after.held else mem.per_grant


def failure_lines(results: Results) -> list[str]:
    if not results.failures:
        return []
    return ["Failed phases (details above)"] + [
        f"  {name}: {message.splitlines()[0] if message else ''}"
        for name, message in results.failures.items()
    ]


async def machine_context() -> str:
    """When, where and on what: a figure means little without the load the machine had."""
    versions = []
    with contextlib.suppress(Exception):  # only decoration: the phases report real failures
        redis = redis_client(API_REDIS_DB)
        try:
            versions.append(f"redis {(await redis.info('server'))['redis_version']}")
        finally:
            await redis.aclose()
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            version = await conn.fetchval("SHOW server_version")
            versions.append(f"postgresql {version.split()[0]}")
            versions.append(f"synchronous_commit={await conn.fetchval('SHOW synchronous_commit')}")
        finally:
            await conn.close()
    return (
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at start\n{', '.join(versions)}"
    )


# entry point


def parse_options(argv: list[str] | None) -> tuple[argparse.Namespace, Options]:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--duration", type=int, help="measured seconds per HTTP phase (default 15)")
    p.add_argument("--quick", action="store_true", help="5 s phases: a smoke run of the script")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--keep", action="store_true", help="keep the scratch database and Redis dbs")
    p.add_argument("--noop-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    duration = args.duration or (5 if args.quick else 15)
    opts = Options(
        duration=max(duration, 1),
        warmup=1 if args.quick else 3,
        threads=max(args.threads, 1),
        connections=max(args.connections, args.threads, 1),
        lua_scale=duration / 15,
        rowlock_s=min(duration, 10),
        keep=args.keep,
    )
    return args, opts


def main(argv: list[str] | None = None) -> int:
    args, opts = parse_options(argv)
    if args.noop_server:
        serve_noop(args.noop_server)
        return 0
    missing = [tool for tool in ("wrk", "redis-benchmark") if shutil.which(tool) is None]
    if missing:
        print(f"bench: {' and '.join(missing)} not found (apt-get install -y wrk redis-tools)")
        return 1

    async def bench() -> tuple[Results, str]:
        context = await machine_context()
        with tempfile.TemporaryDirectory(prefix="quanyi-bench-") as work_dir:
            return await Bench(opts, Path(work_dir)).run(), context

    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, so the servers started here are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        results, context = asyncio.run(bench())
    except KeyboardInterrupt:  # the child processes were stopped on the way out
        print("bench: interrupted", file=sys.stderr)
        return 130
    print(report(results, opts, context))
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
