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
Faust app (``streams/app.py``) hosts this loop as a service.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from processors.exceptions import TrustplaneError
from processors.records import SourcePosition
from streams.config import Settings
from streams.gate.control import ControlFollower
from streams.gate.gate import Gate, Output
from streams.gate.state import KafkaAgentStates
from streams.kafka import close_loop, rewind_to_committed, start_transactions
from streams.topics import MAX_MESSAGE_BYTES

__all__ = ["GateWorker", "WorkerError"]

log = logging.getLogger(__name__)


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
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.control = control
        self.states = states
        self.on_batch = on_batch
        self.worker_id = settings.resolved_worker_id()
        self._stop = threading.Event()
        self.processed = 0
        self.ready = threading.Event()
        self._control_sent: list[Output] = []
        base = settings.kafka_config()
        self.consumer = Consumer(
            {
                **base,
                "group.id": settings.group_id,
                "group.instance.id": f"{settings.group_id}-{self.worker_id}",
                "client.id": f"trustplane-gate-{self.worker_id}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,  # an idle partition answers fast: low latency
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024,
                "fetch.max.bytes": MAX_MESSAGE_BYTES * 2,
            }
        )
        self.producer = Producer(
            {
                **base,
                "transactional.id": f"{settings.group_id}-{self.worker_id}",
                "client.id": f"trustplane-gate-{self.worker_id}",
                "transaction.timeout.ms": 30000,
                "linger.ms": 2,
                "message.max.bytes": MAX_MESSAGE_BYTES + 1024,
                "compression.type": "lz4",
            }
        )
        self._outcomes = settings.topic("outcomes")
        self.topics = {
            name: settings.topic(name)
            for name in ("approved", "denied", "review", "rejected", "lineage", "control")
        }

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Run until :meth:`stop`; raise WorkerError when the worker cannot go on."""
        start_transactions(self.producer, WorkerError)
        if self.control is not None:
            applied = self.control.catch_up()
            log.info("control state rebuilt from %d records", applied)
        # outcomes are keyed by agent id like intents: partition p of both lands on the
        # same worker, which holds that agent's ledger of issued approvals
        self.consumer.subscribe(
            [self.settings.topic("intents"), self.settings.topic("outcomes")],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )
        try:
            while not self._stop.is_set():
                self._run_batch()
        finally:
            self.close()

    def close(self) -> None:
        close_loop(self.consumer, self.producer)
        for part in (self.control, self.states):
            if part is not None:
                part.close()

    # -- one transaction ----------------------------------------------------

    def _run_batch(self) -> None:
        messages = self._poll_batch()
        if self.control is not None:
            if messages:
                self.control.sync()
            else:
                self.control.poll(0)
        carried = self.gate.take_pending()
        pending = carried + self.gate.tick()
        if not messages and not pending:
            return
        self._control_sent = []
        self.producer.begin_transaction()
        try:
            for output in pending:
                self._produce(output)
            for message in messages:
                self._handle(message)
            if self.states is not None:
                self.states.write(self.producer)
            self.producer.send_offsets_to_transaction(
                self.consumer.position(self.consumer.assignment()),
                self.consumer.consumer_group_metadata(),
            )
            self.producer.commit_transaction()
        except KafkaException as exc:
            self._recover(exc)
            # what was applied locally and not re-derived on retry (control lineage, the
            # quarantine commands of this batch) goes into the next transaction
            self.gate.emit([*carried, *(o for o in self._control_sent if o not in carried)])
            return
        self.processed += len(messages)
        self.gate.metrics.transactions.labels("committed").inc()
        self.gate.metrics.batch_size.observe(len(messages))
        if self.on_batch:
            self.on_batch(len(messages))

    def _poll_batch(self) -> list[Message]:
        """Wait up to ``transaction_max_ms`` for the first record, then take only what has
        already arrived (up to ``transaction_max_records``): a lone intent is decided at
        once, a busy stream still fills its batch. (``consume(n, timeout)`` would wait
        for all n records or the whole timeout.)"""
        first = self.consumer.poll(self.settings.transaction_max_ms / 1000)
        if first is None:
            return []
        batch: list[Message] = []
        messages = [first]
        while True:
            for message in messages:
                error = message.error()
                if error is None:
                    batch.append(message)
                elif error.fatal():
                    raise WorkerError(f"consumer failed: {error.str()}")
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer: %s", error.str())
            room = self.settings.transaction_max_records - len(batch)
            if room <= 0 or self._stop.is_set():
                return batch
            messages = self.consumer.consume(room, timeout=0)
            if not messages:
                return batch

    def _handle(self, message: Message) -> None:
        source = SourcePosition(
            message.topic() or "", message.partition() or 0, message.offset() or 0
        )
        handle = (
            self.gate.process_outcome if message.topic() == self._outcomes else self.gate.process
        )
        for output in handle(message.key(), message.value(), source):
            self._produce(output)

    def _produce(self, output: Output) -> None:
        if output.topic == "control":
            self._control_sent.append(output)
        self.producer.produce(self.topics[output.topic], key=output.key, value=output.value)
        self.producer.poll(0)

    def _recover(self, exc: KafkaException) -> None:
        error = exc.args[0] if exc.args else None
        self.gate.metrics.transactions.labels("aborted").inc()
        if isinstance(error, KafkaError) and error.fatal():
            raise WorkerError(
                f"fenced or fatal transaction error: {error.str()}",
                hint="another worker with the same worker id took over; give each worker "
                "its own TRUSTPLANE_WORKER_ID",
            ) from exc
        log.warning("transaction failed, aborting and re-reading the batch: %s", exc)
        self.producer.abort_transaction(30)
        self._rewind()
        if self.states is not None:
            # the batch changed in-memory state that Kafka never committed
            partitions = [tp.partition for tp in self.consumer.assignment()]
            self.states.restore(partitions)
            self.gate.reindex(partitions)

    def _rewind(self) -> None:
        rewind_to_committed(self.consumer)

    # -- rebalance ----------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", [p.partition for p in partitions])
        if self.states is not None:
            restored = self.states.restore(p.partition for p in partitions)
            self.gate.reindex(p.partition for p in partitions)
            log.info("restored state of %d agents", restored)
        self.gate.metrics.assigned_partitions.set(len(consumer.assignment()) + len(partitions))
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", [p.partition for p in partitions])
        if self.states is not None:
            self.states.drop(p.partition for p in partitions)
        self.gate.metrics.assigned_partitions.set(0)
