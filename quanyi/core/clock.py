"""Time as the hot path sees it: injectable, so tests can cross midnight on demand."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

Clock = Callable[[], float]
"""Returns the current unix time in seconds."""

system_clock: Clock = time.time


def rfc3339(ms: int) -> str:
    """A unix millisecond as RFC 3339 in UTC, as the APIs show times."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local_day(now: float, zone: ZoneInfo) -> tuple[str, int]:
    """The local calendar day of `now` as YYYYMMDD and the unix second at which it ends."""
    local = datetime.fromtimestamp(now, zone)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=1)).replace(tzinfo=None).replace(tzinfo=zone)
    return start.strftime("%Y%m%d"), int(end.timestamp())


class LocalCalendar:
    """local_day() for a stream of nearby times: recomputed only when a time leaves the day
    it last computed, since zone arithmetic costs more than the rest of a claim's key building."""

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone
        self._start = self._end = 0.0
        self._day = ""

    def day(self, now: float) -> tuple[str, int]:
        if not self._start <= now < self._end:
            self._day, end = local_day(now, self._zone)
            self._end = float(end)
            self._start = (
                datetime.strptime(self._day, "%Y%m%d").replace(tzinfo=self._zone).timestamp()
            )
        return self._day, int(self._end)
