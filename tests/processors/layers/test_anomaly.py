"""The behavioural anomaly layer: every feature, its config, its state."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.enforcement import Outcome
from processors.exceptions import ConfigError
from processors.layers.anomaly import (
    DEFAULT_CONFIG_PATH,
    AnomalyCheck,
    AnomalyConfig,
    AnomalyState,
    AnomalyStateError,
    resource_kind,
)
from processors.layers.freshness import Freshness
from processors.pipeline import Pipeline
from processors.verdict import GateState, StatefulLayer, Status, Verdict
from tests.processors.factories import make_intent

T0 = 1_700_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR


def config_data(**overrides: Any) -> dict[str, Any]:
    """A small, explicit config for the tests (baseline: 1 h and 5 approved intents)."""
    data: dict[str, Any] = {
        "baseline": {"period_ms": HOUR, "min_intents": 5},
        "windows": {"rate_ms": 60_000, "burst_ms": 1_000, "fanout_ms": HOUR},
        "exfiltration": {
            "window_ms": 6 * HOUR,
            "read_actions": ["*.read", "*.query"],
            "export_actions": ["*.export"],
            "destination_params": ["destination"],
        },
        "quarantine": {"after": 3, "window_ms": 600_000},
        "default": {
            "rate": {"max": 20, "response": "review"},
            "burst": {"max": 5, "response": "deny"},
            "novel_action": {"response": "review"},
            "novel_resource_kind": {"response": "review"},
        },
        "class": [
            {
                "name": "payments",
                "actions": ["payments.*"],
                "fanout": {"max": 10, "response": "review"},
                "deviation": {
                    "amount": {"max_z": 4.5, "min_samples": 20, "transform": "log"},
                },
            },
            {
                "name": "destructive",
                "actions": ["*.drop"],
                "novel_action": {"response": "deny"},
            },
            {
                "name": "exports",
                "actions": ["*.export"],
                "novel_destination": {"response": "review"},
                "exfiltration": {"min_reads": 50, "response": "quarantine"},
            },
            {"name": "reads", "actions": ["*.read", "*.query"], "rate": {"enabled": False}},
        ],
    }
    data.update(overrides)
    return data


def config(**overrides: Any) -> AnomalyConfig:
    return AnomalyConfig.from_mapping(config_data(**overrides))


class Agent:
    """Drives one agent through the layer the way the pipeline does: evaluate, then
    observe with the outcome (the evaluated status unless told otherwise)."""

    def __init__(self, layer: AnomalyCheck | None = None, agent: str = "billing-agent") -> None:
        self.layer = layer or AnomalyCheck(config(), seed=1)
        self.agent = agent
        self.ids = itertools.count()
        self.state: dict[str, Any] = {self.layer.state_key: self.layer.new_state()}

    def send(
        self,
        at: int,
        action: str = "payments.transfer",
        resource: str = "acct:42",
        outcome: str | None = None,
        **parameters: Any,
    ) -> Verdict:
        intent = make_intent(
            intent_id=f"{self.agent}-{next(self.ids)}",
            agent_id=self.agent,
            action=action,
            resource=resource,
            parameters=parameters,
            issued_at_ms=at,
            expires_at_ms=at + 300_000,
        )
        gate = GateState(now_ms=at, agent=self.state)
        verdict = self.layer.evaluate(intent, gate)
        if outcome is None:
            outcome = {
                Status.ALLOW: "approved",
                Status.REVIEW: "review",
            }.get(verdict.status, "denied")
        self.layer.observe(intent, gate, outcome)
        return verdict

    @property
    def st(self) -> AnomalyState:
        value = self.state[self.layer.state_key]
        assert isinstance(value, AnomalyState)
        return value

    def warm_up(self, start: int = T0, count: int = 40, gap_ms: int = 120_000) -> int:
        """A normal history: transfers of ~850 to a few accounts, some reads, past the
        baseline period. Returns the time after it."""
        amounts = [850 * math.exp(0.5 * math.sin(i * 1.7)) for i in range(count)]
        at = start
        for i, amount in enumerate(amounts):
            at += gap_ms
            self.send(at, "invoices.read", f"invoice:{i}")
            assert (
                self.send(at + 1_000, resource=f"acct:{i % 4}", amount=round(amount, 2)).status
                is Status.ALLOW
            )
        return at + gap_ms


# --------------------------------------------------------------------------- the contract


def test_is_a_stateful_layer():
    layer = AnomalyCheck()
    assert isinstance(layer, StatefulLayer)
    assert (layer.name, layer.state_key) == ("anomaly", "anomaly")


def test_a_quiet_agent_is_allowed_with_a_reason():
    verdict = Agent().send(T0, amount=10)
    assert verdict.status is Status.ALLOW
    assert verdict.layer == "anomaly"
    assert "no anomaly" in verdict.reasons[0]
    assert "learning the baseline" in verdict.reasons[0]
    assert verdict.evidence["baseline"] == "learning"
    assert verdict.evidence["class"] == "payments"


# --------------------------------------------------------------------------- rate and bursts


def test_rate_over_the_window_is_reviewed_with_evidence():
    agent = Agent()
    verdicts = [agent.send(T0 + i * 2_000, resource=f"acct:{i % 3}") for i in range(21)]
    assert all(v.status is Status.ALLOW for v in verdicts[:20])
    last = verdicts[20]
    assert last.status is Status.REVIEW
    assert "rate: 21 payments.transfer in 60 s > 20" in last.reasons
    assert last.evidence["anomaly"] == "rate"
    assert last.evidence["response"] == "review"
    assert last.evidence["rate.value"] == "21"
    assert last.evidence["rate.threshold"] == "20"
    assert last.evidence["rate.response"] == "review"


def test_rate_window_slides():
    agent = Agent()
    for i in range(20):
        agent.send(T0 + i * 2_000)
    assert agent.send(T0 + 61_000).status is Status.ALLOW, "the first one left the window"


def test_burst_is_denied():
    agent = Agent()
    verdicts = [agent.send(T0 + i * 100) for i in range(6)]
    assert verdicts[4].status is Status.ALLOW
    assert verdicts[5].status is Status.DENY
    assert "burst: 6 payments.transfer in 1 s > 5" in verdicts[5].reasons
    assert verdicts[5].evidence["burst.value"] == "6"
    assert verdicts[5].evidence["response"] == "deny"


def test_denied_intents_count_for_rate():
    agent = Agent()
    for i in range(20):
        agent.send(T0 + i * 2_000, outcome="denied")
    assert agent.send(T0 + 45_000).status is Status.REVIEW


def test_rate_is_per_action():
    agent = Agent()
    for i in range(20):
        agent.send(T0 + i * 2_000)
    assert agent.send(T0 + 41_000, action="payments.refund").status is Status.ALLOW


def test_a_feature_can_be_turned_off_per_class():
    agent = Agent()
    verdicts = [agent.send(T0 + i * 500, "tickets.read", f"ticket:{i % 3}") for i in range(30)]
    assert all("rate" not in v.evidence.get("anomaly", "") for v in verdicts)


# --------------------------------------------------------------------------- novelty


def test_novelty_is_learned_during_the_baseline_and_judged_after():
    agent = Agent()
    assert agent.send(T0, "reports.build", "report:1").status is Status.ALLOW
    after = agent.warm_up(T0)
    assert agent.send(after, "reports.build", "report:2").status is Status.ALLOW
    verdict = agent.send(after + 1_000, "reports.publish", "report:3")
    assert verdict.status is Status.REVIEW
    assert verdict.evidence["anomaly"] == "novel_action"
    assert verdict.evidence["novel_action.value"] == "reports.publish"
    assert (
        "novel action: 'billing-agent' never had 'reports.publish' approved" in (verdict.reasons[0])
    )


def test_baseline_needs_time_and_intents():
    agent = Agent()
    for i in range(10):  # plenty of intents, but within the first hour
        agent.send(T0 + i * 60_000, resource="acct:1", amount=100)
    assert agent.send(T0 + 30 * 60_000, "db.drop", "db:production").status is Status.ALLOW
    quiet = Agent()
    quiet.send(T0, resource="acct:1", amount=100)  # an hour of history, one intent
    assert quiet.send(T0 + 2 * HOUR, "db.drop", "db:production").status is Status.ALLOW


def test_a_novel_destructive_action_is_denied():
    agent = Agent()
    after = agent.warm_up()
    verdict = agent.send(after, "db.drop", "db:production")
    assert verdict.status is Status.DENY
    assert verdict.evidence["response"] == "deny"
    features = verdict.evidence["anomaly"].split(",")
    assert features == ["novel_action", "novel_resource_kind"]
    assert verdict.evidence["novel_resource_kind.value"] == "db"


def test_novel_resource_kind():
    agent = Agent()
    after = agent.warm_up()
    verdict = agent.send(after, resource="wallet:0xabc", amount=800)
    assert verdict.status is Status.REVIEW
    assert verdict.evidence["anomaly"] == "novel_resource_kind"


def test_novelty_is_not_learned_from_denied_intents():
    agent = Agent()
    after = agent.warm_up()
    for i in range(5):
        agent.send(after + i * 10_000, "db.drop", "db:production")
    assert "db.drop" not in agent.st.known_actions
    assert agent.send(after + HOUR, "db.drop", "db:production").status is Status.DENY


def test_operator_approval_can_be_learned():
    agent = Agent()
    after = agent.warm_up()
    intent = make_intent(intent_id="reviewed", action="reports.publish", resource="report:1")
    agent.layer.learn(agent.st, intent)
    assert agent.send(after, "reports.publish", "report:2").status is Status.ALLOW


@pytest.mark.parametrize(
    ("resource", "kind"),
    [("acct:42", "acct"), ("s3://bucket/key", "s3"), ("db:production", "db"), ("plain", "(none)")],
)
def test_resource_kind(resource, kind):
    assert resource_kind(resource) == kind


# --------------------------------------------------------------------------- deviation


def test_deviation_waits_for_min_samples():
    agent = Agent()
    for i in range(19):
        agent.send(T0 + i * 60_000, amount=800 + i)
    verdict = agent.send(T0 + 20 * 60_000, amount=10_000_000)
    assert verdict.status is Status.ALLOW
    assert verdict.evidence["deviation.amount.samples"] == "19"


def test_amount_far_above_the_baseline_is_reviewed_with_the_robust_z():
    agent = Agent()
    after = agent.warm_up()
    ordinary = agent.send(after, resource="acct:1", amount=1_200)
    assert ordinary.status is Status.ALLOW
    assert abs(float(ordinary.evidence["deviation.amount.z"])) < 2
    verdict = agent.send(after + 60_000, resource="acct:1", amount=250_000)
    assert verdict.status is Status.REVIEW
    assert verdict.evidence["anomaly"] == "deviation"
    assert verdict.evidence["deviation.param"] == "amount"
    assert float(verdict.evidence["deviation.value"]) > 4.5
    assert verdict.evidence["deviation.threshold"] == "4.5"
    assert verdict.evidence["deviation.observed"] == "250000"
    assert 600 < float(verdict.evidence["deviation.median"]) < 1_200
    assert "deviation: amount 250000 is" in verdict.reasons[0]
    assert "robust z above the baseline median" in verdict.reasons[0]


def test_amount_far_below_the_baseline_is_reviewed_when_direction_is_both():
    agent = Agent()
    after = agent.warm_up()
    verdict = agent.send(after, resource="acct:1", amount=0.5)
    assert verdict.status is Status.REVIEW
    assert "below" in verdict.reasons[0]


def test_deviation_threshold_comes_from_the_config():
    strict = config()
    lenient_data = config_data()
    lenient_data["class"][0]["deviation"]["amount"]["max_z"] = 50
    lenient = AnomalyConfig.from_mapping(lenient_data)
    for cfg, expected in ((strict, Status.REVIEW), (lenient, Status.ALLOW)):
        agent = Agent(AnomalyCheck(cfg, seed=1))
        after = agent.warm_up()
        assert agent.send(after, resource="acct:1", amount=250_000).status is expected


def test_denied_amounts_do_not_train_the_baseline():
    agent = Agent()
    after = agent.warm_up()
    reservoir = list(agent.st.numeric["payments.transfer|amount"].values)
    for i in range(50):
        agent.send(after + i * 60_000, resource="acct:1", amount=90_000, outcome="denied")
    assert agent.st.numeric["payments.transfer|amount"].values == reservoir
    assert agent.send(after + HOUR, resource="acct:1", amount=90_000).status is Status.REVIEW


def test_approved_outliers_do_not_widen_the_baseline():
    """A slow escalation whose early steps get approved must not drag the baseline."""
    agent = Agent()
    after = agent.warm_up()
    baseline = agent.st.numeric["payments.transfer|amount"]
    before = (baseline.median, baseline.scale)
    for i in range(30):  # approved by a person each time, but unusual (z ~ 3)
        agent.send(after + i * 60_000, resource="acct:1", amount=4_500, outcome="approved")
    assert (baseline.median, baseline.scale) == pytest.approx(before, rel=0.05)


def test_a_flood_of_equal_values_does_not_make_ordinary_values_anomalous():
    """300 identical approved amounts after a history of 200: the MAD alone would
    collapse to 0 and flag everything; the decaying reservoir and the inter-decile
    spread keep the baseline's width."""
    agent = Agent(AnomalyCheck(config(), seed=3))
    after = agent.warm_up(count=200)
    for i in range(300):
        agent.send(after + i * 30_000, resource="acct:1", amount=850)
    verdict = agent.send(after + 301 * 30_000, resource="acct:1", amount=1_900)
    assert verdict.status is Status.ALLOW, verdict.reasons


