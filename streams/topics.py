"""The project's topics: names, settings, and creating them.

Topic configs that matter for security: ``intents``, ``lineage``, ``outcomes`` and
``control`` take the broker's append time as each record's timestamp
(``message.timestamp.type=LogAppendTime``), so a writer cannot backdate a record; and
``control`` is kept whole and forever (``cleanup.policy=delete``, ``retention.ms=-1``):
its history is hash-chained, which compaction would break. :func:`align_topic_configs`
brings topics created before these settings in line (as ``admin``).

Replication: topics are created with ``topic_replication_factor`` replicas (-1: the
broker's ``default.replication.factor``) and, when it is set, ``topic_min_insync_replicas``
(else the broker's ``min.insync.replicas``). Every producer writes with ``acks=all``
(``streams/kafka.py``), so with 3 replicas and a minimum of 2 a broker may die without
losing an acknowledged record. A minimum above the replication factor would refuse every
write: :func:`check_replication` refuses it first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # documented path, stub lacks __all__
    AdminClient,
    AlterConfigOpType,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from processors.exceptions import ConfigError, TrustplaneError
from streams import kafka

if TYPE_CHECKING:  # the SDK imports this module, and streams.config imports the SDK
    from streams.config import Settings

__all__ = [
    "TopicSpec",
    "TOPICS",
    "OUTCOME_TOPICS",
    "ensure_topics",
    "new_topic",
    "check_replication",
    "topic_config",
    "align_topic_configs",
    "wait_for_leaders",
    "TopicError",
]

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
"""The broker stamps each record with its append time; the producer's timestamp is
replaced, so a writer cannot backdate (or postdate) what it writes."""


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
        "gate-state",
        "per-agent state of the stateful layers (compacted changelog)",
        compacted=True,
        # compaction skips the active segment: a segment closes after 5 minutes, so a
        # takeover's restore reads about one record per agent plus the last minutes,
        # not the whole day (Kafka's default closes a segment after 7 days)
        config=(("segment.ms", "300000"),),
    ),
)

OUTCOME_TOPICS = ("approved", "denied", "review", "rejected")
"""Every intent ends in exactly one of these."""


def ensure_topics(
    settings: Settings, names: Iterable[str] | None = None, *, timeout: float = 30.0
) -> list[str]:
    """Create the missing topics; return the names that were created.

    A principal sees only the topics it has an ACL on, and only ``admin`` may create
    topics (``trustplane kafka provision``): a topic missing from what it sees is one
    it cannot create, and the error says so."""
    wanted = {spec.name: spec for spec in TOPICS if names is None or spec.name in set(names)}
    admin = kafka.admin(settings)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise TopicError(
            f"cannot reach Kafka at {settings.resolved_bootstrap()}: {exc}",
            hint="is the broker up, and are the credentials right? `trustplane kafka status`",
        ) from exc
    new = [
        new_topic(
            settings,
            settings.topic(spec.name),
            spec.partitions or settings.partitions,
            topic_config(spec),
        )
        for spec in wanted.values()
        if settings.topic(spec.name) not in existing
    ]
    if new:
        check_replication(settings, admin, timeout=timeout)
    created: list[str] = []
    for topic, future in admin.create_topics(new, operation_timeout=timeout).items() if new else []:
        try:
            future.result()
            created.append(topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                continue
            if "INVALID_REPLICATION_FACTOR" in str(exc):
                raise TopicError(f"cannot create topic {topic}: {exc}", hint=_TOO_FEW) from exc
            denied = kafka.explain_denied(
                exc, principal=settings.resolved_kafka_principal(), topic=topic
            )
            if denied is not None:
                raise TopicError(
                    f"topic {topic} is missing (or hidden from this principal), and it may "
                    f"not be created here: {denied}",
                    hint="create the topics and ACLs as admin: `trustplane kafka provision`",
                ) from exc
            raise TopicError(f"cannot create topic {topic}: {exc}") from exc
    return created


_TOO_FEW = (
    "the cluster has fewer live brokers than the replication factor (topic_replication_factor, "
    "else the broker's default.replication.factor): start the missing brokers "
    "(`trustplane kafka status`), or lower TRUSTPLANE_TOPIC_REPLICATION_FACTOR"
)


def wait_for_leaders(
    admin: AdminClient, topics: Iterable[str], *, timeout: float = 30.0
) -> ClusterMetadata:
    """Wait until the cluster's metadata lists every partition of ``topics`` with a leader;
    return that metadata.

    A created topic takes a moment to reach every broker's metadata (on a cluster, the
    broker asked next may not know it yet): a service started right after provisioning
    should find its topics."""
    wanted = list(topics)
    deadline = time.monotonic() + timeout
    while True:
        try:
            metadata = admin.list_topics(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaException as exc:
            raise TopicError(
                f"cannot reach Kafka: {exc}",
                hint="is the broker up? `trustplane kafka status`",
            ) from exc
        missing = [
            name
            for name in wanted
            if (topic := metadata.topics.get(name)) is None
            or topic.error is not None
            or not topic.partitions
            or any(p.leader < 0 for p in topic.partitions.values())
        ]
        if not missing:
            return metadata
        if time.monotonic() > deadline:
            raise TopicError(
                f"topics {', '.join(missing)} have no partition leader after {timeout:.0f} s",
                hint="is every broker healthy? `trustplane kafka status`",
            )
        time.sleep(0.1)


def new_topic(settings: Settings, name: str, partitions: int, config: dict[str, str]) -> NewTopic:
    """A topic of the project to create, with the estate's replication settings."""
    return NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=settings.topic_replication_factor,
        config={**config, **_min_insync(settings)},
    )


