"""The notary process: restore the log, then link and log ``lineage`` in Kafka
transactions (see :mod:`streams.notary`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from processors.exceptions import ConfigError
from processors.log.checkpoint import NoteSigner
from processors.records import SourcePosition, rejection_record
from streams import kafka, names
from streams.codec import Codec, default_codec
from streams.config import Settings
from streams.gate.metrics import GroupLag
from streams.gatekeys import GateKeys, gate_jwks_path
from streams.kafka import Record, TransactionalLoop, UpToDeadline
from streams.notary.exceptions import NotaryServiceError
from streams.notary.fetcher import EventFetcher
from streams.notary.http import NotaryHTTPServer, notary_bind, notary_port, notary_token
from streams.notary.keys import load_notary_signer, notary_origin
from streams.notary.log import NotaryLog, Refusal, require_log_index
from streams.notary.topics import CHECKPOINT_TOPIC, LOG_TOPIC, ensure_notary_topics
from streams.topics import MAX_MESSAGE_BYTES

__all__ = ["NotaryService"]

log = logging.getLogger(__name__)


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class NotaryService:
    """The notary process: ``run()`` until ``stop()``; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        codec: Codec | None = None,
        signer: NoteSigner | None = None,
        origin: str | None = None,
        port: int | None = None,
        create_key: bool | None = None,
        checkpoint_every_events: int | None = None,
        checkpoint_every_ms: int | None = None,
        batch_max_records: int = 1000,
        batch_max_ms: int = 50,
        dedupe_window: int = 100_000,
        max_checkpoints: int = 100_000,
        gate_keys: GateKeys | None = None,
    ) -> None:
        settings = settings.for_role("notary")  # its Kafka principal, unless configured
        self.settings = settings
        self.gate_keys = gate_keys or GateKeys(gate_jwks_path(settings))
        self.origin = origin or (signer.name if signer else notary_origin(settings))
        self.codec = codec or default_codec()
        require_log_index(self.codec)
        self.signer = signer or load_notary_signer(settings, self.origin, create=create_key)
        if self.signer.name != self.origin:
            raise ConfigError(
                f"the signer is named {self.signer.name!r} but the origin is {self.origin!r}",
                hint="a log's checkpoints are signed by a key named after its origin",
            )
        self.port = notary_port(settings) if port is None else port
        self.checkpoint_every_events = checkpoint_every_events or int(
            getattr(settings, "notary_checkpoint_events", None) or 1000
        )
        # 500 ms, not 1 s: an event's checkpoint lag is this interval plus one transaction,
        # and it should stay under a second (bench/bench_checkpoint_lag.py)
        self.checkpoint_every_ms = checkpoint_every_ms or int(
            getattr(settings, "notary_checkpoint_ms", None) or 500
        )
        self.batch_max_records = batch_max_records
        self.batch_max_ms = batch_max_ms
        self.dedupe_window = dedupe_window
        self.max_checkpoints = max_checkpoints
        self.topics = {
            name: settings.topic(name)
            for name in ("lineage", LOG_TOPIC, CHECKPOINT_TOPIC, "rejected")
        }
        self.group_id = names.notary(settings)
        self.ready = threading.Event()
        self.log: NotaryLog | None = None
        self.http: NotaryHTTPServer | None = None
        self.committed_transactions = 0
        self.consumer = kafka.loop_consumer(
            settings, self.group_id, self.group_id, names.notary(settings)
        )
        self.producer = kafka.loop_producer(settings, self.group_id, self.group_id)
        self.loop = TransactionalLoop(
            self.consumer,
            self.producer,
            name="notary",
            error=NotaryServiceError,
            fenced_hint="another notary with the same group id (and so the same log) took "
            "over; run one notary per log",
            batches=UpToDeadline(batch_max_records, batch_max_ms),
            on_batch=self._link,
            on_commit=self._committed,
            on_abort=self._rebuild,
        )
        self.fetcher = EventFetcher(settings, self.topics[LOG_TOPIC])

    @property
    def url(self) -> str | None:
        """The proof endpoint's base URL once it serves (port 0 picks a free port)."""
        return self.http.url if self.http else None

    def stop(self) -> None:
        self.loop.stop()

    def run(self) -> None:
        """Restore the log, then link and log lineage until :meth:`stop`; raise
        NotaryServiceError when the notary cannot go on."""
        try:
            ensure_notary_topics(self.settings)
            self.loop.start()
            if self.port >= 0:
                self.http = NotaryHTTPServer(
                    lambda: self.log,
                    self.signer.vkey,
                    notary_bind(self.settings),
                    self.port,
                    token=notary_token(self.settings),
                    lag=GroupLag.of(self.settings, self.group_id, [self.topics["lineage"]]),
                ).start()
            self.log = self._restore()
            self.loop.subscribe(
                [self.topics["lineage"]], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            self.loop.run()
        finally:
            self.close()

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        self.loop.close()
        try:
            self.fetcher.close()
        except RuntimeError:
            pass

    # -- restore ----------------------------------------------------------------

    def _new_log(self) -> NotaryLog:
        return NotaryLog(
            self.signer,
            self.codec,
            checkpoint_every_events=self.checkpoint_every_events,
            checkpoint_every_ms=self.checkpoint_every_ms,
            dedupe_window=self.dedupe_window,
            max_checkpoints=self.max_checkpoints,
            fetch=self.fetcher,
            gate_keys=self.gate_keys,
        )

    def _restore(self) -> NotaryLog:
        """A NotaryLog rebuilt from the committed ``lineage-log``, checked against the
        last committed checkpoints."""
        started = time.monotonic()
        notary_log = self._new_log()
        for message in self._read_all(self.topics[LOG_TOPIC]):
            notary_log.restore_record(message.offset() or 0, message.value())
        tail = 3 * self.max_checkpoints  # a checkpoint and a commit marker per transaction
        notes = 0
        for message in self._read_all(self.topics[CHECKPOINT_TOPIC], tail=tail):
            notary_log.restore_checkpoint(message.offset() or 0, message.value())
            notes += 1
        notary_log.commit()
        log.info(
            "notary %s restored %d events and %d checkpoints in %.1f s",
            self.origin,
            notary_log.size,
            notes,
            time.monotonic() - started,
        )
        return notary_log

    def _read_all(self, topic: str, *, tail: int | None = None) -> Iterator[Message]:
        """Every committed record of partition 0 of ``topic`` (or about its last ``tail``)."""
        consumer = kafka.consumer(
            self.settings,
            names.notary_restore(self.settings),
            {
                "client.id": names.notary_restore(self.settings),
                "enable.partition.eof": True,
                "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024,
            },
        )
        try:
            low, high = kafka.watermark_offsets(consumer, TopicPartition(topic, 0))
            start = low if tail is None else max(low, high - tail)
            if high <= start:
                return
            consumer.assign([TopicPartition(topic, 0, start)])
            last_progress = time.monotonic()
            while True:
                messages = consumer.consume(1000, timeout=1.0)
                if not messages:
                    if time.monotonic() - last_progress > 60:
                        raise NotaryServiceError(
                            f"reading {topic} stalled for 60 s before its end (offset {high})"
                        )
                    continue
                last_progress = time.monotonic()
                for message in messages:
                    error = message.error()
                    if error is None:
                        yield message
                    elif error.code() == KafkaError._PARTITION_EOF:
                        return
                    else:
                        raise NotaryServiceError(f"reading {topic}: {error.str()}")
        except KafkaException as exc:
            raise NotaryServiceError(f"reading {topic}: {exc}") from exc
        finally:
            consumer.close()

    # -- the loop's hooks --------------------------------------------------------

    def _link(self, messages: list[Message]) -> list[Record] | None:
        """The batch's events, linked and logged, and a checkpoint if one is due."""
        notary_log = self.log
        assert notary_log is not None  # noqa: S101 - set by run() before the loop
        log_topic = self.topics[LOG_TOPIC]
        records: list[Record] = []
        for message in messages:
            source = SourcePosition(
                str(message.topic()), message.partition() or 0, message.offset() or 0
            )
            kind, timestamp = message.timestamp()
            appended_at = timestamp if kind == TIMESTAMP_LOG_APPEND_TIME else None
            linked = notary_log.append(
                message.value(), source=str(source), appended_at_ms=appended_at
            )
            if isinstance(linked, Refusal):
                records.append(self._refused(message, source, linked))
            elif linked is not None:
                records.append(
                    Record(log_topic, linked.key, linked.value, 0, notary_log.on_delivery(linked))
                )
        due = notary_log.checkpoint_due(_monotonic_ms())
        if not messages and due is None:
            return None
        if due is not None:
            records.append(
                Record(self.topics[CHECKPOINT_TOPIC], self.origin.encode(), due[1].encode(), 0)
            )
        return records

    def _refused(self, message: Message, source: SourcePosition, refusal: Refusal) -> Record:
        record = rejection_record(
            source,
            message.key(),
            message.value(),
            code=refusal.code,
            reason=refusal.reason,
            now_ms=time.time_ns() // 1_000_000,
            worker="notary",
        )
        value = self.codec.encode("Rejection", record)
        return Record(self.topics["rejected"], message.key(), value)

    def _committed(self, messages: list[Message]) -> None:
        assert self.log is not None  # noqa: S101 - set by run() before the loop
        self.log.commit()
        self.committed_transactions += 1

    def _rebuild(self, cause: Exception) -> None:
        """After an abort: the uncommitted links are gone, rebuild from ``lineage-log``."""
        self.log = self._restore()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("notary assigned lineage partitions %s", [p.partition for p in partitions])
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("notary revoked lineage partitions %s", [p.partition for p in partitions])
