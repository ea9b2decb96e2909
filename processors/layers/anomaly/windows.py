"""Bounded sliding-window bookkeeping of the activity features (rate, burst, fan-out,
reads): counting what is inside a window and dropping what fell out of it."""

from __future__ import annotations

from bisect import bisect_right
from typing import Final

__all__ = [
    "READ_BUCKETS",
    "count_after",
    "distinct_after",
    "drop_before",
    "prune_reads",
    "reads_after",
]

READ_BUCKETS: Final = 60
"""The exfiltration window is counted in this many buckets of reads."""


def count_after(times: list[int] | None, cutoff: int) -> int:
    """How many of the sorted ``times`` are later than ``cutoff``."""
    if not times:
        return 0
    return len(times) - bisect_right(times, cutoff)


def distinct_after(touched: dict[str, int] | None, resource: str, cutoff: int) -> int:
    """Distinct resources touched after ``cutoff``, counting ``resource`` now."""
    if not touched:
        return 1
    expired = 0
    for at in touched.values():  # oldest first; observe keeps the expired prefix short
        if at > cutoff:
            break
        expired += 1
    live = len(touched) - expired
    last = touched.get(resource)
    return live + (0 if last is not None and last > cutoff else 1)


def drop_before(touched: dict[str, int], cutoff: int, cap: int) -> None:
    while touched:
        first = next(iter(touched))
        if touched[first] > cutoff and len(touched) <= cap:
            break
        del touched[first]


def reads_after(reads: dict[int, int], now: int, window_ms: int) -> int:
    bucket_ms = window_ms // READ_BUCKETS
    first = (now - window_ms) // bucket_ms
    return sum(count for bucket, count in reads.items() if bucket > first)


def prune_reads(reads: dict[int, int], now: int, window_ms: int) -> None:
    first = (now - window_ms) // (window_ms // READ_BUCKETS)
    for bucket in [b for b in reads if b <= first]:
        del reads[bucket]
