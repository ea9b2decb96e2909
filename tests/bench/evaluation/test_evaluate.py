"""The offline evaluation: freshness + anomaly on the labelled workload."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import pytest

from bench.evaluation.evaluate import (
    OfflineGate,
    Report,
    default_decider,
    evaluate,
    main,
)
from bench.evaluation.workload import DAY_MS, SCENARIOS, Workload, generate
from processors.intent import Intent
from processors.layers.anomaly import AnomalyConfig
from processors.verdict import GateState, Verdict

CAUGHT_BY_ANOMALY = (
    "runaway_loop",
    "slow_drip_exfiltration",
    "novel_destructive_action",
    "amount_escalation",
)


@pytest.fixture(scope="module")
def workload() -> Workload:
    return generate(seed=7, duration_ms=3 * DAY_MS)


@pytest.fixture(scope="module")
def report(workload: Workload) -> Report:
    return evaluate(workload, default_decider())


def test_the_small_evaluation_is_fast():
    started = time.perf_counter()
    evaluate(generate(seed=3, duration_ms=3 * DAY_MS), default_decider())
    assert time.perf_counter() - started < 5.0


def test_freshness_and_anomaly_catch_the_behavioural_attacks(report: Report):
    for name in CAUGHT_BY_ANOMALY:
        result = report.scenario(name)
        assert result.caught, name
        assert result.first_layer == "anomaly", name
        assert result.intents_until_caught is not None
        assert result.time_until_caught_ms is not None and result.time_until_caught_ms >= 0


def test_how_fast_each_attack_is_caught(report: Report):
    loop = report.scenario("runaway_loop")
    assert loop.intents_until_caught is not None and loop.intents_until_caught <= 10
    assert loop.time_until_caught_ms is not None and loop.time_until_caught_ms < 1_000
    assert loop.flagged >= loop.intents - 10, "once caught, the loop stays stopped"
    drop = report.scenario("novel_destructive_action")
    assert drop.intents_until_caught == 1 and drop.flagged == drop.intents
    escalation = report.scenario("amount_escalation")
    assert escalation.intents_until_caught is not None
    assert escalation.intents_until_caught <= 15, "caught before ~100x the usual amount"
    drip = report.scenario("slow_drip_exfiltration")
    assert drip.first_outcome == "quarantined", "the exfiltration pattern quarantines"
    reads = drip.intents - drip.flagged
    assert drip.intents_until_caught == reads + 1, "the reads pass; the first export is caught"


def test_integrity_attacks_need_the_integrity_layer(report: Report):
    """Freshness + anomaly alone do not see a tampered runtime or a replay within the TTL."""
    assert not report.scenario("tampered_runtime").caught
    assert not report.scenario("replay").caught


def test_false_positives_are_rare(report: Report):
    assert report.benign > 5_000
    assert report.false_positive_rate < 0.01
    assert report.false_positive_rate == report.benign_flagged / report.benign
    assert sum(fp.count for fp in report.false_positives) == report.benign_flagged


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_other_seeds(seed: int):
    result = evaluate(generate(seed=seed, duration_ms=3 * DAY_MS), default_decider())
    assert set(CAUGHT_BY_ANOMALY) <= set(result.caught)
    assert result.false_positive_rate < 0.01


def test_state_round_tripped_through_json_gives_the_same_report(workload: Workload):
    """The worker keeps agent state in a changelog: a restart after every single decision
    must not change a thing."""
    short = generate(seed=7, duration_ms=2 * DAY_MS)
    plain = evaluate(short, default_decider())
    restarted = evaluate(short, default_decider(roundtrip_state=True))
    assert plain.outcomes == restarted.outcomes
    assert plain.scenarios == restarted.scenarios


# --------------------------------------------------------------------------- the harness


def test_a_decider_that_approves_everything_catches_nothing(workload: Workload):
    report = evaluate(workload, lambda record, now_ms: ("approved", None))
    assert report.caught == ()
    assert report.false_positive_rate == 0
    assert report.layers is None


def test_a_decider_that_denies_everything_catches_everything_at_once(workload: Workload):
    report = evaluate(workload, lambda record, now_ms: ("denied", "paranoid"))
    assert set(report.caught) == set(SCENARIOS)
    assert all(s.intents_until_caught == 1 for s in report.scenarios)
    assert all(s.time_until_caught_ms == 0 for s in report.scenarios)
    assert report.false_positive_rate == 1.0


def test_intents_and_time_until_caught(workload: Workload):
    items = workload.of("amount_escalation")
    third = items[2].record["intent_id"]

    def decide(record: dict[str, Any], now_ms: int) -> tuple[str, str | None]:
        return ("review", "judge") if record["intent_id"] == third else ("approved", None)

    result = evaluate(workload, decide).scenario("amount_escalation")
    assert result.caught and result.first_layer == "judge" and result.first_outcome == "review"
    assert result.intents_until_caught == 3
    assert result.time_until_caught_ms == items[2].time_ms - items[0].time_ms
    assert result.flagged == 1
    assert result.outcomes == {"approved": len(items) - 1, "review": 1}


def test_the_decider_gets_the_record_and_its_time(workload: Workload):
    calls: list[tuple[dict[str, Any], int]] = []

    def spy(record: dict[str, Any], now_ms: int) -> tuple[str, str | None]:
        calls.append((record, now_ms))
        return "approved", None

    evaluate(workload, spy)
    assert [now for _, now in calls] == [item.time_ms for item in workload.items]
    assert all(
        record is item.record for (record, _), item in zip(calls, workload.items, strict=True)
    )


def test_report_formats(report: Report):
    text = report.to_markdown()
    assert "| runaway_loop | support-bot |" in text
    assert "False positives:" in text
    assert "Layers: freshness, anomaly" in text
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert {s["name"] for s in data["scenarios"]} == set(SCENARIOS)
    assert data["layers"] == ["freshness", "anomaly"]


def test_main_prints_the_report(capsys: pytest.CaptureFixture[str]):
    assert main(["--seed", "1", "--days", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["seed"] == 1
    assert main(["--seed", "1", "--days", "1"]) == 0
    assert "### Evaluation: seed 1" in capsys.readouterr().out


# --------------------------------------------------------------------------- the offline gate


class RuntimeAndReplayCheck:
    """A stand-in for the integrity layer, to show how it plugs in: registered code
    digest, and intent ids never seen before."""

    name = "integrity"
    state_key = "test-integrity"

    def __init__(self, runtimes: Mapping[str, Mapping[str, str]]) -> None:
        self.runtimes = runtimes

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        expected = self.runtimes.get(intent.agent_id, {}).get("code_digest")
        if intent.runtime.code_digest != expected:
            return Verdict.deny(self.name, "code digest is not the registered one")
        if intent.intent_id in state.agent[self.state_key]["seen"]:
            return Verdict.deny(self.name, f"replay of {intent.intent_id}")
        return Verdict.allow(self.name)

    def new_state(self) -> dict[str, Any]:
        return {"seen": []}

    def load_state(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return dict(data)

    def dump_state(self, layer_state: Any) -> dict[str, Any]:
        return dict(layer_state)

    def observe(self, intent: Intent, state: GateState, outcome: str) -> None:
        state.agent[self.state_key]["seen"].append(intent.intent_id)


def test_extra_layers_plug_in_and_catch_what_they_are_for(workload: Workload):
    runtimes = {agent: profile.runtime for agent, profile in workload.agents.items()}
    gate = default_decider(extra_layers=[RuntimeAndReplayCheck(runtimes)])
    assert gate.layer_names == ("integrity", "freshness", "anomaly")
    report = evaluate(workload, gate)
    assert set(report.caught) == set(SCENARIOS)
    assert report.scenario("tampered_runtime").first_layer == "integrity"
    assert report.scenario("replay").first_layer == "integrity"
    assert report.scenario("runaway_loop").first_layer == "anomaly"
    assert report.false_positive_rate < 0.01


def test_the_gate_rejects_malformed_records():
    gate = default_decider()
    assert gate({"agent_id": "a"}, 0) == ("rejected", "validation")
    bad = generate(seed=1, duration_ms=DAY_MS, scenarios=()).items[0].record
    assert gate({**bad, "runtime": {**bad["runtime"], "code_digest": "md5:x"}}, 0) == (
        "rejected",
        "validation",
    )
    assert gate.counts["rejected"] == 2
    assert gate.decisions[-1].reasons


def test_simulated_quarantine_denies_the_agent_afterwards(workload: Workload):
    gate = default_decider(simulate_quarantine=True)
    report = evaluate(workload, gate)
    assert "support-bot" in gate.quarantined  # the runaway loop escalated
    loop = report.scenario("runaway_loop")
    assert loop.outcomes.get("approved", 0) <= 10
    assert any(d.layer == "quarantine" for d in gate.decisions)


def test_a_custom_anomaly_config_changes_the_result(workload: Workload):
    lenient = AnomalyConfig.from_mapping(
        {
            "default": {"burst": {"enabled": False}, "rate": {"max": 1000}},
            "quarantine": {"after": 0},
        }
    )
    report = evaluate(workload, default_decider(config=lenient))
    assert not report.scenario("runaway_loop").caught


def test_an_offline_gate_needs_layers():
    with pytest.raises(ValueError, match="at least one layer"):
        OfflineGate([])


# --------------------------------------------------------------------------- the published report


def test_the_published_report_catches_every_attack_with_few_false_positives():
    """`python -m bench.evaluation`: integrity + freshness + anomaly, real layers."""
    from bench.evaluation.evaluate import default_report

    published = default_report(seed=7, duration_ms=3 * DAY_MS)  # past the 24 h baseline
    assert published.layers == ("integrity", "freshness", "anomaly")
    missed = [s.name for s in published.scenarios if not s.caught]
    assert not missed, f"attacks not caught: {missed}"
    for name in ("tampered_runtime", "replay"):
        assert published.scenario(name).first_layer == "integrity"
    for name in ("runaway_loop", "novel_destructive_action", "amount_escalation"):
        assert published.scenario(name).first_layer == "anomaly"
    assert published.false_positive_rate < 0.01
