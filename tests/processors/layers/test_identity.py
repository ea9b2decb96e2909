"""Identity: the intent signing payload, and the layer that checks it."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from typing import Any

import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from processors.control import ControlState, sign_command
from processors.crypto.dsse import pae
from processors.crypto.jcs import CanonicalizationError, canonical_json
from processors.crypto.keys import (
    KeyEntry,
    Keyset,
    SigningKey,
    b64url,
    generate_signing_key,
    raw_public_key,
)
from processors.intent import Intent
from processors.layers.identity import (
    INTENT_PAYLOAD_TYPE,
    IdentityCheck,
    canonical_intent_body,
    intent_signing_body,
    intent_signing_message,
    sign_intent,
    signing_message_for,
)
from processors.verdict import GateState, Status
from streams.codec import default_codec
from tests.processors.factories import intent_record

NOW = 1_700_000_100_000
T0 = 1_700_000_000_000
DAY = 86_400_000

# --- the known-answer vector (for agents written in other languages) -----------------
# Secret key: RFC 8032 section 7.1 TEST 1 (public d75a9801...511a).
KAT_SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"  # noqa: S105 - a public test vector
KAT_PUBLIC_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
KAT_RECORD: dict[str, Any] = {
    "intent_id": "6f1c2b9e-3c1d-4e0a-9d55-2f7f0e2b8a11",
    "agent_id": "billing-agent",
    "runtime": {
        "runtime_id": "billing-agent-7f9c",
        "code_digest": "sha256:" + "ab" * 32,
        "config_digest": "sha256:" + "cd" * 32,
        "environment": "prod",
        "host": "node-7.eu-west-1",
    },
    "action": "payments.transfer",
    "resource": "accounts/4711/invoices/INV-2024-0042",
    "parameters": {
        "amount": 1250.75,
        "currency": "EUR",
        "dry_run": False,
        "priority": 3,
        "memo": 'Zahlung für Rechnung "42"\n',
        "fx_rate": 1.0,
    },
    "context": {"ticket": "FIN-8812", "user": "alice@example.com"},
    "sequence": 1042,
    "issued_at_ms": 1_700_000_000_000,
    "expires_at_ms": 1_700_000_300_000,
    "nonce": "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c",
    "key_id": "billing-agent-2024-01",
    "signature": None,
}
KAT_BODY = (
    '{"action":"payments.transfer","agent_id":"billing-agent","context":{"ticket":"FIN-8812",'
    '"user":"alice@example.com"},"expires_at_ms":1700000300000,'
    '"intent_id":"6f1c2b9e-3c1d-4e0a-9d55-2f7f0e2b8a11","issued_at_ms":1700000000000,'
    '"key_id":"billing-agent-2024-01","nonce":"9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c",'
    '"parameters":{"amount":1250.75,"currency":"EUR","dry_run":false,"fx_rate":1,'
    '"memo":"Zahlung für Rechnung \\"42\\"\\n","priority":3},'
    '"resource":"accounts/4711/invoices/INV-2024-0042","runtime":{"code_digest":"sha256:'
    + "ab" * 32
    + '","config_digest":"sha256:'
    + "cd" * 32
    + '","environment":"prod","host":"node-7.eu-west-1","runtime_id":"billing-agent-7f9c"},'
    '"sequence":1042}'
).encode()
KAT_SIGNATURE = (
    "435b1a32928208ce3816713b90a869a8b295d569828e75c161146989e0d756e7"
    "1b8158b4560e1af68a67f83047d0a40fefdbb0f325e7e4d5c5c345a3ee4c0f0e"
)


def kat_key() -> SigningKey:
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(KAT_SECRET))
    return SigningKey(private, "billing-agent-2024-01")


def test_known_answer_vector() -> None:
    key = kat_key()
    assert b64url(raw_public_key(key.public_key)) == KAT_PUBLIC_X
    assert intent_signing_body(KAT_RECORD) == KAT_BODY
    message = intent_signing_message(KAT_RECORD)
    assert message == b"DSSEv1 38 application/vnd.trustplane.intent+json %d %b" % (
        len(KAT_BODY),
        KAT_BODY,
    )
    assert sign_intent(KAT_RECORD, key)["signature"].hex() == KAT_SIGNATURE


# --- helpers: a registry with an operator and agents --------------------------------

OPERATOR = generate_signing_key("ops-1")


def register_payload(
    agent_id: str, *keys: SigningKey | dict[str, Any], **extra: Any
) -> dict[str, Any]:
    entries = [
        k if isinstance(k, dict) else {"kid": k.kid, "x": b64url(raw_public_key(k.public_key))}
        for k in keys
    ]
    return {"agent_id": agent_id, "keys": entries, **extra}


def command(state: ControlState, kind: str, payload: Mapping[str, Any], at: int = T0) -> None:
    result = state.apply(sign_command(kind, None, payload, OPERATOR, "alice", now_ms=at), at)
    assert result.applied, result.reason


def new_state() -> ControlState:
    return ControlState(Keyset([KeyEntry(OPERATOR.kid, OPERATOR.public_key)]))


def to_intent(record: Mapping[str, Any]) -> Intent:
    return Intent.from_record(record, key=str(record["agent_id"]).encode())


def avro_round_trip(record: Mapping[str, Any]) -> dict[str, Any]:
    codec = default_codec()
    return codec.decode(codec.encode("Intent", record), "Intent")


# --- the signing payload -------------------------------------------------------------


REALISTIC = [
    KAT_RECORD,
    intent_record(),
    intent_record(parameters={}, context={}),
    intent_record(
        parameters={"amount": 0.1, "n": -(2**53) + 1, "big": 2**53 - 1, "flag": True, "x": None},
        context={"ünïcödé-käy": "välue", "emoji": "🚀", "ctl": "\x00\x1f\x7f\u2028"},
    ),
    intent_record(parameters={"tiny": 1e-7, "huge": 1e21, "int_double": 10.0, "neg0": -0.0}),
    intent_record(context={"\U0001f600": 1, "\ufb01": 2, "a": 3}),  # non-BMP key ordering
    intent_record(resource="https://example.com/a?b=c&d=é", nonce="n" * 200),
]


@pytest.mark.parametrize("record", REALISTIC)
def test_record_and_intent_give_identical_bytes_after_avro(record: dict[str, Any]) -> None:
    decoded = avro_round_trip(record)
    intent = to_intent(decoded)
    assert signing_message_for(intent) == intent_signing_message(record)
    assert intent_signing_message(decoded) == intent_signing_message(record)


@pytest.mark.parametrize("record", REALISTIC)
def test_message_is_pae_over_rfc8785_of_every_field_but_signature(record: dict[str, Any]) -> None:
    body = {name: value for name, value in record.items() if name != "signature"}
    expected = pae(INTENT_PAYLOAD_TYPE, bytes(rfc8785.dumps(body)))
    assert intent_signing_message(record) == expected
    # the signature itself never changes the message
    assert intent_signing_message({**record, "signature": b"x" * 64}) == expected


def test_key_id_is_signed() -> None:
    assert intent_signing_message(intent_record(key_id="a")) != intent_signing_message(
        intent_record(key_id="b")
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"sequence": 2**53}, "exceeds safe integer"),
        ({"issued_at_ms": -(2**60)}, "exceeds safe integer"),
        ({"parameters": {"amount": math.nan}}, "not representable"),
        ({"parameters": {"amount": math.inf}}, "not representable"),
        ({"parameters": {"count": 2**63 - 1}}, "exceeds safe integer"),
        ({"context": {"bad": "\ud800"}}, "non-UTF-8"),
        ({"parameters": ["not", "a", "map"]}, "must be an object"),
    ],
)
def test_values_without_rfc8785_form_raise(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(CanonicalizationError, match=match):
        intent_signing_message(intent_record(**overrides))


def test_missing_field_raises_with_its_name() -> None:
    record = intent_record()
    del record["nonce"]
    with pytest.raises(CanonicalizationError, match="nonce"):
        intent_signing_message(record)
    record = intent_record()
    del record["runtime"]["host"]
    with pytest.raises(CanonicalizationError, match="host"):
        intent_signing_message(record)


def test_missing_context_is_the_empty_object_like_avro_v0() -> None:
    record = intent_record(context={})
    without = dict(record)
    del without["context"]
    assert intent_signing_message(without) == intent_signing_message(record)


def test_sign_intent_copies_and_sets_key_id() -> None:
    record = intent_record()
    key = generate_signing_key("k-9")
    signed = sign_intent(record, key)
    assert record["signature"] is None and record["key_id"] == "k-1"
    assert signed["key_id"] == "k-9" and len(signed["signature"]) == 64
    key.public_key.verify(signed["signature"], intent_signing_message(signed))
    signed["parameters"]["amount"] = 1
    assert record["parameters"]["amount"] == 10.5


# The fast path must be byte-identical to rfc8785 for anything, or fall back.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e-6, max_value=1e22),
    st.sampled_from([1e-4, 9.999999999999999e-05, 1e16, 1e16 - 2, 1e21, 1e-7, 0.5, -0.0, 5e-324]),
    st.sampled_from([1250.0, 2.0**53 - 1, -(2.0**53 - 1), 2.0**53, -(2.0**53), 1e15, 3.0]),
    st.integers(min_value=-(2**54), max_value=2**54).map(float),
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F)),
)
keys_ = st.one_of(st.text(), st.sampled_from(["\U0001f600", "\ufb01", "\ue000", "a", "é"]))


@settings(max_examples=600, deadline=None)
@given(
    top=st.dictionaries(st.sampled_from(["sequence", "nonce", "action"]), scalars),
    params=st.dictionaries(keys_, scalars, max_size=6),
    context=st.dictionaries(keys_, scalars, max_size=4),
)
def test_fast_canonical_path_equals_rfc8785(
    top: dict[str, Any], params: dict[str, Any], context: dict[str, Any]
) -> None:
    body = {**top, "parameters": params, "context": context}
    try:
        expected: bytes | None = bytes(rfc8785.dumps(body))
    except rfc8785.CanonicalizationError:
        expected = None
    if expected is None:
        with pytest.raises(CanonicalizationError):
            canonical_intent_body(body)
    else:
        assert canonical_intent_body(body) == expected


# --- the layer: a table of decisions -------------------------------------------------

AGENT_KEY = generate_signing_key("billing-2024")
SECOND_KEY = generate_signing_key("billing-2025")
OTHER_AGENT_KEY = generate_signing_key("billing-2024")  # same kid, another agent's key


def registry() -> ControlState:
    state = new_state()
    command(
        state,
        "agent.register",
        register_payload(
            "billing-agent",
            AGENT_KEY,
            SECOND_KEY,
            {
                "kid": "old",
                "x": b64url(raw_public_key(generate_signing_key().public_key)),
                "not_after_ms": NOW - DAY,
            },
            {
                "kid": "future",
                "x": b64url(raw_public_key(generate_signing_key().public_key)),
                "not_before_ms": NOW + DAY,
            },
            {
                "kid": "leaked",
                "x": b64url(raw_public_key(generate_signing_key().public_key)),
            },
        ),
    )
    command(state, "agent.register", register_payload("support-bot", OTHER_AGENT_KEY))
    command(state, "agent.register", register_payload("fired-bot", generate_signing_key("f")))
    command(state, "agent.revoke", {"agent_id": "fired-bot", "reason": "decommissioned"})
    command(state, "key.revoke", {"agent_id": "billing-agent", "kid": "leaked"})
    return state


def signed(key: SigningKey = AGENT_KEY, **overrides: Any) -> dict[str, Any]:
    return sign_intent(intent_record(**overrides), key)


def raw_sig(record: dict[str, Any], signature: bytes | None) -> dict[str, Any]:
    return {**record, "signature": signature}


def tampered(**changes: Any) -> dict[str, Any]:
    record = signed()
    record.update(changes)
    return record


CASES: list[tuple[str, dict[str, Any], Status, str]] = [
    ("valid signature", signed(), Status.ALLOW, "signed by key 'billing-2024'"),
    ("second key", signed(SECOND_KEY), Status.ALLOW, "signed by key 'billing-2025'"),
    (
        "unknown agent",
        signed(agent_id="shadow-agent"),
        Status.DENY,
        "agent 'shadow-agent' is not registered",
    ),
    (
        "revoked agent",
        signed(generate_signing_key("f"), agent_id="fired-bot"),
        Status.DENY,
        "was revoked at 2023-11-14T22:13:20.000Z: decommissioned",
    ),
    (
        "unknown key id",
        signed(generate_signing_key("nope")),
        Status.DENY,
        "key 'nope' is not a registered key of agent 'billing-agent'",
    ),
    (
        "revoked key",
        signed(generate_signing_key("leaked")),
        Status.DENY,
        "key 'leaked' of agent 'billing-agent' was revoked",
    ),
    ("expired key", signed(generate_signing_key("old")), Status.DENY, "key 'old' expired at"),
    (
        "not yet valid key",
        signed(generate_signing_key("future")),
        Status.DENY,
        "key 'future' is not valid before",
    ),
    ("missing signature", raw_sig(signed(), None), Status.DENY, "the intent is not signed"),
    ("empty signature", raw_sig(signed(), b""), Status.DENY, "the intent is not signed"),
    ("63 bytes", raw_sig(signed(), b"\x01" * 63), Status.DENY, "is 63 bytes"),
    ("65 bytes", raw_sig(signed(), signed()["signature"] + b"\0"), Status.DENY, "is 65 bytes"),
    (
        "base64 text instead of raw bytes",
        raw_sig(signed(), base64.b64encode(signed()["signature"])),
        Status.DENY,
        "is 88 bytes",
    ),
    ("garbled", raw_sig(signed(), bytes(range(64))), Status.DENY, "does not verify"),
    (
        "flipped bit",
        raw_sig(signed(), bytes([signed()["signature"][0] ^ 1]) + signed()["signature"][1:]),
        Status.DENY,
        "does not verify",
    ),
    ("action changed after signing", tampered(action="db.drop"), Status.DENY, "does not verify"),
    (
        "amount changed after signing",
        tampered(parameters={"amount": 10_000.5, "currency": "EUR"}),
        Status.DENY,
        "does not verify",
    ),
    (
        "environment changed after signing",
        tampered(runtime={**intent_record()["runtime"], "environment": "dev"}),
        Status.DENY,
        "does not verify",
    ),
    (
        "key id swapped to another key of the agent",
        tampered(key_id="billing-2025"),
        Status.DENY,
        "does not verify",
    ),
    (
        "signed by another agent's key with the same kid",
        signed(OTHER_AGENT_KEY),
        Status.DENY,
        "does not verify",
    ),
    (
        "no canonical form",
        raw_sig(intent_record(key_id="billing-2024", sequence=2**60), b"\x01" * 64),
        Status.DENY,
        "no canonical signing payload",
    ),
]


@pytest.mark.parametrize(
    ("record", "status", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_identity_decisions(record: dict[str, Any], status: Status, reason: str) -> None:
    verdict = IdentityCheck(registry()).evaluate(to_intent(record), GateState(now_ms=NOW))
    assert verdict.layer == "identity"
    assert verdict.status is status, verdict.reasons
    assert reason in "; ".join(verdict.reasons)
    assert verdict.evidence["kid"] == record["key_id"]


def test_decision_after_avro_round_trip() -> None:
    record = avro_round_trip(signed())
    verdict = IdentityCheck(registry()).evaluate(to_intent(record), GateState(now_ms=NOW))
    assert verdict.status is Status.ALLOW


def test_empty_registry_denies_everything() -> None:
    check = IdentityCheck(new_state())
    for record in (signed(), signed(agent_id="x"), raw_sig(signed(), None)):
        verdict = check.evaluate(to_intent(record), GateState(now_ms=NOW))
        assert verdict.status is Status.DENY
        assert "is not registered" in verdict.reasons[0]


def test_registry_changes_apply_to_the_next_intent() -> None:
    state = registry()
    check = IdentityCheck(state)
    intent = to_intent(signed())
    assert check.evaluate(intent, GateState(now_ms=NOW)).status is Status.ALLOW
    command(state, "key.revoke", {"agent_id": "billing-agent", "kid": "billing-2024"}, NOW)
    verdict = check.evaluate(intent, GateState(now_ms=NOW))
    assert verdict.status is Status.DENY and "revoked" in verdict.reasons[0]


def test_key_window_edges() -> None:
    """not_before inclusive, not_after exclusive, at the gate's clock."""
    key = generate_signing_key("edge")
    state = new_state()
    payload = register_payload("billing-agent", key)
    payload["keys"][0].update(not_before_ms=NOW, not_after_ms=NOW + 10)
    command(state, "agent.register", payload)
    intent = to_intent(signed(key))
    check = IdentityCheck(state)
    assert check.evaluate(intent, GateState(now_ms=NOW - 1)).status is Status.DENY
    assert check.evaluate(intent, GateState(now_ms=NOW)).status is Status.ALLOW
    assert check.evaluate(intent, GateState(now_ms=NOW + 9)).status is Status.ALLOW
    assert check.evaluate(intent, GateState(now_ms=NOW + 10)).status is Status.DENY


