"""A demo scenario's intents are labelled in their decision events, and only theirs."""

from __future__ import annotations

from processors.enforcement import Enforcement, Outcome
from processors.lineage import LineageRecorder
from processors.verdict import Verdict
from tests.processors.factories import make_intent


def _decided(**context: object) -> dict[str, str]:
    intent = make_intent(context=context)
    enforcement = Enforcement(Outcome.APPROVED, (), (Verdict.allow("policy"),))
    event = LineageRecorder("gate-1").decided(
        intent,
        "sha256:" + "0" * 64,
        enforcement,
        subject="intents/0/1",
        stage="enforcement",
        topic="approved",
        now_ms=1,
    )
    return dict(event["attributes"])


def test_a_scenario_run_is_labelled_in_its_decision_event() -> None:
    attributes = _decided(scenario="replay", scenario_run="d60e93a4", user="ada")
    assert attributes["scenario"] == "replay"
    assert attributes["scenario_run"] == "d60e93a4"
    assert "user" not in attributes  # other context stays in the intent


def test_real_traffic_carries_no_label_and_a_long_one_is_cut() -> None:
    assert "scenario" not in _decided(ticket="T-1")
    assert len(_decided(scenario="x" * 500)["scenario"]) == 64
    assert "scenario" not in _decided(scenario=7)
