"""The Infrastructure Health Dashboard's figures: PromQL on the project's Prometheus.

Each :class:`Panel` is one question about the trust guarantees (is every partition
owned? is the log checkpointed? did anything execute without approval?), answered by a
PromQL query and judged against a target. Prometheus scrapes the worker, the sink and
the notary (``trustplane prometheus up``); the alerts it evaluates come from
``infra/prometheus/alerts.yml``.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["PANELS", "Panel", "PanelValue", "PrometheusClient", "PrometheusError"]


class PrometheusError(Exception):
    """Prometheus did not answer a query."""


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    query: str
    unit: str = ""
    by: str = ""
    """The labels each series is shown by, comma-separated (one row per series), or ""
    for one number."""
    warn_above: float | None = None
    warn_below: float | None = None
    help: str = ""


@dataclass(frozen=True)
class PanelValue:
    panel: Panel
    rows: list[tuple[str, float]]
    error: str = ""

    @property
    def status(self) -> str:
        if self.error:
            return "unknown"
        if not self.rows:
            return "no-data"
        for _, value in self.rows:
            if math.isnan(value):
                continue
            if self.panel.warn_above is not None and value > self.panel.warn_above:
                return "alert"
            if self.panel.warn_below is not None and value < self.panel.warn_below:
                return "alert"
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.panel.key,
            "title": self.panel.title,
            "unit": self.panel.unit,
            "help": self.panel.help,
            "query": self.panel.query,
            "status": self.status,
            "error": self.error,
            "rows": [
                {"label": label, "value": None if math.isnan(value) else value}
                for label, value in self.rows
            ],
        }


PANELS: tuple[Panel, ...] = (
    Panel(
        "workers",
        "Gate workers up",
        'up{job="trustplane-worker"}',
        by="instance",
        warn_below=1,
        help="1 per worker Prometheus scrapes; 0 is a worker down (alert WorkerDown)",
    ),
    Panel(
        "standbys",
        "Worker processes standing by",
        "sum by (instance) (trustplane_worker_standby)",
        by="instance",
        help="a warm standby decides nothing and takes over its worker id when the deciding "
        "process ends; it is up without being ready",
    ),
    Panel(
        "partitions",
        "Intent partitions owned by each worker",
        "sum by (instance) (trustplane_assigned_partitions)",
        by="instance",
        help="a partition no worker owns waits; every one should be owned",
    ),
    Panel(
        "lag",
        "Consumer lag per service and topic",
        "sum by (job, topic) (max by (job, group, topic, partition) (trustplane_consumer_lag))",
        unit="records",
        by="topic",
        warn_above=1000,
        help="records waiting behind each consumer group's committed position",
    ),
    Panel(
        "rate",
        "Decisions per second by outcome",
        "sum by (outcome) (rate(trustplane_intents_total[1m]))",
        unit="/s",
        by="outcome",
    ),
    Panel(
        "p50",
        "Decision latency p50",
        "histogram_quantile(0.5, sum by (le) (rate(trustplane_decision_latency_ms_bucket[1m])))",
        unit="ms",
        warn_above=25,
    ),
    Panel(
        "p99",
        "Decision latency p99",
        "histogram_quantile(0.99, sum by (le) (rate(trustplane_decision_latency_ms_bucket[1m])))",
        unit="ms",
        warn_above=25,
        help="target: under 25 ms",
    ),
    Panel(
        "rejects",
        "Rejected records per second by reason",
        "sum by (reason_code) (rate(trustplane_rejections_total[5m]))",
        unit="/s",
        by="reason_code",
        help="malformed input sent to `rejected` with its reason",
    ),
    Panel(
        "errors",
        "Aborted transactions and failed sink writes (5 min)",
        '(sum(increase(trustplane_transactions_total{result="aborted"}[5m])) or vector(0))'
        ' + (sum(increase(trustplane_sink_flushes_total{result="failed"}[5m])) or vector(0))',
        warn_above=0,
    ),
    Panel(
        "sink_lag",
        "Sink lag",
        'sum(max by (group, topic, partition) (trustplane_consumer_lag{job="trustplane-sink"}))',
        unit="records",
        warn_above=10000,
        help="records not yet in ClickHouse",
    ),
    Panel(
        "checkpoint_lag",
        "Checkpoint lag",
        "max(trustplane_notary_checkpoint_lag_seconds)",
        unit="s",
        warn_above=1,
        help="how long the oldest uncheckpointed event has waited (alert CheckpointLag over 1 s)",
    ),
    Panel(
        "checkpoint_age",
        "Last checkpoint",
        "time() - max(trustplane_notary_checkpoint_timestamp_seconds)",
        unit="s ago",
        help="grows while the log is idle; that alone is not a fault",
    ),
    Panel(
        "uncheckpointed",
        "Events waiting for a checkpoint",
        "max(trustplane_notary_uncheckpointed_events)",
        unit="events",
        warn_above=1000,
    ),
    Panel(
        "switches",
        "Kill switches engaged",
        "max by (scope) (trustplane_killswitches_engaged)",
        by="scope",
        warn_above=0,
    ),
    Panel(
        "quarantines",
        "Quarantines in force",
        "max by (scope) (trustplane_quarantines)",
        by="scope",
        warn_above=0,
    ),
    Panel(
        "agents",
        "Agents by status",
        "max by (status) (trustplane_agents)",
        by="status",
    ),
    Panel(
        "unauthorized",
        "Unauthorized executions (outcomes without an approval)",
        "sum(trustplane_unauthorized_executions_total)",
        warn_above=0,
        help="any value above 0 is an incident: investigate every one (Lineage → gap views)",
    ),
    Panel(
        "key_age",
        "Approval signing-key age",
        "max by (kid) (trustplane_signing_key_age_seconds) / 86400",
        unit="days",
        by="kid",
        warn_above=90,
        help="rotate with `trustplane keys rotate`",
    ),
)


def _label(labels: dict[str, str], by: str) -> str:
    parts = [labels.get(name.strip(), "") for name in by.split(",") if name.strip()]
    return " · ".join(p.removeprefix("trustplane-") for p in parts if p)


class PrometheusClient:
    """``/api/v1/query`` and ``/api/v1/alerts`` of one Prometheus server (blocking)."""

    def __init__(self, url: str, timeout_s: float = 3.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(  # noqa: S310 - the configured Prometheus
                f"{self.url}{path}{query}", timeout=self.timeout_s
            ) as response:
                document = json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise PrometheusError(
                f"Prometheus at {self.url} does not answer ({exc}); start it with "
                "`trustplane prometheus up`"
            ) from exc
        if document.get("status") != "success":
            raise PrometheusError(str(document.get("error", "query failed")))
        return document["data"]

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        data = self._get("/api/v1/query", {"query": promql})
        out: list[tuple[dict[str, str], float]] = []
        if data.get("resultType") == "scalar":
            return [({}, float(data["result"][1]))]
        for series in data.get("result", []):
            out.append((dict(series.get("metric", {})), float(series["value"][1])))
        return out

    def panel(self, panel: Panel) -> PanelValue:
        try:
            series = self.query(panel.query)
        except PrometheusError as exc:
            return PanelValue(panel, [], str(exc))
        rows = [(labels.get(panel.by, "") if panel.by else "", value) for labels, value in series]
        return PanelValue(panel, sorted(rows))

    def alerts(self) -> list[dict[str, Any]]:
        data = self._get("/api/v1/alerts")
        return [
            {
                "name": alert.get("labels", {}).get("alertname", ""),
                "state": alert.get("state", ""),
                "severity": alert.get("labels", {}).get("severity", ""),
                "summary": alert.get("annotations", {}).get("summary", ""),
                "since": alert.get("activeAt", ""),
            }
            for alert in data.get("alerts", [])
        ]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 - the configured Prometheus
                f"{self.url}/-/ready", timeout=self.timeout_s
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False
