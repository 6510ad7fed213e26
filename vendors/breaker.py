"""A circuit breaker per vendor: stop calling a vendor that keeps failing, probe it now and then.

closed --N failures in a row--> open --reset time passed--> half-open (one probe at a time)
half-open --probe succeeds--> closed;  --probe fails--> open again
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        reset_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failure_threshold
        self._reset_after_s = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = CLOSED

    @property
    def failures(self) -> int:
        """Failures in a row since the last success."""
        return self._failures

    def allow(self) -> bool:
        """Whether a call may go out now. In half-open, only one probe at a time."""
        if self.state == OPEN and self._clock() - self._opened_at >= self._reset_after_s:
            self.state = HALF_OPEN
        if self.state == CLOSED:
            return True
        if self.state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def retry_in(self) -> float:
        """Seconds until a call may be allowed again (0 when closed)."""
        if self.state == CLOSED:
            return 0.0
        return max(self._opened_at + self._reset_after_s - self._clock(), 0.05)

    def succeeded(self) -> None:
        self._failures = 0
        self._probing = False
        self.state = CLOSED

    def failed(self) -> None:
        self._probing = False
        self._failures += 1
        if self.state == HALF_OPEN or self._failures >= self._threshold:
            self.state = OPEN
            self._opened_at = self._clock()
