"""Child processes of the load tests and benchmarks, and what they cost: start one in a session
of its own, wait for it to answer HTTP, stop it and whatever it forked, and read CPU time from
/proc (Linux) for a process, a process group or every process of a name, and for the machine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

HOST = "127.0.0.1"
# Children run from the repository root, where `loadtests` and the service packages import.
REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
T = TypeVar("T")


class ChildError(RuntimeError):
    """A child exited early, did not answer in time, or a tool run to completion failed."""


def cancel_on_sigterm() -> None:
    """SIGTERM (a CI timeout, `kill`) cancels the running task like Ctrl-C does, so the
    children it started are stopped on the way out."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


def run_interruptible(main: Coroutine[Any, Any, T]) -> T | None:
    """asyncio.run(main), a SIGTERM (a CI timeout) unwinding it like Ctrl-C, so the children it
    started are stopped on the way out; None when it was interrupted."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        return None


def service_env(
    redis_url: str, database_url: str, key_prefix: str, port: int, **extra: str
) -> dict[str, str]:
    """The environment of a benchmark's `quanyi run`, `quanyi serve` and workers: ours without
    any QUANYI_ setting of the shell (so a developer's own stores are never the benchmark's),
    the stores given, `port` for HTTP, then `extra` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANYI_")}
    env.update(
        QUANYI_REDIS_URL=redis_url,
        QUANYI_DATABASE_URL=database_url,
        QUANYI_KEY_PREFIX=key_prefix,
        QUANYI_HTTP_HOST=HOST,
        QUANYI_HTTP_PORT=str(port),
        QUANYI_LOG_LEVEL="WARNING",
        # Two workers of different kinds would both want the same metrics ports otherwise.
        QUANYI_WORKER_METRICS_PORT="0",
    )
    env.update(extra)
    return env


def run_in_work_dir(name: str, work_dir: Path, main: Coroutine[Any, Any, T]) -> T | None:
    """run_interruptible(main) for a benchmark whose children write to `work_dir`: the claim
    files removed however it ends (they are large; the logs are what explains a failed run),
    None (said on stderr) when it was interrupted."""
    try:
        outcome = run_interruptible(main)
    finally:
        for claims in work_dir.glob("*.claims"):
            claims.unlink()
    if outcome is None:
        print(f"{name}: interrupted", file=sys.stderr)
    return outcome


def finish_in_work_dir(name: str, work_dir: Path, failed: bool, text: str) -> int:
    """Prints the benchmark's report `text`; `work_dir` is kept for its logs when a run
    `failed` (exit status 1), removed otherwise (0)."""
    if failed:
        print(f"{name}: the processes' logs are in {work_dir}", file=sys.stderr)
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(text)
    return 1 if failed else 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def quanyi_argv(*args: str) -> list[str]:
    """The `quanyi` command of this venv (the module when the script is not installed)."""
    script = BIN / "quanyi"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "quanyi.cli"]
    return [*base, *args]


class Child:
    """A child process in a session of its own, so stopping it also stops what it forked; its
    output appended to a log file (a child started again under a name keeps its earlier
    output), or left on ours."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path | None) -> None:
        self.name = name
        self.log_path = log_path
        self._proc = proc

    @classmethod
    async def start(
        cls, name: str, argv: list[str], env: Mapping[str, str], log_path: Path | None
    ) -> Child:
        out = log_path.open("ab") if log_path is not None else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=REPO_ROOT,
                env=dict(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT if out is not None else None,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()  # the child holds its own copy
        return cls(name, proc, log_path)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def alive(self) -> bool:
        return self._proc.returncode is None

    async def wait(self) -> int:
        return await self._proc.wait()

    async def stop(self, grace_s: float) -> None:
        """SIGTERM (the service shuts down cleanly on it), SIGKILL after a grace period."""
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), grace_s)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await self._proc.wait()
        # A forked API process outliving its parent would keep the port and Redis connections.
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def cpu_s(self) -> float | None:
        """CPU seconds of the live processes of its group: a forking server's workers too."""
        return cpu_s(pgid=self._proc.pid)

    def tail(self, lines: int = 25) -> str:
        if self.log_path is None:
            return ""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.asynccontextmanager
async def running(
    name: str, argv: list[str], env: Mapping[str, str], log_dir: Path, grace_s: float = 15.0
) -> AsyncIterator[Child]:
    """A child logging to <log_dir>/<name>.log, stopped however the block is left."""
    child = await Child.start(name, argv, env, log_dir / f"{name}.log")
    try:
        yield child
    finally:
        # Shielded: this also runs when the run was cancelled (Ctrl-C, SIGTERM).
        await asyncio.shield(child.stop(grace_s))


async def answers_200(http: aiohttp.ClientSession, url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with http.get(url) as resp:
            return resp.status == 200
    return False


async def wait_http(child: Child, url: str, timeout_s: float = 30.0) -> None:
    """Until `url` answers 200; fails early when the child exits."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            if not child.alive():
                raise ChildError(f"{child.name} exited during start-up:\n{child.tail()}")
            if await answers_200(http, url):
                return
            await asyncio.sleep(0.1)
    raise ChildError(f"{child.name} did not answer {url} within {timeout_s:.0f} s:\n{child.tail()}")


async def run_tool(argv: list[str]) -> tuple[str, str]:
    """Run a command to completion; its (stdout, stderr), or ChildError when it exits non-zero."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled: do not leave a load generator running
            proc.kill()
            await proc.wait()
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if proc.returncode != 0:
        raise ChildError(f"{argv[0]} exited {proc.returncode}:\n{stdout}\n{stderr}")
    return stdout, stderr


# CPU accounting (Linux /proc)


def cpu_s(pid: int | None = None, pgid: int | None = None, comm: str | None = None) -> float | None:
    """User + system CPU seconds used so far by process `pid`, or by the live processes of
    process group `pgid` or named `comm`; None without /proc (or without that pid)."""
    if pid is not None:
        stat = _stat(Path(f"/proc/{pid}/stat"))
        return None if stat is None else _ticks(stat[1]) / os.sysconf("SC_CLK_TCK")
    try:
        entries = [entry.path for entry in os.scandir("/proc") if entry.name.isdigit()]
    except OSError:
        return None
    ticks = 0
    for path in entries:
        stat = _stat(Path(path, "stat"))
        if stat is None:  # gone since the listing
            continue
        name, fields = stat
        if (pgid is not None and int(fields[2]) == pgid) or (comm is not None and name == comm):
            ticks += _ticks(fields)
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat(path: Path) -> tuple[str, list[str]] | None:
    """(name, the fields after the name) of one /proc/<pid>/stat."""
    try:
        stat = path.read_text()
    except OSError:
        return None
    # The name is in parentheses and may hold spaces and parentheses of its own.
    return stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()


def _ticks(fields: list[str]) -> int:
    """utime + stime, in clock ticks, from the fields after the name."""
    return int(fields[11]) + int(fields[12])


def postgres_cpu_s() -> float | None:
    """Every PostgreSQL process's, other users' sessions included."""
    return cpu_s(comm="postgres")


def machine_ticks() -> tuple[int, int] | None:
    """(busy, all) CPU ticks of the whole machine so far, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # guest and guest_nice are counted in user and nice already.
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    everything = user + nice + system + idle + iowait + irq + softirq + steal
    return everything - idle - iowait, everything


def busy_cores(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """How many cores were busy between two readings: other people's work shows here."""
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)
