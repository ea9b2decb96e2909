"""The runtime integrity layer: attestation, replay, sequence, its state and its registry."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.control import ControlContext, ControlState, sign_command
from processors.crypto.keys import KeyEntry, Keyset, generate_signing_key
from processors.enforcement import Outcome
from processors.exceptions import ConfigError, TrustplaneError
from processors.intent import Intent
from processors.layers.integrity import (
    DEREGISTER_KIND,
    MAX_SEQUENCE,
    QUARANTINE_KIND,
    REGISTER_KIND,
    RELEASE_KIND,
    IntegrityCheck,
    IntegrityConfig,
    IntegrityState,
    IntegrityStateError,
    RegistrationError,
    RuntimeRegistration,
    RuntimeRegistry,
    fingerprint,
    runtime_quarantine_subject,
    runtime_subject,
)
from processors.pipeline import Pipeline
from processors.verdict import GateState, StatefulLayer, Status, Verdict
from tests.processors.factories import DIGEST, intent_record, make_intent

OTHER = "sha256:" + "cd" * 32
T0 = 1_700_000_000_000  # the factory's issued_at_ms
HOUR = 3_600_000


def registration(**overrides: Any) -> RuntimeRegistration:
    values: dict[str, Any] = {
        "runtime_id": "rt-1",
        "code_digests": frozenset({DIGEST}),
        "config_digests": frozenset({DIGEST}),
        "environment": "prod",
        "hosts": frozenset({"node-7"}),
    }
    values.update(overrides)
    return RuntimeRegistration(**values)


def make_layer(config: IntegrityConfig | None = None, **reg: Any) -> IntegrityCheck:
    return IntegrityCheck(RuntimeRegistry([registration(**reg)]), config)


def nth(n: int, **overrides: Any) -> Intent:
    """The n-th intent of the factory's agent: its own id, nonce and sequence."""
    values: dict[str, Any] = {"intent_id": f"intent-{n}", "nonce": f"n-{n}", "sequence": n}
    values.update(overrides)
    return make_intent(**values)


def step(layer: IntegrityCheck, gate: GateState, intent: Intent, outcome: str = "") -> Verdict:
    """What the pipeline does: evaluate, then observe."""
    verdict = layer.evaluate(intent, gate)
    layer.observe(
        intent, gate, outcome or ("approved" if verdict.status is Status.ALLOW else "denied")
    )
    return verdict


def agent_state(gate: GateState) -> IntegrityState:
    value = gate.agent["integrity"]
    assert isinstance(value, IntegrityState)
    return value


def assert_violation(verdict: Verdict, violation: str, check: str, fragment: str) -> None:
    assert verdict.layer == "integrity"
    assert verdict.status is Status.DENY, verdict
    assert fragment in verdict.reasons[0], verdict.reasons
    assert verdict.evidence["violation"] == violation
    assert verdict.evidence["check"] == check
    assert verdict.evidence["response"] == "quarantine"
    assert verdict.evidence["quarantine_scope"] == "agent"
    assert verdict.evidence["quarantine_subject"] == "billing-agent"


# -- the layer as a whole --------------------------------------------------------------


def test_it_is_a_stateful_layer_with_its_own_state_key():
    layer = make_layer()
    assert isinstance(layer, StatefulLayer)
    assert (layer.name, layer.state_key) == ("integrity", "integrity")


def test_a_registered_runtime_with_a_fresh_intent_is_allowed_with_evidence():
    verdict = make_layer().evaluate(make_intent(), GateState(now_ms=T0))
    assert verdict.status is Status.ALLOW
    assert verdict.evidence == {"runtime_id": "rt-1", "sequence": "1"}
    assert "first intent of agent 'billing-agent'" in verdict.reasons[0]


# -- 1. attestation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runtime", "check", "fragment", "expected", "seen"),
    [
        (
            {"runtime_id": "rt-unknown"},
            "runtime_registered",
            "runtime 'rt-unknown' is not registered",
            "a registered runtime",
            "rt-unknown",
        ),
        ({"code_digest": OTHER}, "code_digest", f"code digest {OTHER}", DIGEST, OTHER),
        ({"config_digest": OTHER}, "config_digest", f"config digest {OTHER}", DIGEST, OTHER),
        (
            {"environment": "staging"},
            "environment",
            "claims environment 'staging' but is registered for 'prod'",
            "prod",
            "staging",
        ),
        ({"host": "laptop"}, "host", "host 'laptop' is not a registered host", "node-7", "laptop"),
    ],
)
def test_attestation_failures_deny_and_ask_for_quarantine(runtime, check, fragment, expected, seen):
    record = intent_record()
    record["runtime"] = {**record["runtime"], **runtime}
    intent = Intent.from_record(record, key=b"billing-agent")
    verdict = make_layer().evaluate(intent, GateState(now_ms=T0))
    assert_violation(verdict, "attestation", check, fragment)
    assert verdict.reasons[0].startswith("attestation: ")
    assert verdict.evidence["expected"] == expected
    assert verdict.evidence["seen"] == seen
    assert verdict.evidence["runtime_id"] == record["runtime"]["runtime_id"]