@pytest.mark.parametrize(
    ("value", "note"),
    [
        ("12.5", "is a string, not a number"),
        (True, "is a boolean"),
        (float("nan"), None),
    ],
)
def test_odd_values_skip_the_feature_with_a_note(value, note):
    agent = Agent()
    after = agent.warm_up()
    intent_params = {"amount": value}
    if isinstance(value, float) and math.isnan(value):
        # NaN never reaches the layer (validation rejects it); if it does, still no raise.
        layer, state = agent.layer, agent.state
        intent = make_intent(intent_id="nan", parameters={"amount": 1.0})
        object.__setattr__(intent, "parameters", intent_params)
        verdict = layer.evaluate(intent, GateState(now_ms=after, agent=state))
        assert verdict.status is Status.ALLOW
        assert "not a finite number" in verdict.evidence["notes"]
        return
    verdict = agent.send(after, resource="acct:1", **intent_params)
    assert verdict.status is Status.ALLOW
    assert note in verdict.evidence["notes"]
    assert any(note in reason for reason in verdict.reasons)


def test_huge_numbers_are_judged_not_skipped():
    agent = Agent()
    after = agent.warm_up()
    verdict = agent.send(after, resource="acct:1", amount=2**62)
    assert verdict.status is Status.REVIEW
    assert verdict.evidence["anomaly"] == "deviation"


