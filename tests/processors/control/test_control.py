"""Signed control commands and the state they build."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.control import (
    BUILTIN_KINDS,
    CONTROL_PAYLOAD_TYPE,
    ControlCommandError,
    ControlContext,
    ControlState,
    command_signing_message,
    sign_command,
    subject_for,
)
from processors.crypto.keys import KeyEntry, Keyset, SigningKey, b64url, generate_signing_key
from processors.crypto.keys import raw_public_key as raw
from processors.exceptions import ConfigError
from streams.codec import default_codec

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20.000Z
OPERATOR = generate_signing_key("ops-alice")
RETIRED = generate_signing_key("ops-old")
STRANGER = generate_signing_key("mallory")
AGENT_KEY = generate_signing_key("billing-2024")
AGENT_KEY_2 = generate_signing_key("billing-2025")


def operator_keys() -> Keyset:
    return Keyset(
        [
            KeyEntry(OPERATOR.kid, OPERATOR.public_key),
            KeyEntry(RETIRED.kid, RETIRED.public_key, retired_at_ms=T0 - 1000),
        ]
    )


def jwk(key: SigningKey, **extra: Any) -> dict[str, Any]:
    return {"kid": key.kid, "x": b64url(raw(key.public_key)), **extra}


def registration(agent_id: str = "billing-agent", **extra: Any) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "keys": [jwk(AGENT_KEY), jwk(AGENT_KEY_2, not_before_ms=T0, not_after_ms=T0 + 10**9)],
        "roles": ["payments", "invoices-reader"],
        "runtimes": ["billing-agent-7f9c"],
        "environments": ["prod"],
        **extra,
    }


def cmd(
    kind: str,
    payload: Mapping[str, Any],
    at: int = T0,
    *,
    key: SigningKey = OPERATOR,
    subject: str | None = None,
    command_id: str | None = None,
) -> dict[str, Any]:
    return sign_command(kind, subject, payload, key, "alice", now_ms=at, command_id=command_id)


def applied(state: ControlState, record: Mapping[str, Any], now: int = T0) -> str:
    result = state.apply(record, now)
    assert result.applied, result.reason
    return result.reason


def registered_state() -> ControlState:
    state = ControlState(operator_keys())
    applied(state, cmd("agent.register", registration()))
    return state


def observable(state: ControlState) -> Any:
    """Everything a reader can see, except the refusal counter."""
    summary = state.snapshot_summary()
    summary.pop("commands_refused")
    agents = {
        agent_id: (
            {kid: (k.not_before_ms, k.not_after_ms, k.revoked_at_ms) for kid, k in r.keys.items()},
            r.roles,
            r.runtimes,
            r.environments,
            r.status,
            r.status_reason,
            r.status_since_ms,
        )
        for agent_id, r in state.agents.items()
    }
    return summary, agents


# --- the signing payload -------------------------------------------------------------


def test_signed_command_record_is_a_valid_avro_control_command() -> None:
    record = cmd("agent.register", registration(), command_id="c-1")
    assert record["payload"] == bytes(rfc8785.dumps(registration())).decode()
    assert record["subject"] == "billing-agent" and record["key_id"] == "ops-alice"
    codec = default_codec()
    decoded = codec.decode(codec.encode("ControlCommand", record), "ControlCommand")
    state = ControlState(operator_keys())
    assert state.apply(decoded, T0).applied


def test_signature_is_ed25519_over_pae_of_the_canonical_body() -> None:
    record = cmd("agent.suspend", {"agent_id": "billing-agent", "reason": "audit"}, command_id="c")
    body = rfc8785.dumps(
        {
            "command_id": "c",
            "kind": "agent.suspend",
            "subject": "billing-agent/status/suspension",
            "payload": {"agent_id": "billing-agent", "reason": "audit"},
            "issued_by": "alice",
            "issued_at_ms": T0,
            "key_id": "ops-alice",
        }
    )
    type_ = CONTROL_PAYLOAD_TYPE.encode()
    message = b"DSSEv1 %d %b %d %b" % (len(type_), type_, len(body), body)
    OPERATOR.public_key.verify(record["signature"], message)  # raises if not
    assert command_signing_message(
        payload=json.loads(record["payload"]),
        **{k: record[k] for k in ("command_id", "kind", "subject", "issued_by", "issued_at_ms")},
        key_id=record["key_id"],
    ) == bytes(message)


def test_sign_command_refuses_payloads_without_canonical_form() -> None:
    with pytest.raises(ControlCommandError, match="no canonical JSON form"):
        cmd("policy.publish", {"n": 2**60}, subject="policy")
    with pytest.raises(ControlCommandError, match="has no fixed subject rule"):
        cmd("killswitch.set", {"scope": "global"})


@pytest.mark.parametrize(
    ("kind", "payload", "subject"),
    [
        ("agent.register", {"agent_id": "a"}, "a"),
        ("agent.revoke", {"agent_id": "a"}, "a/status/revocation"),
        ("key.revoke", {"agent_id": "a", "kid": "k"}, "a/k"),
        ("agent.suspend", {"agent_id": "a"}, "a/status/suspension"),
        ("agent.reinstate", {"agent_id": "a"}, "a/status/suspension"),
        ("agent.quarantine", {"agent_id": "a"}, "a/status/quarantine"),
        ("agent.release", {"agent_id": "a"}, "a/status/quarantine"),
    ],
)
def test_subject_rules(kind: str, payload: dict[str, Any], subject: str) -> None:
    assert subject_for(kind, payload) == subject


# --- refusals: a refused command changes nothing -------------------------------------


def _tamper(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**record, **changes}


SUSPEND = {"agent_id": "billing-agent", "reason": "audit"}
REFUSALS: list[tuple[str, Any, str]] = [
    ("not a record", "agent.register", "is a ControlCommand record"),
    ("unsigned", _tamper(cmd("agent.suspend", SUSPEND), signature=None), "not signed"),
    ("empty signature", _tamper(cmd("agent.suspend", SUSPEND), signature=b""), "not signed"),
    (
        "signed by a non-operator key",
        cmd("agent.suspend", SUSPEND, key=STRANGER),
        "key_id 'mallory' is not an operator key",
    ),
    (
        "a stranger's key under the operator's kid",
        cmd("agent.suspend", SUSPEND, key=SigningKey(STRANGER.private_key, "ops-alice")),
        "does not verify",
    ),
    (
        "operator key retired before issue",
        cmd("agent.suspend", SUSPEND, key=RETIRED),
        "is not an operator key valid at",
    ),
    (
        "retired key, dated inside its old window",
        cmd("agent.suspend", SUSPEND, at=T0 - 2000, key=RETIRED),
        "is not an operator key valid at 2023-11-14T22:13:20.000Z",
    ),
    (
        "tampered payload",
        _tamper(
            cmd("agent.suspend", SUSPEND),
            payload=json.dumps({"agent_id": "billing-agent", "reason": "x"}),
        ),
        "does not verify",
    ),
    (
        "tampered subject",
        _tamper(cmd("agent.suspend", SUSPEND), subject="support-bot/status/suspension"),
        "does not verify",
    ),
    (
        "tampered kind",
        _tamper(cmd("agent.suspend", SUSPEND), kind="agent.quarantine"),
        "does not verify",
    ),
    (
        "tampered time",
        _tamper(cmd("agent.suspend", SUSPEND), issued_at_ms=T0 + 1),
        "does not verify",
    ),
    (
        "truncated signature",
        _tamper(
            cmd("agent.suspend", SUSPEND), signature=cmd("agent.suspend", SUSPEND)["signature"][:63]
        ),
        "64 bytes",
    ),
    (
        "malformed payload JSON",
        _tamper(cmd("agent.suspend", SUSPEND), payload='{"agent_id": "billing-agent",'),
        "not valid JSON",
    ),
    (
        "payload is an array",
        _tamper(cmd("agent.suspend", SUSPEND), payload='["billing-agent"]'),
        "must be a JSON object",
    ),
    (
        "payload with NaN",
        _tamper(cmd("agent.suspend", SUSPEND), payload='{"agent_id": NaN}'),
        "NaN is not JSON",
    ),
    (
        "payload with duplicate members",
        _tamper(
            cmd("agent.suspend", SUSPEND),
            payload='{"agent_id":"billing-agent","agent_id":"support-bot","reason":"x"}',
        ),
        "duplicate member 'agent_id'",
    ),
    ("issued_at_ms not a long", _tamper(cmd("agent.suspend", SUSPEND), issued_at_ms="1"), "int"),
    ("no command id", _tamper(cmd("agent.suspend", SUSPEND), command_id=""), "command_id is empty"),
    (
        "unknown kind",
        cmd("agent.promote", {"agent_id": "billing-agent"}, subject="billing-agent"),
        "unknown command kind 'agent.promote'; known kinds: agent.quarantine",
    ),
    (
        "wrong subject for the kind",
        cmd("agent.suspend", SUSPEND, subject="billing-agent"),
        "has subject 'billing-agent/status/suspension'",
    ),
    (
        "issued far in the future",
        cmd("agent.suspend", SUSPEND, at=T0 + 3_600_000),
        "check the operator's clock",
    ),
    (
        "suspend without reason",
        cmd("agent.suspend", {"agent_id": "billing-agent"}),
        "lacks reason",
    ),
    (
        "agent id with a slash",
        cmd("agent.suspend", {"agent_id": "a/b", "reason": "x"}, subject="a/b/status/suspension"),
        "payload.agent_id must be",
    ),
    (
        "a reserved agent id",
        cmd(
            "agent.register",
            registration("runtime"),
            subject="runtime",
        ),
        "agent id 'runtime' is reserved",
    ),
    (
        "public key of 31 bytes",
        cmd(
            "agent.register",
            registration(keys=[{"kid": "short", "x": b64url(raw(AGENT_KEY.public_key)[:31])}]),
        ),
        "decodes to 31 bytes; an Ed25519 public key is 32",
    ),
    (
        "public key of 33 bytes",
        cmd(
            "agent.register",
            registration(keys=[{"kid": "long", "x": b64url(raw(AGENT_KEY.public_key) + b"\0")}]),
        ),
        "decodes to 33 bytes",
    ),
    (
        "public key of impossible base64 length",
        cmd(
            "agent.register",
            registration(keys=[{"kid": "bad", "x": b64url(raw(AGENT_KEY.public_key))[:-2]}]),
        ),
        "is not valid base64url (41 characters)",
    ),
    (
        "public key in standard base64 with padding",
        cmd("agent.register", registration(keys=[{"kid": "std", "x": "ab+/cd=="}])),
        "base64url without padding",
    ),
    (
        "no keys",
        cmd("agent.register", registration(keys=[])),
        "non-empty list",
    ),
    (
        "duplicate key ids",
        cmd("agent.register", registration(keys=[jwk(AGENT_KEY), jwk(AGENT_KEY)])),
        "billing-2024 twice",
    ),
    (
        "a key that is not Ed25519",
        cmd("agent.register", registration(keys=[jwk(AGENT_KEY, crv="X25519")])),
        "only Ed25519 is accepted",
    ),
    (
        "window ends before it starts",
        cmd("agent.register", registration(keys=[jwk(AGENT_KEY, not_before_ms=5, not_after_ms=5)])),
        "not_after_ms must be after not_before_ms",
    ),
    (
        "a misspelled member",
        cmd("agent.register", registration(runtime=["x"])),
        "unknown members runtime",
    ),
    (
        "roles not a list of strings",
        cmd("agent.register", registration(roles="payments")),
        "payload.roles must be a list",
    ),
    (
        "policy without a store",
        cmd("policy.publish", {"policies": "permit(principal, action, resource);"}, subject="p"),
        "no policy store configured",
    ),
]


@pytest.mark.parametrize(
    ("record", "reason"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refused_with_reason_and_state_unchanged(record: Any, reason: str) -> None:
    state = registered_state()
    before = copy.deepcopy(observable(state))
    result = state.apply(record, T0)
    assert not result.applied
    assert reason in result.reason
    assert observable(state) == before
    assert state.commands_refused == 1


def test_replay_of_the_same_command_is_stale() -> None:
    state = ControlState(operator_keys())
    record = cmd("agent.quarantine", {"agent_id": "billing-agent", "reason": "drift"})
    applied(state, record)
    result = state.apply(record, T0 + 5)
    assert not result.applied and result.reason.startswith("stale: command")


def test_an_older_command_for_the_subject_is_stale() -> None:
    state = registered_state()
    release = cmd("agent.release", {"agent_id": "billing-agent"}, at=T0 + 10)
    quarantine = cmd("agent.quarantine", {"agent_id": "billing-agent", "reason": "x"}, at=T0 + 20)
    applied(state, release, T0 + 30)
    applied(state, quarantine, T0 + 30)
    before = observable(state)
    result = state.apply(release, T0 + 40)  # replaying the old release must not free it
    assert not result.applied and result.reason.startswith("stale: issued at")
    assert observable(state) == before
    assert state.agents["billing-agent"].status == "quarantined"


def test_two_commands_in_the_same_millisecond_both_apply() -> None:
    state = registered_state()
    applied(state, cmd("agent.quarantine", {"agent_id": "billing-agent", "reason": "x"}, T0 + 1))
    applied(state, cmd("agent.release", {"agent_id": "billing-agent"}, T0 + 1))
    assert state.agents["billing-agent"].status == "active"


def test_refused_commands_do_not_block_later_ones() -> None:
    state = registered_state()
    forged = cmd("agent.suspend", SUSPEND, at=T0 + 100, key=STRANGER)
    assert not state.apply(forged, T0 + 100).applied
    applied(state, cmd("agent.suspend", SUSPEND, at=T0 + 50), T0 + 100)


# --- what the commands do -----------------------------------------------------------


def test_register_builds_the_agent_record() -> None:
    state = registered_state()
    record = state.agents["billing-agent"]
    assert set(record.keys) == {"billing-2024", "billing-2025"}
    assert raw(record.keys["billing-2024"].public_key) == raw(AGENT_KEY.public_key)
    assert record.keys["billing-2025"].not_before_ms == T0
    assert record.roles == ("payments", "invoices-reader")
    assert record.runtimes == ("billing-agent-7f9c",) and record.environments == ("prod",)
    assert record.status == "active" and record.registered_at_ms == T0
    with pytest.raises(TypeError):
        record.keys["x"] = record.keys["billing-2024"]  # type: ignore[index]


def test_reregister_replaces_keys_and_roles_but_keeps_quarantine_and_suspension() -> None:
    state = registered_state()
    applied(state, cmd("agent.quarantine", {"agent_id": "billing-agent", "reason": "drift"}))
    applied(state, cmd("agent.suspend", SUSPEND))
    new_key = generate_signing_key("billing-2026")
    reason = applied(
        state,
        cmd(
            "agent.register",
            {"agent_id": "billing-agent", "keys": [jwk(new_key)], "roles": ["ro"]},
            T0 + 1,
        ),
    )
    assert "stays quarantined: drift" in reason
    record = state.agents["billing-agent"]
    assert set(record.keys) == {"billing-2026"} and record.roles == ("ro",)
    assert record.runtimes == () and record.environments == ()
    assert record.status == "quarantined" and record.status_since_ms == T0
    applied(state, cmd("agent.release", {"agent_id": "billing-agent"}, T0 + 2))
    record = state.agents["billing-agent"]
    assert record.status == "suspended" and record.status_reason == "audit"
    applied(state, cmd("agent.reinstate", {"agent_id": "billing-agent"}, T0 + 3))
    assert state.agents["billing-agent"].status == "active"


def test_quarantine_records_since_and_reason() -> None:
    state = registered_state()
    applied(
        state,
        cmd("agent.quarantine", {"agent_id": "billing-agent", "reason": "code digest drift"}, T0),
        T0 + 5_000,
    )
    record = state.agents["billing-agent"]
    assert (record.status, record.status_reason, record.status_since_ms) == (
        "quarantined",
        "code digest drift",
        T0,
    )


def test_agent_revocation_is_permanent() -> None:
    state = registered_state()
    applied(state, cmd("agent.revoke", {"agent_id": "billing-agent", "reason": "compromised"}))
    assert state.agents["billing-agent"].status == "revoked"
    result = state.apply(cmd("agent.register", registration(), T0 + 1), T0 + 1)
    assert not result.applied and "revocation is permanent" in result.reason


def test_a_registration_issued_before_the_revocation_may_arrive_after_it() -> None:
    state = ControlState(operator_keys())
    applied(state, cmd("agent.revoke", {"agent_id": "billing-agent", "reason": "x"}, T0 + 5))
    applied(state, cmd("agent.register", registration(), T0))
    record = state.agents["billing-agent"]
    assert record.status == "revoked" and record.status_since_ms == T0 + 5


def test_key_revocation_is_sticky_across_reregistration_and_order() -> None:
    state = ControlState(operator_keys())
    # the revocation arrives first (another partition of the control topic)
    reason = applied(state, cmd("key.revoke", {"agent_id": "billing-agent", "kid": "billing-2024"}))
    assert "stays revoked if it is registered later" in reason
    applied(state, cmd("agent.register", registration(), T0 + 1))
    keys = state.agents["billing-agent"].keys
    assert keys["billing-2024"].revoked_at_ms == T0 and keys["billing-2025"].revoked_at_ms is None


def test_suspend_and_quarantine_apply_to_agents_not_registered_yet() -> None:
    state = ControlState(operator_keys())
    applied(state, cmd("agent.quarantine", {"agent_id": "billing-agent", "reason": "x"}))
    assert "billing-agent" not in state.agents
    applied(state, cmd("agent.register", registration()))
    assert state.agents["billing-agent"].status == "quarantined"


def test_release_when_not_quarantined_is_a_no_op() -> None:
    state = registered_state()
    reason = applied(state, cmd("agent.release", {"agent_id": "billing-agent"}))
    assert "was not quarantined" in reason


COMMANDS = [
    cmd("agent.register", registration(), T0 + 1),
    cmd("key.revoke", {"agent_id": "billing-agent", "kid": "billing-2025"}, T0 + 2),
    cmd("agent.quarantine", {"agent_id": "billing-agent", "reason": "drift"}, T0 + 3),
    cmd("agent.suspend", SUSPEND, T0 + 4),
    cmd("agent.register", registration("support-bot", roles=["support"]), T0 + 5),
    cmd("agent.revoke", {"agent_id": "support-bot", "reason": "retired"}, T0 + 6),
    cmd("agent.register", registration("deploy-bot"), T0 + 7),
]


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(COMMANDS))
def test_the_last_command_per_subject_builds_the_same_state_in_any_order(
    order: list[dict[str, Any]],
) -> None:
    """The control topic is compacted by subject and read across partitions, so commands
    for different subjects may arrive in any order."""
    expected = ControlState(operator_keys())
    for record in COMMANDS:
        applied(expected, record, T0 + 10)
    state = ControlState(operator_keys())
    for record in order:
        state.apply(record, T0 + 10)
    assert observable(state)[1] == observable(expected)[1]


# --- policy store and extension kinds ------------------------------------------------


def test_policy_publish_goes_to_the_sink() -> None:
    seen: list[tuple[Mapping[str, Any], ControlContext]] = []

    def sink(bundle: Mapping[str, Any], context: ControlContext) -> str | None:
        seen.append((bundle, context))
        return None if bundle.get("version") else "the bundle has no version"

    state = ControlState(operator_keys(), policy_sink=sink)
    good = cmd("policy.publish", {"version": "7", "policies": "forbid(...);"}, subject="policy")
    assert state.apply(good, T0).applied
    assert seen[0][0]["version"] == "7" and seen[0][1].issued_by == "alice"
    bad = cmd("policy.publish", {"policies": ""}, T0 + 1, subject="policy")
    result = state.apply(bad, T0 + 1)
    assert not result.applied and "the bundle has no version" in result.reason
    assert state.last_command_at_ms == T0


def test_a_sink_that_raises_refuses_the_command() -> None:
    def sink(bundle: Mapping[str, Any], context: ControlContext) -> str | None:
        raise RuntimeError("disk full")

    state = ControlState(operator_keys(), policy_sink=sink)
    result = state.apply(cmd("policy.publish", {"v": 1}, subject="policy"), T0)
    assert not result.applied and "RuntimeError: disk full" in result.reason


def test_register_handler_adds_a_kind_with_its_subject_rule() -> None:
    switches: dict[str, bool] = {}

    def kill_switch(payload: Mapping[str, Any], context: ControlContext) -> str | None:
        if not isinstance(payload.get("on"), bool):
            return "payload.on must be true or false"
        switches[context.subject] = payload["on"]
        return None

    state = ControlState(operator_keys())
    state.register_handler(
        "killswitch.set", kill_switch, subject=lambda p: f"killswitch/{p['scope']}"
    )
    assert "killswitch.set" in state.kinds
    record = cmd("killswitch.set", {"scope": "global", "on": True}, subject="killswitch/global")
    assert state.apply(record, T0).applied and switches == {"killswitch/global": True}
    wrong = cmd("killswitch.set", {"scope": "global", "on": False}, subject="x", at=T0 + 1)
    assert "has subject 'killswitch/global'" in state.apply(wrong, T0 + 1).reason
    no_scope = cmd("killswitch.set", {"on": False}, subject="x", at=T0 + 1)
    assert "no subject for this payload" in state.apply(no_scope, T0 + 1).reason
    bad = cmd(
        "killswitch.set", {"scope": "global", "on": 1}, subject="killswitch/global", at=T0 + 2
    )
    assert state.apply(bad, T0 + 2).reason == "payload.on must be true or false"
    with pytest.raises(ConfigError, match="already has a handler"):
        state.register_handler("killswitch.set", kill_switch)
    with pytest.raises(ConfigError, match="already has a handler"):
        state.register_handler("agent.register", kill_switch)


def test_snapshot_summary() -> None:
    state = registered_state()
    applied(state, cmd("agent.register", registration("support-bot")))
    applied(state, cmd("agent.quarantine", {"agent_id": "support-bot", "reason": "x"}, T0 + 9))
    state.apply(cmd("agent.suspend", SUSPEND, key=STRANGER), T0 + 9)
    summary = state.snapshot_summary()
    assert summary["agents"] == 2
    assert summary["agents_by_status"] == {
        "active": 1,
        "suspended": 0,
        "quarantined": 1,
        "revoked": 0,
    }
    assert summary["commands_applied"] == 3 and summary["commands_refused"] == 1
    assert summary["last_command_kind"] == "agent.quarantine"
    assert summary["last_command_at"] == "2023-11-14T22:13:20.009Z"
    assert summary["policy_store"] is False
    assert set(BUILTIN_KINDS) <= set(summary["kinds"])
    json.dumps(summary)  # /healthz serves it as JSON