def test_any_host_is_allowed_when_the_registration_names_none():
    record = intent_record()
    record["runtime"] = {**record["runtime"], "host": "anywhere"}
    intent = Intent.from_record(record, key=b"billing-agent")
    assert (
        make_layer(hosts=frozenset()).evaluate(intent, GateState(now_ms=T0)).status is Status.ALLOW
    )


def test_every_allowed_digest_attests_and_the_evidence_lists_them():
    layer = make_layer(code_digests=frozenset({DIGEST, OTHER}))
    record = intent_record()
    record["runtime"] = {**record["runtime"], "code_digest": OTHER}
    allowed = Intent.from_record(record, key=b"billing-agent")
    assert layer.evaluate(allowed, GateState(now_ms=T0)).status is Status.ALLOW
    record["runtime"]["code_digest"] = "sha256:" + "ef" * 32
    denied = layer.evaluate(Intent.from_record(record, key=b"billing-agent"), GateState(now_ms=T0))
    assert denied.evidence["expected"] == f"{DIGEST}, {OTHER}"


def test_runtime_scope_quarantines_the_runtime_instead():
    layer = make_layer(IntegrityConfig(quarantine_scope="runtime"))
    record = intent_record()
    record["runtime"] = {**record["runtime"], "code_digest": OTHER}
    verdict = layer.evaluate(Intent.from_record(record, key=b"billing-agent"), GateState(now_ms=T0))
    assert verdict.evidence["quarantine_scope"] == "runtime"
    assert verdict.evidence["quarantine_subject"] == "rt-1"


def test_a_quarantined_runtime_is_denied_without_asking_for_another_quarantine():
    layer = make_layer()
    layer.registry.quarantine("rt-1", "host compromised", T0 - 1000)
    verdict = layer.evaluate(make_intent(), GateState(now_ms=T0))
    assert verdict.status is Status.DENY
    assert "runtime 'rt-1' is quarantined since 2023-11-14T22:13:19.000Z" in verdict.reasons[0]
    assert "host compromised" in verdict.reasons[0]
    assert verdict.evidence["response"] == "deny"
    assert "quarantine_scope" not in verdict.evidence
    layer.registry.release("rt-1")
    assert layer.evaluate(make_intent(), GateState(now_ms=T0)).status is Status.ALLOW


# -- 2. replay -------------------------------------------------------------------------


def test_replay_of_an_intent_id_is_denied():
    layer, gate = make_layer(), GateState(now_ms=T0)
    assert step(layer, gate, nth(1)).status is Status.ALLOW
    gate = GateState(now_ms=T0 + 5_000, agent=gate.agent)
    verdict = layer.evaluate(nth(1, sequence=2, nonce="n-other"), gate)
    assert_violation(
        verdict,
        "replay",
        "intent_id",
        "replay: intent id 'intent-1' already seen at 2023-11-14T22:13:20.000Z (5000 ms ago)",
    )
    assert verdict.evidence["first_seen_at_ms"] == str(T0)


def test_replay_of_a_nonce_with_a_new_intent_id_is_denied():
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, nth(1))
    verdict = layer.evaluate(nth(2, nonce="n-1"), gate)
    assert_violation(
        verdict, "replay", "nonce", "replay: nonce 'n-1' already used by intent 'intent-1' at"
    )
    assert verdict.evidence["used_by_intent_id"] == "intent-1"


def test_replay_is_checked_before_sequence():
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, nth(1))
    assert layer.evaluate(nth(1), gate).evidence["violation"] == "replay"


def test_an_intent_issued_before_the_replay_window_is_denied_without_quarantine():
    layer = make_layer(IntegrityConfig(replay_retention_ms=HOUR))
    intent = nth(1, issued_at_ms=T0 - HOUR - 1, expires_at_ms=T0 + HOUR)
    verdict = layer.evaluate(intent, GateState(now_ms=T0))
    assert verdict.status is Status.DENY
    assert verdict.reasons[0].startswith("replay window: issued at")
    assert verdict.evidence["check"] == "window"
    assert verdict.evidence["response"] == "deny"
    assert "quarantine_scope" not in verdict.evidence


