"""Which of overlapping reloads of an in-memory copy may replace it.

A staff change reloads a directory (vendors, channels) at once while the periodic reload may be
under way: if the periodic one read the database before the change committed and finishes after
the change's own reload, it would put the old rows back until the next period (a rotated key
refused, a disabled channel still admitted). Each reload takes a ticket when it starts; it may
replace the copy only if no reload that started after it has already done so.
"""

from __future__ import annotations


class Reloads:
    def __init__(self) -> None:
        self._started = 0
        self._applied = 0

    def start(self) -> int:
        """A ticket for a reload starting now, before it reads anything."""
        self._started += 1
        return self._started

    def may_apply(self, ticket: int) -> bool:
        """Whether the reload of `ticket` may replace the copy (and it now counts as applied)."""
        if ticket < self._applied:
            return False
        self._applied = ticket
        return True
