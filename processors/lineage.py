"""Lineage events: one per decided intent (its verdicts inside), one per rejected input,
review answer, reported execution and control command.

Every event names its stage, what happened and why. Event ids are derived from the
subject (for an intent: the position it was read at) and the stage, so a redelivered
input produces the same ids and a store can drop the duplicates, while a replayed
intent gets events of its own. The gate signs each event (``processors/log/attest.py``).
Hash-linking (``prev_hash``/``event_hash``) and the log position (``log_index``) are
filled in by the notary (``streams/notary/``, ``processors/log/chain.py``), which alone
defines the order; the sink stores the linked events (``lineage-log``). The fields are
those of :class:`processors.records.LineageEvent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.enforcement import Enforcement
from processors.intent import Intent
from processors.records import SourcePosition, derived_id

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
            "verdicts": [],
            "signer": None,
            "signature": None,
            "prev_hash": None,
            "event_hash": None,
            "log_index": None,
        }

    def decided(
        self,
        intent: Intent,
        intent_digest: str,
        enforcement: Enforcement,
        *,
        subject: str,
        stage: str,
        topic: str,
        now_ms: int,
        attributes: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The one event of a decided intent: the outcome, why, and every layer's verdict
        with its evidence (``verdicts``). Its id is :meth:`decision_event_id`."""
        event = self.event(
            subject=subject,
            stage=stage,
            event_type=f"intent.{enforcement.outcome.value}",
            status=enforcement.outcome.value,
            now_ms=now_ms,
            intent_id=intent.intent_id,
            agent_id=intent.agent_id,
            reasons=enforcement.reasons,
            attributes={
                "intent_digest": intent_digest,
                "action": intent.action,
                "resource": intent.resource,
                "sequence": str(intent.sequence),
                "topic": topic,
                **_scenario_labels(intent),
                **(attributes or {}),
            },
        )
        event["event_id"] = self.decision_event_id(subject, stage)
        event["verdicts"] = [
            {
                "layer": v.layer,
                "status": v.status.value,
                "reasons": list(v.reasons),
                "evidence": dict(v.evidence),
                "duration_us": v.duration_us,
            }
            for v in enforcement.verdicts
        ]
        return event

    @staticmethod
    def decision_event_id(subject: str, stage: str) -> str:
        """The id of a decision event, known before the decision is final (an approval
        names it): one per input position (``subject``) and stage, so a replayed intent
        gets a new event and a redelivered record the same one."""
        return derived_id("event", subject, stage, "decided")

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


SCENARIO_LABELS = ("scenario", "scenario_run")
"""Context keys a demo scenario's intents carry (streams/dev/scenarios.py), copied into
their decision events so lineage tells scenario runs from real traffic."""
_LABEL_CHARS = 64


def _scenario_labels(intent: Intent) -> dict[str, str]:
    return {
        key: value[:_LABEL_CHARS]
        for key in SCENARIO_LABELS
        if isinstance(value := intent.context.get(key), str) and value
    }
