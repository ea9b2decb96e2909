"""Robust statistics of a numeric baseline: median and a robust scale (sigma estimate).

Values are compared on the rule's scale: ``log`` (signed ``log1p``, for amounts that
span orders of magnitude) or ``none``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

__all__ = ["robust_stats", "transformed", "untransformed"]

_MAD_TO_SIGMA: Final = 1.4826
_MEANAD_TO_SIGMA: Final = 1.2533
_IDR_TO_SIGMA: Final = 2.5631


def transformed(value: float, transform: str) -> float:
    if transform == "log":
        return math.copysign(math.log1p(abs(value)), value)
    return value


def untransformed(value: float, transform: str) -> float:
    if transform == "log":
        return math.copysign(math.expm1(min(abs(value), 700.0)), value)
    return value


def robust_stats(values: Iterable[float], transform: str) -> tuple[float, float]:
    """Median and robust scale of the transformed values.

    The scale is the larger of 1.4826 * MAD and the 10-90 % inter-decile range / 2.5631
    (both estimate sigma for normal data). The MAD alone collapses when many values are
    identical (a flood of equal page sizes, say) and would then flag every ordinary
    variation; the inter-decile range keeps the spread of the rest. When both are 0 the
    mean absolute deviation (* 1.2533) is used, and the result is floored at 1 % of
    |median|."""
    xs = sorted(transformed(v, transform) for v in values)
    if not xs:
        return 0.0, 1.0
    median = _median(xs)
    deviations = sorted(abs(x - median) for x in xs)
    last = len(xs) - 1
    decile_spread = (xs[int(0.9 * last)] - xs[int(0.1 * last)]) / _IDR_TO_SIGMA
    spread = max(_MAD_TO_SIGMA * _median(deviations), decile_spread)
    if spread == 0.0:  # most values are equal: fall back to the mean absolute deviation
        spread = _MEANAD_TO_SIGMA * sum(deviations) / len(deviations)
    return median, max(spread, 0.01 * abs(median), 1e-9)


def _median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    mid = n // 2
    if n % 2:
        return sorted_values[mid]
    return (sorted_values[mid - 1] + sorted_values[mid]) / 2
