"""Eligibility: active agents, on their registered runtimes, in their environments."""

from __future__ import annotations

from typing import Any

import pytest

from processors.control import ControlState, sign_command
from processors.crypto.keys import KeyEntry, Keyset, b64url, generate_signing_key, raw_public_key
from processors.intent import Intent
from processors.layers.eligibility import EligibilityCheck
from processors.verdict import GateState, Status
from tests.processors.factories import intent_record

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20.000Z
NOW = T0 + 60_000
OPERATOR = generate_signing_key("ops-1")
KEY = generate_signing_key("k-1")


def command(state: ControlState, kind: str, payload: dict[str, Any], at: int = T0) -> None:
    result = state.apply(sign_command(kind, None, payload, OPERATOR, "alice", now_ms=at), at)
    assert result.applied, result.reason


def register(state: ControlState, agent_id: str, **extra: Any) -> None:
    keys = [{"kid": KEY.kid, "x": b64url(raw_public_key(KEY.public_key))}]
    command(state, "agent.register", {"agent_id": agent_id, "keys": keys, **extra})


def state() -> ControlState:
    s = ControlState(Keyset([KeyEntry(OPERATOR.kid, OPERATOR.public_key)]))
    register(s, "billing-agent", runtimes=["rt-1", "rt-2"], environments=["prod", "staging"])
    register(s, "anywhere-bot")
    for agent_id, kind in (
        ("held-bot", "agent.quarantine"),
        ("paused-bot", "agent.suspend"),
        ("gone-bot", "agent.revoke"),
    ):
        register(s, agent_id)
        command(s, kind, {"agent_id": agent_id, "reason": "code digest drift"}, T0 + 1000)
    return s


def intent(agent_id: str = "billing-agent", runtime_id: str = "rt-1", env: str = "prod") -> Any:
    record = intent_record(agent_id=agent_id)
    record["runtime"] = {**record["runtime"], "runtime_id": runtime_id, "environment": env}
    return Intent.from_record(record, key=agent_id.encode())


CASES: list[tuple[str, Any, Status, str, dict[str, str]]] = [
    (
        "registered runtime and environment",
        intent(),
        Status.ALLOW,
        "agent 'billing-agent' is active; runtime 'rt-1' in 'prod' is allowed",
        {"status": "active", "runtime_id": "rt-1", "environment": "prod"},
    ),
    ("second runtime", intent(runtime_id="rt-2", env="staging"), Status.ALLOW, "active", {}),
    (
        "empty lists mean any",
        intent("anywhere-bot", "rt-99", "dev"),
        Status.ALLOW,
        "'rt-99' in 'dev' is allowed",
        {},
    ),
    (
        "unknown agent",
        intent("shadow-agent"),
        Status.DENY,
        "agent 'shadow-agent' is not registered",
        {"status": "unknown"},
    ),
    (
        "quarantined",
        intent("held-bot"),
        Status.DENY,
        "agent 'held-bot' is quarantined since 2023-11-14T22:13:21.000Z, reason: code digest drift",
        {"status": "quarantined", "since_ms": str(T0 + 1000)},
    ),
    (
        "suspended",
        intent("paused-bot"),
        Status.DENY,
        "agent 'paused-bot' is suspended since 2023-11-14T22:13:21.000Z, reason: code digest",
        {"status": "suspended"},
    ),
    (
        "revoked",
        intent("gone-bot"),
        Status.DENY,
        "agent 'gone-bot' is revoked at 2023-11-14T22:13:21.000Z",
        {"status": "revoked"},
    ),
    (
        "runtime not registered",
        intent(runtime_id="rt-rogue"),
        Status.DENY,
        "runtime 'rt-rogue' is not registered for agent 'billing-agent' (registered: rt-1, rt-2)",
        {"runtime_id": "rt-rogue"},
    ),
    (
        "environment not allowed",
        intent(env="dev"),
        Status.DENY,
        "environment 'dev' is not allowed for agent 'billing-agent' (allowed: prod, staging)",
        {"environment": "dev"},
    ),
]


@pytest.mark.parametrize(
    ("the_intent", "status", "reason", "evidence"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_eligibility_decisions(
    the_intent: Intent, status: Status, reason: str, evidence: dict[str, str]
) -> None:
    verdict = EligibilityCheck(state()).evaluate(the_intent, GateState(now_ms=NOW))
    assert verdict.layer == "eligibility"
    assert verdict.status is status, verdict.reasons
    assert reason in verdict.reasons[0]
    assert evidence.items() <= dict(verdict.evidence).items()


def test_empty_registry_denies_all() -> None:
    empty = ControlState(Keyset([KeyEntry(OPERATOR.kid, OPERATOR.public_key)]))
    verdict = EligibilityCheck(empty).evaluate(intent(), GateState(now_ms=NOW))
    assert verdict.status is Status.DENY


def test_release_makes_the_agent_eligible_again() -> None:
    s = state()
    check = EligibilityCheck(s)
    assert check.evaluate(intent("held-bot"), GateState(now_ms=NOW)).status is Status.DENY
    command(s, "agent.release", {"agent_id": "held-bot", "reason": "digest re-approved"}, NOW)
    assert check.evaluate(intent("held-bot"), GateState(now_ms=NOW)).status is Status.ALLOW