# -- 3. sequence -----------------------------------------------------------------------


def test_sequence_regression_is_denied():
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, nth(5))
    for seq in (5, 4, 0):
        verdict = layer.evaluate(nth(100 + seq, sequence=seq), gate)
        assert_violation(
            verdict,
            "sequence",
            "regression",
            f"sequence regression: expected > 5, seen {seq} (replay or rollback)",
        )


def test_a_gap_beyond_the_tolerance_is_denied():
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, nth(5))
    verdict = layer.evaluate(nth(107), gate)
    assert_violation(
        verdict, "sequence", "gap", "sequence gap: expected 6, seen 107, tolerance 100"
    )
    assert verdict.evidence["expected"] == "6..106"


@pytest.mark.parametrize("seq", [6, 7, 50, 106])
def test_a_gap_within_the_tolerance_is_allowed(seq):
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, nth(5))
    verdict = layer.evaluate(nth(seq), gate)
    assert verdict.status is Status.ALLOW
    assert f"sequence {seq} follows 5" in verdict.reasons[0]


def test_zero_tolerance_demands_the_next_number():
    layer, gate = make_layer(IntegrityConfig(sequence_gap_tolerance=0)), GateState(now_ms=T0)
    step(layer, gate, nth(5))
    assert layer.evaluate(nth(6), gate).status is Status.ALLOW
    assert layer.evaluate(nth(7), gate).evidence["check"] == "gap"


@pytest.mark.parametrize("seq", [0, 1, 10**12, MAX_SEQUENCE])
def test_the_first_intent_of_an_agent_may_start_anywhere(seq):
    assert make_layer().evaluate(nth(seq), GateState(now_ms=T0)).status is Status.ALLOW


def test_a_failed_intent_never_moves_the_sequence():
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, nth(5))
    assert step(layer, gate, nth(10**15)).status is Status.DENY  # a gap: not advanced
    record = intent_record(intent_id="x", nonce="x", sequence=6)
    record["runtime"] = {**record["runtime"], "host": "elsewhere"}
    step(layer, gate, Intent.from_record(record, key=b"billing-agent"))  # attestation
    assert agent_state(gate).highest_sequence == 5
    assert layer.evaluate(nth(6), gate).status is Status.ALLOW


def test_an_intent_denied_by_a_later_layer_still_uses_up_its_sequence_and_ids():
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, nth(5), outcome="denied")
    assert agent_state(gate).highest_sequence == 5
    assert layer.evaluate(nth(5, intent_id="new", nonce="new"), gate).evidence["check"] == (
        "regression"
    )


# -- absurd values ---------------------------------------------------------------------

YEAR_9999 = 253_402_300_799_999


@pytest.mark.parametrize(
    ("changes", "now", "status", "fragment"),
    [
        (
            {"sequence": -1},
            T0,
            Status.DENY,
            "sequence out of range: expected 0..9223372036854775807, seen -1",
        ),
        ({"sequence": MAX_SEQUENCE + 1}, T0, Status.DENY, "sequence out of range"),
        ({"sequence": 10**40}, T0, Status.DENY, "sequence out of range"),
        ({"issued_at_ms": 0, "expires_at_ms": YEAR_9999}, T0, Status.DENY, "replay window"),
        ({"issued_at_ms": -(2**62), "expires_at_ms": 2**62}, T0, Status.DENY, "replay window"),
        ({"issued_at_ms": YEAR_9999, "expires_at_ms": YEAR_9999 + 1}, T0, Status.ALLOW, "attested"),
        ({}, YEAR_9999 * 1000, Status.DENY, "replay window"),
        ({}, 0, Status.ALLOW, "attested"),
        ({}, -(2**70), Status.ALLOW, "attested"),
    ],
)
def test_absurd_values_get_clear_verdicts_and_never_raise(changes, now, status, fragment):
    layer, gate = make_layer(), GateState(now_ms=now)
    intent = dataclasses.replace(make_intent(), **changes)
    verdict = layer.evaluate(intent, gate)
    assert verdict.status is status
    assert fragment in verdict.reasons[0]
    layer.observe(intent, gate, "denied")
    again = layer.evaluate(intent, gate)
    assert again.status is Status.DENY  # whatever it was, it is not allowed twice
    json.dumps(layer.dump_state(agent_state(gate)))


