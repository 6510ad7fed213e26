"""deploy/redis.conf: a scratch redis-server (Debian's) started with it, only its port, address
and directory overridden on the command line, runs with what the file promises: nothing ever
evicted, the append-only file fsynced every second and replayed at start, and the API's own
start-up check accepts it. A kill -9 loses none of the writes it answered."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError

from quanyi.core.settings import Settings
from quanyi.stores.redis import open_redis
from tests.support.scratch import free_port

CONF = Path(__file__).resolve().parent.parent / "deploy" / "redis.conf"
PROMISED = {
    "maxmemory-policy": "noeviction",  # the outbox, stock counters, idempotency: never evicted
    "appendonly": "yes",
    "appendfsync": "everysec",
    "no-appendfsync-on-rewrite": "no",
    "aof-use-rdb-preamble": "yes",
    "aof-load-truncated": "yes",
    "stop-writes-on-bgsave-error": "yes",
    "protected-mode": "yes",
    "busy-reply-threshold": "5000",
}


@contextlib.contextmanager
def redis_with_conf(root: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    argv = [server, str(CONF), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)]
    argv += ["--daemonize", "no", "--logfile", str(root / "redis.log")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        client = Redis(port=port, socket_timeout=2)
        deadline = time.monotonic() + 30
        while not _pong(client):
            assert proc.poll() is None, (root / "redis.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "redis with deploy/redis.conf did not answer"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _pong(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except (OSError, RedisError):
        return False


def test_redis_runs_with_what_the_file_promises(tmp_path):
    port = free_port()
    with redis_with_conf(tmp_path, port):
        client = Redis(port=port, decode_responses=True)
        for name, value in PROMISED.items():
            assert client.config_get(name) == {name: value}, name
        assert client.config_get("dir") == {"dir": str(tmp_path)}  # the override took
        assert client.info("persistence")["aof_enabled"] == 1


async def test_the_api_start_up_check_accepts_it(tmp_path):
    port = free_port()
    with redis_with_conf(tmp_path, port):
        redis = await open_redis(Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
        await redis.aclose()


def test_a_killed_redis_keeps_every_write_it_answered(tmp_path):
    port = free_port()
    with redis_with_conf(tmp_path, port) as proc:
        client = Redis(port=port, decode_responses=True)
        for i in range(1000):
            client.xadd("outbox", {"grant": f"g{i}"})
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with redis_with_conf(tmp_path, port):
        client = Redis(port=port, decode_responses=True)
        assert client.xlen("outbox") == 1000
