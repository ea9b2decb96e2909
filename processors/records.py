"""Build the output records (Avro-shaped dicts) for each way an intent can end.

Ids are derived from the intent (or, for bad input, from the source position), so a
redelivered input yields records with the same ids (times and measured durations may
differ): a replay after a crash cannot mint a second decision id for the same intent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from processors.approval import ApprovalSigner, LineagePosition
from processors.enforcement import Enforcement, Outcome
from processors.intent import Intent
from processors.verdict import Verdict

__all__ = [
    "SourcePosition",
    "digest",
    "approval_record",
    "decision_record",
    "rejection_record",
]

APPROVAL_TTL_MS = 5 * 60 * 1000


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


def decision_record(
    intent: Intent, enforcement: Enforcement, *, intent_digest: str, now_ms: int, worker: str
) -> dict[str, Any]:
    if enforcement.outcome is Outcome.APPROVED:
        raise ValueError("an approved intent gets an approval record, not a decision record")
    return {
        "decision_id": derived_id("decision", intent.intent_id, intent_digest),
        "intent_id": intent.intent_id,
        "agent_id": intent.agent_id,
        "outcome": "DENIED" if enforcement.outcome is Outcome.DENIED else "REVIEW",
        "reasons": list(enforcement.reasons),
        "verdicts": _verdict_records(enforcement.verdicts),
        "intent_digest": intent_digest,
        "decided_at_ms": now_ms,
        "worker": worker,
    }


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
    current key (``processors/approval.py``), plus the exact intent bytes it covers."""
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
