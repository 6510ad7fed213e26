"""Who this test run is: its own database, Redis key prefix, channel and staff password, and the
settings the app under test runs with.

Each run has its own database and key prefix, so runs side by side never meet, and neither ever
touches the service's own data."""

from __future__ import annotations

import os
import secrets
from typing import Any

from quanyi.core.settings import Settings

RUN_ID = os.getpid()
TEST_DATABASE_URL = os.environ.get(
    "QUANYI_TEST_DATABASE_URL", f"postgresql://127.0.0.1:5432/quanyi_test_{RUN_ID}"
)
TEST_REDIS_URL = os.environ.get("QUANYI_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
TEST_PREFIX = f"qyt{RUN_ID}"
PASSWORD = "test-password-1"
CHANNEL = "app"
CHANNEL_SECRET = "test-channel-secret"
# The key channel secrets are sealed with: random per run, named by reference like production's.
SECRETS_KEY_ENV = "QUANYI_TEST_SECRETS_KEY"
os.environ.setdefault(SECRETS_KEY_ENV, secrets.token_hex(32))


def settings_for_tests(**changes: Any) -> Settings:
    """The settings of the app under test (this run's stores, fast timers), with `changes`."""
    base = Settings(
        redis_url=TEST_REDIS_URL,
        database_url=TEST_DATABASE_URL,
        key_prefix=TEST_PREFIX,
        channel_refresh_s=0.2,
        ledger_block_ms=20,
        ledger_reclaim_idle_ms=500,
        worker_metrics_port=0,
        secrets_key=f"env:{SECRETS_KEY_ENV}",
        # One approver for any amount unless a test asks for dual control (test_dual_control).
        dual_approval_above=0,
    )
    return base.replace(**changes)
