"""The records trustplane writes to Kafka and stores: one frozen dataclass per type, and
the builders of the records each way an intent can end.

Record types
============
Each dataclass below is the one definition of a record type that the lineage store
keeps: its fields are the Avro record's fields (``schemas/<name>.avsc``, same names,
same order), and each field says how it is stored (:class:`Store`), from which the
sink derives its row mapping and its table's columns (``sinks/clickhouse/rows.py``).
``tests/processors/test_records.py`` checks that the ``.avsc``, the dataclass and the
``.sql`` table agree. Records travel as plain dicts (what the codec encodes):
``to_record()`` gives one. The gate's builders below write those dicts directly (they run
for every intent); the same test checks that they produce exactly the dataclass fields.

Ids
===
Ids are derived from the intent (or, for bad input, from the source position), so a
redelivered input yields records with the same ids (times and measured durations may
differ): a replay after a crash cannot mint a second decision id for the same intent.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from processors.enforcement import Enforcement, Outcome
from processors.intent import Intent
from processors.verdict import Verdict

if TYPE_CHECKING:
    from processors.approval.signer import ApprovalSigner
    from processors.approval.statement import LineagePosition

__all__ = [
    "SourcePosition",
    "digest",
    "derived_id",
    "approval_record",
    "decision_record",
    "rejection_record",
    "Store",
    "StoredRecord",
    "LayerVerdict",
    "LineageVerdict",
    "LineageEvent",
    "Decision",
    "Approval",
    "Rejection",
    "OutcomeReport",
    "STORED_RECORDS",
    "record_columns",
]

APPROVAL_TTL_MS = 5 * 60 * 1000


# -- record types -------------------------------------------------------------------


class Store(enum.Enum):
    """How a record field is stored in its table (``sinks/clickhouse/rows.py`` applies it)."""

    VALUE = "value"
    """One column of the field's name, the value as it is."""
    ID = "id"
    """The record's id: non-empty text (an empty id would merge unrelated rows)."""
    TIME_MS = "time_ms"
    """Milliseconds since the epoch that ``DateTime64(3)`` can hold (1900..2299)."""
    NULL_AS_EMPTY = "null_as_empty"
    """Null stored as ``''`` (the column is in the sort key, which cannot be Nullable); a
    non-null empty string is refused, so ``''`` in the table always means null."""
    TEXT = "text"
    """Bytes stored as UTF-8 text (invalid bytes as ``\\x`` escapes); null stays null."""
    HEX = "hex"
    """Bytes stored as lowercase hex in the column ``<name>_hex``."""
    VERDICTS = "verdicts"
    """The :class:`LayerVerdict` list as four parallel arrays ``verdict_*``."""
    LINEAGE_VERDICTS = "lineage_verdicts"
    """The :class:`LineageVerdict` list as five parallel arrays ``verdict_*`` (with the
    evidence), so that the stored event can be rebuilt exactly for its proof."""
    HASH = "hash"
    """A notary hash (``sha256:`` + 64 hex digits), required."""
    HASH_OR_NULL = "hash_or_null"
    """A notary hash or null."""
    LOG_INDEX = "log_index"
    """A log position, required: a non-negative integer."""
    SKIP = "skip"
    """Not stored (the field's ``doc`` in the ``.avsc`` says what it is)."""


VERDICT_COLUMNS = (
    "verdict_layers",
    "verdict_statuses",
    "verdict_reasons",
    "verdict_durations_us",
)
LINEAGE_VERDICT_COLUMNS = (*VERDICT_COLUMNS, "verdict_evidence")


def stored(how: Store) -> Any:
    """A dataclass field stored ``how`` (the field has no default: records are complete)."""
    return field(metadata={"store": how})


def store_of(f: dataclasses.Field[Any]) -> Store:
    how = f.metadata.get("store", Store.VALUE)
    assert isinstance(how, Store)  # noqa: S101 - set by stored() only
    return how


def columns_of_field(f: dataclasses.Field[Any]) -> tuple[str, ...]:
    """The table columns one field becomes."""
    how = store_of(f)
    if how is Store.SKIP:
        return ()
    if how is Store.VERDICTS:
        return VERDICT_COLUMNS
    if how is Store.LINEAGE_VERDICTS:
        return LINEAGE_VERDICT_COLUMNS
    if how is Store.HEX:
        return (f"{f.name}_hex",)
    return (f.name,)


def _verdict_list(value: Sequence[LayerVerdict]) -> list[dict[str, Any]]:
    return [v.to_record() for v in value]


