"""What the anomaly layer found: one :class:`Finding` per triggered feature (reason,
response, evidence), and the wording of counts and durations in reasons."""

from __future__ import annotations

from dataclasses import dataclass

from processors.layers.anomaly.config import AnomalyConfig
from processors.layers.anomaly.features import short
from processors.layers.anomaly.rules import Flag, Limit

__all__ = ["Finding", "count_text", "flag_finding", "hours", "secs", "threshold_finding"]


@dataclass(slots=True)
class Finding:
    feature: str
    reason: str
    response: str
    evidence: dict[str, str]


def threshold_finding(feature: str, reason: str, value: int, limit: Limit) -> Finding:
    return Finding(
        feature,
        reason,
        limit.response,
        {f"{feature}.value": str(value), f"{feature}.threshold": str(limit.max)},
    )


def flag_finding(feature: str, reason: str, value: str, flag: Flag) -> Finding:
    return Finding(
        feature,
        reason,
        flag.response,
        {f"{feature}.value": short(value), f"{feature}.threshold": "known to the baseline"},
    )


def count_text(n: int, config: AnomalyConfig) -> str:
    """A window count; at the state bound the true count may be higher."""
    return f">={n}" if n > config.max_window_events else str(n)


def secs(ms: int) -> str:
    return f"{ms / 1000:g}"


def hours(ms: int) -> str:
    return f"{ms / 3_600_000:.1f}".rstrip("0").rstrip(".")
