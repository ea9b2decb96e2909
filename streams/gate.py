"""The gate: one input record in, the records it must produce out.

Kafka-free on purpose (the transactional loop lives in ``streams/worker.py``): given
the key, value and position of a record on ``intents``, return exactly one outcome
record (approved, denied, review or rejected) plus its lineage events. It never
raises for bad input, and nothing it does by accident approves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from processors.enforcement import Enforcement, Outcome
from processors.exceptions import ValidationError
from processors.intent import Intent
from processors.lineage import LineageRecorder
from processors.pipeline import Pipeline
from processors.records import (
    SourcePosition,
    approval_record,
    decision_record,
    digest,
    rejection_record,
)
from processors.verdict import GateState
from streams.codec import Codec, DecodeError
from streams.metrics import GateMetrics
from streams.state import AgentStates

__all__ = ["Gate", "Output"]

log = logging.getLogger(__name__)

_OUTCOME_RECORD = {
    Outcome.APPROVED: ("approved", "Approval"),
    Outcome.DENIED: ("denied", "Decision"),
    Outcome.REVIEW: ("review", "Decision"),
}


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
        metrics: GateMetrics | None = None,
        clock: Callable[[], int] = _now_ms,
        states: AgentStates | None = None,
        responders: Sequence[Responder] = (),
    ) -> None:
        self.pipeline = pipeline
        self.states = states or AgentStates(pipeline.stateful)
        self.responders = tuple(responders)
        self._pending: list[Output] = []
        self.codec = codec
        self.worker = worker
        self.max_intent_bytes = max_intent_bytes
        self.metrics = metrics or GateMetrics()
        self.lineage = LineageRecorder(worker)
        self.clock = clock

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
        try:
            outputs = self._decide(intent, value or b"", source, now)
        except Exception as exc:  # noqa: BLE001 - fail closed: deny, never drop
            log.exception("unexpected error deciding %s", source)
            outputs = self._deny_on_error(intent, value or b"", source, exc, now)
        self.metrics.decision_latency.observe((time.perf_counter() - started) * 1000)
        return outputs

    def _decide(self, intent: Intent, raw: bytes, source: SourcePosition, now: int) -> list[Output]:
        intent_digest = digest(raw)
        agent_state = self.states.get(source.partition, intent.agent_id)
        state = GateState(now_ms=now, worker=self.worker, agent=agent_state)
        enforcement = self.pipeline.decide(intent, state)
        if self.pipeline.stateful:
            self.states.touched(source.partition, intent.agent_id)
        responses: list[Output] = []
        for responder in self.responders:
            responses += responder(intent, enforcement, now)
        topic, record_name = _OUTCOME_RECORD[enforcement.outcome]
        if enforcement.outcome is Outcome.APPROVED:
            record = approval_record(
                intent, enforcement, intent_digest=intent_digest, now_ms=now, worker=self.worker
            )
        else:
            record = decision_record(
                intent, enforcement, intent_digest=intent_digest, now_ms=now, worker=self.worker
            )
        key = intent.agent_id.encode()
        outcome = Output(topic, key, self.codec.encode(record_name, record))
        events = [self.lineage.decoded(intent, source, intent_digest, now)]
        events += [
            self.lineage.verdict(intent, intent_digest, v, now) for v in enforcement.verdicts
        ]
        events.append(self.lineage.enforced(intent, intent_digest, enforcement, topic, now))
        outputs = [outcome, *self._lineage_outputs(key, events), *responses]
        # count only once every record is built: a failure above ends in _deny_on_error
        for verdict in enforcement.verdicts:
            self.metrics.verdicts.labels(verdict.layer, verdict.status.value).inc()
        self.metrics.intents.labels(topic).inc()
        self.metrics.lineage_events.inc(len(events))
        return outputs

    def _deny_on_error(
        self, intent: Intent, raw: bytes, source: SourcePosition, exc: Exception, now: int
    ) -> list[Output]:
        intent_digest = digest(raw)
        enforcement = Enforcement(
            Outcome.DENIED, (f"internal error: {type(exc).__name__}: {exc} (fail closed)",), ()
        )
        record = decision_record(
            intent, enforcement, intent_digest=intent_digest, now_ms=now, worker=self.worker
        )
        events = [
            self.lineage.decoded(intent, source, intent_digest, now),
            self.lineage.enforced(intent, intent_digest, enforcement, "denied", now),
        ]
        key = intent.agent_id.encode()
        outputs = [
            Output("denied", key, self.codec.encode("Decision", record)),
            *self._lineage_outputs(key, events),
        ]
        self.metrics.intents.labels("denied").inc()
        self.metrics.lineage_events.inc(len(events))
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
            *self._lineage_outputs(lineage_key, [event]),
        ]
        self.metrics.rejections.labels(code).inc()
        self.metrics.intents.labels("rejected").inc()
        self.metrics.lineage_events.inc()
        return outputs

    def emit(self, outputs: Sequence[Output]) -> None:
        """Queue records (e.g. control lineage) for the worker's next transaction."""
        self._pending.extend(outputs)

    def take_pending(self) -> list[Output]:
        pending, self._pending = self._pending, []
        return pending

    def _lineage_outputs(self, key: bytes | None, events: list[dict[str, object]]) -> list[Output]:
        return [Output("lineage", key, self.codec.encode("LineageEvent", e)) for e in events]
