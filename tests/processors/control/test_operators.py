"""Operator keys enrolled and retired by root keys, on the control log."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from processors.control import (
    BUILTIN_KINDS,
    ControlState,
    EnrolledOperators,
    OperatorKeyError,
    Signer,
    parse_operator_key,
    subject_for,
)
from processors.control.operators import OperatorKeys, check_label
from processors.crypto.keys import (
    KeyEntry,
    Keyset,
    SigningKey,
    UnknownKeyError,
    b64url,
    generate_signing_key,
    jwk_thumbprint,
    raw_public_key,
)
from tests.processors.control.test_history import (
    BOB,
    GATE,
    GLOBAL,
    OPERATOR,
    RETIRED,
    SWITCHES,
    T0,
    Chain,
    Topic,
    gate_keys,
    new_state,
)

MINUTE = 60_000


def browser_key() -> SigningKey:
    """A key as the console's browser makes it: its id is its JWK thumbprint."""
    return generate_signing_key()


def enrolment(key: SigningKey, label: str = "alice's laptop", **extra: Any) -> dict[str, Any]:
    return {"kid": key.kid, "x": b64url(raw_public_key(key.public_key)), "label": label, **extra}


def enrol(topic: Topic, root: Chain, key: SigningKey, at: int = T0, **extra: Any) -> None:
    topic.append(root.sign("operator.enroll", enrolment(key, **extra), at), at)


def engage(chain: Chain, at: int, target: str = "support-bot") -> dict[str, Any]:
    payload = {"scope": "agent", "target": target, "reason": "incident 7"}
    return chain.sign("killswitch.engage", payload, at, subject=f"killswitch/agent/{target}")


def switched(state: ControlState) -> list[str]:
    return sorted(SWITCHES[state].agents)


# --- enrolment: a new operator key without a restart ------------------------------------------


def test_an_enrolled_key_signs_from_its_enrolments_append_time_with_its_own_history() -> None:
    topic, root, new = Topic(), Chain(OPERATOR), browser_key()
    browser = Chain(new, issued_by="alice@console")
    early = topic.append(engage(browser, T0 - 5), T0 - 5)  # before its enrolment in the log
    enrol(topic, root, new, T0)
    state = new_state()
    refused = state.apply_logged(topic.entries[0])
    assert not refused.applied and f"key_id {new.kid!r} is not an operator key" in refused.reason
    assert state.apply_logged(topic.entries[1]).applied
    # the refused command took no place: the key's history starts at the next sequence 0
    later = topic.append(engage(Chain(new), T0 + 1), T0 + 1)
    result = state.apply_logged(later)
    assert result.applied, result.reason
    assert switched(state) == ["support-bot"]
    assert state.log.history.heads[Signer("operator", new.kid)] == 0
    assert state.latest_applied()["killswitch/agent/support-bot"]["signer"] == (
        f"operator key {new.kid!r}"
    )
    assert early.record is not None
    entry = state.operators[new.kid]
    assert (entry.label, entry.enrolled_at_ms, entry.enrolled_by) == (
        "alice's laptop",
        T0,
        OPERATOR.kid,
    )
    assert entry.status(T0) == "active" and entry.status(T0 - 1) == "pending"
    assert entry.key_entry() == KeyEntry(new.kid, new.public_key, T0, None)
    assert state.latest_applied()[f"control/operators/{new.kid}"]["kind"] == "operator.enroll"


def test_the_subject_is_control_operators_kid_and_control_is_a_reserved_agent_id() -> None:
    new = browser_key()
    assert subject_for("operator.enroll", enrolment(new)) == f"control/operators/{new.kid}"
    assert subject_for("operator.retire", {"kid": new.kid}) == f"control/operators/{new.kid}"
    assert {"operator.enroll", "operator.retire"} <= set(BUILTIN_KINDS)
    state = new_state()
    command = Chain(OPERATOR).sign(
        "operator.enroll", enrolment(new), subject=f"control/operators/{BOB.kid}"
    )
    result = state.apply(command, T0)
    assert not result.applied and f"has subject 'control/operators/{new.kid}'" in result.reason
    register = Chain(OPERATOR).sign(
        "agent.register", {"agent_id": "control", "keys": []}, subject="control"
    )
    result = state.apply(register, T0)
    assert not result.applied and "reserved" in result.reason


def test_every_control_state_has_the_operator_kinds() -> None:
    state = ControlState(Keyset([KeyEntry(OPERATOR.kid, OPERATOR.public_key)]))
    assert {"operator.enroll", "operator.retire"} <= set(state.kinds)
    new = browser_key()
    assert state.apply(Chain(OPERATOR).sign("operator.enroll", enrolment(new)), T0).applied
    assert list(state.operators) == [new.kid]


