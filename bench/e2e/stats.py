"""Latency histograms (HDR, microsecond resolution, 3 significant digits)."""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = ["Latency", "PERCENTILES"]

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
)
_HIGHEST_US = 600_000_000  # 10 minutes


class Latency:
    """End-to-end latencies of one phase, recorded in µs."""

    def __init__(self) -> None:
        self._histogram: Any = HdrHistogram(1, _HIGHEST_US, 3)
        self.count = 0

    def record_ns(self, nanoseconds: int) -> None:
        micros = min(max(1, nanoseconds // 1000), _HIGHEST_US)
        self._histogram.record_value(micros)
        self.count += 1

    def summary(self) -> dict[str, float]:
        """Percentiles, mean and max in milliseconds."""
        h = self._histogram
        out = {f"{name}_ms": h.get_value_at_percentile(p) / 1000 for name, p in PERCENTILES}
        out["mean_ms"] = h.get_mean_value() / 1000
        out["max_ms"] = h.get_max_value() / 1000
        out["min_ms"] = h.get_min_value() / 1000
        return out

    def encode(self) -> str:
        """The whole histogram, HdrHistogram's compressed base64 form (for re-analysis:
        ``HdrHistogram.decode(text)``)."""
        encoded = self._histogram.encode()
        return encoded.decode() if isinstance(encoded, bytes) else str(encoded)
