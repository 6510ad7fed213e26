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


def local_period(window: str, at: float, zone: ZoneInfo) -> tuple[str, int]:
    """The calendar period of a goal window holding `at`, in `zone`: its id and the unix second
    at which it ends. `month` is "M202612", `week` (from Monday) "W20261130", named by its
    Monday, and `campaign` is one period ("C") that ends only with the campaign (0 here)."""
    if window == "campaign":
        return "C", 0
    local = datetime.fromtimestamp(at, zone)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if window == "month":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        period = start.strftime("M%Y%m")
    elif window == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
        period = start.strftime("W%Y%m%d")
    else:
        raise ValueError(f"unknown goal window {window!r}")
    return period, int(end.replace(tzinfo=zone).timestamp())


class LocalPeriods:
    """local_period() for many times at once (a batch of card events), remembered per quarter
    hour: every zone's offset is a whole number of quarter hours, so a quarter hour never
    straddles a local midnight and all of it lies in one period."""

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone
        self._known: dict[tuple[str, int], tuple[str, int]] = {}

    def period(self, window: str, at: float) -> tuple[str, int]:
        if window == "campaign":
            return "C", 0
        slot = (window, int(at // 900))
        found = self._known.get(slot)
        if found is None:
            if len(self._known) >= 8192:
                self._known.clear()
            found = self._known[slot] = local_period(window, at, self._zone)
        return found
