"""Lineage events: one per step an intent (or a bad input) goes through.

Every event names its stage (decode, a layer, enforcement, emit), what happened and
why. Event ids are derived from the subject and the stage, so a redelivered input
produces the same ids and a store can drop the duplicates. Hash-linking
(``prev_hash``/``event_hash``) and the log position (``log_index``) are filled in by the
notary (``streams/notary/``, ``processors/log/chain.py``), which alone defines the order;
the sink stores the linked events (``lineage-log``). The fields are those of
:class:`processors.records.LineageEvent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.enforcement import Enforcement
from processors.intent import Intent
from processors.records import SourcePosition, derived_id
from processors.verdict import Verdict

__all__ = ["LineageRecorder"]


class LineageRecorder:
    """Builds the lineage events of one worker."""

    def __init__(self, worker: str) -> None:
        self.worker = worker

    def event(
        self,
        *,
        subject: str,
        stage: str,
        event_type: str,
        status: str,
        now_ms: int,
        intent_id: str | None = None,
        agent_id: str | None = None,
        reasons: tuple[str, ...] | list[str] = (),
        attributes: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        # a plain dict on the hot path (about ten events per intent); its fields are
        # LineageEvent's, in schema order (tests/processors/test_records.py checks it)
        return {
            "event_id": derived_id("event", subject, stage, event_type),
            "intent_id": intent_id,
            "agent_id": agent_id,
            "stage": stage,
            "event_type": event_type,
            "status": status,
            "reasons": list(reasons),
            "attributes": dict(attributes or {}),
            "occurred_at_ms": now_ms,
            "worker": self.worker,
            "prev_hash": None,
            "event_hash": None,
            "log_index": None,
        }

    def decoded(
        self, intent: Intent, source: SourcePosition, intent_digest: str, now_ms: int
    ) -> dict[str, Any]:
        return self.event(
            subject=intent_digest,
            stage="decode",
            event_type="intent.received",
            status="ok",
            now_ms=now_ms,
            intent_id=intent.intent_id,
            agent_id=intent.agent_id,
            attributes={
                "source": str(source),
                "intent_digest": intent_digest,
                "action": intent.action,
                "resource": intent.resource,
                "sequence": str(intent.sequence),
            },
        )

    def rejected(
        self, source: SourcePosition, code: str, reason: str, value_digest: str, now_ms: int
    ) -> dict[str, Any]:
        return self.event(
            subject=str(source),
            stage="decode",
            event_type="input.rejected",
            status=code,
            now_ms=now_ms,
            reasons=(reason,),
            attributes={"source": str(source), "value_sha256": value_digest},
        )

    def verdict(
        self, intent: Intent, intent_digest: str, verdict: Verdict, now_ms: int
    ) -> dict[str, Any]:
        attributes = {f"evidence.{k}": v for k, v in verdict.evidence.items()}
        attributes["duration_us"] = str(verdict.duration_us)
        return self.event(
            subject=intent_digest,
            stage=verdict.layer,
            event_type="layer.verdict",
            status=verdict.status.value,
            now_ms=now_ms,
            intent_id=intent.intent_id,
            agent_id=intent.agent_id,
            reasons=verdict.reasons,
            attributes=attributes,
        )

    def enforced(
        self,
        intent: Intent,
        intent_digest: str,
        enforcement: Enforcement,
        topic: str,
        now_ms: int,
    ) -> dict[str, Any]:
        return self.event(
            subject=intent_digest,
            stage="enforcement",
            event_type=f"intent.{enforcement.outcome.value}",
            status=enforcement.outcome.value,
            now_ms=now_ms,
            intent_id=intent.intent_id,
            agent_id=intent.agent_id,
            reasons=enforcement.reasons,
            attributes={"topic": topic, "intent_digest": intent_digest},
        )
