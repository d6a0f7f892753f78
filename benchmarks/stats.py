"""Medians, percentiles and the number formats the report uses."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["fmt_ms", "fmt_rate", "fmt_ratio", "median", "percentile", "ratio"]


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation, or NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when either is missing or the denominator is 0."""
    if denominator == 0 or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return numerator / denominator


def fmt_ratio(value: float) -> str:
    """``0.12x``."""
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def fmt_ms(seconds: float) -> str:
    """Seconds shown as milliseconds: ``12.3 ms``."""
    if math.isnan(seconds):
        return "n/a"
    ms = seconds * 1000
    return f"{ms:.1f} ms" if abs(ms) < 100 else f"{ms:.0f} ms"


def fmt_rate(per_second: float, unit: str = "/s") -> str:
    """A rate with three significant figures: ``12.4/s``, ``1,230/s``."""
    if math.isnan(per_second):
        return "n/a"
    if per_second >= 100:
        return f"{per_second:,.0f}{unit}"
    return f"{per_second:.3g}{unit}"
