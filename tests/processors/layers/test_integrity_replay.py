"""Replays are idempotent: an exact copy of a decided intent is refused without a
quarantine; a different intent reusing its id or nonce is still a violation."""

from __future__ import annotations

from typing import Any

from processors.control import ControlState, sign_command
from processors.crypto.keys import KeyEntry, Keyset, b64url, generate_signing_key, raw_public_key
from processors.enforcement import Outcome
from processors.intent import Intent
from processors.layers.identity import IdentityCheck, sign_intent
from processors.layers.integrity import (
    IntegrityCheck,
    IntegrityConfig,
    IntegrityState,
    RuntimeRegistry,
    fingerprint,
)
from processors.pipeline import Pipeline
from processors.verdict import GateState, Status, Verdict
from tests.processors.factories import DIGEST, intent_record
from tests.processors.layers.test_integrity import HOUR, T0, make_layer, nth, registration, step

AGENT_KEY = generate_signing_key("billing-agent-k1")
SECOND_KEY = generate_signing_key("billing-agent-k2")


def signed(key: Any = AGENT_KEY, **overrides: Any) -> Intent:
    record = sign_intent(intent_record(**overrides), key)
    return Intent.from_record(record, key=record["agent_id"].encode())


def assert_replay_without_quarantine(verdict: Verdict, first_seen: int = T0) -> None:
    assert verdict.status is Status.DENY, verdict
    assert verdict.evidence["check"] == "duplicate"
    assert verdict.evidence["violation"] == "replay"
    assert verdict.evidence["response"] == "deny"
    assert "quarantine_scope" not in verdict.evidence
    assert verdict.evidence["first_seen_at_ms"] == str(first_seen)
    assert "was already decided" in verdict.reasons[0]
    assert "does not quarantine its agent" in verdict.reasons[0]


def test_an_exact_copy_is_denied_as_already_decided_without_quarantine():
    layer, gate = make_layer(), GateState(now_ms=T0)
    intent = signed()
    assert step(layer, gate, intent).status is Status.ALLOW
    later = GateState(now_ms=T0 + 5_000, agent=gate.agent)
    assert_replay_without_quarantine(layer.evaluate(intent, later))


def test_a_copy_is_still_just_a_replay_after_the_sequence_moved_on():
    layer, gate = make_layer(), GateState(now_ms=T0)
    first = signed(sequence=1)
    step(layer, gate, first)
    step(layer, gate, signed(intent_id="intent-2", nonce="n-2", sequence=2))
    assert_replay_without_quarantine(layer.evaluate(first, gate))


def test_a_copy_does_not_quarantine_through_attestation_after_a_runtime_change():
    """The runtime the intent named was deregistered since: the copy is still a replay."""
    registry = RuntimeRegistry([registration()])
    layer, gate = IntegrityCheck(registry), GateState(now_ms=T0)
    intent = signed()
    step(layer, gate, intent)
    registry.deregister("rt-1")
    assert_replay_without_quarantine(layer.evaluate(intent, gate))
    fresh = signed(intent_id="intent-2", nonce="n-2", sequence=2)
    assert layer.evaluate(fresh, gate).evidence["response"] == "quarantine"


def test_the_same_signed_intent_in_other_record_bytes_is_the_same_intent():
    """Avro maps may be re-encoded (other order, other blocks): still the same statement."""
    record = sign_intent(intent_record(parameters={"amount": 10.5, "currency": "EUR"}), AGENT_KEY)
    reordered = {**record, "parameters": {"currency": "EUR", "amount": 10.5}}
    a = Intent.from_record(record, key=b"billing-agent")
    b = Intent.from_record(reordered, key=b"billing-agent")
    assert fingerprint(a) == fingerprint(b)
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, a)
    assert_replay_without_quarantine(layer.evaluate(b, gate))


def test_a_different_intent_reusing_the_id_is_a_violation():
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, signed())
    other = signed(sequence=2, nonce="n-2", resource="acct:43")
    verdict = layer.evaluate(other, gate)
    assert verdict.evidence["check"] == "intent_id"
    assert verdict.evidence["response"] == "quarantine"
    assert "on a different intent" in verdict.reasons[0]


def test_a_different_intent_reusing_id_and_nonce_is_a_violation():
    """Same id, same nonce, other content: only the agent's key could have signed it."""
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, signed())
    verdict = layer.evaluate(signed(resource="acct:43"), gate)
    assert verdict.evidence["check"] == "intent_id"
    assert verdict.evidence["response"] == "quarantine"


def test_the_same_body_signed_by_another_key_is_a_different_intent():
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, signed())
    verdict = layer.evaluate(signed(SECOND_KEY), gate)
    assert verdict.evidence["response"] == "quarantine"


