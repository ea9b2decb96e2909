"""Human review: intents held for a person, and the operators' answers.

An intent that a layer holds (REVIEW) goes to ``review`` and waits in its agent's
state (so it survives a restart, exactly once with the decision). An operator answers
with a signed command; the worker that owns the agent then writes the final outcome:
an approval (signed like any other) or a denial. No answer before the deadline means
denied. Nothing executes while an intent is held: executors only act on ``approved``.

==============  =====================  =========================
kind            subject                payload
==============  =====================  =========================
review.approve  ``review/<intent_id>``  intent_id, reason?
review.deny     ``review/<intent_id>``  intent_id, reason?
==============  =====================  =========================
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from processors.control import ControlContext, ControlState
from processors.exceptions import TrustplaneError
from processors.verdict import Status, Verdict

__all__ = [
    "REVIEW_STATE_KEY",
    "ReviewAnswer",
    "ReviewAnswers",
    "PendingReview",
    "ReviewQueue",
    "ReviewQueueCodec",
    "ReviewStateError",
]

REVIEW_STATE_KEY = "_review"


class ReviewStateError(TrustplaneError):
    """Stored review state is unreadable."""


@dataclass(frozen=True, slots=True)
class ReviewAnswer:
    approved: bool
    reason: str
    by: str
    at_ms: int


def _subject(payload: Mapping[str, Any]) -> str:
    intent_id = payload.get("intent_id")
    if not isinstance(intent_id, str) or not intent_id.strip():
        raise ValueError("a review answer names the intent_id it answers")
    return f"review/{intent_id}"


class ReviewAnswers:
    """Operators' answers by intent id, fed by ``review.approve`` / ``review.deny``."""

    def __init__(self) -> None:
        self._answers: dict[str, ReviewAnswer] = {}

    def install(self, control: ControlState) -> None:
        control.register_handler("review.approve", self._approve, subject=_subject)
        control.register_handler("review.deny", self._deny, subject=_subject)

    def _approve(self, payload: Mapping[str, Any], ctx: ControlContext) -> str | None:
        return self._answer(payload, ctx, approved=True)

    def _deny(self, payload: Mapping[str, Any], ctx: ControlContext) -> str | None:
        return self._answer(payload, ctx, approved=False)

    def _answer(
        self, payload: Mapping[str, Any], ctx: ControlContext, *, approved: bool
    ) -> str | None:
        intent_id = str(payload["intent_id"])
        if intent_id in self._answers:
            return f"intent {intent_id} was already answered"
        reason = payload.get("reason") or ("approved" if approved else "denied") + " by a reviewer"
        self._answers[intent_id] = ReviewAnswer(
            approved, str(reason), ctx.issued_by, ctx.issued_at_ms
        )
        return None

    def get(self, intent_id: str) -> ReviewAnswer | None:
        return self._answers.get(intent_id)


@dataclass(frozen=True, slots=True)
class PendingReview:
    """A held intent: enough to approve or deny it later without the original record."""

    intent_id: str
    agent_id: str
    record: Mapping[str, Any]
    """The decoded Intent record (signature as base64 text under ``signature_b64``)."""
    intent_digest: str
    held_at_ms: int
    deadline_ms: int
    verdicts: tuple[tuple[str, str, tuple[str, ...]], ...]

    def intent_record(self) -> dict[str, Any]:
        record = dict(self.record)
        record.pop("raw_b64", None)
        signature = record.pop("signature_b64", None)
        record["signature"] = base64.b64decode(signature) if signature else None
        return record

    def raw_bytes(self) -> bytes:
        """The intent exactly as the agent sent it (what the approval's digest covers)."""
        return base64.b64decode(str(self.record["raw_b64"]))

    def original_verdicts(self) -> list[Verdict]:
        return [Verdict(layer, Status(status), reasons) for layer, status, reasons in self.verdicts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "intent_id": self.intent_id,
            "agent_id": self.agent_id,
            "record": dict(self.record),
            "intent_digest": self.intent_digest,
            "held_at_ms": self.held_at_ms,
            "deadline_ms": self.deadline_ms,
            "verdicts": [
                [layer, status, list(reasons)] for layer, status, reasons in self.verdicts
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingReview:
        return cls(
            str(data["intent_id"]),
            str(data["agent_id"]),
            dict(data["record"]),
            str(data["intent_digest"]),
            int(data["held_at_ms"]),
            int(data["deadline_ms"]),
            tuple((str(v[0]), str(v[1]), tuple(str(r) for r in v[2])) for v in data["verdicts"]),
        )

    @classmethod
    def hold(
        cls,
        record: Mapping[str, Any],
        raw: bytes,
        intent_digest: str,
        verdicts: list[Verdict],
        now_ms: int,
        timeout_ms: int,
    ) -> PendingReview:
        stored = {k: v for k, v in record.items() if k != "signature"}
        signature = record.get("signature")
        stored["signature_b64"] = base64.b64encode(signature).decode() if signature else None
        stored["raw_b64"] = base64.b64encode(raw).decode()
        return cls(
            str(record["intent_id"]),
            str(record["agent_id"]),
            stored,
            intent_digest,
            now_ms,
            now_ms + timeout_ms,
            tuple((v.layer, v.status.value, tuple(v.reasons)) for v in verdicts),
        )


class ReviewQueue:
    """An agent's held intents, oldest first."""

    def __init__(self, pending: list[PendingReview] | None = None) -> None:
        self.pending: list[PendingReview] = pending or []

    def hold(self, review: PendingReview) -> None:
        if all(p.intent_id != review.intent_id for p in self.pending):
            self.pending.append(review)

    def __iter__(self) -> Iterator[PendingReview]:
        return iter(list(self.pending))

    def __len__(self) -> int:
        return len(self.pending)

    def remove(self, intent_id: str) -> None:
        self.pending = [p for p in self.pending if p.intent_id != intent_id]


class ReviewQueueCodec:
    """Makes the review queue part of an agent's changelog state (like a stateful layer)."""

    name = "review"
    state_key = REVIEW_STATE_KEY

    def new_state(self) -> ReviewQueue:
        return ReviewQueue()

    def dump_state(self, layer_state: Any) -> dict[str, Any]:
        queue: ReviewQueue = layer_state
        return {"pending": [p.to_dict() for p in queue.pending]}

    def load_state(self, data: Mapping[str, Any]) -> ReviewQueue:
        try:
            return ReviewQueue([PendingReview.from_dict(p) for p in data["pending"]])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ReviewStateError(f"stored review queue is unreadable: {exc}") from exc
