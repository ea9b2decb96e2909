"""Enforcement: combine every layer's verdict into one outcome, failing closed.

Only an explicit ALLOW from every required layer approves. A DENY, an ERROR, a
missing verdict, an unknown status or no verdicts at all is a deny, with the reason;
a REVIEW (and nothing worse) holds the intent for a person.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from processors.verdict import Status, Verdict

__all__ = ["Outcome", "Enforcement", "combine"]


class Outcome(StrEnum):
    APPROVED = "approved"
    DENIED = "denied"
    REVIEW = "review"


@dataclass(frozen=True, slots=True)
class Enforcement:
    """The combined decision and why."""

    outcome: Outcome
    reasons: tuple[str, ...]
    verdicts: tuple[Verdict, ...]
    skipped: tuple[str, ...] = ()
    """Layers not asked because an earlier one denied."""


def combine(
    verdicts: Sequence[Verdict], required_layers: Iterable[str], *, skipped: Sequence[str] = ()
) -> Enforcement:
    reasons: list[str] = []
    review: list[str] = []
    seen = {v.layer for v in verdicts}
    for layer in required_layers:
        if layer not in seen:
            reasons.append(f"{layer}: no verdict (fail closed)")
    for verdict in verdicts:
        why = "; ".join(verdict.reasons) or "no reason given"
        if verdict.status is Status.ALLOW:
            continue
        if verdict.status is Status.REVIEW:
            review.append(f"{verdict.layer}: {why}")
        elif verdict.status is Status.DENY:
            reasons.append(f"{verdict.layer}: {why}")
        elif verdict.status is Status.ERROR:
            reasons.append(f"{verdict.layer}: error: {why}")
        else:
            reasons.append(f"{verdict.layer}: unknown verdict status {verdict.status!r}")
    if not verdicts:
        reasons.append("no layer gave a verdict (fail closed)")
    if reasons:
        return Enforcement(Outcome.DENIED, tuple(reasons), tuple(verdicts), tuple(skipped))
    if skipped:
        return Enforcement(
            Outcome.DENIED,
            (f"layers not run: {', '.join(skipped)} (fail closed)",),
            tuple(verdicts),
            tuple(skipped),
        )
    if review:
        return Enforcement(Outcome.REVIEW, tuple(review), tuple(verdicts))
    return Enforcement(Outcome.APPROVED, (), tuple(verdicts))