# --------------------------------------------------------------------------- fan-out


def test_fanout_of_distinct_resources():
    agent = Agent()
    verdicts = [agent.send(T0 + i * 30_000, resource=f"acct:{i}", amount=800) for i in range(11)]
    assert all(v.status is Status.ALLOW for v in verdicts[:10])
    assert verdicts[10].status is Status.REVIEW
    assert verdicts[10].evidence["anomaly"] == "fanout"
    assert verdicts[10].evidence["fanout.value"] == "11"
    assert verdicts[10].evidence["fanout.threshold"] == "10"
    assert "fanout: 11 distinct resources for payments actions in 3600 s > 10" in (
        verdicts[10].reasons
    )


def test_fanout_counts_a_resource_once_and_forgets_old_ones():
    agent = Agent()
    for i in range(10):
        agent.send(T0 + i * 30_000, resource=f"acct:{i}", amount=800)
    assert agent.send(T0 + 400_000, resource="acct:3", amount=800).status is Status.ALLOW
    assert agent.send(T0 + 2 * HOUR, resource="acct:new", amount=800).status is Status.ALLOW


# --------------------------------------------------------------------------- exfiltration


def _analyst(reads: int, start: int) -> tuple[Agent, int]:
    agent = Agent(agent="analytics-agent")
    at = start
    for day_step in range(12):  # a normal history: queries and exports to the usual bucket
        at += 10 * 60_000
        agent.send(at, "warehouse.query", f"table:{day_step % 3}")
        agent.send(at + 1_000, "warehouse.export", "bucket:reports", destination="s3://reports")
    at += 2 * HOUR
    for i in range(reads):
        at += 90_000
        agent.send(at, "warehouse.query", "table:customers", offset=i * 5_000)
    return agent, at + 60_000


