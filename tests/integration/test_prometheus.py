"""The local Prometheus scrapes a real gate worker and a real notary on the real broker,
and the health dashboard's metrics are queryable from it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams import names
from streams.config import Settings
from streams.dev.estate import setup_estate
from streams.dev.ports import free_ports
from streams.dev.prometheus import LocalPrometheus, PrometheusConfig
from streams.sdk.client import IntentPublisher
from tests.integration.test_sink import running_notary

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus is not installed: `apt-get install prometheus`",
    ),
]

INTENTS = 12


def eventually(
    read: Callable[[], Any],
    what: str,
    timeout: float = 60.0,
    context: Callable[[], Any] = lambda: None,
) -> Any:
    """``read()``'s first truthy value; fails naming ``what`` and ``context()``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = read()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r}); {context()!r}")


def value(prometheus: LocalPrometheus, expr: str) -> float | None:
    """The value of a query with one result, None with none."""
    result = prometheus.query(expr)
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., LocalPrometheus]]:
    started: list[LocalPrometheus] = []

    def start(**targets: Any) -> LocalPrometheus:
        (port,) = free_ports(1)
        config = PrometheusConfig(port=port, scrape_interval_s=1.0, **targets)
        server = LocalPrometheus(tmp_path / "prometheus", config)
        started.append(server)
        server.up(timeout=60)
        return server

    yield start
    for server in started:
        server.down()


def test_prometheus_scrapes_the_worker_and_the_notary(
    settings: Settings, worker_factory: Any, prometheus_factory: Callable[..., LocalPrometheus]
) -> None:
    estate = setup_estate(settings)
    worker = worker_factory(settings).start()
    with running_notary(settings) as notary:
        assert notary.url is not None
        prometheus = prometheus_factory(
            workers=(f"127.0.0.1:{settings.web_port}",),
            notaries=(notary.url.removeprefix("http://"),),
            sinks=(),
        )
        eventually(
            lambda: (
                value(prometheus, 'min(up{job=~"trustplane-worker|trustplane-notary"})') == 1
                and len(prometheus.query("up")) == 2
            ),
            "Prometheus to scrape the worker and the notary",
            context=prometheus.targets,
        )
        with IntentPublisher(settings) as publisher:
            for n in range(INTENTS):
                publisher.publish(estate.intent("billing-agent", "invoices.read", f"inv:{n}"))

        # what the gate counted, as Prometheus scraped it
        decided = eventually(
            lambda: (value(prometheus, "sum(trustplane_intents_total)") or 0) >= INTENTS,
            "the intents' outcomes in trustplane_intents_total",
        )
        assert decided
        approved = value(prometheus, 'sum(trustplane_intents_total{outcome="approved"})')
        assert approved == INTENTS
        assert value(prometheus, "trustplane_worker_ready") == 1
        assert value(prometheus, "sum(trustplane_assigned_partitions)") == settings.partitions
        assert value(prometheus, "trustplane_policy_bundle_active") == 1
        assert (value(prometheus, 'trustplane_agents{status="active"}') or 0) >= 1
        assert value(prometheus, "max(trustplane_killswitches_engaged)") == 0
        assert value(prometheus, "sum(trustplane_quarantines)") == 0
        assert value(prometheus, "trustplane_control_history_problems") == 0
        age = value(prometheus, "max(trustplane_signing_key_age_seconds)")
        assert age is not None and 0 <= age < 3600, "the test's key was made minutes ago"
        p99 = value(
            prometheus,
            "histogram_quantile(0.99, sum by (le) "
            "(increase(trustplane_decision_latency_ms_bucket[5m])))",
        )
        assert p99 is not None and p99 > 0
        # the workers' group has read and committed every intent: its lag is 0
        lag = (
            f'sum(trustplane_consumer_lag{{group="{names.gate_group(settings)}",'
            f'topic="{settings.topic("intents")}"}})'
        )
        eventually(lambda: value(prometheus, lag) == 0, "the gate group's lag on intents")
        partitions = prometheus.query(
            f"trustplane_consumer_lag{{group='{names.gate_group(settings)}'}}"
        )
        assert len(partitions) == 2 * settings.partitions, "intents and outcomes"

        # the notary logs each decision's lineage and checkpoints all of it within a second
        logged = eventually(
            lambda: (
                (size := value(prometheus, "trustplane_notary_log_size") or 0) >= INTENTS
                and value(prometheus, "trustplane_notary_checkpoint_size") == size
                and size
            ),
            "the notary's log and checkpoint to cover the lineage",
        )
        assert logged >= INTENTS
        assert value(prometheus, "trustplane_notary_uncheckpointed_events") == 0
        assert value(prometheus, "trustplane_notary_checkpoint_lag_seconds") == 0
        checkpoint_age = value(
            prometheus, "time() - trustplane_notary_checkpoint_timestamp_seconds"
        )
        assert checkpoint_age is not None and 0 <= checkpoint_age < 300

        # the rules are loaded, and nothing critical fires on a healthy pipeline
        firing = prometheus.query('ALERTS{alertstate="firing",severity="critical"}')
        assert firing == []
        assert value(prometheus, "sum(trustplane_unauthorized_executions_total)") == 0
    assert worker.proc is not None and worker.proc.poll() is None
