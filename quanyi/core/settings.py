"""Settings, parsed once at start-up and passed down; nothing else reads the environment."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    # The Redis at redis_url is a Redis Cluster (any node of it): the service opens a cluster
    # client, and each script call stays in one slot (quanyi/stores/keys.py).
    redis_cluster: bool = False
    # The virtual shards campaigns and their outboxes are spread over (quanyi/stores/keys.py):
    # 1 on a single Redis; on a cluster, a few per master so shards move with slots. Set it
    # once, before the first claim.
    redis_shards: int = 1
    database_url: str = "postgresql://127.0.0.1:5432/quanyi"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    tz: str = "Asia/Shanghai"
    # Every Redis key starts with this; tests use their own.
    key_prefix: str = "qy"
    # Channel request signatures older or newer than this are refused.
    signature_window_s: int = 300
    # Idempotency keys outlive their campaign's end by this much.
    idempotency_retention_days: int = 7
    # A reversal that comes before its original waits this long for it.
    event_hold_days: int = 30
    staff_session_ttl_s: int = 8 * 3600
    # Claims that arrive together go to Redis as one script call of at most this many.
    claim_batch_max: int = 64
    claim_batch_concurrency: int = 4
    # How often each process reloads channel secrets from PostgreSQL.
    channel_refresh_s: float = 5.0
    # The key channel secrets are sealed with at rest: `file:PATH` or `env:VARIABLE` holding 32
    # random bytes (hex or base64). Empty: a DEMO key under var/demo-keys/, never in production.
    secrets_key: str = ""
    # While a new secrets key is rolled out: the key it replaces, in the same form. Secrets
    # sealed under either open; `quanyi channel rekey` seals them all under the new one, after
    # which this is emptied (README "Rotating the secrets key"). H5 session tokens signed with
    # a key derived from it are accepted too, for their few minutes.
    secrets_key_previous: str = ""
    # A rotated channel secret keeps signing requests this long beside the new one
    # (`quanyi channel rotate --grace`, POST /admin/v1/channels/{id}/rotate).
    channel_rotation_grace_s: float = 86400.0
    # The rate limit of a channel without one of its own (PUT /admin/v1/channels/{id}/rate-limit):
    # requests per second, and the burst allowed at once (0: as many as one second's). 0 per
    # second: no limit.
    channel_rate_per_s: float = 0.0
    channel_rate_burst: int = 0
    ledger_batch_size: int = 2000
    ledger_block_ms: int = 100
    # A small batch waits this long for company: bigger transactions, far less work per grant.
    ledger_linger_ms: int = 50
    # Outbox entries a dead ledger worker left pending are re-claimed after this idle time.
    ledger_reclaim_idle_ms: int = 30_000
    # Outbox entries the fulfilment worker reads at once, and how long one read waits for them.
    fulfil_batch_size: int = 500
    fulfil_block_ms: int = 100
    # Outbox entries a dead fulfilment worker left pending are re-claimed after this idle time
    # (0: the ledger's, ledger_reclaim_idle_ms).
    fulfil_reclaim_idle_ms: int = 0
    # A vendor's circuit opens after this many failures in a row and is tried again this long
    # after.
    fulfil_breaker_threshold: int = 5
    fulfil_breaker_reset_s: float = 5.0
    # Fulfilments under way at once in one worker; beyond it the worker stops reading.
    fulfil_max_tasks: int = 20_000
    # A parked grant taken for a retry is the taker's for this long; a worker that dies with it
    # leaves it due again after. Keep it above the slowest vendor's timeout.
    fulfil_lease_ms: int = 60_000
    # How often the worker's side tasks run: retries of parked grants, re-claiming what a dead
    # worker left pending, vendor changes, the code-pool check, expiry of fulfilled grants.
    fulfil_retries_every_s: float = 0.1
    fulfil_reclaim_every_s: float = 1.0
    fulfil_vendors_every_s: float = 10.0
    fulfil_code_pools_every_s: float = 1.0
    fulfil_expiry_every_s: float = 30.0
    # Prometheus port of a standalone ledger worker; the fulfilment worker takes the next one.
    worker_metrics_port: int = 9101
    # /readyz answers 503 while a worker of the process is this many seconds behind the outbox
    # (0: no lag check; a dead worker is always reported).
    ready_max_lag_s: float = 60.0
    # Idempotency entries are spread over this many small hashes. Set it once, before the first
    # claim: size it to about the request ids retained at once divided by 100.
    idempotency_buckets: int = 16384
    # An audience's members file (PUT /admin/v1/audiences/{id}/members) is refused above this.
    audience_max_bytes: int = 256 * 1024 * 1024
    # The past transactions of a campaign's dry run (POST /admin/v1/campaigns/{id}/simulate).
    simulate_max_bytes: int = 256 * 1024 * 1024
    # Dual control (quanyi/campaigns/approvals.py): approving a campaign, a revision or a bulk
    # issuance whose money (its budget, else stock x unit cost) exceeds this many fen needs two
    # distinct approvers, one of them at head office. The bank's rule is 5,000,000 fen
    # (CNY 50,000); 0 turns it off (one approver for any amount).
    dual_approval_above: int = 5_000_000
    # One JSON line per HTTP request on the log (quanyi/web/access_log.py).
    access_log: bool = True
    # DEBUG, INFO, WARNING or ERROR: the level of the JSON log lines on stderr.
    log_level: str = "INFO"
    # Once head office has a budget for a year, a campaign starting in it is approved only with
    # a budget (reserved from its branch's); off: one without a budget is approved unreserved.
    budget_required: bool = True
    # How often the campaign scheduler moves campaigns at their window's edges and watches
    # stock (quanyi/campaigns/schedule.py).
    schedule_every_s: float = 5.0
    # The bank's webhook for notifications (quanyi/notifications/webhook.py); empty: they are
    # kept in the outbox, not sent. The secret signs them; it is never logged nor shown.
    webhook_url: str = ""
    webhook_secret: str = dataclasses.field(default="", repr=False)
    webhook_timeout_s: float = 5.0
    # After this many attempts a notification is marked failed; between them the wait doubles
    # from the first backoff up to the cap: the defaults keep trying for about a day.
    webhook_max_attempts: int = 35
    webhook_backoff_s: float = 2.0
    webhook_backoff_max_s: float = 3600.0
    webhook_poll_s: float = 1.0
    # Delivered notifications are deleted after this many days (those of live campaigns stay).
    webhook_retention_days: int = 30
    # The customer H5 page (quanyi/issuance/h5.py): how long a session a channel asks for
    # lasts, and the key its tokens are signed with (`file:PATH` or `env:VARIABLE`, 32 random
    # bytes; empty: derived from the secrets key, the DEMO one when that is unset too).
    h5_session_ttl_s: int = 900
    h5_session_key: str = ""
    # While a new session key is rolled out: the one it replaces, whose tokens are still
    # accepted (they last h5_session_ttl_s); none needed when the key is derived from the
    # secrets key, whose previous key serves.
    h5_session_key_previous: str = ""
    # Where the page is served, for the session's `url` (https://h5.bank.example); empty: a
    # relative /h5/?t=... the channel puts on its own host.
    h5_base_url: str = ""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Defaults, then the TOML file named by QUANYI_CONFIG, then QUANYI_* variables."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        config_file = env.get("QUANYI_CONFIG")
        if config_file:
            values.update(_read_toml(Path(config_file)))
        for field in dataclasses.fields(cls):
            raw = env.get(f"QUANYI_{field.name.upper()}")
            if raw is not None:
                values[field.name] = raw
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        typed: dict[str, Any] = {}
        for name, raw in values.items():
            kind = type(getattr(cls, name))
            try:
                typed[name] = _boolean(raw) if kind is bool else kind(raw)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"setting {name}: {raw!r} is not a valid {kind.__name__}") from exc
        settings = cls(**typed)
        settings.zone  # noqa: B018 - fail at start-up on an unknown time zone
        if not 1 <= settings.redis_shards <= 1024:
            raise ValueError("setting redis_shards: from 1 to 1024")
        if settings.dual_approval_above < 0:
            raise ValueError("setting dual_approval_above: fen, 0 or more (0: off)")
        if not settings.schedule_every_s > 0:
            raise ValueError("setting schedule_every_s: seconds, more than 0")
        if not settings.webhook_poll_s > 0:
            raise ValueError("setting webhook_poll_s: seconds, more than 0")
        if settings.webhook_max_attempts < 1:
            raise ValueError("setting webhook_max_attempts: 1 or more")
        if settings.webhook_retention_days < 1:
            raise ValueError("setting webhook_retention_days: 1 or more")
        if not 0 < settings.h5_session_ttl_s <= 3600:
            raise ValueError("setting h5_session_ttl_s: seconds, from 1 to 3600")
        if settings.log_level.upper() not in LOG_LEVELS:
            raise ValueError(
                f"setting log_level: {settings.log_level!r} is not one of {LOG_LEVELS}"
            )
        return settings

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _boolean(raw: Any) -> bool:
    """A TOML boolean, or true/false, on/off, yes/no, 1/0 from the environment."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "on", "yes"):
        return True
    if text in ("0", "false", "off", "no"):
        return False
    raise ValueError(raw)


def _read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    return dict(data.get("quanyi", data))