def test_only_a_root_key_enrols_or_retires() -> None:
    topic, root, new, other = Topic(), Chain(OPERATOR), browser_key(), browser_key()
    enrol(topic, root, new, T0)
    browser = Chain(new)
    topic.append(browser.sign("operator.enroll", enrolment(other), T0 + 1), T0 + 1)
    topic.append(browser.sign("operator.retire", {"kid": new.kid, "reason": "me"}, T0 + 2), T0 + 2)
    state = new_state()
    results = [state.apply_logged(e) for e in topic.entries]
    assert [r.applied for r in results] == [True, False, False]
    for result in results[1:]:
        assert "enrolled keys cannot enrol or retire operator keys" in result.reason
    assert list(state.operators) == [new.kid]
    assert state.operators[new.kid].retired_at_ms is None
    # the refused commands kept their places: the key's history goes on
    assert state.apply_logged(topic.append(engage(browser, T0 + 3), T0 + 3)).applied


def test_a_gate_key_cannot_enrol() -> None:
    state = new_state()
    command = Chain(GATE, issued_by="gate:w-1").sign("operator.enroll", enrolment(browser_key()))
    result = state.apply(command, T0)
    assert not result.applied and "key_id 'gate-key-1' is not an operator key" in result.reason


def test_a_root_key_retired_in_the_file_refuses_its_later_enrolments_only() -> None:
    early, late = browser_key(), browser_key()
    roots = Keyset(
        [
            KeyEntry(OPERATOR.kid, OPERATOR.public_key),
            KeyEntry(BOB.kid, BOB.public_key, retired_at_ms=T0 + 10),
        ]
    )
    topic, bob = Topic(), Chain(BOB)
    enrol(topic, bob, early, T0)
    enrol(topic, bob, late, T0 + 10)
    state = ControlState(roots, gate_keys=gate_keys())
    first, second = (state.apply_logged(e) for e in topic.entries)
    assert first.applied
    assert not second.applied and f"key_id {BOB.kid!r} is not an operator key" in second.reason
    assert state.operators.key_for(early.kid, T0 + 100) == early.public_key  # until retired


# --- retirement and expiry --------------------------------------------------------------------


def test_a_retired_key_is_refused_after_its_retirement_and_its_past_still_verifies() -> None:
    topic, root, new = Topic(), Chain(OPERATOR), browser_key()
    browser = Chain(new)
    enrol(topic, root, new, T0)
    topic.append(engage(browser, T0 + 1, "support-bot"), T0 + 1)
    topic.append(
        root.sign("operator.retire", {"kid": new.kid, "reason": "laptop lost"}, T0 + 2), T0 + 2
    )
    late = topic.append(engage(browser, T0 + 3, "billing-agent"), T0 + 3)
    state = topic.replay()
    assert switched(state) == ["support-bot"]  # the command before the retirement stands
    assert not state.problems  # the refused command breaks no history
    entry = state.operators[new.kid]
    assert (entry.retired_at_ms, entry.retired_by, entry.retire_reason) == (
        T0 + 2,
        OPERATOR.kid,
        "laptop lost",
    )
    assert entry.status(T0 + 2) == "retired" and entry.until_ms == T0 + 2
    again = new_state()
    for entry_ in topic.entries[:-1]:
        again.apply_logged(entry_)
    result = again.apply_logged(late)
    assert not result.applied
    assert "retired at 2023-11-14T22:13:20.002Z: laptop lost" in result.reason
    assert f"key_id {new.kid!r} is not an operator key valid at" in result.reason
    # a second retirement changes nothing; an enrolment again is refused for ever
    retire = root.sign("operator.retire", {"kid": new.kid, "reason": "again"}, T0 + 4)
    assert "already retired" in state.apply(retire, T0 + 4).reason
    assert state.operators[new.kid].retire_reason == "laptop lost"
    result = state.apply(root.sign("operator.enroll", enrolment(new), T0 + 5), T0 + 5)
    assert not result.applied and "a retired key stays retired" in result.reason


def test_an_enrolment_with_not_after_expires() -> None:
    topic, root, new = Topic(), Chain(OPERATOR), browser_key()
    enrol(topic, root, new, T0, not_after_ms=T0 + MINUTE)
    browser = Chain(new)
    topic.append(engage(browser, T0 + MINUTE - 1, "a-1"), T0 + MINUTE - 1)
    topic.append(engage(browser, T0 + MINUTE, "a-2"), T0 + MINUTE)
    state = new_state()
    results = [state.apply_logged(e) for e in topic.entries]
    assert [r.applied for r in results] == [True, True, False]
    assert "expired at 2023-11-14T22:14:20.000Z" in results[2].reason
    assert state.operators[new.kid].status(T0 + MINUTE) == "expired"


