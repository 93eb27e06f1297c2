"""Medians and percentiles, the only statistics the tables use."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def percentile(values: Iterable[float], p: float) -> float:
    """The nearest-rank p-th percentile: the smallest value that at least p % of the
    values do not exceed. No interpolation, so it is always a latency that was seen."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} outside (0, 100]")
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are there; None if none is."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
