"""Offline evaluation of the decision chain on a labelled workload.

``evaluate(workload, decide)`` runs every item, in time order, through a decision
function ``decide(record, now_ms) -> (outcome, layer)`` (``outcome`` is approved, denied,
review, quarantined or rejected; ``layer`` is the layer that denied or held it, or None)
and reports, per attack scenario, whether it was caught (any of its intents not
approved), by which layer first, after how many of its intents and how much time; and
the false-positive rate: benign intents not approved / all benign intents.

``default_decider()`` is an in-process gate: Freshness + AnomalyCheck (+ any layers you
pass) in a :class:`~processors.pipeline.Pipeline`, with per-agent state the way the
worker keeps it (optionally round-tripped through JSON after every decision, as the
changelog does). Plug the other layers in with ``default_decider(extra_layers=[...])``.

Reproduce the published figures: ``python -m bench.evaluation --seed 7 --days 3``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.evaluation.workload import BENIGN, DAY_MS, DEFAULT_START_MS, Workload, generate
from processors.enforcement import Enforcement, Outcome
from processors.exceptions import ValidationError
from processors.intent import Intent
from processors.layers.anomaly import AnomalyCheck, AnomalyConfig
from processors.layers.freshness import Freshness
from processors.layers.integrity import (
    IntegrityCheck,
    IntegrityConfig,
    RuntimeRegistration,
    RuntimeRegistry,
)
from processors.pipeline import Pipeline
from processors.verdict import GateState, Layer, Status

__all__ = [
    "Decider",
    "OfflineGate",
    "Report",
    "ScenarioResult",
    "FalsePositive",
    "evaluate",
    "default_decider",
    "default_report",
    "QUARANTINED",
    "REJECTED",
]

Decider = Callable[[dict[str, Any], int], tuple[str, str | None]]
QUARANTINED = "quarantined"
REJECTED = "rejected"
_APPROVED = Outcome.APPROVED.value


# --------------------------------------------------------------------------- the offline gate


@dataclass(frozen=True, slots=True)
class Decision:
    """A non-approved decision, kept for debugging false positives."""

    intent_id: str
    agent: str
    action: str
    now_ms: int
    outcome: str
    layer: str | None
    reasons: tuple[str, ...]


class OfflineGate:
    """A gate without Kafka: decode-validate, decide with a Pipeline, keep agent state.

    ``states`` maps agent id -> that agent's ``GateState.agent`` dict. With
    ``roundtrip_state`` every stateful layer's state is dumped to JSON and loaded back
    after each decision (what the worker's changelog does), so a layer whose state does
    not survive a restart shows up as a different report. With ``simulate_quarantine``
    an agent whose intent asked for quarantine has every later intent denied (layer
    ``quarantine``), as the gate will once it turns the request into a quarantine event.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        *,
        layer_timeout_ms: int = 1_000,
        roundtrip_state: bool = False,
        simulate_quarantine: bool = False,
        worker: str = "offline",
        keep: int = 2_000,
    ) -> None:
        self.pipeline = Pipeline(layers, layer_timeout_ms=layer_timeout_ms)
        self.roundtrip_state = roundtrip_state
        self.simulate_quarantine = simulate_quarantine
        self.worker = worker
        self.states: dict[str, dict[str, Any]] = {}
        self.quarantined: set[str] = set()
        self.decisions: deque[Decision] = deque(maxlen=keep)
        self.counts: Counter[str] = Counter()

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.pipeline.layer_names

    def __call__(self, record: dict[str, Any], now_ms: int) -> tuple[str, str | None]:
        agent_id = record.get("agent_id")
        try:
            intent = Intent.from_record(record, key=str(agent_id or "").encode())
        except ValidationError as exc:
            return self._note(record, now_ms, REJECTED, "validation", (exc.reason,))
        except (KeyError, TypeError, ValueError) as exc:
            return self._note(record, now_ms, REJECTED, "validation", (f"malformed: {exc!r}",))
        if intent.agent_id in self.quarantined:
            return self._note(
                record, now_ms, Outcome.DENIED.value, "quarantine", ("agent is quarantined",)
            )
        agent_state = self.states.setdefault(intent.agent_id, {})
        if self.roundtrip_state:
            self._load(agent_state)
        result = self.pipeline.decide(
            intent, GateState(now_ms=now_ms, worker=self.worker, agent=agent_state)
        )
        if self.roundtrip_state:
            self._dump(agent_state)
        outcome, layer = _summarize(result)
        if outcome == QUARANTINED and self.simulate_quarantine:
            self.quarantined.add(intent.agent_id)
        return self._note(record, now_ms, outcome, layer, result.reasons)

    def _note(
        self,
        record: Mapping[str, Any],
        now_ms: int,
        outcome: str,
        layer: str | None,
        reasons: tuple[str, ...],
    ) -> tuple[str, str | None]:
        self.counts[outcome] += 1
        if outcome != _APPROVED:
            self.decisions.append(
                Decision(
                    str(record.get("intent_id")),
                    str(record.get("agent_id")),
                    str(record.get("action")),
                    now_ms,
                    outcome,
                    layer,
                    reasons,
                )
            )
        return outcome, layer

    def _load(self, agent_state: dict[str, Any]) -> None:
        for layer in self.pipeline.stateful:
            raw = agent_state.get(layer.state_key)
            if isinstance(raw, str):
                agent_state[layer.state_key] = layer.load_state(json.loads(raw))

    def _dump(self, agent_state: dict[str, Any]) -> None:
        for layer in self.pipeline.stateful:
            if layer.state_key in agent_state:
                agent_state[layer.state_key] = json.dumps(
                    layer.dump_state(agent_state[layer.state_key]), allow_nan=False
                )


