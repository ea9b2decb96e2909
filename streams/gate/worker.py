"""The gate worker's exactly-once loop: read intents, decide, write outcomes + lineage.

Each batch is one Kafka transaction: the outcome records, the lineage events and the
consumed offsets commit together or not at all (KIP-98 transactions, KIP-447 group
metadata fencing). A worker killed mid-batch leaves an open transaction that its
successor (same ``worker_id`` = same ``transactional.id``) aborts on start, and the
batch is decided again; readers with ``isolation.level=read_committed`` see every
intent's outcome exactly once.

Why not Faust's own ``processing_guarantee="exactly_once"``: in faust-streaming 0.15 it
picks the transactional producer by the *destination* partition and commits offsets
separately, so a SIGKILL mid-stream yields duplicates under read_committed (measured
here: 24 duplicates in 2,000; upstream faust-streaming issues #177 and #517). The
Faust app (``streams/gate/app.py``) hosts this loop as a service; the loop itself
is the shared :class:`streams.kafka.TransactionalLoop`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import Consumer, Message, TopicPartition

from processors.exceptions import TrustplaneError
from processors.records import SourcePosition
from streams import kafka, names
from streams.config import Settings
from streams.gate.control import ControlFollower
from streams.gate.gate import Gate, Output
from streams.gate.standby import WorkerLock
from streams.gate.state import KafkaAgentStates
from streams.kafka import FirstThenReady, Record, TransactionalLoop
from streams.startup import StartupTimeline

__all__ = ["GateWorker", "WorkerError"]

log = logging.getLogger(__name__)

FAIR_FETCH_BYTES = 64 * 1024
"""The slice of one partition a fetch returns (about a hundred intents)."""


class WorkerError(TrustplaneError):
    """The worker cannot go on (fenced by a newer worker, broker unreachable, …)."""


class GateWorker:
    def __init__(
        self,
        settings: Settings,
        gate: Gate,
        *,
        control: ControlFollower | None = None,
        states: KafkaAgentStates | None = None,
        on_batch: Callable[[int], None] | None = None,
        startup: StartupTimeline | None = None,
        lock: WorkerLock | None = None,
    ) -> None:
        """``lock``: the worker id's lock on this host (see :mod:`streams.gate.standby`);
        while another process holds it, :meth:`run` stands by."""
        self.settings = settings
        self.lock = lock
        self.standing_by = False
        self.startup = startup or StartupTimeline("worker")
        self.gate = gate
        self.control = control
        self.states = states
        self.on_batch = on_batch
        self.worker_id = settings.resolved_worker_id()
        self.processed = 0
        self._carried: list[Output] = []
        self._control_sent: list[Output] = []
        member = names.gate_worker(settings, self.worker_id)
        client_id = names.gate_worker(settings, self.worker_id)
        self.consumer = kafka.loop_consumer(
            settings,
            names.gate_group(settings),
            member,
            client_id,
            {
                "fetch.wait.max.ms": 10,  # an idle partition answers fast: low latency
                # fetched in small slices, partitions take turns in the batches: a backlog on
                # one (a restart, a burst) does not hold back the others until it is drained
                # (a larger record is still fetched whole: the limit grows for it)
                "max.partition.fetch.bytes": FAIR_FETCH_BYTES,
            },
        )
        self.producer = kafka.loop_producer(settings, member, client_id)
        self.loop = TransactionalLoop(
            self.consumer,
            self.producer,
            name="worker",
            error=WorkerError,
            fenced_hint="another worker with the same worker id took over; give each worker "
            "its own TRUSTPLANE_WORKER_ID",
            batches=FirstThenReady(settings.transaction_max_records, settings.transaction_max_ms),
            on_batch=self._decide,
            on_commit=self._committed,
            on_abort=self._aborted,
        )
        self.ready = threading.Event()
        self._outcomes = settings.topic("outcomes")
        self.topics = {
            name: settings.topic(name)
            for name in ("approved", "denied", "review", "rejected", "lineage", "control")
        }

    def stop(self) -> None:
        self.loop.stop()

    def run(self) -> None:
        """Run until :meth:`stop`; raise WorkerError when the worker cannot go on."""
        self.startup.mark("host")
        try:
            if self.control is not None:
                applied = self.control.catch_up()
                log.info("control state rebuilt from %d records", applied)
                self.startup.mark("control")
            if not self._take_the_lock():
                return
            self.loop.start()
            self.startup.mark("transactions")
            self._subscribe_and_run()
        finally:
            self.close()

    def _take_the_lock(self) -> bool:
        """Hold the worker id's lock, standing by (following the control topic) while
        another process of this host decides for it; False when stopped meanwhile."""
        if self.lock is None or self.lock.try_acquire():
            return True
        self.standing_by = True
        log.warning(
            "worker id %s is deciding in process %s: this process stands by and takes "
            "over when that one ends (lock %s)",
            self.worker_id,
            self.lock.holder() or "(unknown)",
            self.lock.path,
        )
        if not self.lock.wait(lambda: self.loop.stopping, self._keep_warm):
            return False
        self.standing_by = False
        self.startup.mark("standby")
        log.warning("worker id %s: taking over (lock %s)", self.worker_id, self.lock.path)
        return True

    def _keep_warm(self, seconds: float) -> None:
        """While standing by: apply the control commands and the agents' committed state
        as they arrive, so that taking over reads only what came since."""
        if self.control is None and self.states is None:
            self.loop.wait(seconds)
            return
        if self.control is not None:
            self.control.poll(seconds / 2)
        if self.states is not None:
            self.states.follow(seconds / 2)

    def _subscribe_and_run(self) -> None:
        # outcomes are keyed by agent id like intents: partition p of both lands on the
        # same worker, which holds that agent's ledger of issued approvals
        self.loop.subscribe(
            [self.settings.topic("intents"), self.settings.topic("outcomes")],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )
        self.loop.run()

    def close(self) -> None:
        self.loop.close()
        for part in (self.control, self.states):
            if part is not None:
                part.close()
        if self.lock is not None:
            self.lock.release()  # after the transactions: a standby takes over from here

    # -- the loop's hooks -----------------------------------------------------

    def _decide(self, messages: list[Message]) -> list[Record] | None:
        """The batch's outcomes, lineage, control records and changed agent states."""
        if self.control is not None:
            if messages:
                self.control.sync()
            else:
                self.control.poll(0)
        self._carried = self.gate.take_pending()
        outputs = self._carried + self.gate.tick()
        if not messages and not outputs:
            return None
        for message in messages:
            source = SourcePosition(
                message.topic() or "", message.partition() or 0, message.offset() or 0
            )
            handle = (
                self.gate.process_outcome
                if message.topic() == self._outcomes
                else self.gate.process
            )
            outputs.extend(handle(message.key(), message.value(), source))
        self._control_sent = [o for o in outputs if o.topic == "control"]
        records = [Record(self.topics[o.topic], o.key, o.value) for o in outputs]
        if self.states is not None:
            records.extend(self.states.changes())
        return records

    def _committed(self, messages: list[Message]) -> None:
        self.processed += len(messages)
        self.gate.metrics.transactions.labels("committed").inc()
        self.gate.metrics.batch_size.observe(len(messages))
        if self.on_batch:
            self.on_batch(len(messages))

    def _aborted(self, cause: Exception) -> None:
        self.gate.metrics.transactions.labels("aborted").inc()
        if self.states is not None:
            # the batch changed in-memory state that Kafka never committed
            partitions = [tp.partition for tp in self.consumer.assignment()]
            self.states.restore(partitions)
            self.gate.reindex(partitions)
        # what was applied locally and not re-derived on retry (control lineage, the
        # quarantine commands of this batch) goes into the next transaction
        carried = self._carried
        self.gate.emit([*carried, *(o for o in self._control_sent if o not in carried)])

    # -- rebalance ----------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", [p.partition for p in partitions])
        if self.states is not None:
            # the previous owner's last batch may be committing, offsets and state
            # together: its state writes must be read, as this worker starts after it
            kafka.await_stable_offsets(consumer, partitions)
            restored = self.states.restore(p.partition for p in partitions)
            self.gate.reindex(p.partition for p in partitions)
            log.info("agent state restored: %d changelog records read", restored)
        # intents and outcomes are both assigned, partition p of each together: count intents
        intents = self.settings.topic("intents")
        assigned = [*consumer.assignment(), *partitions]
        owned = {tp.partition for tp in assigned if tp.topic == intents}
        self.gate.metrics.assigned_partitions.set(len(owned))
        self.startup.finish("deciding")  # before ready: /healthz never shows it unfinished
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", [p.partition for p in partitions])
        if self.states is not None:
            self.states.drop(p.partition for p in partitions)
        self.gate.metrics.assigned_partitions.set(0)
