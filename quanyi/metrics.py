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
HTTP_ERRORS = Counter("quanyi_http_errors_total", "Error responses by code", ["code"])
STOCK_REMAINING = Gauge(
    "quanyi_stock_remaining",
    "Stock left per campaign reward (active campaigns)",
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
