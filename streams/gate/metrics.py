"""All of the gate's Prometheus metrics, in one place, against an injectable registry.

Two kinds: what the worker counts as it decides (the attributes of :class:`GateMetrics`),
and what is read when Prometheus scrapes (:meth:`GateMetrics.watch`): the state the
decisions use (agents by status, quarantines, kill switches, control history problems,
the policy bundle, the age of the approval signing key) and how far the workers' group
is behind (:class:`GroupLag`, which the sink and the notary use too). Every name, its labels and the
PromQL the Infrastructure Health Dashboard uses are listed in ``infra/prometheus/README.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "GateMetrics",
    "GateHealth",
    "GateHealthCollector",
    "GroupLag",
    "LATENCY_BUCKETS_MS",
]

log = logging.getLogger(__name__)

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

    def watch(
        self,
        health: Callable[[], GateHealth],
        lag: GroupLag | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Also export, at each scrape, the gate's state (``health()``) and the consumer
        lag of its group on the intents and outcomes topics (``lag``)."""
        self.registry.register(GateHealthCollector(health, clock=clock))
        if lag is not None:
            self.registry.register(lag)


# -- read at scrape time ---------------------------------------------------------------


@dataclass(frozen=True)
class GateHealth:
    """What a worker's decisions depend on, as plain values (see ``streams/gate/app.py``,
    which reads it from the control state, the kill switches, the policy store and the
    signing keyring)."""

    ready: bool
    """The worker has caught up with ``control`` and owns its partitions."""
    agents_by_status: Mapping[str, int] = field(default_factory=dict)
    """Registered agents by status (active, suspended, quarantined, revoked)."""
    quarantines: Mapping[str, int] = field(default_factory=dict)
    """Quarantines in force by scope (agent, runtime)."""
    killswitches: Mapping[str, int] = field(default_factory=dict)
    """Engaged kill switches by scope (global, agent, action)."""
    history_problems: int = 0
    """Problems of the control history (a worker with any stops deciding)."""
    policy: tuple[str, str] | None = None
    """(version, digest) of the active policy bundle; None: no bundle, every intent denied."""
    signing_key: tuple[str, float] | None = None
    """(kid, in service since, Unix seconds) of the key that signs approvals now."""
    standby: bool = False
    """The process stands by for another one of its worker id (``streams/gate/standby.py``)."""


SCOPES_OF = {
    "quarantines": ("agent", "runtime"),
    "killswitches": ("global", "agent", "action"),
}


class GateHealthCollector(Collector):
    """The :class:`GateHealth` of a worker as gauges, read when Prometheus scrapes."""

    def __init__(
        self, health: Callable[[], GateHealth], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.health = health
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        ready, agents, quarantines, switches, problems, active, key_age = families[:7]
        bundle, standby = families[7:9]
        try:
            health = self.health()
        except Exception:  # noqa: BLE001 - a scrape must answer; the worker's log says why
            log.exception("cannot read the gate's state for /metrics")
            return iter([])  # no samples: the dashboard shows "no data", not "fine"
        ready.add_metric([], 1.0 if health.ready else 0.0)
        standby.add_metric([], 1.0 if health.standby else 0.0)
        for status, count in sorted(health.agents_by_status.items()):
            agents.add_metric([status], count)
        for scope in SCOPES_OF["quarantines"]:
            quarantines.add_metric([scope], health.quarantines.get(scope, 0))
        for scope in SCOPES_OF["killswitches"]:
            switches.add_metric([scope], health.killswitches.get(scope, 0))
        problems.add_metric([], health.history_problems)
        active.add_metric([], 0.0 if health.policy is None else 1.0)
        if health.policy is not None:
            version, digest = health.policy
            bundle.add_metric([], {"version": version, "digest": digest})
        if health.signing_key is not None:
            kid, since = health.signing_key
            key_age.add_metric([kid], max(self.clock() - since, 0.0))
        return iter(families)

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        InfoMetricFamily,
        GaugeMetricFamily,
    ]:
        return (
            GaugeMetricFamily(
                "trustplane_worker_ready",
                "1 when the worker has caught up with control and owns its partitions.",
            ),
            GaugeMetricFamily(
                "trustplane_agents", "Registered agents by status.", labels=["status"]
            ),
            GaugeMetricFamily(
                "trustplane_quarantines",
                "Quarantines in force, by scope (agent, runtime).",
                labels=["scope"],
            ),
            GaugeMetricFamily(
                "trustplane_killswitches_engaged",
                "Engaged kill switches, by scope (global, agent, action).",
                labels=["scope"],
            ),
            GaugeMetricFamily(
                "trustplane_control_history_problems",
                "Problems of the control history; with any, the worker decides nothing.",
            ),
            GaugeMetricFamily(
                "trustplane_policy_bundle_active",
                "1 when a policy bundle is active (none: every intent is denied).",
            ),
            GaugeMetricFamily(
                "trustplane_signing_key_age_seconds",
                "Seconds since the approval signing key in use started signing (the later "
                "of its not-before and its creation).",
                labels=["kid"],
            ),
            InfoMetricFamily("trustplane_policy_bundle", "The active policy bundle."),
            GaugeMetricFamily(
                "trustplane_worker_standby",
                "1 while the process stands by for another one of its worker id (it takes "
                "over when that one ends).",
            ),
        )


