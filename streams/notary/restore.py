"""Restoring the notary's log before it serves: from its snapshot and the tail of
``lineage-log`` when the snapshot agrees with the topics, else by replaying all of
``lineage-log`` (see :mod:`streams.notary`, "Restart")."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from streams import kafka, names
from streams.codec import DecodeError
from streams.config import Settings
from streams.notary.exceptions import LogIntegrityError, NotaryServiceError, SnapshotError
from streams.notary.log import NotaryLog
from streams.notary.snapshot import Snapshot, SnapshotStore
from streams.topics import MAX_MESSAGE_BYTES

__all__ = ["LogRestorer", "Restored", "TopicReader"]

log = logging.getLogger(__name__)


class TopicReader:
    """Reads the committed records of partition 0 of a topic, to its end (one consumer
    for every read of a restore)."""

    def __init__(self, settings: Settings, *, stall_s: float = 60.0) -> None:
        self.stall_s = stall_s
        self._consumer = kafka.consumer(
            settings,
            names.notary_restore(settings),
            {
                "client.id": names.notary_restore(settings),
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
                "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024,
            },
        )

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def watermarks(self, topic: str) -> tuple[int, int]:
        try:
            return kafka.watermark_offsets(self._consumer, TopicPartition(topic, 0))
        except KafkaException as exc:
            raise NotaryServiceError(f"reading the offsets of {topic}: {exc}") from exc

    def read(
        self, topic: str, start: int | None = None, *, tail: int | None = None
    ) -> Iterator[Message]:
        """Every committed record from offset ``start`` (default: the first one kept, or
        about the last ``tail``) to the end."""
        low, high = self.watermarks(topic)
        if start is None:
            start = low if tail is None else max(low, high - tail)
        elif start < low:
            raise LogIntegrityError(
                f"{topic} starts at offset {low}: the records from offset {start} on were deleted",
                hint=f"{topic} needs retention.ms=-1",
            )
        if high <= start:
            return
        try:
            self._consumer.assign([TopicPartition(topic, 0, start)])
            last_progress = time.monotonic()
            while True:
                # consume() waits out its timeout unless the batch fills: keep it short
                messages = self._consumer.consume(1000, timeout=0.05)
                if not messages:
                    if time.monotonic() - last_progress > self.stall_s:
                        raise NotaryServiceError(
                            f"reading {topic} stalled for {self.stall_s:.0f} s before its end "
                            f"(offset {high})"
                        )
                    continue
                last_progress = time.monotonic()
                for message in messages:
                    if message.topic() != topic:
                        continue  # a late record of an earlier read
                    error = message.error()
                    if error is None:
                        yield message
                    elif error.code() == KafkaError._PARTITION_EOF:
                        return
                    else:
                        raise NotaryServiceError(f"reading {topic}: {error.str()}")
        except KafkaException as exc:
            raise NotaryServiceError(f"reading {topic}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Restored:
    """A restored log, and how it was restored."""

    log: NotaryLog
    source: str
    """``snapshot`` (a snapshot and the records after it) or ``replay`` (all records)."""
    replayed: int
    """``lineage-log`` records re-appended."""
    seconds: float
    refused: str | None = None
    """Why the snapshot was not used (None: it was, or there was none)."""


class LogRestorer:
    """Builds the committed NotaryLog from the snapshot (checked against the topics) or
    from all of ``lineage-log``, then the checkpoints."""

    def __init__(
        self,
        settings: Settings,
        *,
        new_log: Callable[[], NotaryLog],
        log_topic: str,
        checkpoint_topic: str,
        store: SnapshotStore | None,
        checkpoint_tail: int,
    ) -> None:
        self.settings = settings
        self.new_log = new_log
        self.log_topic = log_topic
        self.checkpoint_topic = checkpoint_topic
        self.store = store
        self.checkpoint_tail = checkpoint_tail
        """Records of ``checkpoints`` read on a full replay (a note and a commit marker
        per transaction)."""

    def restore(self) -> Restored:
        started = time.monotonic()
        refused: str | None = None
        with TopicReader(self.settings) as reader:
            snapshot = self._load()
            if isinstance(snapshot, str):
                refused, snapshot = snapshot, None
            if snapshot is not None:
                try:
                    notary_log, replayed = self._resume(reader, snapshot)
                    return Restored(notary_log, "snapshot", replayed, time.monotonic() - started)
                except (SnapshotError, LogIntegrityError) as exc:
                    refused = exc.reason
                    assert self.store is not None  # noqa: S101 - it loaded the snapshot
                    self.store.discard()
            if refused is not None:
                log.warning(
                    "the notary's snapshot is not used, replaying all of %s instead: %s",
                    self.log_topic,
                    refused,
                )
            notary_log, replayed = self._replay(reader)
        return Restored(notary_log, "replay", replayed, time.monotonic() - started, refused)

    def _load(self) -> Snapshot | str | None:
        """The snapshot, None if there is none, or why it cannot be used."""
        if self.store is None:
            return None
        try:
            return self.store.load()
        except SnapshotError as exc:
            return exc.reason

    def _replay(self, reader: TopicReader) -> tuple[NotaryLog, int]:
        notary_log = self.new_log()
        for message in reader.read(self.log_topic):
            notary_log.restore_record(message.offset() or 0, message.value())
        for message in reader.read(self.checkpoint_topic, tail=self.checkpoint_tail):
            notary_log.restore_checkpoint(message.offset() or 0, message.value())
        notary_log.commit()
        return notary_log, notary_log.size

    def _resume(self, reader: TopicReader, snapshot: Snapshot) -> tuple[NotaryLog, int]:
        """The log from ``snapshot`` and the records after it, once the topics confirm it:
        (1) they reach as far as it does; (2) its last event is the record at its offset;
        (3) its latest checkpoint is the note at its offset, signed by this notary's key,
        and of the snapshot's root at that size. Then the records of ``lineage-log`` after
        it, and the checkpoints after it, are restored as in a replay (which checks each
        checkpoint's root)."""
        notary_log = self.new_log()
        notary_log.resume(snapshot)
        # (1)
        for topic, covered in (
            (self.log_topic, snapshot.log_end),
            (self.checkpoint_topic, snapshot.checkpoints_end),
        ):
            _, end = reader.watermarks(topic)
            if end < covered:
                raise SnapshotError(
                    f"the snapshot covers {topic} up to offset {covered} but the topic ends "
                    f"at {end}: the snapshot is ahead of the topic (was it recreated?)"
                )
        # (3)
        later: list[Message] = []
        if snapshot.checkpoints:
            offset = snapshot.checkpoints_end - 1
            records = list(reader.read(self.checkpoint_topic, offset))
            if not records or records[0].offset() != offset:
                raise SnapshotError(f"{self.checkpoint_topic} has no note at offset {offset}")
            if records[0].value() != snapshot.checkpoints[-1][1].encode():
                raise SnapshotError(
                    f"the note at {self.checkpoint_topic} offset {offset} is not the latest "
                    "checkpoint of the snapshot"
                )
            notary_log.restore_checkpoint(offset, records[0].value())
            later = records[1:]
        else:
            later = list(reader.read(self.checkpoint_topic, tail=self.checkpoint_tail))
        # (2), then the records after it
        tail = reader.read(self.log_topic, snapshot.offsets[-1] if snapshot.size else 0)
        if snapshot.size:
            self._check_last_event(notary_log, snapshot, next(tail, None))
        replayed = 0
        for message in tail:
            notary_log.restore_record(message.offset() or 0, message.value())
            replayed += 1
        for message in later:
            notary_log.restore_checkpoint(message.offset() or 0, message.value())
        notary_log.commit()
        return notary_log, replayed

    def _check_last_event(
        self, notary_log: NotaryLog, snapshot: Snapshot, record: Message | None
    ) -> None:
        index = snapshot.size - 1
        offset = snapshot.offsets[index]
        where = f"{self.log_topic} offset {offset}"
        if record is None or record.offset() != offset:
            raise SnapshotError(f"{self.log_topic} has no record at offset {offset}")
        try:
            event = notary_log.codec.decode(
                record.value() or b"", "LineageEvent", max_bytes=MAX_MESSAGE_BYTES
            )
        except DecodeError as exc:
            raise SnapshotError(f"{where} is not a LineageEvent: {exc.reason}") from exc
        if event.get("log_index") != index or event.get("event_hash") != snapshot.head:
            raise SnapshotError(
                f"{where} holds log index {event.get('log_index')} with event_hash "
                f"{event.get('event_hash')}; the snapshot's last event is index {index} with "
                f"event_hash {snapshot.head}"
            )
