"""The service under test, started from scratch: its own database and Redis db, wiped first,
and the API and ledger worker as child processes that are always stopped on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from redis.asyncio import Redis

DATABASE_URL = "postgresql://127.0.0.1:5432/quanyi_loadtest"
REDIS_URL = "redis://127.0.0.1:6379/10"
KEY_PREFIX = "qylt"
HOST = "127.0.0.1"
STOP_GRACE_S = 10.0
BIN = Path(sys.executable).parent
# Children run from the repository root, where `loadtests` and the service packages import.
REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK_PATH = Path(tempfile.gettempdir()) / "quanyi-loadtest.lock"


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


async def reset_database(url: str = DATABASE_URL) -> None:
    """Drop and recreate the load-test database. Refuses any other name, so a typo in the URL
    can never wipe a real one."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if name != "quanyi_loadtest" or parts.hostname not in ("127.0.0.1", "localhost"):
        raise SetupError(f"refusing to drop {url}: only a local quanyi_loadtest is wiped")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def reset_redis(url: str = REDIS_URL) -> None:
    """Empty the load-test Redis db (db 10 only: other dbs on the server are left alone)."""
    if not url.startswith(f"redis://{HOST}:") or not url.endswith("/10"):
        raise SetupError(f"refusing to flush {url}: only the local db 10 is flushed")
    redis = Redis.from_url(url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


@dataclass
class Stack:
    """Ports, environment and log files of one run."""

    workdir: Path
    api_port: int = field(default_factory=free_port)
    worker_metrics_port: int = field(default_factory=free_port)
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUANYI_")}
        env.update(
            QUANYI_DATABASE_URL=DATABASE_URL,
            QUANYI_REDIS_URL=REDIS_URL,
            QUANYI_KEY_PREFIX=KEY_PREFIX,
            QUANYI_HTTP_HOST=HOST,
            QUANYI_HTTP_PORT=str(self.api_port),
            QUANYI_WORKER_METRICS_PORT=str(self.worker_metrics_port),
            QUANYI_LOG_LEVEL="WARNING",
            # New channels and campaigns are seen within a second.
            QUANYI_CHANNEL_REFRESH_S="1",
        )
        env.update(extra or {})
        return env

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    async def run(self, name: str, *argv: str, timeout_s: float = 60.0) -> None:
        """Run a command to completion; its output goes to its log file."""
        proc = await self.start(name, *argv)
        try:
            rc = await asyncio.wait_for(proc.wait(), timeout_s)
        finally:
            await self.stop(name)
        if rc != 0:
            raise SetupError(f"{name} exited {rc}:\n{self.tail(name)}")

    async def start(
        self, name: str, *argv: str, env: Mapping[str, str] | None = None, log: bool = True
    ) -> asyncio.subprocess.Process:
        """Start a child; with `log`, its output goes to <workdir>/<name>.log, else to ours."""
        out = self.log_path(name).open("wb") if log else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=self.env(env),
                cwd=REPO_ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT if log else None,
            )
        finally:
            if out is not None:
                out.close()  # the child holds its own copy
        self.procs[name] = proc
        return proc

    async def stop(self, name: str) -> None:
        """SIGTERM (the service shuts down cleanly on it), SIGKILL after a grace period."""
        proc = self.procs.pop(name, None)
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

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

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until /readyz answers 200; fails early when the API process died."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                for name in ("api", "worker"):
                    proc = self.procs.get(name)
                    if proc is not None and proc.returncode is not None:
                        raise SetupError(f"{name} exited {proc.returncode}:\n{self.tail(name)}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.base_url}/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise SetupError(f"API not ready after {timeout_s:g} s:\n{self.tail('api')}")

    def check_alive(self, names: tuple[str, ...] = ("api", "worker")) -> list[str]:
        """Those of the long-running children that died before being told to stop."""
        return [
            f"{name} exited {proc.returncode}"
            for name in names
            if (proc := self.procs.get(name)) is None or proc.returncode is not None
        ]


@contextlib.asynccontextmanager
async def service(
    stack: Stack, before_start: Callable[[], Awaitable[None]]
) -> AsyncIterator[Stack]:
    """Fresh stores and schema, `before_start` (accounts the API reads at start-up), then the
    API and the ledger worker; both stopped however we leave."""
    await reset_database()
    await reset_redis()
    try:
        await stack.run("migrate", str(BIN / "quanyi"), "migrate")
        await before_start()
        await stack.start("api", str(BIN / "quanyi"), "serve")
        await stack.start("worker", str(BIN / "quanyi"), "worker", "ledger")
        yield stack
    finally:
        await stack.stop_all()
