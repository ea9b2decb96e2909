"""Recovery times, from timestamps on one clock (CLOCK_MONOTONIC, shared by every process
on the machine). Pure functions.

**Worker recovery** of a SIGKILL at ``t``: for every partition of ``intents`` the killed
worker owned (the group coordinator's assignment, asked just before the kill; every
partition when it could not be asked), take the first intent on it (in offset order)
that had no outcome yet at ``t`` (published before ``t`` and pending, or the first
published after it); its wait is the arrival of its first outcome at the collector minus
``max(t, its publish time)``. The kill's recovery is the largest wait over those
partitions: the time until another worker (or the restarted one) decided again. It
includes the planned restart delay (0-3 s) and any rebalance. A worker that owned no
partition has no recovery to measure; a partition whose first pending intent never got
an outcome makes it ``None`` (never).

**Notary recovery** of a SIGKILL: from the kill to its ``/healthz`` answering 200 again
(it answers 503 while it restores its log), polled every 50 ms, whichever process
answers: the warm standby that took over, or (without one) the restarted process, the
planned restart delay included.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.chaos.model import OutcomeRecord

__all__ = [
    "Timing",
    "decision_times",
    "worker_recovery",
    "summary",
    "phases_p50",
    "phases_after",
    "phases_before",
]


@dataclass(frozen=True)
class Timing:
    """One intent: where it sits, when it was published and first decided (ns)."""

    partition: int
    offset: int
    published_ns: int
    decided_ns: int | None


def worker_recovery(
    kill_ns: int, timings: Iterable[Timing], partitions: Collection[int] | None = None
) -> float | None:
    """Seconds until every partition (of ``partitions``: those the killed worker owned,
    when known) decided again after a worker kill at ``kill_ns``."""
    first: dict[int, Timing] = {}
    for timing in timings:
        if partitions is not None and timing.partition not in partitions:
            continue
        if timing.decided_ns is not None and timing.decided_ns <= kill_ns:
            continue  # decided before the kill
        if timing.published_ns <= 0:
            continue  # never published
        best = first.get(timing.partition)
        if best is None or timing.offset < best.offset:
            first[timing.partition] = timing
    waits = []
    for timing in first.values():
        if timing.decided_ns is None:
            return None
        waits.append(timing.decided_ns - max(kill_ns, timing.published_ns))
    return max(waits) / 1e9 if waits else None


def decision_times(outcomes: Iterable[OutcomeRecord], realtime_offset_ns: int) -> dict[str, int]:
    """Intent id -> when its first outcome was decided, on the monotonic clock: the
    record's own time (an approval's ``issued_at_ms``, a decision's ``decided_at_ms``,
    the worker's wall clock) minus ``realtime_offset_ns`` (wall clock minus monotonic
    clock, read once by the suite). Millisecond precision."""
    first: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.intent_id is None or outcome.issued_at_ms <= 0:
            continue
        at_ns = outcome.issued_at_ms * 1_000_000 - realtime_offset_ns
        if at_ns < first.get(outcome.intent_id, at_ns + 1):
            first[outcome.intent_id] = at_ns
    return first


def summary(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """p50 and max of the measured values (``never`` counts the Nones)."""
    measured = [v for v in values if v is not None]
    return {
        "count": len(values),
        "never": len(values) - len(measured),
        "p50": statistics.median(measured) if measured else None,
        "max": max(measured) if measured else None,
    }


def phases_p50(timelines: Sequence[Mapping[str, Any] | None]) -> dict[str, float]:
    """The median of each start-up phase over the restarts that reported a timeline
    (``{"phases": {name: seconds}}``), in the order the services report them."""
    samples: dict[str, list[float]] = {}
    for timeline in timelines:
        for name, seconds in ((timeline or {}).get("phases") or {}).items():
            samples.setdefault(name, []).append(float(seconds))
    return {name: round(statistics.median(values), 3) for name, values in samples.items()}


def phases_after(timeline: Mapping[str, Any] | None, phase: str) -> dict[str, Any] | None:
    """The timeline with only the phases that follow ``phase`` (None without it): what
    a standby did once it took over."""
    phases = dict((timeline or {}).get("phases") or {})
    if phase not in phases:
        return None
    names = list(phases)
    return {"phases": {name: phases[name] for name in names[names.index(phase) + 1 :]}}


def phases_before(timeline: Mapping[str, Any] | None, phase: str) -> dict[str, Any] | None:
    """The timeline with only the phases before ``phase`` (all of them without it): how
    long a process took to start, whether it then stood by or not."""
    if timeline is None:
        return None
    phases = dict(timeline.get("phases") or {})
    names = list(phases)
    kept = names[: names.index(phase)] if phase in phases else names
    return {"phases": {name: phases[name] for name in kept}}
