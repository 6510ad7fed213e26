"""What an operator may tune in a fulfilment worker. The service takes each from its `fulfil_*`
setting (quanyi/core/settings.py, `QUANYI_FULFIL_*`), where each is explained; these defaults
are the same, for a worker built without settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FulfilmentTunables:
    batch_size: int = 500
    block_ms: int = 100
    reclaim_idle_ms: int = 30_000
    breaker_threshold: int = 5
    breaker_reset_s: float = 5.0
    max_tasks: int = 20_000
    lease_ms: int = 60_000
    retries_every_s: float = 0.1
    reclaim_every_s: float = 1.0
    vendors_every_s: float = 10.0
    code_pools_every_s: float = 1.0
    expiry_every_s: float = 30.0