def test_many_reads_then_an_export_to_a_new_destination_quarantines():
    agent, at = _analyst(60, T0)
    verdict = agent.send(at, "warehouse.export", "bucket:drop", destination="s3://drop-4471")
    assert verdict.status is Status.DENY
    assert verdict.evidence["response"] == "quarantine"
    assert verdict.evidence["quarantine_scope"] == "agent"
    assert verdict.evidence["anomaly"] == "novel_destination,exfiltration"
    assert verdict.evidence["exfiltration.value"] == "72", "60 paged reads + 12 earlier queries"
    assert verdict.evidence["exfiltration.threshold"] == "50"
    assert verdict.evidence["exfiltration.destination"] == "s3://drop-4471"
    reason = next(r for r in verdict.reasons if r.startswith("exfiltration"))
    assert "72 reads in the last 21600 s, then warehouse.export to new destination" in reason


def test_many_reads_then_an_export_to_the_usual_destination_is_fine():
    agent, at = _analyst(60, T0)
    verdict = agent.send(at, "warehouse.export", "bucket:reports", destination="s3://reports")
    assert verdict.status is Status.ALLOW


def test_few_reads_then_a_new_destination_is_only_novel():
    agent, at = _analyst(10, T0)
    verdict = agent.send(at, "warehouse.export", "bucket:drop", destination="s3://drop-4471")
    assert verdict.status is Status.REVIEW
    assert verdict.evidence["anomaly"] == "novel_destination"


