"""Kafka -> the lineage store: the sink's transactional loop (see :mod:`streams.sink`).

Each batch: rows are buffered in the store, poison records become Rejections; before the
Kafka commit the store writes the rows (``before_commit``), and only then do the
Rejections and the consumed offsets commit, in one transaction. A bad record on a topic
the gate rejects from (``intents``) is counted and skipped: the gate's Rejection of it is
the one ``rejected`` carries.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from processors.records import SourcePosition, rejection_record
from sinks.base import MappingError, Sink, SinkError
from sinks.clickhouse import TOPIC_RECORDS, checkpoint_from_note, intent_row, map_record
from streams import kafka, names
from streams.codec import Codec, DecodeError, default_codec
from streams.config import Settings
from streams.gatekeys import GateKeys, gate_jwks_path
from streams.kafka import FillWithin, Record, RetryBatch, TransactionalLoop
from streams.sink.config import GATE_REJECTS, SINK_TOPICS, SinkConfig
from streams.sink.exceptions import SinkRunError
from streams.sink.metrics import SinkMetrics
from streams.sink.verify import RecordVerifier

__all__ = ["SinkRunner"]

log = logging.getLogger(__name__)


def _subscription_tag(topics: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(topics)).encode()).hexdigest()[:8]


class SinkRunner:
    """Kafka -> :class:`Sink`, committing offsets only after the sink has the rows."""

    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        config: SinkConfig,
        *,
        codec: Codec | None = None,
        metrics: SinkMetrics | None = None,
        fault_exit_after_flushes: int | None = None,
        gate_keys: GateKeys | None = None,
    ) -> None:
        self.settings = settings
        self.verifier = RecordVerifier(gate_keys or GateKeys(gate_jwks_path(settings)))
        self.sink = sink
        self.config = config
        self.codec = codec or default_codec()
        self.metrics = metrics or SinkMetrics()
        self.fault_exit_after_flushes = fault_exit_after_flushes
        worker = settings.resolved_worker_id()
        self.sink_id = f"sink-{worker}"
        self.group_id = names.sink_group(settings)
        self._logical = {settings.topic(name): name for name in SINK_TOPICS}
        self.metrics.watch_group(settings, self.group_id, list(self._logical))
        self._rejected_topic = settings.topic("rejected")
        self._backoff = 0.0
        self._tables: collections.Counter[str] = collections.Counter()
        self.ready = threading.Event()
        self.flushes = 0
        self.records = 0
        self.rows = 0
        self.poison = 0
        self.skipped = 0
        self.last_commit_ms = 0
        self.last_error: str | None = None
        # a static member that rejoins gets its cached assignment back, even with a new
        # subscription: name the subscription so a change makes a new member
        member = names.sink_member(settings, worker, _subscription_tag(self._logical))
        client_id = names.sink_worker(settings, worker)
        self.consumer = kafka.loop_consumer(settings, self.group_id, member, client_id)
        self.producer = kafka.loop_producer(
            settings,
            names.sink_worker(settings, worker),
            client_id,
            {"transaction.timeout.ms": 60000, "linger.ms": 5, "compression.type": "none"},
        )
        self.loop = TransactionalLoop(
            self.consumer,
            self.producer,
            name="sink",
            error=SinkRunError,
            fenced_hint="another sink with the same worker id took over; give each sink its "
            "own TRUSTPLANE_WORKER_ID",
            batches=FillWithin(config.batch_rows, config.batch_ms),
            on_batch=self._buffer,
            before_commit=self._write,
            on_commit=self._committed,
            on_abort=self._aborted,
            rewind_on_rebalance=True,
        )

    def stop(self) -> None:
        """Finish the batch in hand (write, commit), then return from :meth:`run`."""
        self.loop.stop()

    @property
    def stopping(self) -> bool:
        return self.loop.stopping

    def health(self) -> dict[str, Any]:
        return {
            "ready": self.ready.is_set(),
            "sink": self.sink_id,
            "group": self.group_id,
            "records": self.records,
            "rows": self.rows,
            "poison": self.poison,
            "skipped": self.skipped,
            "flushes": self.flushes,
            "last_commit_ms": self.last_commit_ms,
            "last_error": self.last_error,
        }

    def run(self) -> None:
        """Run until :meth:`stop`; raise :class:`SinkRunError` when the sink cannot go on."""
        self.loop.start()
        self.loop.subscribe(
            list(self._logical), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        try:
            self.loop.run()
        finally:
            self.close()

    def close(self) -> None:
        self.loop.close()

    # -- the loop's hooks

    def _buffer(self, messages: list[Message]) -> list[Record] | None:
        """Buffer each message's row in the store; a Rejection for each poison record."""
        if not messages:
            return None
        self._tables = collections.Counter()
        rejections: list[Record] = []
        for message in messages:
            table = self._handle(message, rejections)
            if table:
                self._tables[table] += 1
        return rejections

    def _write(self, messages: list[Message]) -> None:
        """Write the buffered rows (before the offsets commit); on failure back off and
        read the batch again."""
        started = time.perf_counter()
        try:
            self.sink.flush()
        except SinkError as exc:
            self.metrics.flushes.labels("failed").inc()
            self.last_error = exc.reason
            self._backoff = min(max(self._backoff * 2, 0.5), 30.0)
            log.error(
                "writing %d records to ClickHouse failed, retrying in %.1f s: %s",
                len(messages),
                self._backoff,
                exc.diagnostics(),
            )
            raise RetryBatch(self._backoff) from exc
        self.metrics.flushes.labels("ok").inc()
        self.metrics.flushed()
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        self.flushes += 1
        self._backoff = 0.0
        self.last_error = None
        for table, count in self._tables.items():
            self.metrics.rows.labels(table).inc(count)
        self.rows += sum(self._tables.values())
        self.records += len(messages)
        if (
            self.fault_exit_after_flushes is not None
            and self.flushes >= self.fault_exit_after_flushes
        ):
            # test hook: die like SIGKILL between the ClickHouse write and the Kafka commit
            log.error("fault injection: exiting after flush %d, before the commit", self.flushes)
            os._exit(3)

    def _committed(self, messages: list[Message]) -> None:
        self.metrics.commits.labels("committed").inc()
        self.last_commit_ms = time.time_ns() // 1_000_000

    def _aborted(self, cause: Exception) -> None:
        # rows of the batch not written yet are read again; the store drops duplicates
        self.sink.discard()
        if isinstance(cause, KafkaException):
            self.metrics.commits.labels("aborted").inc()

    # -- one record

    def _handle(self, message: Message, rejections: list[Record]) -> str | None:
        """Buffer the message's row; return its table, or None for a poison record."""
        raw_topic = message.topic() or ""
        topic = self._logical.get(raw_topic, raw_topic)
        self.metrics.records.labels(topic).inc()
        value = message.value() or b""
        partition = message.partition() or 0
        offset = message.offset() or 0
        try:
            table, row = self._row(topic, message, value, partition, offset)
            self.sink.add(table, row)
            return table
        except (DecodeError, MappingError) as exc:
            code, reason = exc.code, exc.reason
        except Exception as exc:  # noqa: BLE001 - a mapping bug must not stall the sink forever
            log.exception("unexpected error storing %s/%d@%d", raw_topic, partition, offset)
            code, reason = "internal_error", f"{type(exc).__name__}: {exc}"
        if topic in GATE_REJECTS:
            self._skip(topic, raw_topic, partition, offset, code, reason)
        else:
            rejections.append(self._reject(message, raw_topic, partition, offset, code, reason))
        return None

    def _row(
        self, topic: str, message: Message, value: bytes, partition: int, offset: int
    ) -> tuple[str, dict[str, Any]]:
        """The table and row of one message; DecodeError or MappingError if it has none."""
        if topic == "checkpoints":
            _, timestamp_ms = message.timestamp()
            return "checkpoints", checkpoint_from_note(value, timestamp_ms)
        if topic == "intents":
            # the gate's size limit and validation: stored are the intents it decides on
            record = self.codec.decode(value, "Intent", max_bytes=self.settings.max_intent_bytes)
            row = intent_row(record, value, key=message.key(), partition=partition, offset=offset)
            return "intents", row
        expected = TOPIC_RECORDS.get(topic, ("", ""))[0] or None
        record = self.codec.decode(value, expected)
        self.verifier.check(topic, record)
        return map_record(topic, record, partition=partition, offset=offset)

    def _reject(
        self, message: Message, topic: str, partition: int, offset: int, code: str, reason: str
    ) -> Record:
        record = rejection_record(
            SourcePosition(topic, partition, offset),
            message.key(),
            message.value(),
            code=code,
            reason=f"the lineage sink cannot store this record: {reason}",
            now_ms=time.time_ns() // 1_000_000,
            worker=self.sink_id,
        )
        log.warning("poison record %s/%d@%d (%s): %s", topic, partition, offset, code, reason)
        self.metrics.poison.labels(code).inc()
        self.poison += 1
        return Record(self._rejected_topic, message.key(), self.codec.encode("Rejection", record))

    def _skip(
        self, topic: str, raw_topic: str, partition: int, offset: int, code: str, reason: str
    ) -> None:
        log.info(
            "skipping %s/%d@%d (%s), the gate rejects it: %s",
            raw_topic,
            partition,
            offset,
            code,
            reason,
        )
        self.metrics.skipped.labels(topic, code).inc()
        self.skipped += 1

    # -- rebalance

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %d partitions", len(partitions))
        self.metrics.assigned.set(len(partitions))
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %d partitions", len(partitions))
        self.metrics.assigned.set(0)
