"""Time under the tests' control, and local time in a zone."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


class FakeClock:
    """Unix seconds that only move when a test moves them."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def next_local_midnight(now: float, zone: ZoneInfo) -> datetime:
    """The first local midnight after `now` in `zone`, as an aware datetime."""
    local = datetime.fromtimestamp(now, zone)
    return datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone)