def test_reads_outside_the_window_do_not_count():
    agent, at = _analyst(60, T0)
    verdict = agent.send(
        at + 7 * HOUR, "warehouse.export", "bucket:drop", destination="s3://drop-4471"
    )
    assert verdict.evidence["anomaly"] == "novel_destination"


# --------------------------------------------------------------------------- quarantine


def test_repeated_violations_escalate_to_quarantine():
    agent = Agent()
    after = agent.warm_up()
    first = agent.send(after, "db.drop", "db:production")
    second = agent.send(after + 1_000, "db.drop", "db:staging")
    third = agent.send(after + 2_000, "db.drop", "db:staging")
    assert first.evidence["response"] == second.evidence["response"] == "deny"
    assert third.evidence["response"] == "quarantine"
    assert third.evidence["quarantine_scope"] == "agent"
    assert third.evidence["quarantine.value"] == "3"
    assert "quarantine: 3 anomaly violations by 'billing-agent' within 600 s" in (third.reasons[-1])


def test_violations_outside_the_quarantine_window_are_forgotten():
    agent = Agent()
    after = agent.warm_up()
    agent.send(after, "db.drop", "db:production")
    agent.send(after + 1_000, "db.drop", "db:production")
    verdict = agent.send(after + 700_000, "db.drop", "db:production")
    assert verdict.evidence["response"] == "deny"


def test_quarantine_response_per_feature():
    cfg = config(quarantine={"after": 0})
    agent = Agent(AnomalyCheck(cfg, seed=1))
    for i in range(10):
        verdict = agent.send(T0 + i * 100)
    assert verdict.evidence["response"] == "deny", "after = 0 turns escalation off"


# --------------------------------------------------------------------------- the pipeline


