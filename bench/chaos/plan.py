"""The seeded fault plan: which process gets which signal when.

A plan is a list of :class:`Fault` ``(at_s, action, target)`` in time order, ``at_s``
counted from the moment publishing starts. Faults come in episodes, one target each:

- ``kill`` (SIGKILL) then ``restart`` after 0-3 s (``restart_delay_s``);
- ``stop`` (SIGSTOP) then ``cont`` (SIGCONT) after 0.5-3 s (``stop_for_s``).

Targets are ``worker-N`` (1-based), ``sink``, ``notary`` and ``broker-N`` (a node id).
Episodes are spread evenly over ``[start, end]`` of the run (one slot each, a random
place in its slot, kinds shuffled), so two episodes never overlap and each worker kill
has its own recovery window. The same seed and counts give the same plan.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Fault", "PlanSpec", "make_plan", "write_plan", "read_plan", "ACTIONS"]

ACTIONS = ("kill", "restart", "stop", "cont")


@dataclass(frozen=True)
class Fault:
    at_s: float
    action: str
    target: str


@dataclass(frozen=True)
class PlanSpec:
    """How many episodes of each kind, over how long, with which seed."""

    seed: int
    duration_s: float
    workers: int
    broker_nodes: Sequence[int] = (1,)
    worker_kills: int = 0
    worker_stops: int = 0
    sink_kills: int = 0
    sink_stops: int = 0
    notary_kills: int = 0
    notary_stops: int = 0
    broker_kills: int = 0
    restart_delay_s: tuple[float, float] = (0.0, 3.0)
    stop_for_s: tuple[float, float] = (0.5, 3.0)
    start_fraction: float = 0.1
    end_fraction: float = 0.85
    """Episodes start within this share of the run: the last ones still see load after
    their restart, and the first ones see a pipeline already busy."""


def _episodes(spec: PlanSpec, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, target) of every episode, in a seeded random order."""
    episodes: list[tuple[str, str]] = []
    workers = [f"worker-{n}" for n in range(1, spec.workers + 1)]
    for _ in range(spec.worker_kills):
        episodes.append(("kill", rng.choice(workers)))
    for _ in range(spec.worker_stops):
        episodes.append(("stop", rng.choice(workers)))
    episodes += [("kill", "sink")] * spec.sink_kills + [("stop", "sink")] * spec.sink_stops
    episodes += [("kill", "notary")] * spec.notary_kills
    episodes += [("stop", "notary")] * spec.notary_stops
    nodes = list(spec.broker_nodes)
    for _ in range(spec.broker_kills):
        episodes.append(("kill", f"broker-{rng.choice(nodes)}"))
    rng.shuffle(episodes)
    return episodes


def make_plan(spec: PlanSpec) -> list[Fault]:
    rng = random.Random(spec.seed)
    episodes = _episodes(spec, rng)
    if not episodes:
        return []
    start = spec.duration_s * spec.start_fraction
    slot = spec.duration_s * (spec.end_fraction - spec.start_fraction) / len(episodes)
    longest = max(spec.restart_delay_s[1], spec.stop_for_s[1])
    faults: list[Fault] = []
    for n, (kind, target) in enumerate(episodes):
        # the episode ends inside its slot when the slot is long enough for it
        room = max(0.0, slot - longest)
        at = start + n * slot + rng.uniform(0.0, room)
        if kind == "kill":
            delay = rng.uniform(*spec.restart_delay_s)
            faults += [Fault(round(at, 3), "kill", target)]
            faults += [Fault(round(at + delay, 3), "restart", target)]
        else:
            delay = rng.uniform(*spec.stop_for_s)
            faults += [Fault(round(at, 3), "stop", target)]
            faults += [Fault(round(at + delay, 3), "cont", target)]
    return sorted(faults, key=lambda f: f.at_s)


def write_plan(path: Path, spec: PlanSpec, plan: Sequence[Fault], **extra: Any) -> None:
    """The plan as JSON (the spec that made it, then each fault), plus ``extra`` keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "spec": {**asdict(spec), "broker_nodes": list(spec.broker_nodes)},
        "plan": [asdict(f) for f in plan],
        **extra,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def read_plan(path: Path) -> list[Fault]:
    return [Fault(**f) for f in json.loads(path.read_text())["plan"]]
