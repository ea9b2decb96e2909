"""The project's topics: names, settings, and creating them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # documented path, stub lacks __all__

from processors.exceptions import TrustplaneError
from streams import kafka

if TYPE_CHECKING:  # the SDK imports this module, and streams.config imports the SDK
    from streams.config import Settings

__all__ = ["TopicSpec", "TOPICS", "OUTCOME_TOPICS", "ensure_topics", "TopicError"]

MAX_MESSAGE_BYTES = kafka.LOOP_MAX_MESSAGE_BYTES


class TopicError(TrustplaneError):
    """A topic could not be created or inspected."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    doc: str
    compacted: bool = False
    partitions: int | None = None
    """Fixed partition count (None: ``settings.partitions``)."""
    config: tuple[tuple[str, str], ...] = ()
    """Further topic configs, e.g. the broker's append time as record time."""


_APPEND_TIME = (("message.timestamp.type", "LogAppendTime"),)


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "intents", "intended actions, published by agents (key: agent id)", config=_APPEND_TIME
    ),
    TopicSpec("approved", "approvals, written by gate workers only; executors consume it"),
    TopicSpec("denied", "denied intents with every reason"),
    TopicSpec("review", "intents held for a person's decision"),
    TopicSpec("rejected", "input that is not a valid intent, with the reason"),
    TopicSpec("lineage", "signed lineage events, one per decided intent", config=_APPEND_TIME),
    TopicSpec("outcomes", "execution outcomes reported by executors", config=_APPEND_TIME),
    TopicSpec(
        "control",
        "signed, hash-chained operator commands (one partition: one order; kept forever, "
        "never compacted; the broker's append time)",
        partitions=1,
        config=(*_APPEND_TIME, ("retention.ms", "-1"), ("retention.bytes", "-1")),
    ),
    TopicSpec(
        "gate-state", "per-agent state of the stateful layers (compacted changelog)", compacted=True
    ),
)

OUTCOME_TOPICS = ("approved", "denied", "review", "rejected")
"""Every intent ends in exactly one of these."""


def ensure_topics(
    settings: Settings, names: Iterable[str] | None = None, *, timeout: float = 30.0
) -> list[str]:
    """Create the missing topics; return the names that were created."""
    wanted = {spec.name: spec for spec in TOPICS if names is None or spec.name in set(names)}
    admin = kafka.admin(settings)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise TopicError(
            f"cannot reach Kafka at {settings.resolved_bootstrap()}: {exc}",
            hint="is the broker up? `trustplane kafka status`",
        ) from exc
    new = [
        NewTopic(
            settings.topic(spec.name),
            num_partitions=spec.partitions or settings.partitions,
            replication_factor=-1,
            config={
                "cleanup.policy": "compact" if spec.compacted else "delete",
                "max.message.bytes": str(MAX_MESSAGE_BYTES),
                **dict(spec.config),
            },
        )
        for spec in wanted.values()
        if settings.topic(spec.name) not in existing
    ]
    created: list[str] = []
    for topic, future in admin.create_topics(new, operation_timeout=timeout).items() if new else []:
        try:
            future.result()
            created.append(topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TopicError(f"cannot create topic {topic}: {exc}") from exc
    return created
