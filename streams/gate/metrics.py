"""All of the gate's Prometheus metrics, in one place, against an injectable registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GateMetrics", "LATENCY_BUCKETS_MS"]

LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class GateMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.intents = Counter(
            "trustplane_intents_total", "Intents by first outcome.", ["outcome"], registry=r
        )
        self.rejections = Counter(
            "trustplane_rejections_total",
            "Bad input records by reason code.",
            ["reason_code"],
            registry=r,
        )
        self.verdicts = Counter(
            "trustplane_layer_verdicts_total", "Layer verdicts.", ["layer", "status"], registry=r
        )
        self.lineage_events = Counter(
            "trustplane_lineage_events_total", "Lineage events produced.", registry=r
        )
        self.untrusted_state = Counter(
            "trustplane_gate_state_untrusted_total",
            "gate-state records that failed authentication (their agent fails closed).",
            registry=r,
        )
        self.decision_latency = Histogram(
            "trustplane_decision_latency_ms",
            "Time from reading an intent to its decision, in milliseconds.",
            buckets=LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.transactions = Counter(
            "trustplane_transactions_total",
            "Kafka transactions by result.",
            ["result"],
            registry=r,
        )
        self.batch_size = Histogram(
            "trustplane_transaction_records",
            "Input records per transaction.",
            buckets=(1, 5, 10, 25, 50, 100, 200, 500),
            registry=r,
        )
        self.control_commands = Counter(
            "trustplane_control_commands_total",
            "Control commands seen, by kind.",
            ["kind"],
            registry=r,
        )
        self.unauthorized_executions = Counter(
            "trustplane_unauthorized_executions_total",
            "Executions reported without a valid approval (integrity alerts).",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "trustplane_assigned_partitions", "Intent partitions this worker owns.", registry=r
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def count_verdict(self, layer: str, status: str) -> None:
        """``verdicts{layer,status}`` + 1 (children are looked up once, not per intent:
        ``labels()`` takes a lock and validates the values on every call)."""
        self._child(self.verdicts, layer, status).inc()

    def count_intent(self, outcome: str) -> None:
        self._child(self.intents, outcome).inc()

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child