class GroupLag(Collector):
    """``trustplane_consumer_lag{group,topic,partition}``: how many committed records of
    each partition of ``topics`` the consumer group ``group`` has not committed yet.

    Lag = the partition's last stable offset (the end of what ``read_committed``
    consumers see) minus the group's committed offset (a partition the group never
    committed counts from its first offset, as ``auto.offset.reset=earliest`` starts
    there). Both come from the broker, asked by a thread of its own every
    ``interval_s`` through its own admin client: a scrape only reads the last answer,
    and never waits for, or on, the consumer that does the work (confluent-kafka
    serializes calls on one consumer, and the transactional loops keep theirs busy).
    Every member of a group reports the whole group, so a stuck member's partitions still
    show: combine with ``max by (group, topic, partition)``. The thread starts at the
    first scrape; answers older than ``stale_after_s`` are dropped (no data, not old data).
    """

    def __init__(
        self,
        admin: Callable[[], Any],
        group: str,
        topics: Sequence[str],
        *,
        interval_s: float = 5.0,
        timeout_s: float = 5.0,
        stale_after_s: float = 30.0,
    ) -> None:
        self.admin_factory = admin
        self.group = group
        self.topics = tuple(topics)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.stale_after_s = stale_after_s
        self._admin: Any = None
        self._rows: list[tuple[str, int, int]] = []
        self._at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def of(cls, endpoint: Any, group: str, topics: Sequence[str], **options: Any) -> GroupLag:
        """The lag of ``group`` asked as ``endpoint`` (settings: who the process is)."""
        from streams import kafka

        return cls(lambda: kafka.admin(endpoint), group, topics, **options)

    # -- the collector --------------------------------------------------------

    def describe(self) -> Iterator[Metric]:
        return iter([self._family()])

    def collect(self) -> Iterator[Metric]:
        self.start()
        family = self._family()
        with self._lock:
            fresh = time.monotonic() - self._at < self.stale_after_s
            rows = list(self._rows) if fresh else []
        for topic, partition, lag in rows:
            family.add_metric([self.group, topic, str(partition)], lag)
        return iter([family])

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "trustplane_consumer_lag",
            "Committed records a consumer group has not consumed and committed yet (last "
            "stable offset minus the group's committed offset), by partition.",
            labels=["group", "topic", "partition"],
        )

    # -- the thread -----------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"lag-{self.group}", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout_s + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - a metric must never take a service down
                log.warning("consumer lag of %s not read: %s", self.group, exc)
            self._stop.wait(self.interval_s)

    def refresh(self) -> list[tuple[str, int, int]]:
        """Ask the broker once; return (topic, partition, lag) rows (also kept)."""
        from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel

        if self._admin is None:
            self._admin = self.admin_factory()
        admin = self._admin
        timeout = self.timeout_s
        metadata = admin.list_topics(timeout=timeout)
        partitions = [
            TopicPartition(name, p)
            for name in self.topics
            if (topic := metadata.topics.get(name)) is not None and topic.error is None
            for p in sorted(topic.partitions)
        ]
        if not partitions:
            rows: list[tuple[str, int, int]] = []
        else:
            request = [ConsumerGroupTopicPartitions(self.group, partitions)]
            answer = admin.list_consumer_group_offsets(request, request_timeout=timeout)
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in answer[self.group].result(timeout).topic_partitions
                if tp.error is None
            }
            ends = self._offsets(admin, partitions, _offset_spec("latest"), IsolationLevel)
            never = [tp for tp in partitions if committed.get((tp.topic, tp.partition), -1) < 0]
            starts = self._offsets(admin, never, _offset_spec("earliest"), IsolationLevel)
            rows = []
            for tp in partitions:
                key = (tp.topic, tp.partition)
                end = ends.get(key)
                start = committed.get(key, -1)
                if start < 0:
                    start = starts.get(key, -1)
                if end is not None and end >= 0 and start >= 0:
                    rows.append((tp.topic, tp.partition, max(end - start, 0)))
        with self._lock:
            self._rows = rows
            self._at = time.monotonic()
        return rows

    def _offsets(
        self, admin: Any, partitions: list[TopicPartition], spec: Any, isolation: Any
    ) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        futures = admin.list_offsets(
            {tp: spec for tp in partitions},
            isolation_level=isolation.READ_COMMITTED,
            request_timeout=self.timeout_s,
        )
        return {
            (tp.topic, tp.partition): int(future.result(self.timeout_s).offset)
            for tp, future in futures.items()
        }


def _offset_spec(which: str) -> Any:
    """``OffsetSpec.latest()`` / ``.earliest()`` (confluent_kafka.admin re-exports the class
    without ``__all__``, and leaves it untyped)."""
    from confluent_kafka import admin

    factory: Any = getattr(admin.OffsetSpec, which)  # type: ignore[attr-defined]
    return factory()