# --- property: allowed exactly when an independent oracle says the signature is good --

POOL = [generate_signing_key(f"k{i}") for i in range(3)] + [generate_signing_key("k0")]
WINDOWS = [(None, None), (NOW - DAY, NOW + DAY), (None, NOW - 1), (NOW + 1, None), (None, NOW)]


def oracle_allows(
    record: Mapping[str, Any], keys: Mapping[str, tuple[Any, int | None, int | None, bool]]
) -> bool:
    """Independent of processors.layers.identity: JCS via rfc8785, PAE by hand, cryptography."""
    if record["agent_id"] != "billing-agent" or record["key_id"] not in keys:
        return False
    public, not_before, not_after, revoked = keys[record["key_id"]]
    if revoked or (not_before is not None and NOW < not_before):
        return False
    if not_after is not None and NOW >= not_after:
        return False
    signature = record["signature"]
    if not isinstance(signature, bytes) or len(signature) != 64:
        return False
    fields = {k: v for k, v in record.items() if k != "signature"}
    try:
        body = bytes(rfc8785.dumps(fields))
    except rfc8785.CanonicalizationError:
        return False
    type_ = b"application/vnd.trustplane.intent+json"
    message = b"DSSEv1 " + str(len(type_)).encode() + b" " + type_ + b" "
    message += str(len(body)).encode() + b" " + body
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True