def test_retiring_an_unknown_or_a_root_key_is_refused() -> None:
    state, root = new_state(), Chain(OPERATOR)
    result = state.apply(root.sign("operator.retire", {"kid": "nobody", "reason": "x"}), T0)
    assert not result.applied and "no operator key 'nobody' was enrolled" in result.reason
    result = state.apply(root.sign("operator.retire", {"kid": BOB.kid, "reason": "x"}), T0)
    assert not result.applied and "retire it in the operator keyset file" in result.reason
    new = browser_key()
    assert state.apply(root.sign("operator.enroll", enrolment(new)), T0).applied
    result = state.apply(
        root.sign("operator.retire", {"kid": new.kid, "reason": " "}, T0 + 1), T0 + 1
    )
    assert not result.applied and "needs a non-empty reason" in result.reason


# --- what an enrolment must carry ------------------------------------------------------------


def test_an_enrolment_is_refused_unless_its_key_and_label_check(
    bad_payloads: list[tuple[dict[str, Any], str]],
) -> None:
    state, root = new_state(), Chain(OPERATOR)
    for payload, reason in bad_payloads:
        result = state.apply(root.sign("operator.enroll", payload), T0)
        assert not result.applied, payload
        assert reason in result.reason, (payload, result.reason)
    assert len(state.operators) == 0


@pytest.fixture
def bad_payloads() -> list[tuple[dict[str, Any], str]]:
    new = browser_key()
    raw = raw_public_key(new.public_key)
    x = b64url(raw)
    # the same bytes with the stray low bits of the last character set
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    stray = x[:-1] + alphabet[alphabet.index(x[-1]) | 1]
    if stray == x:
        stray = x[:-1] + alphabet[alphabet.index(x[-1]) ^ 1]
    small_order = bytes(32)  # the identity point's encoding is (0, 1): not prime order
    identity = bytes([1]) + bytes(31)
    return [
        ({**enrolment(new), "x": x + "="}, "base64url without padding"),
        ({**enrolment(new), "x": base64.b64encode(raw).decode()}, "base64url"),
        ({**enrolment(new), "x": x[:-1]}, "decodes to 31 bytes"),
        ({**enrolment(new), "x": x[:-2]}, "not valid base64url (41 characters)"),
        ({**enrolment(new), "x": x + "AAAA"}, "decodes to 35 bytes"),
        ({**enrolment(new), "x": stray}, "not in canonical base64url"),
        ({**enrolment(new), "x": b64url(small_order)}, "not a valid Ed25519 public key"),
        ({**enrolment(new), "x": b64url(identity)}, "not a valid Ed25519 public key"),
        ({**enrolment(new), "kid": "alice"}, "is not the RFC 7638 thumbprint of x"),
        ({**enrolment(new), "label": "  "}, "needs a label"),
        ({**enrolment(new), "label": "x" * 201}, "at most 200"),
        ({**enrolment(new), "label": "a\nb"}, "control or format characters"),
        ({**enrolment(new), "roles": ["admin"]}, "unknown members roles"),
        ({"kid": new.kid, "x": x}, "lacks label"),
        ({**enrolment(new), "not_after_ms": T0}, "must lie after the enrolment"),
        ({**enrolment(new), "not_after_ms": "soon"}, "must be an integer"),
        ({**enrolment(new), "not_after_ms": True}, "must be an integer"),
        (enrolment(OPERATOR), "is not the RFC 7638 thumbprint"),  # a root key named "ops-alice"
    ]


def test_a_root_key_or_an_enrolled_key_cannot_be_enrolled_again() -> None:
    state, root = new_state(), Chain(OPERATOR)
    # a root key under its thumbprint: the same public key
    as_thumbprint = SigningKey(OPERATOR.private_key, jwk_thumbprint(OPERATOR.public_key))
    result = state.apply(root.sign("operator.enroll", enrolment(as_thumbprint)), T0)
    assert not result.applied and "is root operator key 'ops-alice' already" in result.reason
    thumb_root = generate_signing_key()  # a root whose id is its thumbprint
    roots = Keyset(
        [
            KeyEntry(OPERATOR.kid, OPERATOR.public_key),
            KeyEntry(thumb_root.kid, thumb_root.public_key),
        ]
    )
    other = ControlState(roots)
    result = other.apply(root.sign("operator.enroll", enrolment(thumb_root)), T0)
    assert not result.applied and "is a root operator key already" in result.reason
    new = browser_key()
    assert state.apply(root.sign("operator.enroll", enrolment(new), T0 + 1), T0 + 1).applied
    result = state.apply(root.sign("operator.enroll", enrolment(new, "again"), T0 + 2), T0 + 2)
    assert not result.applied and 'is enrolled already (as "alice\'s laptop"' in result.reason


