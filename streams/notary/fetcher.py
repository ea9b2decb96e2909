"""Reading one committed ``lineage-log`` record back by offset, for the HTTP threads."""

from __future__ import annotations

import threading
import time

from confluent_kafka import KafkaError, TopicPartition

from streams import kafka, names
from streams.config import Settings
from streams.notary.exceptions import LogIntegrityError, NotaryServiceError, ProofRequestError
from streams.topics import MAX_MESSAGE_BYTES

__all__ = ["EventFetcher"]


class EventFetcher:
    """Reads one committed ``lineage-log`` record by offset (for the HTTP threads)."""

    def __init__(self, settings: Settings, topic: str, timeout: float = 5.0) -> None:
        self.topic = topic
        self.timeout = timeout
        self._lock = threading.Lock()
        self._consumer = kafka.consumer(
            settings,
            names.notary_fetch(settings),
            {
                "client.id": names.notary_fetch(settings),
                "fetch.wait.max.ms": 10,
                "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024,
            },
        )

    def __call__(self, offset: int) -> bytes:
        with self._lock:
            self._consumer.assign([TopicPartition(self.topic, 0, offset)])
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                message = self._consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise NotaryServiceError(f"reading {self.topic}@{offset}: {error.str()}")
                if message.offset() != offset:
                    raise LogIntegrityError(
                        f"{self.topic} has no record at offset {offset} (next is "
                        f"{message.offset()})"
                    )
                return message.value() or b""
            raise ProofRequestError(
                f"cannot read the event back from {self.topic}@{offset} within "
                f"{self.timeout:.0f} s",
                status=503,
                hint="is Kafka up? `trustplane kafka status`; retry",
            )

    def close(self) -> None:
        with self._lock:
            self._consumer.close()
