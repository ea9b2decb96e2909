"""Reading what the run left behind, as an auditor would: every topic with a
``read_committed`` consumer from its first offset to its end (records of aborted
transactions never show), and the sink's row counts through its read-only SQL endpoint.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from bench.chaos.cluster import ChaosError
from bench.chaos.model import (
    SINK_TABLES,
    IntentRecord,
    LogRecord,
    Observed,
    OutcomeRecord,
    StateWrite,
)
from bench.e2e.procs import intent_id_of
from processors.exceptions import TrustplaneError
from processors.records import digest
from streams import kafka
from streams.codec import DecodeError, default_codec
from streams.config import Settings
from streams.gate.seal import StateSeal
from streams.gate.state import STATE_TOPIC, read_state_body
from streams.sink import SinkQueryClient
from streams.sink.sql_server import sql_token_file
from streams.topics import MAX_MESSAGE_BYTES

__all__ = ["read_topic", "read_observed", "read_lineage_ids", "read_state_writes", "sink_counts"]

OUTCOME_TOPICS = ("approved", "denied", "review", "rejected")


def read_topic(settings: Settings, name: str, *, stall_s: float = 120.0) -> Iterator[Message]:
    """Every committed record of every partition of ``name``, partition by partition in
    offset order as they arrive (a read_committed consumer ends at the last stable offset)."""
    topic = settings.topic(name)
    consumer = kafka.consumer(
        settings,
        f"{settings.group_id}.chaos-audit-{uuid.uuid4().hex[:8]}",
        {
            "enable.partition.eof": True,
            "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024,
            "fetch.max.bytes": MAX_MESSAGE_BYTES * 2,
        },
    )
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        partitions = sorted((metadata.topics.get(topic) or _no_topic(topic)).partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        open_partitions = set(partitions)
        last = time.monotonic()
        while open_partitions:
            messages = consumer.consume(1000, timeout=1.0)
            if not messages and time.monotonic() - last > stall_s:
                raise ChaosError(
                    f"reading {topic} stalled for {stall_s:.0f} s before its end "
                    f"(partitions {sorted(open_partitions)} open)",
                    hint="an open transaction holds the last stable offset back: is a "
                    "stopped (SIGSTOP) process still holding one?",
                )
            for message in messages:
                last = time.monotonic()
                error = message.error()
                if error is None:
                    yield message
                elif error.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(message.partition() or 0)
                else:
                    raise ChaosError(f"reading {topic}: {error.str()}")
    except KafkaException as exc:
        raise ChaosError(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()


def _no_topic(topic: str) -> Any:
    raise ChaosError(f"topic {topic} does not exist")


def _lineage_event_id(envelope: bytes) -> str | None:
    """``predicate.lineage.eventId`` of an approval's statement (not verified here: the
    checker verifies the envelope)."""
    try:
        statement = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
        value = (statement["predicate"].get("lineage") or {}).get("eventId")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _outcome(topic: str, record: dict[str, Any]) -> OutcomeRecord:
    if topic == "approved":
        envelope = bytes(record["envelope"])
        return OutcomeRecord(
            topic,
            str(record["approval_id"]),
            str(record["intent_id"]),
            str(record["agent_id"]),
            intent_digest=str(record["intent_digest"]),
            outcome="APPROVED",
            envelope=envelope,
            lineage_event_id=_lineage_event_id(envelope),
            issued_at_ms=int(record["issued_at_ms"]),
        )
    if topic == "rejected":
        key = record.get("key")
        return OutcomeRecord(
            topic,
            str(record["rejection_id"]),
            None,
            bytes(key).decode(errors="replace") if key else "",
            outcome="REJECTED",
            reasons=(f"{record['reason_code']}: {record['reason']}",),
            issued_at_ms=int(record["rejected_at_ms"]),
            source=(
                str(record["source_topic"]),
                int(record["source_partition"]),
                int(record["source_offset"]),
            ),
        )
    return OutcomeRecord(
        topic,
        str(record["decision_id"]),
        str(record["intent_id"]),
        str(record["agent_id"]),
        intent_digest=str(record["intent_digest"]),
        outcome=str(record["outcome"]),
        reasons=tuple(record["reasons"]),
        issued_at_ms=int(record["decided_at_ms"]),
    )


def read_lineage_ids(settings: Settings) -> list[str]:
    """event_id of every committed ``lineage`` record (field 0 of a LineageEvent)."""
    ids = []
    codec = default_codec()
    for message in read_topic(settings, "lineage"):
        value = message.value() or b""
        try:
            ids.append(intent_id_of(value, 0))
        except (IndexError, UnicodeDecodeError):
            try:
                ids.append(str(codec.decode(value, "LineageEvent")["event_id"]))
            except DecodeError:
                ids.append(f"undecodable@{message.partition()}:{message.offset()}")
    return ids


def read_observed(
    settings: Settings, lineage_ids: list[str], log: Callable[[str], None] = print
) -> Observed:
    """Every topic the checker needs (``lineage`` read before, once its writers stopped)."""
    codec = default_codec()
    undecodable: dict[str, int] = {}
    outcomes: list[OutcomeRecord] = []
    for topic in OUTCOME_TOPICS:
        for message in read_topic(settings, topic):
            try:
                outcomes.append(_outcome(topic, codec.decode(message.value() or b"")))
            except (DecodeError, KeyError, TypeError, ValueError):
                undecodable[topic] = undecodable.get(topic, 0) + 1
    log(f"read {len(outcomes)} outcome records")
    intents = []
    for message in read_topic(settings, "intents"):
        value = message.value() or b""
        try:
            record = codec.decode(value, "Intent")
            intent_id, agent_id = str(record["intent_id"]), str(record["agent_id"])
        except (DecodeError, KeyError):
            intent_id, agent_id = None, ""
        intents.append(
            IntentRecord(
                message.partition() or 0, message.offset() or 0, digest(value), intent_id, agent_id
            )
        )
    log_records = []
    for message in read_topic(settings, "lineage-log"):
        try:
            event = codec.decode(message.value() or b"", "LineageEvent")
        except DecodeError:
            undecodable["lineage-log"] = undecodable.get("lineage-log", 0) + 1
            event = {"event_id": f"undecodable@{message.offset()}"}
        log_records.append(LogRecord(message.key(), event))
    notes = [
        (m.value() or b"").decode(errors="replace") for m in read_topic(settings, "checkpoints")
    ]
    outcome_ids = []
    for message in read_topic(settings, "outcomes"):
        try:
            outcome_ids.append(str(codec.decode(message.value() or b"", "Outcome")["outcome_id"]))
        except (DecodeError, KeyError):
            undecodable["outcomes"] = undecodable.get("outcomes", 0) + 1
    log(
        f"read {len(intents)} intents, {len(log_records)} lineage-log entries, "
        f"{len(notes)} checkpoints, {len(outcome_ids)} executor outcomes"
    )
    return Observed(
        intents_topic=settings.topic("intents"),
        intents=intents,
        outcomes=outcomes,
        lineage_ids=lineage_ids,
        log=log_records,
        checkpoints=notes,
        outcome_ids=outcome_ids,
        undecodable=undecodable,
    )


def read_state_writes(settings: Settings) -> list[StateWrite]:
    """Every committed record of the agents' state changelog, opened with the gate state
    key (the chaos run's own): the write count each carries."""
    seal = StateSeal.from_settings(settings)
    writes = []
    for message in read_topic(settings, STATE_TOPIC):
        partition, offset = message.partition() or 0, message.offset() or 0
        agent_id = (message.key() or b"").decode(errors="replace")
        value = message.value()
        count: int | None = None
        problem: str | None = None
        if value is None:
            problem = "a tombstone"
        else:
            try:
                count, _ = read_state_body(seal.open(partition, agent_id, value))
            except TrustplaneError as exc:
                problem = exc.reason
            except ValueError as exc:  # JSON and UTF-8 errors included
                problem = f"unreadable body ({type(exc).__name__}: {exc})"
        writes.append(StateWrite(partition, offset, agent_id, count, problem))
    return writes


def sink_counts(settings: Settings) -> dict[str, int]:
    """Rows per table in the sink's store, through its SQL endpoint (the process owns the
    chDB folder). Raises a TrustplaneError when the sink does not answer."""
    client = SinkQueryClient(
        f"http://127.0.0.1:{settings.sink_http_port}",
        timeout_s=60,
        token_file=sql_token_file(settings.state_dir),
    )
    counts = {}
    for table in SINK_TABLES:
        result = client.query(f"SELECT count() FROM {table}")  # noqa: S608 - fixed names
        counts[table] = int(result.rows[0][0])
    return counts


def try_sink_counts(settings: Settings) -> dict[str, int] | None:
    try:
        return sink_counts(settings)
    except TrustplaneError:
        return None
