"""The sink's Prometheus metrics, on an injectable registry.

Besides what the sink counts, two health values for the Infrastructure Health Dashboard
(``infra/prometheus/README.md``): how far the sink's group is behind
(``trustplane_consumer_lag{group,topic,partition}``, once :meth:`SinkMetrics.watch_group`
named it) and when it last wrote to ClickHouse
(``trustplane_sink_last_flush_timestamp_seconds``, set by :meth:`flushed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.gate.metrics import GroupLag

__all__ = ["SinkMetrics"]


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "trustplane_sink_records_total", "Records read, by topic.", ["topic"], registry=r
        )
        self.rows = Counter(
            "trustplane_sink_rows_total",
            "Rows written to ClickHouse, by table.",
            ["table"],
            registry=r,
        )
        self.poison = Counter(
            "trustplane_sink_poison_total",
            "Records sent to rejected instead of stored, by reason code.",
            ["reason_code"],
            registry=r,
        )
        self.skipped = Counter(
            "trustplane_sink_skipped_total",
            "Bad records skipped, not stored: the gate rejects them (by topic, reason code).",
            ["topic", "reason_code"],
            registry=r,
        )
        self.flushes = Counter(
            "trustplane_sink_flushes_total", "ClickHouse writes, by result.", ["result"], registry=r
        )
        self.flush_seconds = Histogram(
            "trustplane_sink_flush_seconds",
            "Time to write one batch to ClickHouse.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.commits = Counter(
            "trustplane_sink_commits_total",
            "Kafka offset commits, by result.",
            ["result"],
            registry=r,
        )
        self.assigned = Gauge(
            "trustplane_sink_assigned_partitions", "Partitions this sink owns.", registry=r
        )
        self.last_flush = Gauge(
            "trustplane_sink_last_flush_timestamp_seconds",
            "When the sink last wrote a batch to ClickHouse (Unix seconds; 0: not yet).",
            registry=r,
        )
        self.lag: GroupLag | None = None

    def watch_group(self, endpoint: Any, group: str, topics: Sequence[str]) -> GroupLag:
        """Export the lag of the sink's consumer group ``group`` on ``topics`` (full
        names), asked of the broker as ``endpoint`` (the sink's settings)."""
        if self.lag is None:
            self.lag = GroupLag.of(endpoint, group, topics)
            self.registry.register(self.lag)
        return self.lag

    def flushed(self) -> None:
        """A batch was written to ClickHouse now."""
        self.last_flush.set_to_current_time()
