"""The one contract every trust layer follows: ``evaluate(intent, state) -> Verdict``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from processors.intent import Intent

__all__ = ["Status", "Verdict", "GateState", "Layer"]


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
    """What a layer may know besides the intent: the clock and who is deciding.

    Per-agent state (sequences, baselines, quarantine) joins this as the layers that
    need it arrive; layers read it, only the pipeline writes it.
    """

    now_ms: int
    worker: str = "local"


class Layer(Protocol):
    """A trust layer. ``evaluate`` must not raise on purpose: it returns DENY or ERROR.

    If it raises anyway, or overruns its time budget, the pipeline records an ERROR,
    and the enforcement combiner turns that into a deny.
    """

    name: str

    def evaluate(self, intent: Intent, state: GateState) -> Verdict: ...
