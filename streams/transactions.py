"""What the three transactional consume→produce loops (gate worker, sink, notary) share."""

from __future__ import annotations

import logging

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from processors.exceptions import TrustplaneError

__all__ = ["start_transactions", "rewind_to_committed", "close_loop"]

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