def _summarize(result: Enforcement) -> tuple[str, str | None]:
    """(outcome, the layer that denied or held the intent)."""
    outcome = result.outcome.value
    if any(
        v.evidence.get("response") == "quarantine" and v.status is not Status.ALLOW
        for v in result.verdicts
    ):
        outcome = QUARANTINED
    if result.outcome is Outcome.APPROVED:
        return outcome, None
    for statuses in ((Status.DENY, Status.ERROR), (Status.REVIEW,)):
        for verdict in result.verdicts:
            if verdict.status in statuses:
                return outcome, verdict.layer
    for reason in result.reasons:  # a failed state update, or layers not run
        head = reason.split(":", 1)[0]
        if head and " " not in head:
            return outcome, head
    return outcome, "enforcement"


def default_decider(
    extra_layers: Sequence[Layer] = (),
    *,
    config: AnomalyConfig | Path | str | None = None,
    anomaly: AnomalyCheck | None = None,
    freshness: bool = True,
    max_clock_skew_ms: int = 30_000,
    after_layers: Sequence[Layer] = (),
    roundtrip_state: bool = False,
    simulate_quarantine: bool = False,
    layer_timeout_ms: int = 1_000,
    seed: int | None = 0,
) -> OfflineGate:
    """An offline gate: ``extra_layers`` (identity, policy, integrity ... in the order the
    worker runs them), then Freshness, then AnomalyCheck, then ``after_layers``.

    The anomaly config defaults to the shipped ``policies/anomaly.toml``; pass ``config``
    (a config or a path) or a ready ``anomaly`` layer to change it. ``seed`` fixes the
    anomaly layer's per-agent salts so reports are reproducible (None: random salts).
    """
    if anomaly is None:
        if config is None:
            loaded = AnomalyConfig.default_file()
        elif isinstance(config, AnomalyConfig):
            loaded = config
        else:
            loaded = AnomalyConfig.from_file(config)
        anomaly = AnomalyCheck(loaded, seed=seed)
    layers: list[Layer] = [*extra_layers]
    if freshness:
        layers.append(Freshness(max_clock_skew_ms))
    layers.append(anomaly)
    layers.extend(after_layers)
    return OfflineGate(
        layers,
        layer_timeout_ms=layer_timeout_ms,
        roundtrip_state=roundtrip_state,
        simulate_quarantine=simulate_quarantine,
    )


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    name: str
    agent: str
    description: str
    expected_layer: str
    intents: int
    flagged: int
    """Intents of the scenario that were not approved."""
    caught: bool
    first_layer: str | None
    first_outcome: str | None
    intents_until_caught: int | None
    """1-based position, within the scenario, of its first intent not approved."""
    time_until_caught_ms: int | None
    """From the scenario's first intent to its first intent not approved."""
    outcomes: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class FalsePositive:
    agent: str
    action: str
    outcome: str
    layer: str | None
    count: int