# -- state: observe, round trip, pruning ------------------------------------------------


def test_evaluate_only_reads_and_observe_creates_the_state():
    layer, gate = make_layer(), GateState(now_ms=T0)
    layer.evaluate(nth(1), gate)
    assert gate.agent == {}
    layer.observe(nth(1), gate, "approved")
    assert len(agent_state(gate)) == 1


def test_replay_after_restart_is_still_caught():
    """The state survives a JSON round trip (the changelog topic) with all it knows."""
    layer, gate = make_layer(), GateState(now_ms=T0)
    for n in (1, 2, 3):
        step(layer, gate, nth(n))
    stored = json.dumps(layer.dump_state(agent_state(gate)))

    restarted = make_layer()
    loaded = restarted.load_state(json.loads(stored))
    assert loaded.to_dict() == agent_state(gate).to_dict()
    gate = GateState(now_ms=T0 + 1000, agent={"integrity": loaded})
    assert restarted.evaluate(nth(2), gate).evidence["check"] == "duplicate"
    assert restarted.evaluate(nth(2, resource="acct:7"), gate).evidence["check"] == "intent_id"
    assert restarted.evaluate(nth(9, nonce="n-3", sequence=4), gate).evidence["check"] == "nonce"
    assert restarted.evaluate(nth(8, sequence=3), gate).evidence["check"] == "regression"
    assert restarted.evaluate(nth(200), gate).evidence["check"] == "gap"
    assert restarted.evaluate(nth(4), gate).status is Status.ALLOW


def test_the_stored_form_is_small_plain_json():
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, nth(1))
    assert layer.dump_state(agent_state(gate)) == {
        "version": 2,
        "highest_sequence": 1,
        "not_before_ms": None,
        "entries": [["intent-1", "n-1", T0, fingerprint(nth(1))]],
    }
    assert len(fingerprint(nth(1))) == 16
    assert layer.dump_state(layer.new_state()) == {
        "version": 2,
        "highest_sequence": None,
        "not_before_ms": None,
        "entries": [],
    }


def test_entries_older_than_the_retention_are_pruned_and_then_ignored():
    layer = make_layer(IntegrityConfig(replay_retention_ms=HOUR))
    gate = GateState(now_ms=T0)
    step(layer, gate, nth(1))
    later = T0 + HOUR + 1
    gate = GateState(now_ms=later, agent=gate.agent)
    again = nth(1, sequence=2, issued_at_ms=later, expires_at_ms=later + 1000)
    # not yet pruned, but out of the window: not a replay any more
    assert layer.evaluate(again, gate).status is Status.ALLOW
    step(layer, gate, nth(5, issued_at_ms=later, expires_at_ms=later + 1000))
    state = agent_state(gate)
    assert len(state) == 1
    assert state.id_seen_at("intent-1") is None and state.nonce_used("n-1") is None
    assert state.id_seen_at("intent-5") == later


def test_an_entry_exactly_at_the_retention_edge_still_counts():
    layer = make_layer(IntegrityConfig(replay_retention_ms=HOUR))
    gate = GateState(now_ms=T0)
    step(layer, gate, nth(1))
    gate = GateState(now_ms=T0 + HOUR, agent=gate.agent)
    assert layer.evaluate(nth(1, sequence=2, nonce="x"), gate).evidence["check"] == "intent_id"


