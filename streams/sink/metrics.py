"""The sink's Prometheus metrics, on an injectable registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