@dataclass(frozen=True)
class Report:
    seed: int
    start_ms: int
    duration_ms: int
    intents: int
    layers: tuple[str, ...] | None
    benign: int
    benign_flagged: int
    false_positive_rate: float
    false_positives: tuple[FalsePositive, ...]
    scenarios: tuple[ScenarioResult, ...]
    outcomes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def scenario(self, name: str) -> ScenarioResult:
        for result in self.scenarios:
            if result.name == name:
                return result
        raise KeyError(f"no scenario {name!r} in this report")

    @property
    def caught(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.scenarios if s.caught)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcomes"] = {k: dict(v) for k, v in self.outcomes.items()}
        data["layers"] = list(self.layers) if self.layers is not None else None
        data["scenarios"] = [{**asdict(s), "outcomes": dict(s.outcomes)} for s in self.scenarios]
        data["false_positives"] = [asdict(fp) for fp in self.false_positives]
        return data

    def to_markdown(self) -> str:
        days = self.duration_ms / DAY_MS
        layers = ", ".join(self.layers) if self.layers else "(not reported by the decider)"
        lines = [
            f"### Evaluation: seed {self.seed}, {days:g} days, {self.intents:,} intents "
            f"({self.benign:,} benign)",
            "",
            f"Layers: {layers}. Decided in {self.elapsed_s:.2f} s.",
            "",
            "| scenario | agent | intents | caught | first caught by | intents until caught "
            "| time until caught | not approved | expected layer |",
            "|---|---|---:|---|---|---:|---:|---:|---|",
        ]
        for s in self.scenarios:
            by = f"{s.first_layer} ({s.first_outcome})" if s.caught else "—"
            lines.append(
                f"| {s.name} | {s.agent} | {s.intents} | {'yes' if s.caught else 'no'} | {by} "
                f"| {s.intents_until_caught if s.caught else '—'} "
                f"| {_duration(s.time_until_caught_ms) if s.caught else '—'} "
                f"| {s.flagged}/{s.intents} | {s.expected_layer} |"
            )
        lines += [
            "",
            f"False positives: {self.benign_flagged:,} of {self.benign:,} benign intents not "
            f"approved ({self.false_positive_rate:.2%}).",
        ]
        if self.false_positives:
            lines += [
                "",
                "| agent | action | outcome | layer | count |",
                "|---|---|---|---|---:|",
            ]
            lines += [
                f"| {fp.agent} | {fp.action} | {fp.outcome} | {fp.layer or '—'} | {fp.count} |"
                for fp in self.false_positives
            ]
        return "\n".join(lines) + "\n"


def _duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    if ms < 1_000:
        return f"{ms} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    if ms < 2 * 3_600_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


