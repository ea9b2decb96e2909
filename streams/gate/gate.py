"""The gate: one input record in, the records it must produce out.

Kafka-free on purpose (the transactional loop lives in ``streams/gate/worker.py``): given
the key, value and position of a record on ``intents``, return exactly one outcome
record (approved, denied, review or rejected) plus its lineage events. It never
raises for bad input, and nothing it does by accident approves. Approvals are signed
(``processors/approval/signer.py``); intents held for review wait in their agent's state
until an operator answers or the review times out (:meth:`Gate.tick`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from processors.approval import ApprovalSigner, ApprovalSigningError, LineagePosition
from processors.approval.executions import (
    LEDGER_STATE_KEY,
    ApprovalLedger,
    ApprovalLedgerCodec,
    check_outcome,
)
from processors.enforcement import Enforcement, Outcome
from processors.exceptions import ValidationError
from processors.intent import Intent
from processors.lineage import LineageRecorder
from processors.log.attest import sign_event
from processors.pipeline import Pipeline
from processors.records import (
    APPROVAL_TTL_MS,
    SourcePosition,
    approval_record,
    decision_record,
    digest,
    rejection_record,
)
from processors.review import (
    REVIEW_STATE_KEY,
    PendingReview,
    ReviewAnswers,
    ReviewQueue,
    ReviewQueueCodec,
)
from processors.verdict import GateState, Status, Verdict
from streams.codec import Codec, DecodeError
from streams.gate.metrics import GateMetrics
from streams.gate.state import AgentStates

__all__ = ["Gate", "Output", "Responder"]

log = logging.getLogger(__name__)

_OUTCOME_RECORD = {
    Outcome.APPROVED: ("approved", "Approval"),
    Outcome.DENIED: ("denied", "Decision"),
    Outcome.REVIEW: ("review", "Decision"),
}
RECHECK_ON_REVIEW = ("killswitch", "freshness", "identity", "eligibility", "policy")
"""Layers asked again when a reviewer approves: a kill switch, quarantine, revoked key,
expiry or policy change since the intent was held wins. (Integrity and anomaly are not
asked again: they already counted this intent, and would see it as its own replay.)"""


@dataclass(frozen=True, slots=True)
class _EventPlace:
    """Where an intent's decision event comes from: its id's subject and its stage."""

    subject: str
    stage: str
    attributes: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Output:
    """A record to produce: ``topic`` is the logical name (``approved``), not prefixed."""

    topic: str
    key: bytes | None
    value: bytes


Responder = Callable[[Intent, Enforcement, int], list[Output]]
"""Turns a decision into further records (e.g. a quarantine command on ``control``)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Gate:
    def __init__(
        self,
        pipeline: Pipeline,
        codec: Codec,
        *,
        worker: str,
        max_intent_bytes: int,
        signer: ApprovalSigner,
        approval_ttl_ms: int = APPROVAL_TTL_MS,
        metrics: GateMetrics | None = None,
        clock: Callable[[], int] = _now_ms,
        states: AgentStates | None = None,
        responders: Sequence[Responder] = (),
        review_answers: ReviewAnswers | None = None,
        review_timeout_ms: int = 15 * 60 * 1000,
    ) -> None:
        self.pipeline = pipeline
        self.codec = codec
        self.worker = worker
        self.max_intent_bytes = max_intent_bytes
        self.signer = signer
        self.approval_ttl_ms = approval_ttl_ms
        self.metrics = metrics or GateMetrics()
        self.lineage = LineageRecorder(worker)
        self.clock = clock
        self.states = states or AgentStates(
            [*pipeline.stateful, ReviewQueueCodec(), ApprovalLedgerCodec()]
        )
        self.responders = tuple(responders)
        self.review_answers = review_answers
        self.review_timeout_ms = review_timeout_ms
        self._pending: list[Output] = []
        self._held: set[tuple[int, str]] = set()

    # -- one input record -----------------------------------------------------------

    def process(
        self, key: bytes | None, value: bytes | None, source: SourcePosition
    ) -> list[Output]:
        started = time.perf_counter()
        now = self.clock()
        try:
            record = self.codec.decode(value or b"", "Intent", max_bytes=self.max_intent_bytes)
            intent = Intent.from_record(record, key=key)
        except (DecodeError, ValidationError) as exc:
            return self._reject(key, value, source, exc.code, exc.reason, now)
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not crash the worker
            log.exception("unexpected error decoding %s", source)
            return self._reject(
                key, value, source, "internal_error", f"{type(exc).__name__}: {exc}", now
            )
        raw = value or b""
        try:
            outputs = self._decide(intent, record, raw, source, now)
        except Exception as exc:  # noqa: BLE001 - fail closed: deny, never drop
            log.exception("unexpected error deciding %s", source)
            outputs = self._deny_on_error(intent, raw, source, exc, now)
        self.metrics.decision_latency.observe((time.perf_counter() - started) * 1000)
        return outputs

    def _decide(
        self,
        intent: Intent,
        record: Mapping[str, Any],
        raw: bytes,
        source: SourcePosition,
        now: int,
    ) -> list[Output]:
        intent_digest = digest(raw)
        agent_state = self.states.get(source.partition, intent.agent_id)
        state = GateState(now_ms=now, worker=self.worker, agent=agent_state)
        enforcement = self.pipeline.decide(intent, state)
        responses: list[Output] = []
        for responder in self.responders:
            responses += responder(intent, enforcement, now)
        if enforcement.outcome is Outcome.REVIEW:
            queue = agent_state.setdefault(REVIEW_STATE_KEY, ReviewQueue())
            queue.hold(
                PendingReview.hold(
                    record,
                    raw,
                    intent_digest,
                    list(enforcement.verdicts),
                    now,
                    self.review_timeout_ms,
                )
            )
            self._held.add((source.partition, intent.agent_id))
        if self.pipeline.stateful or enforcement.outcome is Outcome.REVIEW:
            self.states.touched(source.partition, intent.agent_id)
        return (
            self._finish(
                intent,
                raw,
                intent_digest,
                enforcement,
                now,
                source.partition,
                _EventPlace(str(source), "enforcement", {"source": str(source)}),
            )
            + responses
        )

    def _finish(
        self,
        intent: Intent,
        raw: bytes,
        intent_digest: str,
        enforcement: Enforcement,
        now: int,
        partition: int,
        place: _EventPlace,
    ) -> list[Output]:
        """Build the outcome record (signing approvals) and the intent's lineage event."""
        record: dict[str, Any] | None = None
        if enforcement.outcome is Outcome.APPROVED:
            event_id = LineageRecorder.decision_event_id(place.subject, place.stage)
            try:
                record = approval_record(
                    intent,
                    enforcement,
                    intent_digest=intent_digest,
                    intent_bytes=raw,
                    now_ms=now,
                    worker=self.worker,
                    signer=self.signer,
                    ttl_ms=self.approval_ttl_ms,
                    lineage=LineagePosition(event_id),
                )
            except ApprovalSigningError as exc:  # no valid key, unsignable value: fail closed
                log.error("cannot sign the approval of %s: %s", intent.intent_id, exc.diagnostics())
                enforcement = Enforcement(
                    Outcome.DENIED, (f"signing: {exc.reason} (fail closed)",), enforcement.verdicts
                )
        topic, record_name = _OUTCOME_RECORD[enforcement.outcome]
        if enforcement.outcome is Outcome.APPROVED and record is not None:
            agent_state = self.states.get(partition, intent.agent_id)
            ledger = agent_state.setdefault(LEDGER_STATE_KEY, ApprovalLedger())
            ledger.issue(record["approval_id"], intent.intent_id, record["expires_at_ms"], now)
            self.states.touched(partition, intent.agent_id)
        if record is None:
            record = decision_record(
                intent,
                enforcement,
                intent_digest=intent_digest,
                now_ms=now,
                worker=self.worker,
                occurrence=place.subject,
            )
        key = intent.agent_id.encode()
        outcome = Output(topic, key, self.codec.encode(record_name, record, check=False))
        event = self.lineage.decided(
            intent,
            intent_digest,
            enforcement,
            subject=place.subject,
            stage=place.stage,
            topic=topic,
            now_ms=now,
            attributes=place.attributes,
        )
        outputs = [outcome, *self.lineage_outputs(key, [event], now)]
        # count only once every record is built: a failure above ends in _deny_on_error
        for verdict in enforcement.verdicts:
            self.metrics.count_verdict(verdict.layer, verdict.status.value)
        self.metrics.count_intent(topic)
        self.metrics.lineage_events.inc()
        return outputs

    def _deny_on_error(
        self, intent: Intent, raw: bytes, source: SourcePosition, exc: Exception, now: int
    ) -> list[Output]:
        intent_digest = digest(raw)
        enforcement = Enforcement(
            Outcome.DENIED, (f"internal error: {type(exc).__name__}: {exc} (fail closed)",), ()
        )
        record = decision_record(
            intent,
            enforcement,
            intent_digest=intent_digest,
            now_ms=now,
            worker=self.worker,
            occurrence=str(source),
        )
        event = self.lineage.decided(
            intent,
            intent_digest,
            enforcement,
            subject=str(source),
            stage="enforcement",
            topic="denied",
            now_ms=now,
            attributes={"source": str(source)},
        )
        key = intent.agent_id.encode()
        outputs = [
            Output("denied", key, self.codec.encode("Decision", record)),
            *self.lineage_outputs(key, [event], now),
        ]
        self.metrics.count_intent("denied")
        self.metrics.lineage_events.inc()
        return outputs

    def _reject(
        self,
        key: bytes | None,
        value: bytes | None,
        source: SourcePosition,
        code: str,
        reason: str,
        now: int,
    ) -> list[Output]:
        record = rejection_record(
            source, key, value, code=code, reason=reason, now_ms=now, worker=self.worker
        )
        event = self.lineage.rejected(source, code, reason, record["value_sha256"], now)
        lineage_key = key or None
        outputs = [
            Output("rejected", lineage_key, self.codec.encode("Rejection", record)),
            *self.lineage_outputs(lineage_key, [event], now),
        ]
        self.metrics.rejections.labels(code).inc()
        self.metrics.count_intent("rejected")
        self.metrics.lineage_events.inc()
        return outputs

    # -- reported executions ------------------------------------------------------------

    def process_outcome(
        self, key: bytes | None, value: bytes | None, source: SourcePosition
    ) -> list[Output]:
        """Check an executor's Outcome against the approvals this gate issued."""
        now = self.clock()
        try:
            outcome = self.codec.decode(value or b"", "Outcome", max_bytes=self.max_intent_bytes)
            agent_id = str(outcome["agent_id"])
        except DecodeError as exc:
            return self._reject(key, value, source, exc.code, exc.reason, now)
        ledger = self.states.get(source.partition, agent_id).setdefault(
            LEDGER_STATE_KEY, ApprovalLedger()
        )
        check = check_outcome(ledger, outcome)
        self.states.touched(source.partition, agent_id)
        if not check.authorized:
            self.metrics.unauthorized_executions.inc()
            log.warning("unauthorized execution by %s: %s", outcome["executor_id"], check.reason)
        event = self.lineage.event(
            subject=f"outcome:{outcome['outcome_id']}",
            stage="execution",
            event_type="execution.reported" if check.authorized else "execution.unauthorized",
            status="ok" if check.authorized else "alert",
            now_ms=now,
            intent_id=str(outcome["intent_id"]),
            agent_id=agent_id,
            reasons=(check.reason,),
            attributes={
                "approval_id": str(outcome["approval_id"]),
                "executor_id": str(outcome["executor_id"]),
                "outcome": str(outcome["status"]),
                "source": str(source),
            },
        )
        self.metrics.lineage_events.inc()
        return self.lineage_outputs(agent_id.encode(), [event], now)

    # -- held intents -----------------------------------------------------------------

    def reindex(self, partitions: Iterable[int]) -> None:
        """After state was restored: find the held intents of these partitions."""
        wanted = set(partitions)
        self._held = {h for h in self._held if h[0] not in wanted}
        for partition in wanted:
            for agent_id, state in self.states.agents(partition):
                queue = state.get(REVIEW_STATE_KEY)
                if queue is not None and len(queue):
                    self._held.add((partition, agent_id))

    def tick(self, now: int | None = None) -> list[Output]:
        """Resolve held intents that have an answer, or whose review timed out."""
        now = self.clock() if now is None else now
        outputs: list[Output] = []
        for partition, agent_id in sorted(self._held):
            queue = self.states.get(partition, agent_id).get(REVIEW_STATE_KEY)
            if queue is None:
                self._held.discard((partition, agent_id))
                continue
            for pending in queue:
                answer = self.review_answers.get(pending.intent_id) if self.review_answers else None
                if answer is None and now < pending.deadline_ms:
                    continue
                outputs += self._resolve(pending, answer, partition, now)
                queue.remove(pending.intent_id)
                self.states.touched(partition, agent_id)
            if not len(queue):
                self._held.discard((partition, agent_id))
        return outputs

    def _resolve(
        self, pending: PendingReview, answer: Any, partition: int, now: int
    ) -> list[Output]:
        raw = pending.raw_bytes()
        try:
            intent = Intent.from_record(pending.intent_record(), key=pending.agent_id.encode())
        except ValidationError as exc:  # cannot happen for a stored valid intent; fail closed
            log.error("held intent %s is unreadable: %s", pending.intent_id, exc.reason)
            return []
        held = pending.original_verdicts()
        if answer is None:
            reason = (
                f"review: no answer within {(pending.deadline_ms - pending.held_at_ms) // 1000} s "
                "(denied by timeout)"
            )
            enforcement = Enforcement(Outcome.DENIED, (reason,), tuple(held))
        elif not answer.approved:
            reason = f"review: denied by {answer.by}: {answer.reason}"
            enforcement = Enforcement(Outcome.DENIED, (reason,), tuple(held))
        else:
            enforcement = self._approve_held(intent, held, answer, partition, now)
        place = _EventPlace(
            f"review:{pending.intent_digest}", "review", {"held_at_ms": str(pending.held_at_ms)}
        )
        return self._finish(intent, raw, pending.intent_digest, enforcement, now, partition, place)

    def _approve_held(
        self, intent: Intent, held: list[Verdict], answer: Any, partition: int, now: int
    ) -> Enforcement:
        state = GateState(
            now_ms=now, worker=self.worker, agent=self.states.get(partition, intent.agent_id)
        )
        held_status = {v.layer: v.status for v in held}
        for layer in self.pipeline.layers:
            if layer.name in RECHECK_ON_REVIEW:
                try:
                    verdict = layer.evaluate(intent, state)
                except Exception as exc:  # noqa: BLE001 - fail closed, as the pipeline does
                    verdict = Verdict.error(layer.name, f"{type(exc).__name__}: {exc}")
                still_held = (
                    verdict.status is Status.REVIEW and held_status.get(layer.name) is Status.REVIEW
                )
                if verdict.status is not Status.ALLOW and not still_held:
                    why = "; ".join(verdict.reasons)
                    return Enforcement(
                        Outcome.DENIED,
                        (f"review approved by {answer.by}, but {layer.name}: {why}",),
                        (*held, verdict),
                    )
        approved = f"approved by reviewer {answer.by}: {answer.reason}"
        verdicts = tuple(
            Verdict(v.layer, Status.ALLOW, (*v.reasons, approved), v.evidence, v.duration_us)
            if v.status is Status.REVIEW
            else v
            for v in held
        )
        if any(v.status is not Status.ALLOW for v in verdicts):
            return Enforcement(Outcome.DENIED, ("review: a held verdict was not a hold",), verdicts)
        return Enforcement(Outcome.APPROVED, (), verdicts)

    # -- records for the next transaction ---------------------------------------------

    def emit(self, outputs: Sequence[Output]) -> None:
        """Queue records (e.g. control lineage) for the worker's next transaction."""
        self._pending.extend(outputs)

    def take_pending(self) -> list[Output]:
        pending, self._pending = self._pending, []
        return pending

    def lineage_outputs(
        self, key: bytes | None, events: list[dict[str, Any]], now_ms: int
    ) -> list[Output]:
        """Sign ``events`` with the gate's current key and encode them for ``lineage``.

        With no usable key the events go out unsigned and the notary refuses them loudly
        (to ``rejected``): lineage is never silently dropped, and never trusted unsigned.
        """
        try:
            key_now = self.signer.keyring.signing_key(now_ms)
        except ApprovalSigningError as exc:
            log.error("cannot sign lineage: %s", exc.diagnostics())
            key_now = None
        encode = self.codec.encode
        outputs = []
        for event in events:
            if key_now is not None:
                sign_event(event, key_now)
            outputs.append(Output("lineage", key, encode("LineageEvent", event, check=False)))
        return outputs
