"""The one place Kafka clients are built, and what the transactional loops share.

Every producer, consumer and admin client of the project comes from :func:`producer`,
:func:`consumer` or :func:`admin`, given anything with a ``kafka_config()`` (the SDK's
:class:`~streams.sdk.config.ClientConfig` or the server :class:`~streams.config.Settings`):
bootstrap servers, credentials and pass-through librdkafka settings reach every client
the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from processors.exceptions import TrustplaneError

__all__ = [
    "KafkaEndpoint",
    "producer",
    "consumer",
    "admin",
    "start_transactions",
    "rewind_to_committed",
    "close_loop",
]

Overrides = Mapping[str, str | int | float | bool]


class KafkaEndpoint(Protocol):
    """Where a client connects and how it authenticates."""

    def kafka_config(self) -> dict[str, str | int | float | bool]: ...


def producer(endpoint: KafkaEndpoint, overrides: Overrides | None = None) -> Producer:
    """An idempotent producer (``acks=all``); ``overrides`` are librdkafka settings."""
    return Producer({**endpoint.kafka_config(), "enable.idempotence": True, **(overrides or {})})


def transactional_producer(
    endpoint: KafkaEndpoint, transactional_id: str, overrides: Overrides | None = None
) -> Producer:
    """A producer for one consume→produce loop; the id fences a predecessor with the same id."""
    return producer(endpoint, {"transactional.id": transactional_id, **(overrides or {})})


def consumer(
    endpoint: KafkaEndpoint, group_id: str, overrides: Overrides | None = None
) -> Consumer:
    """A ``read_committed`` consumer that commits nothing by itself."""
    return Consumer(
        {
            **endpoint.kafka_config(),
            "group.id": group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            **(overrides or {}),
        }
    )


def admin(endpoint: KafkaEndpoint) -> AdminClient:
    return AdminClient(dict(endpoint.kafka_config()))


log = logging.getLogger(__name__)


def start_transactions(producer: Producer, error: type[TrustplaneError]) -> None:
    """``init_transactions`` (which also fences and aborts a predecessor's open
    transaction), or ``error`` with what to check."""
    try:
        producer.init_transactions(30)
    except KafkaException as exc:
        raise error(
            f"cannot start Kafka transactions: {exc}",
            hint="is the broker up and reachable? `trustplane kafka status`",
        ) from exc


def close_loop(consumer: Consumer, producer: Producer) -> None:
    """Leave the group (if still in it) and deliver what is queued."""
    try:
        consumer.close()
    except RuntimeError:
        pass  # already closed
    producer.flush(5)


def rewind_to_committed(consumer: Consumer) -> None:
    """After an aborted transaction: read again from the last committed offsets."""
    assignment = consumer.assignment()
    if not assignment:
        return
    for tp in consumer.committed(assignment, timeout=30):
        offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        try:
            consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        except KafkaException as exc:  # not fetched yet: it starts at the committed offset
            log.debug("seek %s[%d]: %s", tp.topic, tp.partition, exc)
