"""The `quanyi` command as tests run it: `python -m quanyi.cli` on this run's test stores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from quanyi.core.settings import Settings
from tests.support.settings import (
    SECRETS_KEY_ENV,
    TEST_DATABASE_URL,
    TEST_PREFIX,
    TEST_REDIS_URL,
)

ROOT = Path(__file__).resolve().parent.parent.parent


def cli_env(**env: str) -> dict[str, str]:
    """The environment of a command on the test stores; `env` (QUANYI_* and others) wins."""
    return {
        **os.environ,
        "QUANYI_DATABASE_URL": TEST_DATABASE_URL,
        "QUANYI_REDIS_URL": TEST_REDIS_URL,
        "QUANYI_KEY_PREFIX": TEST_PREFIX,
        "QUANYI_SECRETS_KEY": f"env:{SECRETS_KEY_ENV}",
        "QUANYI_WORKER_METRICS_PORT": "0",
        "QUANYI_LOG_LEVEL": "WARNING",
        **env,
    }


def quanyi(
    *argv: str, stdin: str = "", timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """`quanyi ARGV`, run to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "quanyi.cli", *argv],
        cwd=ROOT,
        env=cli_env(**env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def store_env(settings: Settings) -> dict[str, str]:
    """The QUANYI_* settings that point a command at the Redis `settings` names: the single
    test Redis, or the scratch cluster with its shards (cli_env's `env`)."""
    return {
        "QUANYI_REDIS_URL": settings.redis_url,
        "QUANYI_REDIS_CLUSTER": "true" if settings.redis_cluster else "false",
        "QUANYI_REDIS_SHARDS": str(settings.redis_shards),
    }
