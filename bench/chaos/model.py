"""What the chaos run planned and what it observed: the checker's input.

Plain data, so :mod:`bench.chaos.check` is a pure function of it and the self-test can
build, and corrupt, a dataset without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "Class",
    "Planned",
    "OutcomeRecord",
    "IntentRecord",
    "LogRecord",
    "StateWrite",
    "Observed",
    "Anchors",
    "SINK_TABLES",
]


class Class(StrEnum):
    """What must become of a planned record, whatever the faults."""

    GOOD = "good"
    """Must be approved (a signed intent the policy permits, from an agent in good standing)."""
    MUST_DENY = "must_deny"
    """Must never be approved; denied for a reason that does not depend on timing."""
    REVIEW = "review"
    """Must be held for review first; approved later only if the suite answered approve."""
    GARBAGE = "garbage"
    """Not an intent at all: must be rejected, once."""


@dataclass(frozen=True)
class Planned:
    """One record the workload publishes to ``intents``."""

    subject: str
    """The intent id (garbage: ``garbage-<n>``, matched to its position by its digest)."""
    agent_id: str
    cls: Class
    kind: str
    """Why it belongs to its class, e.g. ``policy``, ``unregistered``, ``attestation``."""
    key: bytes
    value: bytes = field(repr=False)
    """The exact bytes published: an approval must be for these bytes."""
    answer: str | None = None
    """For REVIEW: the suite's answer (``approve``, ``deny``) or None (left waiting)."""
    layer: str | None = None
    """For MUST_DENY: the layer that denies it (its reasons start ``<layer>:``)."""


@dataclass(frozen=True)
class OutcomeRecord:
    """A record on ``approved``, ``denied``, ``review`` or ``rejected``, as read."""

    topic: str
    """Logical name: approved | denied | review | rejected."""
    record_id: str
    """approval_id, decision_id or rejection_id."""
    intent_id: str | None
    agent_id: str
    intent_digest: str = ""
    outcome: str = ""
    """A decision's DENIED / REVIEW; APPROVED / REJECTED for the others."""
    reasons: tuple[str, ...] = ()
    envelope: bytes | None = field(default=None, repr=False)
    """An approval's DSSE envelope."""
    lineage_event_id: str | None = None
    """The decision event an approval names (``predicate.lineage.eventId``)."""
    issued_at_ms: int = 0
    source: tuple[str, int, int] | None = None
    """A rejection's source (topic, partition, offset)."""


@dataclass(frozen=True)
class IntentRecord:
    """A record on ``intents``."""

    partition: int
    offset: int
    value_sha256: str
    intent_id: str | None
    """None when the value is not an Intent (the gate rejects it, the sink skips it)."""
    agent_id: str = ""


@dataclass(frozen=True)
class LogRecord:
    """A record of ``lineage-log``: its Kafka key and the linked event."""

    key: bytes | None
    event: dict[str, Any]


@dataclass(frozen=True)
class StateWrite:
    """A record of ``gate-state``, opened with the gate state key: the write count it
    carries, or why it could not be opened."""

    partition: int
    offset: int
    agent_id: str
    writes: int | None
    problem: str | None = None


SINK_TABLES = (
    "intents",
    "approvals",
    "decisions",
    "rejections",
    "outcomes",
    "lineage_events",
    "checkpoints",
)
"""The sink's tables (each a ``FINAL`` view, so a count counts each record once)."""


@dataclass
class Observed:
    """Everything the read_committed readers and the sink's store showed after the run."""

    intents_topic: str
    """The full name of ``intents`` (a rejection names its source by full name)."""
    intents: list[IntentRecord]
    outcomes: list[OutcomeRecord]
    lineage_ids: list[str]
    """event_id of every committed ``lineage`` record, in read order, duplicates kept."""
    log: list[LogRecord]
    """``lineage-log`` in offset order (one partition)."""
    checkpoints: list[str]
    """``checkpoints`` notes in offset order (one partition)."""
    outcome_ids: list[str] = field(default_factory=list)
    """outcome_id of every executor report on ``outcomes`` (the suite runs no executor)."""
    sink_counts: dict[str, int] | None = None
    """Rows per table of :data:`SINK_TABLES` in ClickHouse; None: not asked."""
    undecodable: dict[str, int] = field(default_factory=dict)
    """Records per topic that are not what the topic carries (reported, not judged)."""
    state_writes: list[StateWrite] | None = None
    """Every committed ``gate-state`` record, in offset order per partition; None: not read."""


@dataclass(frozen=True)
class Anchors:
    """The keys an auditor pins: the gate's published JWKS and the notary's verifier key."""

    gate_jwks: dict[str, Any]
    notary_vkey: str
