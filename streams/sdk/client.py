"""SDK: publish intents, read what became of them.

Agents use :class:`IntentPublisher`; operators and executors read the outcome topics
with :class:`OutcomeReader` (``read_committed``: only records of committed gate
transactions are seen, so each intent's outcome appears exactly once). Both take a
:class:`~streams.sdk.config.ClientConfig` (or the server ``Settings``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from processors.crypto.keys import SigningKey
from processors.exceptions import TrustplaneError
from processors.layers.identity import sign_intent
from streams import kafka, names
from streams.codec import Codec, DecodeError, default_codec
from streams.sdk.config import Endpoint
from streams.sdk.publish import Publisher, PublishError
from streams.topics import MAX_MESSAGE_BYTES, OUTCOME_TOPICS

__all__ = ["new_intent", "IntentPublisher", "OutcomeReader", "Received", "PublishError"]

UNSIGNED_KEY_ID = "unsigned"


def new_intent(
    agent_id: str,
    action: str,
    resource: str,
    *,
    sequence: int,
    parameters: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    runtime: Mapping[str, str] | None = None,
    ttl_s: float = 300.0,
    now_ms: int | None = None,
    key_id: str = UNSIGNED_KEY_ID,
    sign_with: SigningKey | None = None,
) -> dict[str, Any]:
    """An Intent record (``schemas/intent.avsc``) with fresh id, nonce and times,
    signed with ``sign_with`` (the agent's registered key) when given."""
    issued = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    record = {
        "intent_id": str(uuid.uuid4()),
        "agent_id": agent_id,
        "runtime": dict(
            runtime
            or {
                "runtime_id": f"{agent_id}-runtime",
                "code_digest": "sha256:" + "0" * 64,
                "config_digest": "sha256:" + "0" * 64,
                "environment": "dev",
                "host": "localhost",
            }
        ),
        "action": action,
        "resource": resource,
        "parameters": dict(parameters or {}),
        "context": dict(context or {}),
        "sequence": sequence,
        "issued_at_ms": issued,
        "expires_at_ms": issued + int(ttl_s * 1000),
        "nonce": uuid.uuid4().hex,
        "key_id": key_id,
        "signature": None,
    }
    return sign_intent(record, sign_with) if sign_with is not None else record


class IntentPublisher:
    """Publish intents to ``intents``, keyed by agent id (idempotent producer).

    ``flush()`` (also on leaving a ``with`` block) waits for delivery and raises
    :class:`PublishError` if an intent did not reach the broker.
    """

    def __init__(
        self,
        config: Endpoint,
        codec: Codec | None = None,
        *,
        producer_settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.codec = codec or default_codec()
        self.topic = config.topic("intents")
        self.producer = kafka.producer(
            config,
            {
                "linger.ms": 5,
                "message.max.bytes": MAX_MESSAGE_BYTES + 1024,
                **(producer_settings or {}),
            },
        )
        self._publisher = Publisher(self.producer, what="intents")

    def publish(self, intent: Mapping[str, Any]) -> str:
        """Encode and queue one intent record (see :func:`new_intent`); return its id."""
        value = self.codec.encode("Intent", intent)
        self.publish_raw(str(intent["agent_id"]).encode(), value)
        return str(intent["intent_id"])

    def publish_raw(self, key: bytes | None, value: bytes | None) -> None:
        """Publish bytes as they are (for tests and demos of bad input)."""
        self._publisher.send(self.topic, key, value)

    def flush(self, timeout: float = 30.0) -> None:
        self._publisher.flush(timeout)

    def __enter__(self) -> IntentPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


@dataclass(frozen=True)
class Received:
    topic: str
    """Logical topic name (``approved``, ``denied``, ...)."""
    key: bytes | None
    record: dict[str, Any] | None
    error: str | None = None
    offset: int = -1
    partition: int = -1


class OutcomeReader:
    """Read decoded records from the outcome topics (or any of the project's topics)."""

    def __init__(
        self,
        config: Endpoint,
        topics: Iterable[str] = OUTCOME_TOPICS,
        *,
        group_id: str | None = None,
        from_beginning: bool = True,
        codec: Codec | None = None,
    ) -> None:
        self.codec = codec or default_codec()
        self._logical = {config.topic(t): t for t in topics}
        self.consumer = kafka.consumer(
            config,
            group_id or names.reader_group(config),
            {
                # a named group remembers where it stopped; an anonymous one reads anew
                "enable.auto.commit": group_id is not None,
                "enable.auto.offset.store": True,
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                # a read_committed fetch is not woken by a commit marker: poll often
                "fetch.wait.max.ms": 20,
                "fetch.max.bytes": MAX_MESSAGE_BYTES * 2,
            },
        )
        if from_beginning:
            self.consumer.subscribe(list(self._logical))
        else:
            self.consumer.assign(self._ends(timeout=10.0))

    def _ends(self, timeout: float) -> list[TopicPartition]:
        """Every partition of our topics at its current end: "from now on", fixed now."""
        metadata = self.consumer.list_topics(timeout=timeout)
        positions = []
        for topic in self._logical:
            if topic not in metadata.topics:
                raise TrustplaneError(
                    f"topic {topic} does not exist", hint="start a worker, it creates the topics"
                )
            for partition in metadata.topics[topic].partitions:
                tp = TopicPartition(topic, partition)
                _, high = self.consumer.get_watermark_offsets(tp, timeout=timeout)
                positions.append(TopicPartition(topic, partition, high))
        return positions

    def read(self, timeout: float = 1.0, *, batch: int = 500) -> Iterator[Received]:
        """Yield what arrives within ``timeout`` seconds of the last record.

        ``batch`` bounds how many records one fetch hands over, so a caller that stops
        iterating early has not consumed much more than it looked at.
        """
        while True:
            # poll() returns as soon as one record is here; consume(n, t) would wait for n
            first = self.consumer.poll(timeout)
            if first is None:
                return
            messages = (
                [first, *self.consumer.consume(batch - 1, timeout=0)] if batch > 1 else [first]
            )
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    continue
                yield self._decode(message)

    def _decode(self, message: Any) -> Received:
        topic = self._logical.get(message.topic(), message.topic())
        try:
            record = self.codec.decode(message.value() or b"")
            error = None
        except DecodeError as exc:
            record, error = None, exc.reason
        return Received(topic, message.key(), record, error, message.offset(), message.partition())

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> OutcomeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
