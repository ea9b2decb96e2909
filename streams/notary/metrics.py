"""The notary's Prometheus metrics, served on ``/metrics`` of its proof endpoint.

Read from the committed state of the :class:`~streams.notary.log.NotaryLog` when
Prometheus scrapes: the log's size, the size of its last checkpoint, the events a
checkpoint does not cover yet, and what the notary refused or dropped. Two values need
time: *when* the last checkpoint committed, and how long the oldest event not covered by
a checkpoint has waited (the checkpoint lag, which should stay under a second). The log
records no wall-clock time, so a sampler thread looks at its committed sizes ten times a
second and notes when each one first showed (a checkpoint restored at start is dated at
the start). Names, labels and the dashboard's PromQL: ``infra/prometheus/README.md``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.gate.metrics import GroupLag

if TYPE_CHECKING:
    from streams.notary.log import NotaryLog

__all__ = ["NotaryMetrics", "SAMPLE_EVERY_S"]

log = logging.getLogger(__name__)

SAMPLE_EVERY_S = 0.1
"""How often the sampler looks at the log: the resolution of the checkpoint times."""
_MAX_SIZES = 10_000
"""Log sizes remembered while no checkpoint covers them (a stuck notary at 10 Hz fills
this in 17 minutes; later sizes are not noted, the oldest waiting event stays dated)."""


class NotaryMetrics:
    """The notary's metrics on ``registry``; :meth:`start` runs the sampler thread."""

    def __init__(
        self,
        source: Callable[[], NotaryLog | None],
        *,
        registry: CollectorRegistry | None = None,
        lag: GroupLag | None = None,
        clock: Callable[[], float] = time.time,
        sample_every_s: float = SAMPLE_EVERY_S,
    ) -> None:
        self.source = source
        self.registry = registry or CollectorRegistry()
        self.clock = clock
        self.sample_every_s = sample_every_s
        self._lock = threading.Lock()
        self._checkpoint_size: int | None = None
        self._checkpoint_at: float | None = None
        self._waiting: collections.deque[tuple[int, float]] = collections.deque()
        """(log size, first seen) of the sizes beyond the last checkpoint, oldest first."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lag = lag
        self.registry.register(_NotaryCollector(self))
        if lag is not None:
            self.registry.register(lag)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)

    # -- the sampler ----------------------------------------------------------------

    def start(self) -> NotaryMetrics:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="notary-metrics", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.lag is not None:
            self.lag.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.sample_every_s):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - metrics must never stop the notary
                log.exception("notary metrics: sampling the log failed")

    def sample(self) -> None:
        """Note the time the log's committed size and checkpoint size first showed."""
        notary_log = self.source()
        if notary_log is None:
            return
        now = self.clock()
        latest = notary_log.latest()
        size = notary_log.size
        checkpoint = latest[0] if latest is not None else 0
        with self._lock:
            if checkpoint != self._checkpoint_size:
                self._checkpoint_size = checkpoint
                self._checkpoint_at = now if latest is not None else None
                while self._waiting and self._waiting[0][0] <= checkpoint:
                    self._waiting.popleft()
            newest = self._waiting[-1][0] if self._waiting else checkpoint
            if size > newest and len(self._waiting) < _MAX_SIZES:
                self._waiting.append((size, now))

    def checkpoint_times(self) -> tuple[float | None, float]:
        """(when the last checkpoint first showed, seconds the oldest event not covered
        by it has waited; 0 when every event is covered)."""
        self.sample()
        now = self.clock()
        with self._lock:
            waited = now - self._waiting[0][1] if self._waiting else 0.0
            return self._checkpoint_at, max(waited, 0.0)


class _NotaryCollector(Collector):
    def __init__(self, metrics: NotaryMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        ready, size, checkpoint_size, checkpoint_at, pending, lag = families[:6]
        duplicates, reused, undecodable, unsigned = families[6:]
        notary_log = self.metrics.source()
        ready.add_metric([], 0.0 if notary_log is None else 1.0)
        if notary_log is None:  # restoring: nothing committed to show yet
            return iter([ready])
        latest = notary_log.latest()
        covered = latest[0] if latest is not None else 0
        at, waited = self.metrics.checkpoint_times()
        size.add_metric([], notary_log.size)
        checkpoint_size.add_metric([], covered)
        if at is not None:
            checkpoint_at.add_metric([], at)
        pending.add_metric([], max(notary_log.size - covered, 0))
        lag.add_metric([], waited)
        duplicates.add_metric([], notary_log.duplicates)
        reused.add_metric([], notary_log.reused_ids)
        undecodable.add_metric([], notary_log.undecodable)
        unsigned.add_metric([], notary_log.unsigned)
        return iter(families)

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
    ]:
        return (
            GaugeMetricFamily("trustplane_notary_ready", "1 once the notary has restored its log."),
            GaugeMetricFamily(
                "trustplane_notary_log_size", "Events in the log (the Merkle tree size)."
            ),
            GaugeMetricFamily(
                "trustplane_notary_checkpoint_size", "Tree size of the last signed checkpoint."
            ),
            GaugeMetricFamily(
                "trustplane_notary_checkpoint_timestamp_seconds",
                "When the last checkpoint committed (Unix seconds, within 0.1 s; one "
                "restored at start: the start).",
            ),
            GaugeMetricFamily(
                "trustplane_notary_uncheckpointed_events",
                "Events in the log that no checkpoint covers yet.",
            ),
            GaugeMetricFamily(
                "trustplane_notary_checkpoint_lag_seconds",
                "How long the oldest event no checkpoint covers has waited (0: all covered).",
            ),
            CounterMetricFamily(
                "trustplane_notary_duplicates",
                "Lineage events already in the log dropped (same id and content, whichever "
                "gate key signed them).",
            ),
            CounterMetricFamily(
                "trustplane_notary_reused_ids",
                "Lineage events that reused a logged event id with other content (sent to "
                "rejected as conflicting_event_id, alerted).",
            ),
            CounterMetricFamily(
                "trustplane_notary_undecodable",
                "Records on lineage that are not LineageEvents (sent to rejected).",
            ),
            CounterMetricFamily(
                "trustplane_notary_unsigned",
                "Lineage events without a valid gate signature (sent to rejected).",
            ),
        )