param_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
intents = st.fixed_dictionaries(
    {
        "intent_id": st.uuids().map(str),
        "action": st.sampled_from(["payments.transfer", "invoices.read", "db.delete"]),
        "resource": st.text(min_size=1, max_size=30).filter(str.strip),
        "parameters": st.dictionaries(st.text(max_size=8), param_values, max_size=4),
        "context": st.dictionaries(st.text(max_size=8), param_values, max_size=3),
        "sequence": st.integers(min_value=0, max_value=2**53 - 1),
        "nonce": st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    }
)
mutations = st.just("none") | st.sampled_from(
    [
        "action",
        "parameter",
        "environment",
        "key_id",
        "signature_bit",
        "signature_none",
        "signature_short",
        "agent",
        "sequence",
    ]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fields=intents,
    # an index into the registered keys (mostly), or into the pool (3: an impostor "k0")
    signer=st.integers(min_value=0, max_value=2) | st.integers(min_value=0, max_value=3),
    registered=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2),
            st.integers(min_value=0, max_value=1) | st.integers(min_value=0, max_value=4),
            st.sampled_from([False, False, True]),  # revoked afterwards
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda t: t[0],
    ),
    mutation=mutations,
)
def test_allowed_only_if_the_oracle_verifies(
    fields: dict[str, Any],
    signer: int,
    registered: list[tuple[int, int, bool]],
    mutation: str,
) -> None:
    state = new_state()
    keys: dict[str, tuple[Any, int | None, int | None, bool]] = {}
    if registered:
        entries = []
        for index, window, _ in registered:
            key = POOL[index]
            entry: dict[str, Any] = {"kid": key.kid, "x": b64url(raw_public_key(key.public_key))}
            not_before, not_after = WINDOWS[window]
            entry.update(
                {k: v for k, v in (("not_before_ms", not_before), ("not_after_ms", not_after)) if v}
            )
            entries.append(entry)
            keys[key.kid] = (key.public_key, not_before, not_after, False)
        command(state, "agent.register", {"agent_id": "billing-agent", "keys": entries})
        for index, _, revoke in registered:
            if revoke:
                kid = POOL[index].kid
                command(state, "key.revoke", {"agent_id": "billing-agent", "kid": kid})
                keys[kid] = (*keys[kid][:3], True)
    signer = registered[signer][0] if signer < len(registered) else signer
    record = sign_intent(intent_record(**fields), POOL[signer])
    if mutation == "action":
        record["action"] = record["action"] + ".x"
    elif mutation == "parameter":
        record["parameters"] = {**record["parameters"], "injected": "1"}
    elif mutation == "environment":
        record["runtime"] = {**record["runtime"], "environment": "dev"}
    elif mutation == "key_id":
        record["key_id"] = POOL[(signer + 1) % 3].kid
    elif mutation == "signature_bit":
        record["signature"] = bytes([record["signature"][0] ^ 0x80]) + record["signature"][1:]
    elif mutation == "signature_none":
        record["signature"] = None
    elif mutation == "signature_short":
        record["signature"] = record["signature"][:32]
    elif mutation == "agent":
        record["agent_id"] = "support-bot"
    elif mutation == "sequence":
        record["sequence"] += 1
    verdict = IdentityCheck(state).evaluate(to_intent(record), GateState(now_ms=NOW))
    expected = oracle_allows(record, keys)
    event(f"{mutation}: {'allow' if expected else 'deny'}")
    assert (verdict.status is Status.ALLOW) == expected, (mutation, verdict.reasons)
    assert verdict.status in (Status.ALLOW, Status.DENY)


def test_canonical_json_and_fast_path_agree_on_the_kat_body() -> None:
    body = json.loads(KAT_BODY)
    assert canonical_json(body) == canonical_intent_body(body) == KAT_BODY
