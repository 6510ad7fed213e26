"""Time as the hot path sees it: injectable, so tests can cross midnight on demand."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

Clock = Callable[[], float]
"""Returns the current unix time in seconds."""

system_clock: Clock = time.time


def local_day(now: float, zone: ZoneInfo) -> tuple[str, int]:
    """The local calendar day of `now` as YYYYMMDD and the unix second at which it ends."""
    local = datetime.fromtimestamp(now, zone)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=1)).replace(tzinfo=None).replace(tzinfo=zone)
    return start.strftime("%Y%m%d"), int(end.timestamp())