def test_parse_operator_key_and_check_label() -> None:
    new = browser_key()
    x = b64url(raw_public_key(new.public_key))
    assert raw_public_key(parse_operator_key(x, new.kid)) == raw_public_key(new.public_key)
    with pytest.raises(OperatorKeyError, match="thumbprint") as caught:
        parse_operator_key(x, "someone")
    assert caught.value.hint is not None and "SHA-256" in caught.value.hint
    with pytest.raises(OperatorKeyError, match="raw Ed25519 public key"):
        parse_operator_key(None, new.kid)
    assert check_label("  Alice (laptop) ") == "Alice (laptop)"
    with pytest.raises(OperatorKeyError, match="label"):
        check_label(None)


# --- the composite key lookup ----------------------------------------------------------------


def test_operator_keys_try_the_roots_then_the_enrolled_keys() -> None:
    roots = Keyset(
        [
            KeyEntry(OPERATOR.kid, OPERATOR.public_key),
            KeyEntry(RETIRED.kid, RETIRED.public_key, retired_at_ms=T0 - 1000),
        ]
    )
    enrolled = EnrolledOperators(roots)
    keys = OperatorKeys(roots, enrolled)
    assert keys.key_for(OPERATOR.kid, T0) == OPERATOR.public_key
    assert len(keys) == 2 and OPERATOR.kid in keys and keys.is_root(OPERATOR.kid)
    with pytest.raises(UnknownKeyError, match="no key with id 'mallory' in the keyset"):
        keys.key_for("mallory", T0)
    with pytest.raises(UnknownKeyError, match="retired or not yet valid"):
        keys.key_for(RETIRED.kid, T0)

    state = ControlState(roots)
    new = browser_key()
    assert state.apply(Chain(OPERATOR).sign("operator.enroll", enrolment(new)), T0).applied
    keys = state.verifier.keys
    assert keys.key_for(new.kid, T0) == new.public_key
    assert len(keys) == 3 and new.kid in keys and not keys.is_root(new.kid)
    with pytest.raises(UnknownKeyError, match="is enrolled only from 2023-11-14T22:13:20.000Z"):
        keys.key_for(new.kid, T0 - 1)
    signer, public = state.verifier.signer_of(new.kid, "killswitch.engage", "alice", T0)
    assert signer == Signer("operator", new.kid) and public == new.public_key
    assert OperatorKeys(roots).key_for(OPERATOR.kid, T0) == OPERATOR.public_key
    with pytest.raises(UnknownKeyError):
        OperatorKeys(roots).key_for(new.kid, T0)


def test_an_enrolled_key_issues_commands_in_process() -> None:
    state, new = new_state(), browser_key()
    assert state.apply(Chain(OPERATOR).sign("operator.enroll", enrolment(new)), T0).applied
    record, result = state.issue(
        "killswitch.engage", "killswitch/global/*", GLOBAL, new, "alice@console", T0 + 1
    )
    assert result.applied and record is not None and record["sequence"] == 0
    assert SWITCHES[state].global_ is not None


def test_replays_agree_and_the_summary_counts_enrolled_keys() -> None:
    topic, root = Topic(), Chain(OPERATOR)
    keys = [browser_key() for _ in range(3)]
    for n, key in enumerate(keys):
        enrol(topic, root, key, T0 + n, label=f"device {n}")
    topic.append(
        root.sign("operator.retire", {"kid": keys[1].kid, "reason": "replaced"}, T0 + 5), T0 + 5
    )
    one, two = topic.replay(), topic.replay()
    assert dict(one.operators) == dict(two.operators)
    assert [e.kid for e in one.operators.active(T0 + 10)] == [keys[0].kid, keys[2].kid]
    summary = one.snapshot_summary()
    assert summary["enrolled_operator_keys"] == 2 and summary["retired_operator_keys"] == 1
    assert summary["operator_keys"] == 3  # the roots
    jwk = one.operators[keys[1].kid].public_jwk()
    assert jwk["nbf"] == T0 + 1 and jwk["retired_at"] == T0 + 5 and jwk["label"] == "device 1"
    assert Keyset.from_jwks({"keys": [jwk]})[keys[1].kid].retired_at_ms == T0 + 5
