"""Scratch Redis servers a benchmark owns: one redis-server, or a Redis Cluster of several
masters, each on a free loopback port with its directory under a temporary one, so the
benchmark can fill and drop them without touching the machine's shared Redis on 6379.

    with ScratchServers(root, masters=3) as redis:   # masters=1: a plain redis-server
        redis.url            # redis://127.0.0.1:<port>/0, a node of the cluster
        redis.ports          # every master's port (INFO cpu is read from each)

Only the processes started here are stopped (kill -9 on the way out: the data is disposable).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
# A cluster node's bus port is its port + 10000, so the ports are looked for well below 55535;
# this range is above the one the cluster tests use (7100 to 9000).
CLUSTER_PORTS = range(9100, 12000)


def redis_tools_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _free_ports(n: int, cluster: bool) -> list[int]:
    """`n` free ports, with their bus ports free too for a cluster. Starting at an offset of
    our pid keeps two benchmarks started together from picking the same ports."""
    found: list[int] = []
    start = CLUSTER_PORTS.start + os.getpid() % 1000 * 2
    for port in range(start, CLUSTER_PORTS.stop):
        if _bindable(port) and (not cluster or _bindable(port + 10000)):
            found.append(port)
            if len(found) == n:
                return found
    raise RuntimeError("no free ports for a scratch redis")


def _wait(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up in {timeout_s:.0f} s")


class ScratchServers:
    """`masters` redis-servers in `root`: with one, a plain server; with several, a cluster
    (`redis-cli --cluster create`, no replicas) once every node reports cluster_state:ok."""

    def __init__(self, root: Path, masters: int = 1) -> None:
        self.dir = Path(root)
        self.masters = masters
        self.cluster = masters > 1
        self.ports = _free_ports(masters, self.cluster)
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.ports[0]}/0"

    def __enter__(self) -> ScratchServers:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for port in self.ports:
            node = self.dir / str(port)
            node.mkdir(parents=True, exist_ok=True)
            argv = [
                "redis-server", "--bind", HOST, "--port", str(port), "--dir", str(node),
                "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
                "--logfile", str(node / "redis.log"),
            ]  # fmt: skip
            if self.cluster:
                argv += ["--cluster-enabled", "yes"]
                argv += ["--cluster-config-file", str(node / "nodes.conf")]
            self._processes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        for port in self.ports:
            _wait(functools.partial(_answers, port), f"scratch redis on {port}")
        if not self.cluster:
            return
        nodes = [f"{HOST}:{p}" for p in self.ports]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait(self._cluster_ok, "scratch cluster state ok")

    def _cluster_ok(self) -> bool:
        for port in self.ports:
            info = subprocess.run(
                ["redis-cli", "-h", HOST, "-p", str(port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            if "cluster_state:ok" not in info:
                return False
        return True

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(10)
        self._processes = []

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
