"""Keeps a background worker running: a worker that dies is logged, reported as down, and
started again with a capped, growing backoff.

Workers retry what they can (a store away, a consumer group gone) themselves; what reaches the
supervisor is a bug or a fault nobody foresaw. Restarting takes a fresh worker, so nothing the
dead one held in memory is reused, and the outbox hands its pending entries to the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from quanyi.core import metrics

log = logging.getLogger(__name__)


class Worker(Protocol):
    def run(self) -> Awaitable[None]: ...

    def stop(self) -> None: ...


class Supervisor:
    """Runs the worker `make()` builds until stop(); reports it on `quanyi_worker_up{worker}`."""

    def __init__(
        self,
        name: str,
        make: Callable[[], Worker],
        *,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 60.0,
    ) -> None:
        self.name = name
        self._make = make
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        # A worker that ran this long before dying is restarted after the shortest backoff again.
        self._stable_after_s = stable_after_s
        self._stopping = asyncio.Event()
        self._worker: Worker | None = None
        self.up = False
        self.restarts = 0
        self.last_error: str | None = None
        self._down_since: float | None = None
        self._set_up(False)

    def stop(self) -> None:
        """Stop the worker (it finishes what it has in hand) and restart it no more."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.stop()

    def health(self) -> str:
        """`ok`, or why and for how long the worker has been down (for /readyz)."""
        if self.up:
            return "ok"
        since = time.monotonic() - (self._down_since or time.monotonic())
        return f"down for {since:.1f} s ({self.last_error or 'not started'}); restarting"

    async def run(self) -> None:
        backoff = self._backoff_s
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    worker = self._worker = self._make()
                    self._set_up(True)
                    await worker.run()
                except Exception as exc:
                    self._set_up(False)
                    if time.monotonic() - started >= self._stable_after_s:
                        backoff = self._backoff_s
                    # The class only: a message may carry a connection string or a key.
                    self.last_error = exc.__class__.__name__
                    log.error(
                        "worker %s died; restarting it in %.1f s", self.name, backoff, exc_info=exc
                    )
                else:
                    self._set_up(False)
                    if self._stopping.is_set():
                        return
                    self.last_error = "returned"
                    log.error(
                        "worker %s returned unasked; restarting it in %.1f s", self.name, backoff
                    )
                finally:
                    self._worker = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, self._backoff_max_s)
                if not self._stopping.is_set():
                    self.restarts += 1
                    log.warning("worker %s restarting (restart %d)", self.name, self.restarts)
        finally:
            self._set_up(False)

    def _set_up(self, up: bool) -> None:
        if not up and (self.up or self._down_since is None):
            self._down_since = time.monotonic()
        self.up = up
        metrics.WORKER_UP.labels(self.name).set(1 if up else 0)
