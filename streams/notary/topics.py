"""The notary's topics: ``lineage-log`` and ``checkpoints``, one partition each, kept
forever (a restart replays the whole log), replicated as the estate's other topics
(``topic_replication_factor``, ``topic_min_insync_replicas``: see ``streams/topics.py``)."""

from __future__ import annotations

from confluent_kafka import KafkaException

from streams import kafka
from streams.config import Settings
from streams.notary.exceptions import NotaryServiceError
from streams.topics import (
    MAX_MESSAGE_BYTES,
    TopicError,
    check_replication,
    ensure_topics,
    new_topic,
    wait_for_leaders,
)

__all__ = ["LOG_TOPIC", "CHECKPOINT_TOPIC", "ensure_notary_topics"]

LOG_TOPIC = "lineage-log"
CHECKPOINT_TOPIC = "checkpoints"


def ensure_notary_topics(settings: Settings, *, timeout: float = 30.0) -> list[str]:
    """Create ``lineage`` if missing, and ``lineage-log`` and ``checkpoints`` with one
    partition and unlimited retention (a restart replays the whole log). Return the
    names created; raise if a log topic exists with more than one partition."""
    created = ensure_topics(settings, ["lineage"], timeout=timeout)
    admin = kafka.admin(settings)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise NotaryServiceError(
            f"cannot reach Kafka at {settings.resolved_bootstrap()}: {exc}",
            hint="is the broker up? `trustplane kafka status`",
        ) from exc
    new = []
    for name in (LOG_TOPIC, CHECKPOINT_TOPIC):
        topic = settings.topic(name)
        existing = metadata.topics.get(topic)
        if existing is None:
            new.append(
                new_topic(
                    settings,
                    topic,
                    1,
                    {
                        "cleanup.policy": "delete",
                        "retention.ms": "-1",
                        "retention.bytes": "-1",
                        "max.message.bytes": str(MAX_MESSAGE_BYTES),
                    },
                )
            )
        elif len(existing.partitions) != 1:
            raise NotaryServiceError(
                f"topic {topic} has {len(existing.partitions)} partitions; the notary needs "
                "exactly 1 (the log's order is its order)",
                hint=f"recreate {topic} with one partition",
            )
    if new:
        check_replication(settings, admin, timeout=timeout)
    for topic, future in admin.create_topics(new, operation_timeout=timeout).items() if new else []:
        try:
            future.result()
            created.append(topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise NotaryServiceError(
                    f"cannot create topic {topic}: {exc}",
                    hint="with INVALID_REPLICATION_FACTOR: fewer brokers are up than the "
                    "topics' replication factor (`trustplane kafka status`)"
                    if "INVALID_REPLICATION_FACTOR" in str(exc)
                    else None,
                ) from exc
    logs = [settings.topic(n) for n in (LOG_TOPIC, CHECKPOINT_TOPIC)]
    try:
        wait_for_leaders(admin, logs, timeout=timeout)
    except TopicError as exc:
        raise NotaryServiceError(exc.reason, hint=exc.hint) from exc
    return created