def evaluate(workload: Workload, decide: Decider) -> Report:
    """Run every item of ``workload`` through ``decide`` (at its own time) and report."""
    started = time.perf_counter()
    outcomes: dict[str, Counter[str]] = {}
    firsts: dict[str, tuple[int, int, str, str | None]] = {}
    positions: Counter[str] = Counter()
    false_positives: Counter[tuple[str, str, str, str | None]] = Counter()
    for item in workload.items:
        outcome, layer = decide(item.record, item.time_ms)
        outcomes.setdefault(item.label, Counter())[outcome] += 1
        positions[item.label] += 1
        if outcome == _APPROVED:
            continue
        if item.label == BENIGN:
            key = (item.agent, str(item.record.get("action")), outcome, layer)
            false_positives[key] += 1
        elif item.label not in firsts:
            firsts[item.label] = (positions[item.label], item.time_ms, outcome, layer)
    elapsed = time.perf_counter() - started

    results = []
    for name, scenario in workload.scenarios.items():
        counts = outcomes.get(name, Counter())
        first = firsts.get(name)
        results.append(
            ScenarioResult(
                name=name,
                agent=scenario.agent,
                description=scenario.description,
                expected_layer=scenario.expected_layer,
                intents=scenario.intents,
                flagged=sum(n for outcome, n in counts.items() if outcome != _APPROVED),
                caught=first is not None,
                first_layer=first[3] if first else None,
                first_outcome=first[2] if first else None,
                intents_until_caught=first[0] if first else None,
                time_until_caught_ms=first[1] - scenario.start_ms if first else None,
                outcomes=dict(counts),
            )
        )
    benign = sum(outcomes.get(BENIGN, Counter()).values())
    flagged = sum(n for o, n in outcomes.get(BENIGN, Counter()).items() if o != _APPROVED)
    fps = tuple(
        FalsePositive(agent, action, outcome, layer, count)
        for (agent, action, outcome, layer), count in sorted(
            false_positives.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1])
        )
    )
    layers = getattr(decide, "layer_names", None)
    return Report(
        seed=workload.seed,
        start_ms=workload.start_ms,
        duration_ms=workload.duration_ms,
        intents=len(workload.items),
        layers=tuple(layers) if isinstance(layers, tuple) else None,
        benign=benign,
        benign_flagged=flagged,
        false_positive_rate=flagged / benign if benign else 0.0,
        false_positives=fps,
        scenarios=tuple(results),
        outcomes={label: dict(c) for label, c in sorted(outcomes.items())},
        elapsed_s=elapsed,
    )


def default_report(
    seed: int = 7,
    duration_ms: int = 3 * DAY_MS,
    *,
    start_ms: int = DEFAULT_START_MS,
    config: AnomalyConfig | Path | str | None = None,
    roundtrip_state: bool = False,
) -> Report:
    """The published evaluation: the generated workload through runtime integrity (with
    the workload's runtimes registered), freshness and the anomaly layer."""
    workload = generate(seed, duration_ms, start_ms)
    decider = default_decider(
        [integrity_for(workload)], config=config, roundtrip_state=roundtrip_state
    )
    return evaluate(workload, decider)


def integrity_for(workload: Workload, config: IntegrityConfig | None = None) -> IntegrityCheck:
    """The real integrity layer, with every runtime of the workload's agents registered."""
    registry = RuntimeRegistry()
    for profile in workload.agents.values():
        runtime = profile.runtime
        registry.register(
            RuntimeRegistration(
                runtime_id=runtime["runtime_id"],
                code_digests=frozenset({runtime["code_digest"]}),
                config_digests=frozenset({runtime["config_digest"]}),
                environment=runtime["environment"],
                hosts=frozenset(),
            )
        )
    return IntegrityCheck(registry, config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.evaluation",
        description="Evaluate integrity + freshness + anomaly on a labelled synthetic workload.",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--config", type=Path, default=None, help="anomaly config (.toml/.json)")
    parser.add_argument("--roundtrip", action="store_true", help="JSON round-trip state each step")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = default_report(
        args.seed, int(args.days * DAY_MS), config=args.config, roundtrip_state=args.roundtrip
    )
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(report.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
