"""Scratch PostgreSQL and Redis servers that a fault test owns: their own port and directory, so
stopping, killing or flushing them never touches the machine's shared services.

    with ScratchPostgres(tmp_path) as pg:       # initdb + pg_ctl, trust auth on loopback
        url = pg.url("quanyi")                  # postgresql://127.0.0.1:<port>/quanyi
        pg.restart()                            # or pg.stop() / pg.start()

    with ScratchRedis(tmp_path, appendonly=True, appendfsync="always") as r:
        url = r.url(0)                          # redis://127.0.0.1:<port>/0
        r.kill()                                # kill -9, then r.start() replays the AOF
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def postgres_available() -> bool:
    return _postgres_bin("initdb") is not None and _postgres_bin("pg_ctl") is not None


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


def _wait(check, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up in {timeout_s:.0f} s")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _redis_server(port: int, directory: Path, *options: str) -> subprocess.Popen[bytes]:
    """A redis-server on a loopback port, its files in `directory`: no snapshots, never evicting
    (as the service requires), its log in redis.log there."""
    argv = [
        "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory),
        "--save", "", "--maxmemory-policy", "noeviction",
        "--logfile", str(directory / "redis.log"), *options,
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL)


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


class ScratchPostgres:
    """A PostgreSQL cluster in `root/pg`, on a free loopback port. PostgreSQL refuses to run as
    root, so as root the cluster belongs to the `postgres` system user."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / "pg"
        self.port = free_port()
        self._initdb = _postgres_bin("initdb")
        self._pg_ctl = _postgres_bin("pg_ctl")
        if not (self._initdb and self._pg_ctl):
            raise RuntimeError("initdb/pg_ctl not found: install postgresql")
        self._user = "postgres" if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        user = f"{self._user}@" if self._user else ""
        return f"postgresql://{user}127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> None:
        if self._user:
            argv = ("runuser", "-u", self._user, "--", *argv)
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    def __enter__(self) -> ScratchPostgres:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            # runuser needs to reach the directory through every parent.
            for parent in self.dir.parents:
                if parent == Path("/"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o011)
        self._run(
            self._initdb,
            "-D",
            str(self.dir),
            "-A",
            "trust",
            "-U",
            self._user or "root",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.start()
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir}"
            " -c fsync=off -c max_connections=100"
        )
        self._run(
            self._pg_ctl,
            "-D",
            str(self.dir),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "-l",
            str(self.dir / "log"),
            "start",
        )
        _wait(lambda: _answers(self.port), "scratch postgresql")

    def stop(self, mode: str = "fast") -> None:
        self._run(self._pg_ctl, "-D", str(self.dir), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped


class ScratchRedis:
    """A redis-server in `root/redis`, on a free loopback port, optionally with AOF."""

    def __init__(
        self, root: Path, *, appendonly: bool = False, appendfsync: str = "everysec"
    ) -> None:
        self.dir = Path(root) / "redis"
        self.port = free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def __enter__(self) -> ScratchRedis:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.start()
        return self

    def start(self) -> None:
        self._process = _redis_server(
            self.port,
            self.dir,
            *("--appendonly", "yes" if self.appendonly else "no"),
            *("--appendfsync", self.appendfsync),
        )
        _wait(lambda: _answers(self.port), "scratch redis")

    def kill(self) -> None:
        """kill -9: whatever the AOF had not written is gone."""
        if self._process is not None:
            _kill(self._process)
            self._process = None

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(n: int) -> list[int]:
    """`n` free ports from 7100 up whose cluster bus ports (port + 10000) are free too: a
    node's bus port must exist, so an ephemeral port above 55535 will not do."""
    found: list[int] = []
    for port in range(7100 + os.getpid() % 400 * 2, 9000):
        if _bindable(port) and _bindable(port + 10000):
            found.append(port)
            if len(found) == n:
                return found
    raise RuntimeError("no free ports for a scratch cluster")


class ScratchCluster:
    """A Redis Cluster of `masters` redis-servers in `root/cluster`, each on a free loopback
    port, no replicas: `redis-cli --cluster create`, then wait for cluster_state:ok."""

    def __init__(self, root: Path, masters: int = 3, node_timeout_ms: int = 15_000) -> None:
        """`node_timeout_ms`: how long a master may not answer before the others hold it failed
        (and, with no replica to take over, the cluster down): Redis's default unless a test
        wants to see that happen."""
        self.dir = Path(root) / "cluster"
        self.ports = _cluster_ports(masters)
        self._node_timeout_ms = node_timeout_ms
        self._processes: list[subprocess.Popen[bytes]] = []

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def __enter__(self) -> ScratchCluster:
        for port in self.ports:
            node = self.dir / str(port)
            node.mkdir(parents=True, exist_ok=True)
            config = str(node / "nodes.conf")
            cluster = (
                *("--cluster-enabled", "yes", "--cluster-config-file", config),
                *("--cluster-node-timeout", str(self._node_timeout_ms)),
            )
            self._processes.append(_redis_server(port, node, *cluster, "--appendonly", "no"))
        for port in self.ports:
            _wait(lambda port=port: _answers(port), "scratch cluster node")
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        create = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0"]
        subprocess.run([*create, "--cluster-yes"], check=True, capture_output=True, timeout=60)
        _wait(self._ok, "scratch cluster state ok")
        return self

    def pause(self, port: int) -> None:
        """The node on `port` stopped (SIGSTOP): its connections stay open, nothing answers,
        as a master cut off by the network. resume() lets it go on."""
        self._processes[self.ports.index(port)].send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        self._processes[self.ports.index(port)].send_signal(signal.SIGCONT)

    def kill(self, port: int) -> None:
        """The node on `port` killed (SIGKILL), as a master dies: the others keep running."""
        _kill(self._processes[self.ports.index(port)])

    def _ok(self) -> bool:
        for port in self.ports:
            info = subprocess.run(
                ["redis-cli", "-p", str(port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            if "cluster_state:ok" not in info:
                return False
        return True

    def __exit__(self, *exc: object) -> None:
        for process in self._processes:
            _kill(process)
        self._processes = []