def test_the_oldest_are_forgotten_beyond_max_remembered_and_sequence_still_catches_replays():
    layer, gate = make_layer(IntegrityConfig(max_remembered=3)), GateState(now_ms=T0)
    for n in range(1, 6):
        gate = GateState(now_ms=T0 + n, agent=gate.agent)
        step(layer, gate, nth(n))
    state = agent_state(gate)
    assert len(state) == 3
    assert [state.id_seen_at(f"intent-{n}") is not None for n in range(1, 6)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    assert state.nonce_used("n-2") is None and state.nonce_used("n-3") == ("intent-3", T0 + 3)
    # the id is forgotten, but a replay of the intent is still a sequence regression
    assert layer.evaluate(nth(1), gate).evidence["check"] == "regression"


def test_exact_repeats_do_not_push_real_entries_out():
    layer, gate = make_layer(IntegrityConfig(max_remembered=2)), GateState(now_ms=T0)
    step(layer, gate, nth(1))
    step(layer, gate, nth(2))
    for _ in range(10):
        step(layer, gate, nth(2))
    assert agent_state(gate).id_seen_at("intent-1") == T0


def test_loading_more_entries_than_the_limit_keeps_the_newest():
    data = {
        "version": 1,
        "highest_sequence": 9,
        "entries": [[f"i-{n}", f"n-{n}", T0 + n] for n in range(10)],
    }
    state = make_layer(IntegrityConfig(max_remembered=4)).load_state(data)
    assert len(state) == 4
    assert state.id_seen_at("i-5") is None and state.id_seen_at("i-6") == T0 + 6


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([], "expected an object, got list"),
        ({"version": 1, "entries": []}, "expected the fields"),
        ({"version": 1, "highest_sequence": None, "entries": [], "x": 1}, "expected the fields"),
        ({"version": 3, "highest_sequence": None, "entries": []}, "version 3 is not supported"),
        ({"version": 2, "highest_sequence": None, "entries": []}, "expected the fields"),
        (
            {"version": 2, "highest_sequence": None, "not_before_ms": "1", "entries": []},
            "not_before_ms '1'",
        ),
        (
            {
                "version": 2,
                "highest_sequence": None,
                "not_before_ms": None,
                "entries": [["a", "b", 1]],
            },
            "entries[0]",
        ),
        (
            {
                "version": 2,
                "highest_sequence": None,
                "not_before_ms": None,
                "entries": [["a", "b", 1, 5]],
            },
            "not [intent_id, nonce, seen_at_ms, fingerprint]",
        ),
        ({"version": True, "highest_sequence": None, "entries": []}, "version True"),
        ({"version": 1, "highest_sequence": -1, "entries": []}, "highest_sequence -1"),
        ({"version": 1, "highest_sequence": "5", "entries": []}, "highest_sequence '5'"),
        ({"version": 1, "highest_sequence": 2**63, "entries": []}, "highest_sequence"),
        ({"version": 1, "highest_sequence": None, "entries": {}}, "entries must be a list"),
        ({"version": 1, "highest_sequence": None, "entries": [["a", "b"]]}, "entries[0]"),
        ({"version": 1, "highest_sequence": None, "entries": [["a", "b", "1"]]}, "entries[0]"),
        ({"version": 1, "highest_sequence": None, "entries": [["a", 2, 1]]}, "entries[0]"),
        (
            {"version": 1, "highest_sequence": None, "entries": [["a", "b", 1], "x"]},
            "entries[1]",
        ),
    ],
)
def test_malformed_stored_state_is_a_typed_error(data, fragment):
    with pytest.raises(IntegrityStateError) as caught:
        make_layer().load_state(data)
    assert fragment in caught.value.reason
    assert caught.value.reason.startswith("stored integrity state is malformed")
    assert "denies this agent's intents" in caught.value.diagnostics()


def test_a_foreign_state_object_is_an_error_verdict_and_a_failed_observe():
    layer = make_layer()
    gate = GateState(now_ms=T0, agent={"integrity": {"version": 1}})
    verdict = layer.evaluate(make_intent(), gate)
    assert verdict.status is Status.ERROR
    assert "not an IntegrityState" in verdict.reasons[0]
    with pytest.raises(IntegrityStateError):
        layer.observe(make_intent(), gate, "denied")
    with pytest.raises(IntegrityStateError):
        layer.dump_state({"version": 1})


# -- through the pipeline --------------------------------------------------------------


def test_the_pipeline_denies_a_replay_and_asks_for_quarantine_only_for_a_different_intent():
    layer = make_layer()
    pipeline = Pipeline([layer], observe_after=None)
    gate = GateState(now_ms=T0)
    assert pipeline.decide(nth(1), gate).outcome is Outcome.APPROVED
    copy = pipeline.decide(nth(1), gate)
    assert copy.outcome is Outcome.DENIED
    assert copy.reasons[0].startswith("integrity: replay: intent 'intent-1' was already decided")
    assert copy.verdicts[0].evidence["response"] == "deny"
    other = pipeline.decide(nth(1, action="payments.refund"), gate)
    assert other.outcome is Outcome.DENIED
    assert other.reasons[0].startswith("integrity: replay: intent id 'intent-1'")
    assert other.verdicts[0].evidence["response"] == "quarantine"


# -- config ----------------------------------------------------------------------------


def test_config_defaults():
    config = IntegrityConfig()
    assert config.replay_retention_ms == 86_400_000
    assert config.max_remembered == 10_000
    assert config.sequence_gap_tolerance == 100
    assert config.quarantine_scope == "agent"
    assert IntegrityConfig.from_mapping({}) == config