def test_a_different_intent_reusing_the_nonce_is_a_violation():
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, signed())
    verdict = layer.evaluate(signed(intent_id="intent-2", sequence=2), gate)
    assert verdict.evidence["check"] == "nonce"
    assert verdict.evidence["response"] == "quarantine"
    assert verdict.evidence["used_by_intent_id"] == "intent-1"


def test_a_sequence_conflict_is_still_a_violation():
    layer, gate = make_layer(), GateState(now_ms=T0)
    step(layer, gate, signed(sequence=5))
    verdict = layer.evaluate(signed(intent_id="intent-2", nonce="n-2", sequence=5), gate)
    assert verdict.evidence["check"] == "regression"
    assert verdict.evidence["response"] == "quarantine"


def test_a_copy_older_than_the_retention_is_refused_by_the_window_without_quarantine():
    layer = make_layer(IntegrityConfig(replay_retention_ms=HOUR))
    gate = GateState(now_ms=T0)
    intent = nth(1)
    step(layer, gate, intent)
    later = GateState(now_ms=T0 + HOUR + 1, agent=gate.agent)
    verdict = layer.evaluate(intent, later)
    assert verdict.evidence["check"] == "window"
    assert verdict.evidence["response"] == "deny"


def test_copies_add_nothing_to_the_state_and_never_move_the_sequence():
    layer, gate = make_layer(IntegrityConfig(max_remembered=2)), GateState(now_ms=T0)
    first = signed(sequence=3)
    step(layer, gate, first)
    for _ in range(20):
        assert step(layer, gate, first).evidence["check"] == "duplicate"
    state = gate.agent["integrity"]
    assert isinstance(state, IntegrityState)
    assert len(state) == 1 and state.highest_sequence == 3


def test_unsigned_intents_are_told_apart_by_their_signing_payload():
    assert fingerprint(nth(1)) == fingerprint(nth(1))
    assert fingerprint(nth(1)) != fingerprint(nth(1, resource="acct:43"))
    assert fingerprint(signed()) != fingerprint(nth(1))


def test_state_written_before_fingerprints_still_treats_an_id_and_nonce_match_as_a_copy():
    old = {"version": 1, "highest_sequence": 1, "entries": [["intent-1", "n-1", T0]]}
    layer = make_layer()
    gate = GateState(now_ms=T0 + 1, agent={"integrity": layer.load_state(old)})
    assert_replay_without_quarantine(layer.evaluate(signed(), gate))
    assert layer.evaluate(signed(nonce="n-2"), gate).evidence["response"] == "quarantine"


# -- with the identity layer in front, as in the gate --------------------------------------

OPERATOR = generate_signing_key("ops-1")


def gate_pipeline() -> Pipeline:
    control = ControlState(Keyset([KeyEntry(OPERATOR.kid, OPERATOR.public_key)]))
    payload = {
        "agent_id": "billing-agent",
        "keys": [{"kid": AGENT_KEY.kid, "x": b64url(raw_public_key(AGENT_KEY.public_key))}],
    }
    result = control.apply(
        sign_command("agent.register", None, payload, OPERATOR, "alice", now_ms=T0), T0
    )
    assert result.applied, result.reason
    runtimes = RuntimeRegistry([registration(code_digests=frozenset({DIGEST}))])
    return Pipeline([IdentityCheck(control), IntegrityCheck(runtimes)])


def test_through_identity_and_integrity_only_a_different_signed_intent_quarantines():
    pipeline, agent = gate_pipeline(), {}
    intent = signed()
    assert pipeline.decide(intent, GateState(now_ms=T0, agent=agent)).outcome is Outcome.APPROVED
    again = pipeline.decide(intent, GateState(now_ms=T0 + 10, agent=agent))
    assert again.outcome is Outcome.DENIED
    assert again.verdicts[-1].evidence["response"] == "deny"
    assert "already decided" in again.reasons[0]

    forged = intent_record(resource="acct:43")  # not signed by the agent: identity stops it
    forged["signature"] = intent.signature
    forged["key_id"] = AGENT_KEY.kid
    stopped = pipeline.decide(
        Intent.from_record(forged, key=b"billing-agent"), GateState(now_ms=T0 + 20, agent=agent)
    )
    assert [v.layer for v in stopped.verdicts] == ["identity"]

    conflict = signed(intent_id="intent-2", sequence=2)  # the agent's key reused a nonce
    result = pipeline.decide(conflict, GateState(now_ms=T0 + 30, agent=agent))
    assert result.outcome is Outcome.DENIED
    assert result.verdicts[-1].evidence["response"] == "quarantine"
    assert result.verdicts[-1].evidence["check"] == "nonce"
