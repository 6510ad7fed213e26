"""Figures from raw measurements: percentiles, costs per unit, ratios, means between two
readings of a counter."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least a share `q` (0..1) of them at or below
    it; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = min(max(math.ceil(q * len(ordered)), 1), len(ordered))
    return ordered[rank - 1]


def delta(before: float | None, after: float | None) -> float | None:
    return after - before if before is not None and after is not None else None


def per_unit_us(before: float | None, after: float | None, units: int) -> float | None:
    """Microseconds per unit of what a seconds counter grew by between two readings."""
    if before is None or after is None or units <= 0:
        return None
    return (after - before) / units * 1e6


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def mean_between(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """The mean of what a (sum, count) pair, such as a histogram's, added between readings."""
    count = after[1] - before[1]
    return (after[0] - before[0]) / count if count else None
