"""Prometheus metrics, defined once. Labels take few values: never a customer id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CLAIM_SECONDS = Histogram(
    "quanyi_claim_duration_seconds",
    "Time to decide a claim, from a verified request to the decision, by outcome",
    ["outcome"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
CLAIM_BATCH_SIZE = Histogram(
    "quanyi_claim_batch_size",
    "Claims decided by one claim.lua call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
EVENTS = Counter(
    "quanyi_card_events_total", "Card events by outcome (accepted, duplicate, rejected)", ["status"]
)
GOAL_GRANTS = Counter("quanyi_goal_grants_total", "Grants made by a card event reaching a goal")
HTTP_ERRORS = Counter("quanyi_http_errors_total", "Error responses by code", ["code"])
STOCK_REMAINING = Gauge(
    "quanyi_stock_remaining",
    "Stock left per campaign reward (active campaigns)",
    ["campaign", "reward"],
    multiprocess_mode="max",
)
STOCK_TOTAL = Gauge(
    "quanyi_stock_total",
    "Stock of each campaign reward (active campaigns): quanyi_stock_remaining's whole",
    ["campaign", "reward"],
    multiprocess_mode="max",
)
OUTBOX_LAG_ENTRIES = Gauge(
    "quanyi_outbox_lag_entries",
    "Outbox entries not yet persisted to the ledger",
    multiprocess_mode="max",
)
OUTBOX_LAG_SECONDS = Gauge(
    "quanyi_outbox_lag_seconds",
    "Age of the oldest outbox entry not yet persisted to the ledger",
    multiprocess_mode="max",
)
OUTBOX_SHARD_READ_FAILURES = Counter(
    "quanyi_outbox_shard_read_failures_total",
    "Reads of one shard's outbox that failed (its Redis away) while the other shards were read",
    ["group"],
)
LEDGER_BATCH_SIZE = Histogram(
    "quanyi_ledger_batch_size",
    "Grants written to PostgreSQL per ledger batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
LEDGER_PERSISTED = Counter("quanyi_ledger_persisted_total", "Grants newly written to the ledger")
LEDGER_DEAD_LETTERS = Counter(
    "quanyi_ledger_dead_letters_total", "Outbox entries moved to the dead-letter stream", ["reason"]
)
LEDGER_RETRIES = Counter(
    "quanyi_ledger_retries_total", "Ledger batches retried after PostgreSQL was unreachable"
)
VENDOR_CALL_SECONDS = Histogram(
    "quanyi_vendor_call_duration_seconds",
    "Vendor issue calls by vendor and outcome (ok, retryable, rejected)",
    ["vendor", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
VENDOR_RETRIES = Counter(
    "quanyi_vendor_retries_total", "Fulfilments parked for a later attempt", ["vendor"]
)
VENDOR_CIRCUIT = Gauge(
    "quanyi_vendor_circuit_state",
    "Circuit breaker per vendor: 0 closed, 1 half-open, 2 open",
    ["vendor"],
    multiprocess_mode="max",
)
VENDOR_IN_FLIGHT = Gauge(
    "quanyi_vendor_in_flight", "Vendor calls under way", ["vendor"], multiprocess_mode="sum"
)
VENDOR_DEAD_LETTERS = Counter(
    "quanyi_vendor_dead_letters_total", "Grants whose fulfilment failed for good", ["vendor"]
)
FULFILMENTS = Counter(
    "quanyi_fulfilments_total", "Fulfilment outcomes by vendor", ["vendor", "outcome"]
)
CODEPOOL_REMAINING = Gauge(
    "quanyi_codepool_remaining",
    "Voucher codes left per vendor and right",
    ["vendor", "right"],
    multiprocess_mode="max",
)
WORKER_UP = Gauge(
    "quanyi_worker_up",
    "1 while a worker of this process runs, 0 while it is dead or waiting to be restarted",
    ["worker"],
    multiprocess_mode="livemin",
)
REDEMPTIONS = Counter(
    "quanyi_redemptions_total", "Redemption callbacks by vendor and outcome", ["vendor", "outcome"]
)
CHANNEL_REQUESTS = Counter(
    "quanyi_channel_requests_total",
    "Signed channel requests past the signature check, by channel and outcome (allowed, "
    "rate_limited): a channel's id, of which a bank has a handful",
    ["channel", "outcome"],
)
CHANNEL_PREVIOUS_SECRET = Counter(
    "quanyi_channel_previous_secret_requests_total",
    "Requests signed with a channel's rotated-out secret during its grace period: at 0, every "
    "caller of the channel uses the new one",
    ["channel"],
)