def test_config_from_a_mapping():
    config = IntegrityConfig.from_mapping(
        {"replay_retention_ms": 1000, "max_remembered": 5, "quarantine_scope": "runtime"}
    )
    assert (config.replay_retention_ms, config.max_remembered) == (1000, 5)
    assert config.quarantine_scope == "runtime"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("retention", "expected a table of settings, got str"),
        ({"retention_ms": 5}, "unknown setting(s) retention_ms"),
        (
            {"replay_retention_ms": "24h"},
            "integrity.replay_retention_ms must be an integer, got str",
        ),
        ({"replay_retention_ms": 1.5}, "must be an integer, got float"),
        ({"max_remembered": True}, "integrity.max_remembered must be an integer, got bool"),
        ({"replay_retention_ms": 0}, "integrity.replay_retention_ms must be >= 1, got 0"),
        ({"max_remembered": 0}, "must be between 1 and 1000000, got 0"),
        ({"max_remembered": 10**7}, "must be between 1 and 1000000"),
        ({"sequence_gap_tolerance": -1}, "integrity.sequence_gap_tolerance must be >= 0, got -1"),
        ({"quarantine_scope": "host"}, "must be 'agent' or 'runtime', got 'host'"),
        ({"quarantine_scope": None}, "must be 'agent' or 'runtime', got null"),
    ],
)
def test_config_errors_say_what_is_wrong(data, fragment):
    with pytest.raises(ConfigError) as caught:
        IntegrityConfig.from_mapping(data)
    assert fragment in caught.value.reason


def test_config_errors_name_the_source_and_the_constructor_validates_too():
    with pytest.raises(ConfigError, match=r"trustplane\.integrity\.max_remembered"):
        IntegrityConfig.from_mapping({"max_remembered": -3}, source="trustplane.integrity")
    with pytest.raises(ConfigError, match="known settings"):
        try:
            IntegrityConfig.from_mapping({"nope": 1})
        except ConfigError as exc:
            raise ConfigError(exc.diagnostics()) from None
    with pytest.raises(ConfigError):
        IntegrityConfig(max_remembered=0)


# -- the registry and its control commands ---------------------------------------------

PAYLOAD = {
    "runtime_id": "rt-2",
    "code_digests": [DIGEST],
    "config_digests": [DIGEST, OTHER],
    "environment": "prod",
    "hosts": ["node-1"],
}


def context(kind: str, subject: str) -> ControlContext:
    return ControlContext("cmd-1", kind, subject, "alice", T0, "op-1", T0)


def test_runtime_register_applies_a_valid_payload():
    registry = RuntimeRegistry()
    assert registry.handle_register(PAYLOAD, context(REGISTER_KIND, "runtime/rt-2")) is None
    got = registry.get("rt-2")
    assert got is not None and got.config_digests == frozenset({DIGEST, OTHER})
    assert got.to_payload() == {**PAYLOAD, "config_digests": sorted([DIGEST, OTHER])}
    without_hosts = {k: v for k, v in PAYLOAD.items() if k != "hosts"}
    assert registry.handle_register(without_hosts, context(REGISTER_KIND, "runtime/rt-2")) is None
    assert registry.get("rt-2").hosts == frozenset()  # replaced whole


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"code_digests": ["sha256:" + "AB" * 32]}, "is not sha256:<64 lowercase hex>"),
        ({"code_digests": ["ab" * 32]}, "is not sha256:<64 lowercase hex>"),
        ({"config_digests": ["sha256:abc"]}, "config_digests entry 'sha256:abc'"),
        ({"code_digests": ["sha512:" + "ab" * 64]}, "not sha256"),
        ({"code_digests": []}, "code_digests is empty, so no runtime could ever attest"),
        ({"code_digests": DIGEST}, "code_digests must be a list of strings, got str"),
        ({"code_digests": [DIGEST, 7]}, "code_digests[1] must be a string, got int"),
        ({"hosts": "node-1"}, "hosts must be a list of strings"),
        ({"hosts": [""]}, "host '' must be a non-empty string"),
        ({"environment": ""}, "environment must be a non-empty string"),
        ({"environment": 3}, "environment must be a string, got int"),
        ({"runtime_id": "rt 2"}, "runtime_id 'rt 2' is not an identifier"),
        ({"runtime_id": None}, "runtime_id must be a string, got null"),
        ({"owner": "x"}, "unknown payload field(s) owner"),
        ({"code_digests": [f"sha256:{n:064x}" for n in range(1025)]}, "at most 1024"),
    ],
)
def test_runtime_register_refuses_bad_payloads_with_the_reason(changes, fragment):
    registry = RuntimeRegistry()
    payload = {**PAYLOAD, **changes}
    reason = registry.handle_register(payload, context(REGISTER_KIND, "runtime/rt-2"))
    assert reason is not None and reason.startswith("runtime.register: ")
    assert fragment in reason
    assert len(registry) == 0