def test_in_a_pipeline_a_runaway_loop_is_denied_and_denials_keep_counting():
    layer = AnomalyCheck(config(), seed=1)
    pipeline = Pipeline([Freshness(), layer])
    agent_state: dict[str, Any] = {}
    outcomes = []
    for i in range(50):
        at = T0 + i * 50
        intent = make_intent(intent_id=f"loop-{i}", issued_at_ms=at, expires_at_ms=at + 300_000)
        outcomes.append(pipeline.decide(intent, GateState(now_ms=at, agent=agent_state)).outcome)
    assert outcomes[:5] == [Outcome.APPROVED] * 5
    assert set(outcomes[5:]) == {Outcome.DENIED}
    assert len(agent_state["anomaly"].events["payments.transfer"]) == 50


# --------------------------------------------------------------------------- state


def test_state_json_round_trip_keeps_baselines_and_decisions():
    agent = Agent()
    after = agent.warm_up()
    for i in range(30):
        agent.send(after + i * 1_000, "invoices.read", f"invoice:x{i}")
    dumped = json.loads(json.dumps(agent.layer.dump_state(agent.st), allow_nan=False))
    restarted_layer = AnomalyCheck(config(), seed=99)  # a new worker
    restored = restarted_layer.load_state(dumped)
    assert restored.to_dict() == agent.st.to_dict()
    assert restored.salt == agent.st.salt

    twin = Agent(restarted_layer)
    twin.state = {"anomaly": restored}
    at = after + 40_000
    for action, resource, params in [
        ("payments.transfer", "acct:1", {"amount": 900}),
        ("payments.transfer", "acct:1", {"amount": 500_000}),
        ("db.drop", "db:production", {}),
        ("payments.transfer", "wallet:1", {"amount": 900}),
    ]:
        original = agent.send(at, action, resource, **params)
        copy = twin.send(at, action, resource, **params)
        assert (original.status, original.reasons) == (copy.status, copy.reasons)
        at += 1_000
    assert twin.st.to_dict() == agent.st.to_dict()


def test_load_state_from_a_raw_dict_in_the_gate_state():
    agent = Agent()
    after = agent.warm_up()
    agent.state = {"anomaly": agent.st.to_dict()}  # what a changelog restore hands over
    assert agent.send(after, "db.drop", "db:production").status is Status.DENY
    assert isinstance(agent.state["anomaly"], AnomalyState)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ("not a dict", "expected an object"),
        ({"v": 2}, "version 2"),
        ({"observed": "many"}, "observed"),
        ({"events": {"a": ["x"]}}, "events.a"),
        ({"known_actions": [1]}, "known_actions"),
        ({"numeric": {"k": {"values": [float("inf")]}}}, "numeric.k.values"),
        ({"numeric": {"k": {"values": [], "transform": "cube"}}}, "numeric.k.transform"),
        ({"fanout": {"payments": [["a"]]}}, "fanout.payments"),
        ({"salt": 5}, "salt"),
    ],
)
def test_malformed_state_is_a_typed_error(data, where):
    with pytest.raises(AnomalyStateError, match=where):
        AnomalyCheck().load_state(data)


def test_state_stays_bounded():
    cfg = config(
        limits={
            "max_tracked_actions": 8,
            "max_known": 16,
            "reservoir_size": 32,
            "reservoir_memory": 64,
            "max_window_events": 64,
        },
        default={"rate": {"max": 20}, "burst": {"max": 5}, "fanout": {"max": 20}},
    )
    agent = Agent(AnomalyCheck(cfg, seed=1))
    for i in range(3_000):
        agent.send(
            T0 + i * 200,
            f"act{i % 40}.do" if i % 3 else "payments.transfer",
            f"kind{i % 50}:{i}",
            amount=100 + i,
        )
    st = agent.st
    assert len(st.events) <= 8
    assert all(len(times) <= 64 for times in st.events.values())
    assert len(st.known_actions) <= 16 and len(st.known_kinds) <= 16
    assert all(len(nb.values) <= 32 for nb in st.numeric.values())
    for name, touched in st.fanout.items():
        limit = cfg.class_for("payments.x" if name == "payments" else "x").fanout
        assert limit is not None and len(touched) <= 2 * limit.max + 1
    assert len(st.violations) <= 3
    assert len(json.dumps(st.to_dict())) < 16_000