def check_replication(settings: Settings, admin: AdminClient, *, timeout: float = 30.0) -> None:
    """Refuse a ``topic_min_insync_replicas`` above the replication factor topics get:
    no ``acks=all`` write to them could ever be acknowledged.

    With ``topic_replication_factor`` -1 the factor is the broker's default, read from
    the broker when this principal may (``admin``), else bounded by the broker count."""
    minimum = settings.topic_min_insync_replicas
    if minimum < 1:
        return
    factor = settings.topic_replication_factor
    source = "topic_replication_factor"
    if factor < 1:
        factor, source = _default_replication(admin, timeout)
    if minimum > factor:
        raise ConfigError(
            f"topic_min_insync_replicas={minimum} exceeds the replication factor {factor} "
            f"({source}): no write with acks=all to these topics could be acknowledged",
            hint="set TRUSTPLANE_TOPIC_MIN_INSYNC_REPLICAS to at most the replication factor "
            "(2 with 3 replicas), or raise TRUSTPLANE_TOPIC_REPLICATION_FACTOR (3 on a "
            "cluster of three or more brokers)",
        )


def _default_replication(admin: AdminClient, timeout: float) -> tuple[int, str]:
    """The broker's ``default.replication.factor`` (or, when this principal may not read
    broker configs, the number of brokers, which no replication factor exceeds)."""
    try:
        brokers = admin.list_topics(timeout=timeout).brokers
    except KafkaException as exc:
        raise TopicError(
            f"cannot reach Kafka: {exc}",
            hint="is the broker up, and are the credentials right? `trustplane kafka status`",
        ) from exc
    if not brokers:
        return 1, "no broker listed"
    resource = ConfigResource(ResourceType.BROKER, str(min(brokers)))
    try:
        entries = admin.describe_configs([resource])[resource].result(timeout=timeout)
        return int(entries["default.replication.factor"].value), "the broker's default"
    except (KafkaException, KeyError, TypeError, ValueError):
        return len(brokers), f"at most the {len(brokers)} broker(s) of the cluster"


def _min_insync(settings: Settings) -> dict[str, str]:
    minimum = settings.topic_min_insync_replicas
    return {"min.insync.replicas": str(minimum)} if minimum >= 1 else {}


def topic_config(spec: TopicSpec, settings: Settings | None = None) -> dict[str, str]:
    """The configs a topic of the project is created with (and aligned to); with
    ``settings``, the estate's ``min.insync.replicas`` when it states one."""
    return {
        "cleanup.policy": "compact" if spec.compacted else "delete",
        "max.message.bytes": str(MAX_MESSAGE_BYTES),
        **dict(spec.config),
        **(_min_insync(settings) if settings is not None else {}),
    }


def align_topic_configs(
    settings: Settings, admin: AdminClient | None = None, *, timeout: float = 30.0
) -> list[str]:
    """Set the configs of :data:`TOPICS` that differ on existing topics (e.g. ``control``
    created compacted, before LogAppendTime); return ``topic: name=value`` per change.
    Needs ALTER_CONFIGS: run as admin."""
    admin = admin or kafka.admin(settings)
    resources = {
        settings.topic(spec.name): ConfigResource(ResourceType.TOPIC, settings.topic(spec.name))
        for spec in TOPICS
    }
    existing = admin.list_topics(timeout=timeout).topics
    resources = {name: res for name, res in resources.items() if name in existing}
    if not resources:
        return []
    current: dict[str, dict[str, str | None]] = {}
    for resource, future in admin.describe_configs(list(resources.values())).items():
        entries = future.result(timeout=timeout)
        current[resource.name] = {key: entry.value for key, entry in entries.items()}
    changes: list[str] = []
    alter: list[ConfigResource] = []
    for spec in TOPICS:
        name = settings.topic(spec.name)
        if name not in current:
            continue
        wanted = topic_config(spec, settings)
        differ = {k: v for k, v in wanted.items() if current[name].get(k) != v}
        if not differ:
            continue
        replicas = min((len(p.replicas) for p in existing[name].partitions.values()), default=0)
        if 0 < replicas < int(differ.get("min.insync.replicas", 0)):
            raise ConfigError(
                f"topic {name} has {replicas} replica(s), fewer than "
                f"topic_min_insync_replicas={differ['min.insync.replicas']}: no write with "
                "acks=all to it could be acknowledged",
                hint="raise the topic's replication first (kafka-reassign-partitions.sh), or "
                "lower TRUSTPLANE_TOPIC_MIN_INSYNC_REPLICAS",
            )
        entries = [
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in differ.items()
        ]
        alter.append(ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries))
        changes += [f"{name}: {key}={value}" for key, value in differ.items()]
    for resource, future in admin.incremental_alter_configs(alter).items() if alter else []:
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            raise TopicError(
                f"cannot change the configs of topic {resource.name}: {exc}",
                hint="run as admin (`trustplane kafka provision`)"
                if code == KafkaError.TOPIC_AUTHORIZATION_FAILED
                else None,
            ) from exc
    return changes
