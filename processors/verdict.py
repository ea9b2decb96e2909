"""The one contract every trust layer follows: ``evaluate(intent, state) -> Verdict``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from processors.intent import Intent

__all__ = ["ALREADY_DECIDED", "Status", "Verdict", "GateState", "Layer", "StatefulLayer"]

ALREADY_DECIDED = "already_decided"
"""Evidence key a layer sets (to ``"true"``) on a verdict about an exact copy of an intent
that was decided before: stateful layers do not learn from it (a replay is not new
activity, so a flood of replays cannot move an agent's rates, baselines or sequence)."""


class Status(StrEnum):
    """What one layer says about one intent. Only ALLOW lets an intent through."""

    ALLOW = "ALLOW"
    DENY = "DENY"
    REVIEW = "REVIEW"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One layer's answer, with reasons a person can read and evidence a machine can."""

    layer: str
    status: Status
    reasons: tuple[str, ...] = ()
    evidence: Mapping[str, str] = field(default_factory=dict)
    duration_us: int = 0

    @classmethod
    def allow(cls, layer: str, *reasons: str, **evidence: str) -> Verdict:
        return cls(layer, Status.ALLOW, reasons, evidence)

    @classmethod
    def deny(cls, layer: str, *reasons: str, **evidence: str) -> Verdict:
        return cls(layer, Status.DENY, reasons, evidence)

    @classmethod
    def review(cls, layer: str, *reasons: str, **evidence: str) -> Verdict:
        return cls(layer, Status.REVIEW, reasons, evidence)

    @classmethod
    def error(cls, layer: str, *reasons: str, **evidence: str) -> Verdict:
        return cls(layer, Status.ERROR, reasons, evidence)


@dataclass(frozen=True, slots=True)
class GateState:
    """What a layer may know besides the intent: the clock, who decides, the agent's state.

    ``agent`` maps a stateful layer's ``state_key`` to that layer's state for the
    intent's agent (sequences, seen nonces, baselines). The worker loads it from, and
    saves it to, a changelog topic inside the same Kafka transaction as the decision,
    so state and decisions stay consistent across crashes. ``evaluate`` only reads it;
    ``StatefulLayer.observe`` updates it after the decision.
    """

    now_ms: int
    worker: str = "local"
    agent: dict[str, Any] = field(default_factory=dict)


class Layer(Protocol):
    """A trust layer. ``evaluate`` must not raise on purpose: it returns DENY or ERROR.

    If it raises anyway, or overruns its time budget, the pipeline records an ERROR,
    and the enforcement combiner turns that into a deny.
    """

    name: str

    def evaluate(self, intent: Intent, state: GateState) -> Verdict: ...


@runtime_checkable
class StatefulLayer(Protocol):
    """A layer that keeps per-agent state (replay windows, sequences, baselines).

    The state object is the layer's own; it must round-trip through JSON-safe dicts
    (``dump_state``/``load_state``) because it is kept in a changelog topic.
    """

    name: str
    state_key: str

    def evaluate(self, intent: Intent, state: GateState) -> Verdict: ...

    def new_state(self) -> Any: ...

    def load_state(self, data: Mapping[str, Any]) -> Any: ...

    def dump_state(self, layer_state: Any) -> dict[str, Any]: ...

    def observe(self, intent: Intent, state: GateState, outcome: str) -> None:
        """Update ``state.agent[self.state_key]`` after the decision (``outcome`` is
        approved/denied/review). Called only for intents whose identity verified."""
        ...