def test_seeded_layers_are_deterministic():
    def run(seed: int) -> dict[str, Any]:
        agent = Agent(AnomalyCheck(config(), seed=seed))
        agent.warm_up(count=200)
        return agent.st.to_dict()

    assert run(5) == run(5)
    assert run(5)["salt"] != run(6)["salt"]


def test_unseeded_layers_get_random_salts():
    layer = AnomalyCheck()
    assert layer.new_state().salt != layer.new_state().salt


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(_values, min_size=1, max_size=60),
    actions=st.lists(
        st.sampled_from(["payments.transfer", "db.drop", "warehouse.export", "x.query"]),
        min_size=1,
    ),
)
def test_odd_values_never_raise_and_state_stays_json_safe(values, actions):
    agent = Agent()
    for i, value in enumerate(values):
        verdict = agent.send(
            T0 + i * 997,
            actions[i % len(actions)],
            f"r:{i % 7}",
            amount=value,
            destination=value if isinstance(value, str) else "s3://x",
        )
        assert verdict.status in (Status.ALLOW, Status.REVIEW, Status.DENY)
        assert all(isinstance(v, str) for v in verdict.evidence.values())
    text = json.dumps(agent.layer.dump_state(agent.st), allow_nan=False)
    assert agent.layer.load_state(json.loads(text)).to_dict() == agent.st.to_dict()


# --------------------------------------------------------------------------- config


def test_the_shipped_config_loads():
    cfg = AnomalyConfig.from_file(DEFAULT_CONFIG_PATH)
    assert cfg == AnomalyConfig.default_file()
    names = [c.name for c in cfg.classes]
    assert names == ["destructive", "payments", "deploys", "exports", "email", "reads"]
    assert cfg.class_for("payments.transfer").deviation["amount"].max_z == 4.5
    assert cfg.class_for("db.drop").novel_action is not None
    assert cfg.class_for("db.drop").novel_action.response == "deny"
    assert cfg.class_for("tickets.update").name == "default"
    assert cfg.class_for("warehouse.export").exfiltration is not None
    assert cfg.lookup("warehouse.query").is_read
    assert cfg.lookup("warehouse.export").is_export


def test_first_matching_class_wins_and_classes_inherit_from_default():
    cfg = config()
    assert cfg.class_for("payments.drop").name == "payments"
    exports = cfg.class_for("warehouse.export")
    assert exports.rate is not None and exports.rate.max == 20  # from [default]
    assert cfg.class_for("anything.else").name == "default"


def test_thresholds_from_config_are_honoured():
    cfg = config(default={"rate": {"max": 3, "response": "deny"}, "burst": {"enabled": False}})
    agent = Agent(AnomalyCheck(cfg, seed=1))
    verdicts = [agent.send(T0 + i * 100, "tickets.update", "ticket:1") for i in range(4)]
    assert [v.status for v in verdicts] == [Status.ALLOW] * 3 + [Status.DENY]
    assert "rate: 4 tickets.update in 60 s > 3" in verdicts[3].reasons