def test_runtime_register_refuses_missing_fields_and_a_wrong_subject():
    registry = RuntimeRegistry()
    partial = {"runtime_id": "rt-2", "environment": "prod"}
    reason = registry.handle_register(partial, context(REGISTER_KIND, "runtime/rt-2"))
    assert reason is not None and "missing payload field(s) code_digests, config_digests" in reason
    reason = registry.handle_register(PAYLOAD, context(REGISTER_KIND, "rt-2"))
    assert reason is not None and "should be 'runtime/rt-2'" in reason
    assert len(registry) == 0


def test_deregister_quarantine_and_release_handlers():
    registry = RuntimeRegistry([registration(runtime_id="rt-2")])
    subject, qsubject = runtime_subject("rt-2"), runtime_quarantine_subject("rt-2")
    assert qsubject == "runtime/rt-2/quarantine"
    deregister = context(DEREGISTER_KIND, subject)
    assert "unknown payload field(s) why" in registry.handle_deregister(
        {"runtime_id": "rt-2", "why": "x"}, deregister
    )
    assert "should be" in registry.handle_deregister(
        {"runtime_id": "rt-2"}, context(DEREGISTER_KIND, "x")
    )
    assert registry.handle_deregister({"runtime_id": "rt-2"}, deregister) is None
    assert "rt-2" not in registry
    assert registry.handle_deregister({"runtime_id": "rt-2"}, deregister) == (
        "runtime.deregister: runtime 'rt-2' is not registered"
    )

    quarantine, release = context(QUARANTINE_KIND, qsubject), context(RELEASE_KIND, qsubject)
    assert "payload.reason must be a non-empty string" in registry.handle_quarantine(
        {"runtime_id": "rt-2"}, quarantine
    )
    assert registry.handle_release({"runtime_id": "rt-2"}, release) == (
        "runtime.release: runtime 'rt-2' is not quarantined"
    )
    assert registry.handle_quarantine({"runtime_id": "rt-2", "reason": "leak"}, quarantine) is None
    assert registry.quarantine_of("rt-2").since_ms == T0
    assert registry.handle_release({"runtime_id": "rt-2", "reason": "fixed"}, release) is None
    assert registry.quarantine_of("rt-2") is None


def test_registration_built_in_code_is_validated_too():
    with pytest.raises(RegistrationError, match="sha256"):
        registration(code_digests=frozenset({"md5:abc"}))
    with pytest.raises(RegistrationError, match="frozenset"):
        registration(hosts=["node-7"])
    assert issubclass(RegistrationError, TrustplaneError)


OPERATOR = generate_signing_key("op-1")


def test_signed_commands_through_the_real_control_state():
    control = ControlState(Keyset([KeyEntry(OPERATOR.kid, OPERATOR.public_key)]))
    registry = RuntimeRegistry()
    registry.install(control)
    assert {REGISTER_KIND, DEREGISTER_KIND, QUARANTINE_KIND, RELEASE_KIND} <= set(control.kinds)
    layer = IntegrityCheck(registry)
    intent = make_intent()

    def apply(kind: str, subject: str, payload: dict[str, Any], at: int) -> Any:
        return control.apply(sign_command(kind, subject, payload, OPERATOR, "alice", now_ms=at), at)

    payload = registration().to_payload()
    wrong = apply(REGISTER_KIND, "rt-1", payload, T0)
    assert not wrong.applied and "subject 'runtime/rt-1'" in wrong.reason
    assert layer.evaluate(intent, GateState(now_ms=T0)).evidence["check"] == "runtime_registered"

    assert apply(REGISTER_KIND, "runtime/rt-1", payload, T0 + 1).applied
    assert layer.evaluate(intent, GateState(now_ms=T0)).status is Status.ALLOW

    refused = apply(REGISTER_KIND, "runtime/rt-1", {**payload, "code_digests": []}, T0 + 2)
    assert not refused.applied and "code_digests is empty" in refused.reason
    assert layer.evaluate(intent, GateState(now_ms=T0)).status is Status.ALLOW  # unchanged

    assert apply(
        QUARANTINE_KIND, "runtime/rt-1/quarantine", {"runtime_id": "rt-1", "reason": "x"}, T0 + 3
    ).applied
    assert layer.evaluate(intent, GateState(now_ms=T0)).evidence["check"] == "runtime_quarantined"
    assert apply(RELEASE_KIND, "runtime/rt-1/quarantine", {"runtime_id": "rt-1"}, T0 + 4).applied

    assert apply(DEREGISTER_KIND, "runtime/rt-1", {"runtime_id": "rt-1"}, T0 + 5).applied
    assert layer.evaluate(intent, GateState(now_ms=T0)).evidence["check"] == "runtime_registered"
    with pytest.raises(ConfigError, match="already has a handler"):
        registry.install(control)


