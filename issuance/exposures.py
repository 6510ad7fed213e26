"""Which customers were shown which campaigns (GET offers), for the report funnel: gathered in
memory and added to each campaign's HyperLogLog (keys.offered) once a second, a pipeline for
all, so an offers request pays nothing for it. A crash loses at most the last second of them:
the funnel is a count of customers reached, not a ledger."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from redis.asyncio import Redis

from quanyi.stores.keys import Keys

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 1.0
# Pairs held between flushes at most: beyond it (Redis away for long) new ones are dropped.
MAX_PENDING = 200_000
# How long a campaign's count is kept after its end.
KEEP_AFTER_END_S = 400 * 86_400


class Exposures:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._pending: defaultdict[str, set[str]] = defaultdict(set)
        self._ends_s: dict[str, int] = {}
        self._held = 0
        self.dropped = 0

    def seen(self, campaign_id: str, ends_ms: int, customer_id: str) -> None:
        """The customer was shown the campaign (one of its rewards) just now."""
        if self._held >= MAX_PENDING:
            self.dropped += 1
            return
        customers = self._pending[campaign_id]
        if customer_id not in customers:
            customers.add(customer_id)
            self._held += 1
        self._ends_s[campaign_id] = ends_ms // 1000

    async def flush(self) -> int:
        """Adds what was gathered; returns the pairs written. On failure they are kept for the
        next flush."""
        if self.dropped:
            log.warning(
                "offer exposures: %d not recorded (more than %d waiting)", self.dropped, MAX_PENDING
            )
            self.dropped = 0
        if not self._held:
            return 0
        pending, ends = self._pending, self._ends_s
        self._pending, self._ends_s, held = defaultdict(set), {}, self._held
        self._held = 0
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for campaign_id, customers in pending.items():
                    key = self._keys.offered(campaign_id)
                    pipe.pfadd(key, *customers)
                    pipe.expireat(key, ends[campaign_id] + KEEP_AFTER_END_S)
                await pipe.execute()
        except Exception:
            for campaign_id, customers in pending.items():
                for customer_id in customers:
                    self.seen(campaign_id, ends[campaign_id] * 1000, customer_id)
            raise
        return held

    async def keep_flushing(self, every_s: float = FLUSH_EVERY_S) -> None:
        """flush() every `every_s` for good, and once more when stopped; a failed flush is
        tried again next time."""
        try:
            while True:
                await asyncio.sleep(every_s)
                try:
                    await self.flush()
                except Exception as exc:  # Redis away: kept for the next flush
                    log.warning("offer exposures not recorded yet (%d held): %s", self._held, exc)
        finally:
            with contextlib.suppress(Exception):
                await self.flush()