def test_json_and_toml_files_load(tmp_path: Path):
    data = {"default": {"rate": {"max": 7}}, "class": [{"name": "p", "actions": ["p.*"]}]}
    json_file = tmp_path / "a.json"
    json_file.write_text(json.dumps(data))
    toml_file = tmp_path / "a.toml"
    toml_file.write_text(
        '[default]\nrate = { max = 7 }\n[[class]]\nname = "p"\nactions = ["p.*"]\n'
    )
    assert AnomalyConfig.from_file(json_file) == AnomalyConfig.from_file(toml_file)
    assert AnomalyConfig.from_file(toml_file).default.rate is not None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"colour": 1}, "colour: unknown key"),
        ({"windows": {"rate": 5}}, "windows.rate: unknown key"),
        ({"windows": {"rate_ms": "60s"}}, "windows.rate_ms: expected an integer >= 1"),
        ({"windows": {"rate_ms": True}}, "windows.rate_ms: expected an integer >= 1"),
        ({"windows": []}, "windows: expected a table"),
        ({"default": {"rate": {"maxx": 5}}}, "default.rate.maxx: unknown key"),
        ({"default": {"rate": {"max": 0}}}, "default.rate.max: expected an integer >= 1"),
        ({"default": {"rate": {"max": 5, "response": "block"}}}, "default.rate.response: expected"),
        ({"default": {"rate": 5}}, "default.rate: expected a table"),
        ({"default": {"name": "x"}}, "default.name: unknown key"),
        ({"class": {"name": "x"}}, "class: expected a list of tables"),
        ({"class": [{"actions": ["a"]}]}, r"class\[0\].name: missing"),
        ({"class": [{"name": "a"}]}, r"class\[0\].actions: missing"),
        ({"class": [{"name": "a", "actions": "a.*"}]}, r"class\[0\].actions: expected a list"),
        ({"class": [{"name": "a", "actions": []}]}, r"class\[0\].actions: expected a non-empty"),
        (
            {"class": [{"name": "a", "actions": ["a"]}, {"name": "a", "actions": ["b"]}]},
            r"class\[1\].name: class 'a' is defined twice",
        ),
        (
            {"class": [{"name": "a", "actions": ["a"], "burst": {"max": 2, "respons": "deny"}}]},
            r"class\[0\].burst.respons: unknown key",
        ),
        (
            {
                "class": [
                    {"name": "a", "actions": ["a"], "deviation": {"amount": {"min_samples": 5}}}
                ]
            },
            r"class\[0\].deviation.amount.max_z: missing",
        ),
        (
            {"default": {"deviation": {"amount": {"max_z": "high"}}}},
            "default.deviation.amount.max_z: expected a finite number > 0",
        ),
        (
            {"default": {"deviation": {"amount": {"max_z": 3, "transform": "sqrt"}}}},
            "default.deviation.amount.transform: expected one of",
        ),
        (
            {"default": {"deviation": {"amount": {"max_z": 3, "min_scale": -1}}}},
            "default.deviation.amount.min_scale: expected a finite number >= 0",
        ),
        (
            {"default": {"deviation": {"amount": {"max_z": 3, "min_samples": 500}}}},
            "min_samples .500. exceeds limits.reservoir_size",
        ),
        ({"default": {"exfiltration": {"min_reads": -3}}}, "exfiltration.min_reads: expected"),
        ({"default": {"novel_action": {"enabled": "yes"}}}, "novel_action.enabled: expected true"),
        ({"exfiltration": {"read_actions": ["a", 3]}}, "exfiltration.read_actions: expected"),
        ({"quarantine": {"after": -1}}, "quarantine.after: expected an integer >= 0"),
        (
            {"limits": {"max_window_events": 10}},
            r"default.rate.max \(60\) must be below limits.max_window_events \(10\)",
        ),
        (
            {"limits": {"reservoir_size": 200, "reservoir_memory": 100}},
            "limits.reservoir_memory .100. must be at least limits.reservoir_size",
        ),
        ("nope", "top level: expected a table"),
    ],
)
def test_config_errors_name_the_key_path(data, message):
    with pytest.raises(ConfigError, match=message):
        AnomalyConfig.from_mapping(data, source="test.toml")


def test_config_errors_name_the_source():
    with pytest.raises(ConfigError, match=r"^test.toml: colour"):
        AnomalyConfig.from_mapping({"colour": 1}, source="test.toml")
    with pytest.raises(ConfigError, match=r"^test.toml: default.rate.max \(60\) must be below"):
        AnomalyConfig.from_mapping({"limits": {"max_window_events": 10}}, source="test.toml")


def test_config_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist") as missing:
        AnomalyConfig.from_file(tmp_path / "none.toml")
    assert missing.value.hint and "policies/anomaly.toml" in missing.value.hint
    bad = tmp_path / "bad.toml"
    bad.write_text("[default\n")
    with pytest.raises(ConfigError, match="is not valid toml"):
        AnomalyConfig.from_file(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    with pytest.raises(ConfigError, match="is not valid json"):
        AnomalyConfig.from_file(bad_json)
    yaml = tmp_path / "a.yaml"
    yaml.write_text("a: 1")
    with pytest.raises(ConfigError, match="unknown format '.yaml'"):
        AnomalyConfig.from_file(yaml)
