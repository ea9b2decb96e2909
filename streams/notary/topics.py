"""The notary's topics: ``lineage-log`` and ``checkpoints``, one partition each, kept
forever (a restart replays the whole log), replicated as the estate's other topics
(``topic_replication_factor``, ``topic_min_insync_replicas``: see ``streams/topics.py``)."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams import kafka
from streams.config import Settings
from streams.notary.exceptions import NotaryServiceError
from streams.topics import MAX_MESSAGE_BYTES, check_replication, ensure_topics, new_topic

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
    _wait_for_leaders(admin, [settings.topic(n) for n in (LOG_TOPIC, CHECKPOINT_TOPIC)], timeout)
    return created


def _wait_for_leaders(admin: AdminClient, topics: list[str], timeout: float) -> None:
    """Wait until every partition of ``topics`` has a leader (new topics take a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout)
        if all(
            name in metadata.topics
            and metadata.topics[name].partitions
            and all(p.leader >= 0 for p in metadata.topics[name].partitions.values())
            for name in topics
        ):
            return
        if time.monotonic() > deadline:
            raise NotaryServiceError(
                f"topics {', '.join(topics)} have no partition leader after {timeout:.0f} s",
                hint="is the broker healthy? `trustplane kafka status`",
            )
        time.sleep(0.1)