@dataclass(frozen=True)
class _Plan:
    """How to turn one record type into the codec's dict, built once per type."""

    names: tuple[str, ...]
    values: Callable[[Any], tuple[Any, ...]]
    converts: tuple[tuple[str, Callable[[Any], Any]], ...]
    """Fields whose value needs converting: a list for a tuple, a dict for a mapping."""


_PLANS: dict[type, _Plan] = {}


def _record_plan(record_type: type) -> _Plan:
    plan = _PLANS.get(record_type)
    if plan is None:
        plan = _PLANS[record_type] = _new_plan(record_type)
    return plan


def _new_plan(record_type: type) -> _Plan:
    names: list[str] = []
    converts: list[tuple[str, Callable[[Any], Any]]] = []
    for f in dataclasses.fields(record_type):
        names.append(f.name)
        annotation = str(f.type)
        if annotation.startswith(("tuple[LayerVerdict", "tuple[LineageVerdict")):
            converts.append((f.name, _verdict_list))
        elif annotation.startswith("tuple["):
            converts.append((f.name, list))
        elif annotation.startswith("Mapping["):
            converts.append((f.name, dict))
    return _Plan(tuple(names), operator.attrgetter(*names), tuple(converts))


class StoredRecord:
    """Base of the record types the lineage store keeps (frozen dataclasses)."""

    __slots__ = ()

    AVRO_NAME: ClassVar[str]
    """Full Avro name (``dev.trustplane.<Name>``)."""
    SCHEMA_FILE: ClassVar[str]
    """The ``.avsc`` in ``schemas/``."""
    TABLE: ClassVar[str]
    """The logical table (deduplicating view) its rows go to."""

    def to_record(self) -> dict[str, Any]:
        """The record as the codec encodes it: fields in schema order, lists and dicts."""
        plan = _record_plan(type(self))
        record = dict(zip(plan.names, plan.values(self), strict=True))
        for name, convert in plan.converts:
            record[name] = convert(record[name])
        return record


def record_columns(record_type: type[StoredRecord]) -> tuple[str, ...]:
    """The table columns a record type's fields become, in field order."""
    return tuple(
        column
        for f in dataclasses.fields(record_type)  # type: ignore[arg-type]  # a dataclass type
        for column in columns_of_field(f)
    )


@dataclass(frozen=True, slots=True)
class LayerVerdict:
    """What one decision layer said (``LayerVerdict`` inside Decision and Approval)."""

    layer: str
    status: str
    reasons: tuple[str, ...]
    duration_us: int

    def to_record(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "status": self.status,
            "reasons": list(self.reasons),
            "duration_us": self.duration_us,
        }


@dataclass(frozen=True, slots=True)
class LineageVerdict:
    """What one decision layer said, with its evidence (inside an intent's LineageEvent)."""

    layer: str
    status: str
    reasons: tuple[str, ...]
    evidence: Mapping[str, str]
    duration_us: int

    def to_record(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "status": self.status,
            "reasons": list(self.reasons),
            "evidence": dict(self.evidence),
            "duration_us": self.duration_us,
        }


@dataclass(frozen=True, slots=True)
class LineageEvent(StoredRecord):
    """One step in the life of an intent (``schemas/lineage_event.avsc``).

    The gate leaves ``prev_hash``, ``event_hash`` and ``log_index`` null (topic
    ``lineage``); the notary sets them (topic ``lineage-log``), and the sink stores
    only linked events, so every row of ``lineage_events`` can be proven.
    """

    AVRO_NAME: ClassVar[str] = "dev.trustplane.LineageEvent"
    SCHEMA_FILE: ClassVar[str] = "lineage_event.avsc"
    TABLE: ClassVar[str] = "lineage_events"

    event_id: str = stored(Store.ID)
    intent_id: str | None = stored(Store.NULL_AS_EMPTY)
    agent_id: str | None = stored(Store.NULL_AS_EMPTY)
    stage: str = stored(Store.VALUE)
    event_type: str = stored(Store.VALUE)
    status: str = stored(Store.VALUE)
    reasons: tuple[str, ...] = stored(Store.VALUE)
    attributes: Mapping[str, str] = stored(Store.VALUE)
    occurred_at_ms: int = stored(Store.TIME_MS)
    worker: str = stored(Store.VALUE)
    verdicts: tuple[LineageVerdict, ...] = stored(Store.LINEAGE_VERDICTS)
    signer: str | None = stored(Store.VALUE)
    signature: str | None = stored(Store.VALUE)
    prev_hash: str | None = stored(Store.HASH_OR_NULL)
    event_hash: str | None = stored(Store.HASH)
    log_index: int | None = stored(Store.LOG_INDEX)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LineageEvent:
        """The linked event a ``lineage_events`` row stores (``''`` ids back to null):
        its RFC 8785 JSON is the event's Merkle leaf (``processors/log/chain.py``)."""
        return cls(
            event_id=row["event_id"],
            intent_id=row["intent_id"] or None,
            agent_id=row["agent_id"] or None,
            stage=row["stage"],
            event_type=row["event_type"],
            status=row["status"],
            reasons=tuple(row["reasons"]),
            attributes=dict(row["attributes"]),
            occurred_at_ms=int(row["occurred_at_ms"]),
            worker=row["worker"],
            verdicts=tuple(
                LineageVerdict(layer, status, tuple(reasons), dict(evidence), int(duration))
                for layer, status, reasons, evidence, duration in zip(
                    row["verdict_layers"],
                    row["verdict_statuses"],
                    row["verdict_reasons"],
                    row["verdict_evidence"],
                    row["verdict_durations_us"],
                    strict=True,
                )
            ),
            signer=row["signer"],
            signature=row["signature"],
            prev_hash=row["prev_hash"],
            event_hash=row["event_hash"],
            log_index=None if row["log_index"] is None else int(row["log_index"]),
        )