# -- properties ------------------------------------------------------------------------

ids = st.sampled_from([f"i{n}" for n in range(8)])
nonces = st.sampled_from([f"n{n}" for n in range(8)])
moves = st.lists(
    st.tuples(
        ids,
        nonces,
        st.integers(min_value=0, max_value=40),  # sequence
        st.integers(min_value=0, max_value=60_000),  # ms since the previous intent
        st.booleans(),  # restart: round-trip the state through JSON first
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(moves=moves, tolerance=st.integers(min_value=0, max_value=5))
def test_an_id_accepted_once_is_never_allowed_again(moves, tolerance):
    layer = make_layer(IntegrityConfig(sequence_gap_tolerance=tolerance))
    now = T0
    gate = GateState(now_ms=now)
    accepted: set[str] = set()
    used_nonces: set[str] = set()
    for intent_id, nonce, seq, pause, restart in moves:
        now += pause
        if restart and "integrity" in gate.agent:
            stored = json.loads(json.dumps(layer.dump_state(gate.agent["integrity"])))
            gate = GateState(now_ms=now, agent={"integrity": layer.load_state(stored)})
        gate = GateState(now_ms=now, agent=gate.agent)
        intent = nth(
            0,
            intent_id=intent_id,
            nonce=nonce,
            sequence=seq,
            issued_at_ms=now,
            expires_at_ms=now + 1000,
        )
        verdict = step(layer, gate, intent)
        if intent_id in accepted or nonce in used_nonces:
            assert verdict.status is Status.DENY, (intent_id, nonce, verdict)
            assert verdict.evidence["violation"] == "replay"
        if verdict.status is Status.ALLOW:
            accepted.add(intent_id)
        used_nonces.add(nonce)  # observe remembers every identity-verified intent


printable = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40
)
valid_intents = st.builds(
    lambda intent_id, agent, rt, env, host, seq, issued, life, nonce, code: Intent.from_record(
        intent_record(
            intent_id=intent_id,
            agent_id=agent,
            runtime={
                "runtime_id": rt,
                "code_digest": code,
                "config_digest": DIGEST,
                "environment": env,
                "host": host,
            },
            sequence=seq,
            issued_at_ms=issued,
            expires_at_ms=issued + life,
            nonce=nonce,
        ),
        key=agent.encode(),
    ),
    printable.filter(str.strip),
    printable.filter(str.strip),
    st.sampled_from(["rt-1", "rt-2"]) | printable.filter(str.strip),
    st.sampled_from(["prod", "staging"]),
    st.sampled_from(["node-7", "", "other"]),
    st.integers(min_value=0, max_value=MAX_SEQUENCE),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.integers(min_value=1, max_value=2**40),
    printable.filter(str.strip),
    st.sampled_from([DIGEST, OTHER]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    intents=st.lists(valid_intents, max_size=25),
    clock=st.lists(st.integers(min_value=-(2**62), max_value=2**62), min_size=1, max_size=25),
    limit=st.integers(min_value=1, max_value=6),
)
def test_evaluate_and_observe_never_raise_and_the_state_stays_bounded(intents, clock, limit):
    layer = make_layer(IntegrityConfig(max_remembered=limit, replay_retention_ms=HOUR))
    agent: dict[str, Any] = {}
    for n, intent in enumerate(intents):
        gate = GateState(now_ms=clock[n % len(clock)], agent=agent)
        verdict = layer.evaluate(intent, gate)
        assert isinstance(verdict, Verdict) and verdict.layer == "integrity"
        assert verdict.status in (Status.ALLOW, Status.DENY)
        assert all(isinstance(v, str) for v in verdict.evidence.values())
        layer.observe(intent, gate, "approved")
        state = agent_state(gate)
        assert len(state) <= limit
        stored = json.loads(json.dumps(layer.dump_state(state)))
        assert layer.load_state(stored).to_dict() == state.to_dict()
