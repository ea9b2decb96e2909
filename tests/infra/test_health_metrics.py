"""The health gauges the dashboard reads: consumer lag, the gate's state, the notary's
checkpoint times and its /metrics page, the sink's last write."""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import IsolationLevel, TopicPartition
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.config import Settings
from streams.gate.metrics import GateHealth, GateMetrics, GroupLag
from streams.httpauth import BearerToken
from streams.notary.http import NotaryHTTPServer
from streams.notary.metrics import NotaryMetrics
from streams.sink.metrics import SinkMetrics

TOKEN = "m" * 40


def samples(text: str | bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@dataclass
class FakeAdmin:
    """What the broker answers an admin client about a group, without a broker."""

    partitions: dict[str, int]
    """topic -> partition count"""
    committed: dict[tuple[str, int], int]
    ends: dict[tuple[str, int], int]
    """last stable offsets"""
    starts: dict[tuple[str, int], int] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def list_topics(self, timeout: float = -1) -> Any:
        self.calls.append("list_topics")
        topics = {
            name: SimpleNamespace(error=None, partitions=dict.fromkeys(range(count)))
            for name, count in self.partitions.items()
        }
        return SimpleNamespace(topics=topics)

    def list_consumer_group_offsets(self, request: list[Any], **kwargs: Any) -> dict[str, Any]:
        [asked] = request
        answer = [
            TopicPartition(
                tp.topic, tp.partition, self.committed.get((tp.topic, tp.partition), -1001)
            )
            for tp in asked.topic_partitions
        ]
        return {asked.group_id: _done(SimpleNamespace(topic_partitions=answer))}

    def list_offsets(self, asked: dict[TopicPartition, Any], **kwargs: Any) -> dict[Any, Any]:
        assert kwargs["isolation_level"] == IsolationLevel.READ_COMMITTED
        spec = type(next(iter(asked.values()))).__name__
        table = self.ends if "Latest" in spec else self.starts
        self.calls.append(spec)
        return {
            tp: _done(SimpleNamespace(offset=table.get((tp.topic, tp.partition), 0)))
            for tp in asked
        }


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


# -- consumer lag ------------------------------------------------------------------------


def test_lag_is_the_last_stable_offset_minus_the_committed_offset() -> None:
    admin = FakeAdmin(
        partitions={"t.intents": 2, "t.outcomes": 1, "elsewhere": 1},
        committed={("t.intents", 0): 90, ("t.intents", 1): 18},
        ends={("t.intents", 0): 100, ("t.intents", 1): 18, ("t.outcomes", 0): 7},
        starts={("t.outcomes", 0): 3},  # never committed: from the first offset
    )
    lag = GroupLag(lambda: admin, "trustplane.gate", ["t.intents", "t.outcomes", "missing"])
    assert sorted(lag.refresh()) == [
        ("t.intents", 0, 10),
        ("t.intents", 1, 0),
        ("t.outcomes", 0, 4),
    ]

    got = samples(generate_latest(_registry(lag)))
    labels = (("group", "trustplane.gate"), ("partition", "0"), ("topic", "t.intents"))
    assert got[("trustplane_consumer_lag", labels)] == 10
    lag.stop()


def test_old_answers_are_dropped_rather_than_shown() -> None:
    admin = FakeAdmin(partitions={"t": 1}, committed={("t", 0): 1}, ends={("t", 0): 5})
    lag = GroupLag(lambda: admin, "g", ["t"], stale_after_s=0.0)
    lag.refresh()
    lag.stop()  # no thread: the answer above is all there is
    assert not [key for key in samples(generate_latest(_registry(lag))) if key[0].endswith("lag")]


def _registry(*collectors: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return registry


# -- the gate ----------------------------------------------------------------------------


def test_the_gate_exports_its_state_and_lag_at_scrape_time() -> None:
    state = {
        "health": GateHealth(
            ready=True,
            agents_by_status={"active": 3, "suspended": 0, "quarantined": 1, "revoked": 0},
            quarantines={"agent": 1},
            killswitches={"global": 1, "action": 2},
            history_problems=0,
            policy=("7", "sha256:abc"),
            signing_key=("kid-1", 1000.0),
        )
    }
    metrics = GateMetrics()
    metrics.watch(lambda: state["health"], clock=lambda: 1060.0)

    got = samples(generate_latest(metrics.registry))

    assert got[("trustplane_worker_ready", ())] == 1
    assert got[("trustplane_agents", (("status", "quarantined"),))] == 1
    assert got[("trustplane_quarantines", (("scope", "agent"),))] == 1
    assert got[("trustplane_quarantines", (("scope", "runtime"),))] == 0
    assert got[("trustplane_killswitches_engaged", (("scope", "global"),))] == 1
    assert got[("trustplane_killswitches_engaged", (("scope", "agent"),))] == 0
    assert got[("trustplane_killswitches_engaged", (("scope", "action"),))] == 2
    assert got[("trustplane_control_history_problems", ())] == 0
    assert got[("trustplane_policy_bundle_active", ())] == 1
    info = (("digest", "sha256:abc"), ("version", "7"))
    assert got[("trustplane_policy_bundle_info", info)] == 1
    assert got[("trustplane_signing_key_age_seconds", (("kid", "kid-1"),))] == 60

    state["health"] = GateHealth(ready=False)  # read again at the next scrape
    got = samples(generate_latest(metrics.registry))
    assert got[("trustplane_worker_ready", ())] == 0
    assert got[("trustplane_policy_bundle_active", ())] == 0
    assert got[("trustplane_worker_standby", ())] == 0
    assert not [key for key in got if key[0] == "trustplane_policy_bundle_info"]

    state["health"] = GateHealth(ready=False, standby=True)  # a warm standby
    got = samples(generate_latest(metrics.registry))
    assert got[("trustplane_worker_ready", ())] == 0
    assert got[("trustplane_worker_standby", ())] == 1


def test_a_failing_state_read_shows_no_data_rather_than_fine() -> None:
    def broken() -> GateHealth:
        raise RuntimeError("dictionary changed size during iteration")

    metrics = GateMetrics()
    metrics.watch(broken)
    got = samples(generate_latest(metrics.registry))
    assert ("trustplane_worker_ready", ()) not in got
    assert ("trustplane_intents_total", (("outcome", "approved"),)) not in got  # no children
    assert "trustplane_decision_latency_ms_count" in {name for name, _ in got}


# -- the notary ----------------------------------------------------------------------------


@dataclass
class FakeLog:
    size: int = 0
    checkpoint: int | None = None
    duplicates: int = 0
    reused_ids: int = 0
    undecodable: int = 0
    unsigned: int = 0

    def latest(self) -> tuple[int, str] | None:
        return None if self.checkpoint is None else (self.checkpoint, "note")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_notary_dates_its_checkpoints_and_the_wait_of_uncovered_events() -> None:
    log, clock = FakeLog(), Clock()
    metrics = NotaryMetrics(lambda: log, clock=clock)  # type: ignore[arg-type, return-value]

    def value(name: str) -> float | None:
        return samples(metrics.exposition()).get((name, ()))

    assert value("trustplane_notary_checkpoint_lag_seconds") == 0
    assert value("trustplane_notary_checkpoint_timestamp_seconds") is None  # none yet

    log.size = 10  # ten events committed at 1000.0, no checkpoint yet
    metrics.sample()
    clock.now = 1000.4
    log.size = 15
    metrics.sample()
    clock.now = 1000.9
    assert value("trustplane_notary_checkpoint_lag_seconds") == pytest.approx(0.9)
    assert value("trustplane_notary_uncheckpointed_events") == 15

    log.checkpoint = 10  # a checkpoint covers the first ten
    clock.now = 1001.0
    metrics.sample()
    clock.now = 1001.5
    assert value("trustplane_notary_checkpoint_timestamp_seconds") == 1001.0
    assert value("trustplane_notary_checkpoint_size") == 10
    # the oldest event not covered showed at 1000.4
    assert value("trustplane_notary_checkpoint_lag_seconds") == pytest.approx(1.1)

    log.checkpoint = 15
    clock.now = 1002.0
    assert value("trustplane_notary_checkpoint_lag_seconds") == 0
    assert value("trustplane_notary_uncheckpointed_events") == 0
    assert value("trustplane_notary_checkpoint_timestamp_seconds") == 1002.0
    assert value("trustplane_notary_log_size") == 15


def test_the_notary_counts_what_it_refused() -> None:
    log = FakeLog(size=4, checkpoint=4, duplicates=2, unsigned=1)
    got = samples(NotaryMetrics(lambda: log).exposition())  # type: ignore[arg-type, return-value]
    assert got[("trustplane_notary_duplicates_total", ())] == 2
    assert got[("trustplane_notary_unsigned_total", ())] == 1
    assert got[("trustplane_notary_reused_ids_total", ())] == 0
    assert got[("trustplane_notary_ready", ())] == 1


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_notary_serves_metrics_while_restoring_and_with_its_token_only() -> None:
    source: dict[str, FakeLog | None] = {"log": None}
    server = NotaryHTTPServer(
        lambda: source["log"],  # type: ignore[arg-type, return-value]
        "vkey",
        "127.0.0.1",
        0,
        token=BearerToken.configured(TOKEN),
    ).start()
    try:
        assert _get(f"{server.url}/metrics")[0] == 401
        status, body = _get(f"{server.url}/metrics", TOKEN)
        assert status == 200
        assert samples(body)[("trustplane_notary_ready", ())] == 0  # restoring
        source["log"] = FakeLog(size=7, checkpoint=7)
        status, body = _get(f"{server.url}/metrics", TOKEN)
        assert samples(body)[("trustplane_notary_log_size", ())] == 7
        assert _get(f"{server.url}/healthz")[0] != 401, "health checks still need no token"
    finally:
        server.close()


# -- the sink --------------------------------------------------------------------------------


def test_the_sink_exports_its_last_write_and_its_group_lag() -> None:
    metrics = SinkMetrics()
    got = samples(generate_latest(metrics.registry))
    assert got[("trustplane_sink_last_flush_timestamp_seconds", ())] == 0
    assert not [key for key in got if key[0] == "trustplane_consumer_lag"]

    metrics.flushed()
    lag = metrics.watch_group(Settings(), "trustplane.sink", ["lineage-log"])
    assert metrics.watch_group(Settings(), "trustplane.sink", ["lineage-log"]) is lag
    lag.admin_factory = lambda: FakeAdmin(
        partitions={"lineage-log": 1},
        committed={("lineage-log", 0): 10},
        ends={("lineage-log", 0): 25},
    )
    lag.refresh()
    lag.stop()
    got = samples(generate_latest(metrics.registry))
    assert got[("trustplane_sink_last_flush_timestamp_seconds", ())] > 0
    labels = (("group", "trustplane.sink"), ("partition", "0"), ("topic", "lineage-log"))
    assert got[("trustplane_consumer_lag", labels)] == 15