@dataclass(frozen=True, slots=True)
class Decision(StoredRecord):
    """A denied or held intent (``schemas/decision.avsc``; topics ``denied``, ``review``)."""

    AVRO_NAME: ClassVar[str] = "dev.trustplane.Decision"
    SCHEMA_FILE: ClassVar[str] = "decision.avsc"
    TABLE: ClassVar[str] = "decisions"

    decision_id: str = stored(Store.ID)
    intent_id: str = stored(Store.VALUE)
    agent_id: str = stored(Store.VALUE)
    outcome: str = stored(Store.VALUE)
    reasons: tuple[str, ...] = stored(Store.VALUE)
    verdicts: tuple[LayerVerdict, ...] = stored(Store.VERDICTS)
    intent_digest: str = stored(Store.VALUE)
    decided_at_ms: int = stored(Store.TIME_MS)
    worker: str = stored(Store.VALUE)


@dataclass(frozen=True, slots=True)
class Approval(StoredRecord):
    """An approved intent with its signed envelope (``schemas/approval.avsc``)."""

    AVRO_NAME: ClassVar[str] = "dev.trustplane.Approval"
    SCHEMA_FILE: ClassVar[str] = "approval.avsc"
    TABLE: ClassVar[str] = "approvals"

    approval_id: str = stored(Store.ID)
    intent_id: str = stored(Store.VALUE)
    agent_id: str = stored(Store.VALUE)
    action: str = stored(Store.VALUE)
    resource: str = stored(Store.VALUE)
    intent_digest: str = stored(Store.VALUE)
    verdicts: tuple[LayerVerdict, ...] = stored(Store.VERDICTS)
    envelope: bytes = stored(Store.TEXT)
    issued_at_ms: int = stored(Store.TIME_MS)
    expires_at_ms: int = stored(Store.TIME_MS)
    worker: str = stored(Store.VALUE)
    intent: bytes | None = stored(Store.SKIP)
    """The exact intent bytes, for executors; the envelope already covers its digest."""


@dataclass(frozen=True, slots=True)
class Rejection(StoredRecord):
    """Input that could not be processed, with the reason (``schemas/rejection.avsc``)."""

    AVRO_NAME: ClassVar[str] = "dev.trustplane.Rejection"
    SCHEMA_FILE: ClassVar[str] = "rejection.avsc"
    TABLE: ClassVar[str] = "rejections"

    rejection_id: str = stored(Store.ID)
    source_topic: str = stored(Store.VALUE)
    source_partition: int = stored(Store.VALUE)
    source_offset: int = stored(Store.VALUE)
    key: bytes | None = stored(Store.TEXT)
    value_sha256: str = stored(Store.VALUE)
    value_prefix: bytes = stored(Store.HEX)
    value_size: int = stored(Store.VALUE)
    reason_code: str = stored(Store.VALUE)
    reason: str = stored(Store.VALUE)
    rejected_at_ms: int = stored(Store.TIME_MS)
    worker: str = stored(Store.VALUE)


