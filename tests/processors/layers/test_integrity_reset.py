"""An agent whose stored state was not trusted fails closed in the integrity layer until
an operator's ``agent.state.reset`` names the record."""

from __future__ import annotations

from typing import Any

import pytest

from processors.control import ControlContext, ControlState, sign_command
from processors.crypto.keys import KeyEntry, Keyset, generate_signing_key
from processors.layers.integrity import (
    RESET_KIND,
    IntegrityCheck,
    IntegrityConfig,
    IntegrityState,
    IntegrityStateError,
    RuntimeRegistry,
    StateResets,
    UntrustedState,
    state_reset_subject,
)
from processors.verdict import GateState, Status
from tests.processors.layers.test_integrity import HOUR, T0, nth, registration, step

UNTRUSTED = UntrustedState(
    "billing-agent", 2, 41, "failed authentication (its MAC does not verify)"
)
RESET = {"agent_id": "billing-agent", "partition": 2, "offset": 41, "reason": "forged by x"}


def context(subject: str = "billing-agent/status/gate-state", at: int = T0) -> ControlContext:
    return ControlContext("cmd-1", RESET_KIND, subject, "alice", at, "op-1", at)


def untrusted_gate(now: int = T0) -> GateState:
    return GateState(now_ms=now, agent={"integrity": UNTRUSTED})


def layer_with(registry: RuntimeRegistry | None = None, **config: Any) -> IntegrityCheck:
    return IntegrityCheck(registry or RuntimeRegistry([registration()]), IntegrityConfig(**config))


def test_every_intent_of_an_untrusted_agent_is_denied_with_what_to_do():
    layer, gate = layer_with(), untrusted_gate()
    verdict = layer.evaluate(nth(1), gate)
    assert verdict.status is Status.DENY
    assert verdict.evidence["check"] == "state_untrusted"
    assert verdict.evidence["response"] == "deny"
    assert "quarantine_scope" not in verdict.evidence
    assert (verdict.evidence["gate_state_partition"], verdict.evidence["gate_state_offset"]) == (
        "2",
        "41",
    )
    reason = verdict.reasons[0]
    assert reason.startswith(
        "gate state of agent 'billing-agent' is not trusted: the record at gate-state "
        "partition 2 offset 41 failed authentication (its MAC does not verify); "
    )
    assert "trustplane agents reset-state billing-agent --partition 2 --offset 41" in reason
    layer.observe(nth(1), gate, "denied")
    assert gate.agent["integrity"] is UNTRUSTED, "nothing is learned, nothing replaces it"


def test_an_untrusted_state_is_never_stored():
    with pytest.raises(IntegrityStateError, match="not trusted and must not be stored"):
        layer_with().dump_state(UNTRUSTED)


def test_a_reset_naming_another_record_changes_nothing():
    registry = RuntimeRegistry([registration()])
    layer = layer_with(registry)
    assert registry.resets.handle({**RESET, "offset": 40}, context()) is None
    assert layer.evaluate(nth(1), untrusted_gate()).evidence["check"] == "state_untrusted"


def test_after_the_reset_the_agent_starts_afresh_and_earlier_intents_stay_refused():
    registry = RuntimeRegistry([registration()])
    layer = layer_with(registry)
    reset_at = T0 + 60_000
    assert registry.resets.handle(RESET, context(at=reset_at)) is None

    gate = untrusted_gate(now=reset_at + 1_000)
    old = nth(1)  # issued at T0, before the reset: it may be a replay the lost state knew
    verdict = layer.evaluate(old, gate)
    assert verdict.evidence["check"] == "reset"
    assert verdict.evidence["response"] == "deny"
    assert "before an operator reset the agent's gate state" in verdict.reasons[0]

    fresh = nth(7, issued_at_ms=reset_at + 500, expires_at_ms=reset_at + 60_000)
    assert layer.evaluate(fresh, gate).status is Status.ALLOW
    assert gate.agent["integrity"] is UNTRUSTED, "evaluate only reads"
    layer.observe(fresh, gate, "approved")
    state = gate.agent["integrity"]
    assert isinstance(state, IntegrityState)
    assert state.not_before_ms == reset_at and state.highest_sequence == 7
    assert layer.evaluate(fresh, gate).evidence["check"] == "duplicate"
    assert layer.evaluate(old, gate).evidence["check"] == "reset"
    stored = layer.dump_state(state)
    assert stored["not_before_ms"] == reset_at
    assert layer.load_state(stored).to_dict() == stored


def test_the_reset_floor_is_dropped_once_the_retention_covers_it():
    registry = RuntimeRegistry([registration()])
    layer = layer_with(registry, replay_retention_ms=HOUR)
    registry.resets.handle(RESET, context(at=T0))
    gate = untrusted_gate(now=T0 + 1)
    step(layer, gate, nth(1, issued_at_ms=T0 + 1))
    later = T0 + HOUR + 10
    gate = GateState(now_ms=later, agent=gate.agent)
    step(layer, gate, nth(2, issued_at_ms=later, expires_at_ms=later + 1000))
    assert gate.agent["integrity"].not_before_ms is None


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"offset": -1}, "payload.offset must be an integer >= 0"),
        ({"partition": "2"}, "payload.partition must be an integer >= 0"),
        ({"offset": True}, "payload.offset must be an integer >= 0"),
        ({"reason": ""}, "payload.reason must be a non-empty string"),
        ({"agent_id": "bad id"}, "is not an agent id"),
        ({"extra": 1}, "unknown: extra"),
    ],
)
def test_bad_reset_payloads_are_refused_with_the_reason(changes, fragment):
    resets = StateResets()
    refusal = resets.handle({**RESET, **changes}, context())
    assert refusal is not None and refusal.startswith(f"{RESET_KIND}: ")
    assert fragment in refusal
    assert len(resets) == 0


def test_a_reset_needs_its_subject_and_every_field():
    resets = StateResets()
    assert "missing: reason" in resets.handle(
        {k: v for k, v in RESET.items() if k != "reason"}, context()
    )
    assert "should be 'billing-agent/status/gate-state'" in resets.handle(RESET, context("x"))
    assert len(resets) == 0


OPERATOR = generate_signing_key("op-1")


def test_the_signed_command_through_the_real_control_state():
    control = ControlState(Keyset([KeyEntry(OPERATOR.kid, OPERATOR.public_key)]))
    registry = RuntimeRegistry([registration()])
    registry.install(control)
    assert RESET_KIND in control.kinds
    subject = state_reset_subject("billing-agent")
    assert subject == "billing-agent/status/gate-state"
    wrong = control.apply(
        sign_command(RESET_KIND, "billing-agent", RESET, OPERATOR, "alice", now_ms=T0), T0
    )
    assert not wrong.applied and subject in wrong.reason
    done = control.apply(
        sign_command(RESET_KIND, subject, RESET, OPERATOR, "alice", now_ms=T0 + 1), T0 + 1
    )
    assert done.applied, done.reason
    reset = registry.resets.get("billing-agent")
    assert reset is not None and (reset.issued_by, reset.issued_at_ms) == ("alice", T0 + 1)
    assert reset.covers(2, 41) and not reset.covers(2, 42)
    intruder = generate_signing_key("op-x")
    forged = control.apply(
        sign_command(
            RESET_KIND, subject, {**RESET, "offset": 9}, intruder, "mallory", now_ms=T0 + 2
        ),
        T0 + 2,
    )
    assert not forged.applied
    assert registry.resets.get("billing-agent").offset == 41
