"""`quanyi run` and `quanyi serve` on a port that is taken: one clear line and a non-zero exit,
at once, before any worker starts; no traceback, no process left waiting for Ctrl-C."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.settings import (
    TEST_DATABASE_URL,
    TEST_PREFIX,
    TEST_REDIS_URL,
    settings_for_tests,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.create_server(("127.0.0.1", 0)) as held:
        yield held.getsockname()[1]


@pytest.mark.parametrize("command", [["run"], ["serve"], ["serve", "--workers", "2"]], ids=" ".join)
def test_a_taken_port_fails_at_once_with_one_clear_line(database, redis, taken_port, command):
    env = {
        **os.environ,
        "QUANYI_DATABASE_URL": TEST_DATABASE_URL,
        "QUANYI_REDIS_URL": TEST_REDIS_URL,
        "QUANYI_KEY_PREFIX": TEST_PREFIX,
        "QUANYI_SECRETS_KEY": settings_for_tests().secrets_key,
        "QUANYI_WORKER_METRICS_PORT": "0",
        "QUANYI_HTTP_HOST": "127.0.0.1",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "quanyi.cli", *command, "--port", str(taken_port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired as exc:  # run() killed it: it sat there
        raise AssertionError(f"quanyi {' '.join(command)} did not exit on a taken port") from exc
    assert done.returncode != 0
    expected = f"quanyi: cannot listen on 127.0.0.1:{taken_port}: address already in use"
    assert expected in done.stderr.splitlines(), done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "workers running" not in done.stdout  # nothing claims to be serving