@dataclass(frozen=True, slots=True)
class OutcomeReport(StoredRecord):
    """What an executor did with an approval (``schemas/outcome.avsc``, Avro ``Outcome``;
    named so it is not taken for the enforcement ``Outcome``)."""

    AVRO_NAME: ClassVar[str] = "dev.trustplane.Outcome"
    SCHEMA_FILE: ClassVar[str] = "outcome.avsc"
    TABLE: ClassVar[str] = "outcomes"

    outcome_id: str = stored(Store.ID)
    approval_id: str = stored(Store.VALUE)
    intent_id: str = stored(Store.VALUE)
    agent_id: str = stored(Store.VALUE)
    executor_id: str = stored(Store.VALUE)
    status: str = stored(Store.VALUE)
    detail: str = stored(Store.VALUE)
    reported_at_ms: int = stored(Store.TIME_MS)


STORED_RECORDS: tuple[type[StoredRecord], ...] = (
    LineageEvent,
    Decision,
    Approval,
    Rejection,
    OutcomeReport,
)
"""Every Avro record type the lineage store keeps (checkpoints are signed notes, not Avro)."""


# -- building records ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where an input record was read: enough to find it again."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def derived_id(kind: str, *parts: object) -> str:
    material = "\x1f".join([kind, *map(str, parts)]).encode()
    return f"{kind}-{hashlib.sha256(material).hexdigest()[:32]}"


def decision_record(
    intent: Intent,
    enforcement: Enforcement,
    *,
    intent_digest: str,
    now_ms: int,
    worker: str,
    occurrence: str = "",
) -> dict[str, Any]:
    """A denied or held intent's record. ``occurrence`` (where the intent was read, or
    that a review resolved it) keeps the id of a replay's denial apart from the first
    decision's: a store never sees one id with two contents."""
    if enforcement.outcome is Outcome.APPROVED:
        raise ValueError("an approved intent gets an approval record, not a decision record")
    return {
        "decision_id": derived_id("decision", intent.intent_id, intent_digest, occurrence),
        "intent_id": intent.intent_id,
        "agent_id": intent.agent_id,
        "outcome": "DENIED" if enforcement.outcome is Outcome.DENIED else "REVIEW",
        "reasons": list(enforcement.reasons),
        "verdicts": _verdict_records(enforcement.verdicts),
        "intent_digest": intent_digest,
        "decided_at_ms": now_ms,
        "worker": worker,
    }


def _verdict_records(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    return [
        {
            "layer": v.layer,
            "status": v.status.value,
            "reasons": list(v.reasons),
            "duration_us": v.duration_us,
        }
        for v in verdicts
    ]


def approval_record(
    intent: Intent,
    enforcement: Enforcement,
    *,
    intent_digest: str,
    intent_bytes: bytes,
    now_ms: int,
    worker: str,
    signer: ApprovalSigner,
    ttl_ms: int = APPROVAL_TTL_MS,
    lineage: LineagePosition | None = None,
) -> dict[str, Any]:
    """The approval: an in-toto Statement in a DSSE envelope signed with the gate's
    current key (``processors/approval/signer.py``), plus the exact intent bytes it covers."""
    if enforcement.outcome is not Outcome.APPROVED:
        raise ValueError(f"refusing to build an approval for a {enforcement.outcome} intent")
    approval_id = derived_id("approval", intent.intent_id, intent_digest)
    envelope, expires_at_ms = signer.sign(
        intent,
        enforcement,
        intent_digest=intent_digest,
        approval_id=approval_id,
        now_ms=now_ms,
        ttl_ms=ttl_ms,
        lineage=lineage,
    )
    return {
        "approval_id": approval_id,
        "intent_id": intent.intent_id,
        "agent_id": intent.agent_id,
        "action": intent.action,
        "resource": intent.resource,
        "intent_digest": intent_digest,
        "verdicts": _verdict_records(enforcement.verdicts),
        "envelope": envelope,
        "issued_at_ms": now_ms,
        "expires_at_ms": expires_at_ms,
        "worker": worker,
        "intent": intent_bytes,
    }


def rejection_record(
    source: SourcePosition,
    key: bytes | None,
    value: bytes | None,
    *,
    code: str,
    reason: str,
    now_ms: int,
    worker: str,
) -> dict[str, Any]:
    value = value or b""
    return {
        "rejection_id": derived_id("rejection", source.topic, source.partition, source.offset),
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "key": key[:256] if key is not None else None,
        "value_sha256": digest(value),
        "value_prefix": value[:64],
        "value_size": len(value),
        "reason_code": code,
        "reason": reason,
        "rejected_at_ms": now_ms,
        "worker": worker,
    }
