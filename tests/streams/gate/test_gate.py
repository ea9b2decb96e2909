"""The gate (streams/gate/gate.py) without Kafka: one record in, its outcome and lineage out."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.approval import ApprovalSigner, KeyringEntry, SigningKeyring, verify_approval
from processors.crypto.keys import Keyset, generate_signing_key
from processors.intent import Intent
from processors.log.attest import LineageSignatureError, verify_event_signature
from processors.pipeline import Pipeline
from processors.records import SourcePosition
from processors.verdict import GateState, Verdict
from streams.codec import MAGIC, Codec, EncodeError, default_codec
from streams.config import Settings
from streams.gate.gate import Gate, Output
from streams.gate.wiring import build_gate
from tests.processors.allowlist_layer import AllowList, AllowListAuthorization
from tests.processors.factories import DIGEST, intent_record

NOW_MS = 1_700_000_010_000
KEYRING = SigningKeyring([KeyringEntry(generate_signing_key(), 0, None)])
SIGNER = ApprovalSigner(KEYRING)
"""Ten seconds after the factory intent was issued, well before it expires."""
SOURCE = SourcePosition("intents", 3, 41)
OUTCOME_TOPICS = frozenset({"approved", "denied", "review", "rejected"})
ALLOWLIST = {
    "agents": {
        "billing-agent": ["payments.transfer", "invoices.read"],
        "support-bot": ["email.send", "tickets.*"],
    }
}
TIMESTAMP_FIELDS = frozenset(
    {"issued_at_ms", "expires_at_ms", "decided_at_ms", "rejected_at_ms", "occurred_at_ms"}
    | {"signature"}  # a lineage signature covers occurred_at_ms
)

CODEC = default_codec()


def make_gate(
    *extra_layers: Any,
    clock: Callable[[], int] = lambda: NOW_MS,
    codec: Codec | None = None,
    allowlist: Mapping[str, Any] = ALLOWLIST,
) -> Gate:
    layers = [AllowListAuthorization(AllowList.from_mapping(dict(allowlist))), *extra_layers]
    return Gate(
        Pipeline(layers),
        codec or CODEC,
        worker="w1",
        max_intent_bytes=256 * 1024,
        clock=clock,
        signer=SIGNER,
    )


def encode_intent(**overrides: Any) -> bytes:
    return CODEC.encode("Intent", intent_record(**overrides))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def outcomes(outputs: list[Output]) -> list[Output]:
    return [o for o in outputs if o.topic in OUTCOME_TOPICS]


def lineage(outputs: list[Output]) -> list[dict[str, Any]]:
    return [CODEC.decode(o.value, "LineageEvent") for o in outputs if o.topic == "lineage"]


def only_outcome(outputs: list[Output]) -> Output:
    found = outcomes(outputs)
    assert len(found) == 1, [o.topic for o in outputs]
    assert {o.topic for o in outputs} <= OUTCOME_TOPICS | {"lineage"}
    return found[0]


# --- approved ---------------------------------------------------------------------


def test_allowed_intent_is_approved_with_an_in_toto_statement() -> None:
    value = encode_intent()
    outputs = make_gate().process(b"billing-agent", value, SOURCE)

    outcome = only_outcome(outputs)
    assert outcome.topic == "approved"
    assert outcome.key == b"billing-agent"
    approval = CODEC.decode(outcome.value, "Approval")
    assert approval["intent_id"] == "intent-1"
    assert approval["agent_id"] == "billing-agent"
    assert approval["action"] == "payments.transfer"
    assert approval["resource"] == "acct:42"
    assert approval["intent_digest"] == sha256(value)
    assert approval["worker"] == "w1"
    assert approval["issued_at_ms"] == NOW_MS
    assert NOW_MS < approval["expires_at_ms"] <= 1_700_000_300_000
    assert [(v["layer"], v["status"]) for v in approval["verdicts"]] == [("authorization", "ALLOW")]

    envelope = json.loads(approval["envelope"])
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert [s["keyid"] for s in envelope["signatures"]] == [KEYRING.signing_key(NOW_MS).kid]
    verified = verify_approval(envelope, KEYRING.public_keyset(), NOW_MS, intent=value)
    assert verified.intent_id == "intent-1"
    assert approval["intent"] == value, "the approval carries the exact intent bytes"
    statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    (subject,) = statement["subject"]
    assert subject["name"] == "intent:intent-1"
    assert subject["digest"] == {"sha256": hashlib.sha256(value).hexdigest()}
    assert "sha256:" + subject["digest"]["sha256"] == approval["intent_digest"]
    assert statement["predicate"]["approvalId"] == approval["approval_id"]
    assert statement["predicate"]["agentId"] == "billing-agent"


def test_approved_intent_has_one_signed_lineage_event_with_every_verdict() -> None:
    value = encode_intent()
    outputs = make_gate().process(b"billing-agent", value, SOURCE)

    assert all(o.key == b"billing-agent" for o in outputs)
    (event,) = lineage(outputs)
    assert (event["stage"], event["event_type"], event["status"]) == (
        "enforcement",
        "intent.approved",
        "approved",
    )
    assert event["intent_id"] == "intent-1"
    assert event["agent_id"] == "billing-agent"
    assert event["worker"] == "w1"
    assert event["occurred_at_ms"] == NOW_MS
    assert event["attributes"]["source"] == "intents/3@41"
    assert event["attributes"]["intent_digest"] == sha256(value)
    assert event["attributes"]["topic"] == "approved"
    assert [(v["layer"], v["status"]) for v in event["verdicts"]] == [("authorization", "ALLOW")]
    # signed by the gate's approval key, and the approval names this event
    assert event["signer"] == KEYRING.signing_key(NOW_MS).kid
    assert verify_event_signature(event, KEYRING.public_keyset()) == event["signer"]
    approval = CODEC.decode(only_outcome(outputs).value, "Approval")
    statement = json.loads(base64.b64decode(json.loads(approval["envelope"])["payload"]))
    assert statement["predicate"]["lineage"]["eventId"] == event["event_id"]


def test_a_lineage_event_changed_after_signing_does_not_verify() -> None:
    (event,) = lineage(make_gate().process(b"billing-agent", encode_intent(), SOURCE))
    forged = {**event, "status": "denied"}
    with pytest.raises(LineageSignatureError):
        verify_event_signature(forged, KEYRING.public_keyset())


def test_a_replayed_intent_gets_a_lineage_event_of_its_own() -> None:
    gate = make_gate()
    value = encode_intent()
    (first,) = lineage(gate.process(b"billing-agent", value, SOURCE))
    (again,) = lineage(gate.process(b"billing-agent", value, SourcePosition("intents", 3, 99)))
    assert first["event_id"] != again["event_id"]


# --- denied / review --------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "action", "reason"),
    [
        ("billing-agent", "payments.refund", "may not take action 'payments.refund'"),
        ("ghost-agent", "payments.transfer", "agent 'ghost-agent' is not registered"),
    ],
)
def test_intent_outside_the_allow_list_is_denied_with_the_reason(
    agent: str, action: str, reason: str
) -> None:
    value = encode_intent(agent_id=agent, action=action)
    outputs = make_gate().process(agent.encode(), value, SOURCE)

    outcome = only_outcome(outputs)
    assert outcome.topic == "denied"
    assert outcome.key == agent.encode()
    decision = CODEC.decode(outcome.value, "Decision")
    assert decision["outcome"] == "DENIED"
    assert decision["intent_id"] == "intent-1"
    assert decision["intent_digest"] == sha256(value)
    assert len(decision["reasons"]) == 1
    assert decision["reasons"][0].startswith("authorization: ")
    assert reason in decision["reasons"][0]
    (event,) = lineage(outputs)
    assert (event["stage"], event["status"]) == ("enforcement", "denied")
    assert [(v["layer"], v["status"]) for v in event["verdicts"]] == [("authorization", "DENY")]
    assert event["reasons"] == decision["reasons"]
    assert all(o.key == agent.encode() for o in outputs)


class _ReviewLayer:
    name = "risk"

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        return Verdict.review(self.name, "amount needs a person")


def test_review_verdict_holds_the_intent_for_review() -> None:
    outputs = make_gate(_ReviewLayer()).process(b"billing-agent", encode_intent(), SOURCE)

    outcome = only_outcome(outputs)
    assert outcome.topic == "review"
    decision = CODEC.decode(outcome.value, "Decision")
    assert decision["outcome"] == "REVIEW"
    assert decision["reasons"] == ["risk: amount needs a person"]


# --- rejected ---------------------------------------------------------------------


def _outcome_record_bytes() -> bytes:
    return CODEC.encode(
        "Outcome",
        {
            "outcome_id": "o-1",
            "approval_id": "a-1",
            "intent_id": "intent-1",
            "agent_id": "billing-agent",
            "executor_id": "exec-1",
            "status": "EXECUTED",
            "detail": "",
            "reported_at_ms": NOW_MS,
        },
    )


BAD_INPUTS: dict[str, tuple[bytes | None, bytes | None, str]] = {
    "random bytes": (b"billing-agent", b"\x00\x01garbage that is not avro", "not_avro"),
    "empty value": (b"billing-agent", b"", "empty"),
    "no value": (b"billing-agent", None, "empty"),
    "truncated body": (b"billing-agent", encode_intent()[:-3], "truncated"),
    "trailing bytes": (b"billing-agent", encode_intent() + b"\x00", "truncated"),
    "header only": (b"billing-agent", MAGIC + b"\x01\x02", "truncated"),
    "unknown schema": (b"billing-agent", MAGIC + b"\xff" * 8 + b"\x00", "unknown_schema"),
    "an Outcome record": (b"billing-agent", _outcome_record_bytes(), "wrong_record_type"),
    "5 MiB value": (b"billing-agent", MAGIC + b"\x00" * (5 * 1024 * 1024), "too_large"),
    "key None": (None, encode_intent(), "missing_key"),
    "empty key": (b"", encode_intent(), "missing_key"),
    "key is another agent": (b"support-bot", encode_intent(), "key_mismatch"),
    "malformed digest": (
        b"billing-agent",
        encode_intent(
            runtime={**intent_record()["runtime"], "code_digest": "sha256:NOT-HEX"},
        ),
        "invalid_field",
    ),
    "NaN amount": (
        b"billing-agent",
        encode_intent(parameters={"amount": math.nan, "currency": "EUR"}),
        "invalid_field",
    ),
    "infinite context value": (
        b"billing-agent",
        encode_intent(context={"score": math.inf}),
        "invalid_field",
    ),
    "blank agent id": (b" ", encode_intent(agent_id=" "), "invalid_field"),
    "negative sequence": (b"billing-agent", encode_intent(sequence=-1), "invalid_field"),
    "expires before issued": (
        b"billing-agent",
        encode_intent(expires_at_ms=1_700_000_000_000),
        "invalid_field",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_rejected_once_with_its_reason_code(case: str) -> None:
    key, value, code = BAD_INPUTS[case]
    gate = make_gate()
    outputs = gate.process(key, value, SOURCE)

    outcome = only_outcome(outputs)
    assert outcome.topic == "rejected"
    rejection = CODEC.decode(outcome.value, "Rejection")
    assert rejection["reason_code"] == code
    assert rejection["reason"]
    raw = value or b""
    assert rejection["source_topic"] == "intents"
    assert rejection["source_partition"] == 3
    assert rejection["source_offset"] == 41
    assert rejection["value_sha256"] == sha256(raw)
    assert rejection["value_prefix"] == raw[:64]
    assert len(rejection["value_prefix"]) <= 64
    assert rejection["value_size"] == len(raw)
    assert rejection["worker"] == "w1"
    assert rejection["rejected_at_ms"] == NOW_MS
    if key:
        assert rejection["key"] == key
    else:
        assert rejection["key"] in (None, b"")

    (event,) = lineage(outputs)
    assert len(outputs) == 2
    assert (event["stage"], event["event_type"], event["status"]) == (
        "decode",
        "input.rejected",
        code,
    )
    assert event["attributes"]["source"] == "intents/3@41"
    assert event["attributes"]["value_sha256"] == sha256(raw)
    assert event["reasons"] == [rejection["reason"]]
    # Rejections stay with the input's key (no key when it had none).
    assert {o.key for o in outputs} == {key or None}
    assert gate.metrics.registry.get_sample_value(
        "trustplane_rejections_total", {"reason_code": code}
    ) == (1.0)


def test_long_key_is_cut_to_256_bytes_in_the_rejection() -> None:
    key = b"k" * 1000
    outputs = make_gate().process(key, b"not avro", SOURCE)
    rejection = CODEC.decode(only_outcome(outputs).value, "Rejection")
    assert rejection["key"] == key[:256]


# --- regressions: bugs found and fixed ----------------------------------------------


def test_key_that_is_not_the_agent_id_bytes_is_a_mismatch() -> None:
    gate = make_gate(allowlist={"agents": {"\ufffd": ["*"]}})
    outputs = gate.process(b"\xff", encode_intent(agent_id="\ufffd"), SOURCE)
    outcome = only_outcome(outputs)
    assert outcome.topic == "rejected"


def test_expired_intent_is_denied_by_the_shipped_chain(tmp_path) -> None:
    parts = build_gate(
        Settings(state_dir=tmp_path, worker_id="w1"), keyring=KEYRING, operator_keys=Keyset()
    )
    gate = parts.gate
    gate.clock = lambda: 1_700_000_300_001  # 1 ms after the intent expired
    outcome = only_outcome(gate.process(b"billing-agent", encode_intent(), SOURCE))
    assert outcome.topic == "denied"
    assert "freshness: expired 1 ms ago" in CODEC.decode(outcome.value)["reasons"][0]


# --- exactly-once support: deterministic ids ---------------------------------------


def _without_timestamps(record: dict[str, Any]) -> dict[str, Any]:
    """The record minus what may differ between two runs: the clock and layer timings."""
    out = {k: v for k, v in record.items() if k not in TIMESTAMP_FIELDS}
    if "verdicts" in out:
        out["verdicts"] = [{**v, "duration_us": 0} for v in out["verdicts"]]
    if "attributes" in out:
        out["attributes"] = {k: v for k, v in out["attributes"].items() if k != "duration_us"}
    if "envelope" in out:
        envelope = json.loads(out["envelope"])
        statement = json.loads(base64.b64decode(envelope.pop("payload")))
        envelope.pop("signatures")  # over the times, so they differ too
        for name in ("issuedAtMs", "expiresAtMs", "issuedAt", "expiresAt"):
            statement["predicate"].pop(name)
        out["envelope"] = (envelope, statement)
    return out


def _decoded(outputs: list[Output]) -> list[tuple[str, bytes | None, dict[str, Any]]]:
    return [(o.topic, o.key, CODEC.decode(o.value)) for o in outputs]


REPLAY_INPUTS = {
    "approved": (b"billing-agent", encode_intent()),
    "denied": (b"billing-agent", encode_intent(action="payments.refund")),
    "rejected": (b"billing-agent", b"definitely not avro"),
    "invalid": (b"billing-agent", encode_intent(sequence=-5)),
}


@pytest.mark.parametrize("case", list(REPLAY_INPUTS))
def test_redelivered_input_yields_the_same_records_and_ids(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, value = REPLAY_INPUTS[case]
    first = make_gate(clock=lambda: NOW_MS).process(key, value, SOURCE)
    second = make_gate(clock=lambda: NOW_MS + 1234).process(key, value, SOURCE)

    assert [(o.topic, o.key) for o in first] == [(o.topic, o.key) for o in second]
    a, b = _decoded(first), _decoded(second)
    for (_, _, one), (_, _, two) in zip(a, b, strict=True):
        assert _without_timestamps(one) == _without_timestamps(two)
    ids = ("approval_id", "decision_id", "rejection_id", "event_id")
    first_ids = [r.get(name) for _, _, r in a for name in ids]
    assert first_ids == [r.get(name) for _, _, r in b for name in ids]
    assert any(i is not None for i in first_ids)

    # With the same clock and layer timings the records are byte for byte the same.
    monkeypatch.setattr("processors.pipeline._elapsed_us", lambda started_ns: 0)
    gate = make_gate()
    assert gate.process(key, value, SOURCE) == gate.process(key, value, SOURCE)


def test_same_bad_bytes_at_two_offsets_are_two_rejections() -> None:
    gate = make_gate()
    one = gate.process(b"a", b"junk", SourcePosition("intents", 0, 1))
    two = gate.process(b"a", b"junk", SourcePosition("intents", 0, 2))
    ids_one = {r.get("rejection_id") or r["event_id"] for _, _, r in _decoded(one)}
    ids_two = {r.get("rejection_id") or r["event_id"] for _, _, r in _decoded(two)}
    assert ids_one.isdisjoint(ids_two)


def test_two_different_intents_get_different_ids() -> None:
    gate = make_gate()
    one = _decoded(gate.process(b"billing-agent", encode_intent(), SOURCE))
    two = _decoded(
        gate.process(
            b"billing-agent", encode_intent(intent_id="intent-2"), SourcePosition("intents", 3, 42)
        )
    )
    assert one[0][2]["approval_id"] != two[0][2]["approval_id"]
    assert {r["event_id"] for _, _, r in one[1:]}.isdisjoint(r["event_id"] for _, _, r in two[1:])


# --- failing closed ---------------------------------------------------------------


class _ExplodingLayer:
    name = "exploding"

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        raise RuntimeError("kaboom")


def test_layer_that_raises_denies_with_the_exception_as_reason() -> None:
    gate = make_gate(_ExplodingLayer())
    outputs = gate.process(b"billing-agent", encode_intent(), SOURCE)

    outcome = only_outcome(outputs)
    assert outcome.topic == "denied"
    decision = CODEC.decode(outcome.value, "Decision")
    assert decision["outcome"] == "DENIED"
    assert any("RuntimeError: kaboom" in r for r in decision["reasons"])
    assert [(v["layer"], v["status"]) for v in decision["verdicts"]] == [
        ("authorization", "ALLOW"),
        ("exploding", "ERROR"),
    ]
    assert gate.metrics.registry.get_sample_value(
        "trustplane_intents_total", {"outcome": "approved"}
    ) in (None, 0.0)


class _ApprovalFailingCodec(Codec):
    """The real codec, except that it cannot encode an Approval."""

    def encode(self, name: str, record: Mapping[str, Any], *, check: bool = True) -> bytes:
        if name == "Approval":
            raise EncodeError("cannot encode Approval: disk on fire", record=name, field="")
        return super().encode(name, record, check=check)


def test_approval_that_cannot_be_encoded_is_denied_not_dropped() -> None:
    gate = make_gate(codec=_ApprovalFailingCodec(CODEC.registry))
    value = encode_intent()
    outputs = gate.process(b"billing-agent", value, SOURCE)

    outcome = only_outcome(outputs)
    assert outcome.topic == "denied"
    assert outcome.key == b"billing-agent"
    decision = CODEC.decode(outcome.value, "Decision")
    assert decision["outcome"] == "DENIED"
    assert decision["intent_digest"] == sha256(value)
    (reason,) = decision["reasons"]
    assert reason.startswith("internal error: ")
    assert "disk on fire" in reason
    assert "fail closed" in reason
    (event,) = lineage(outputs)
    assert (event["stage"], event["status"]) == ("enforcement", "denied")
    assert event["signature"]
    registry = gate.metrics.registry
    assert registry.get_sample_value("trustplane_intents_total", {"outcome": "denied"}) == 1.0
    assert registry.get_sample_value("trustplane_intents_total", {"outcome": "approved"}) in (
        None,
        0.0,
    )


# --- properties -------------------------------------------------------------------

_INTENT_HEADER = MAGIC + CODEC.registry.fingerprint("Intent")
_any_value = st.one_of(
    st.none(),
    st.binary(max_size=512),
    # Past the marker and fingerprint checks, into the Avro body reader and validation.
    st.binary(max_size=256).map(lambda body: _INTENT_HEADER + body),
    st.binary(max_size=64).map(lambda body: MAGIC + body),
)


@settings(max_examples=200, deadline=None)
@given(key=st.one_of(st.none(), st.binary(max_size=64)), value=_any_value)
def test_arbitrary_input_never_raises_and_is_never_approved(
    key: bytes | None, value: bytes | None
) -> None:
    gate = make_gate()
    outputs = gate.process(key, value, SOURCE)

    outcome = only_outcome(outputs)
    assert outcome.topic != "approved"
    assert outcome.topic in {"denied", "review", "rejected"}
    CODEC.decode(outcome.value)
    assert all(o.topic == "lineage" for o in outputs if o is not outcome)
    assert lineage(outputs)


_ALLOWED = {
    ("billing-agent", "payments.transfer"),
    ("billing-agent", "invoices.read"),
    ("support-bot", "email.send"),
}
_identifier = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20
).filter(str.strip)


def _expected_allowed(agent: str, action: str) -> bool:
    return (agent, action) in _ALLOWED or (agent == "support-bot" and action.startswith("tickets."))


@settings(max_examples=200, deadline=None)
@given(
    agent=st.one_of(
        st.sampled_from(["billing-agent", "support-bot", "deploy-bot", "Billing-Agent"]),
        _identifier,
    ),
    action=st.one_of(
        st.sampled_from(
            [
                "payments.transfer",
                "invoices.read",
                "email.send",
                "tickets.close",
                "tickets.",
                "tickets",
                "payments.refund",
                "PAYMENTS.TRANSFER",
                "email.send.all",
            ]
        ),
        _identifier.map(lambda suffix: "tickets." + suffix),
        _identifier,
    ),
    sequence=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_valid_intent_is_approved_iff_the_allow_list_allows_it(
    agent: str, action: str, sequence: int
) -> None:
    value = encode_intent(agent_id=agent, action=action, sequence=sequence)
    outputs = make_gate().process(agent.encode(), value, SOURCE)

    outcome = only_outcome(outputs)
    assert outcome.key == agent.encode()
    if _expected_allowed(agent, action):
        assert outcome.topic == "approved"
        assert CODEC.decode(outcome.value, "Approval")["action"] == action
    else:
        assert outcome.topic == "denied"
        decision = CODEC.decode(outcome.value, "Decision")
        assert decision["outcome"] == "DENIED"
        assert decision["reasons"][0].startswith("authorization: ")


_text = st.text(max_size=40)
_ident = st.one_of(st.just("id-1"), _text)
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
)
_long = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_digest = st.one_of(st.just(DIGEST), _text)
_arbitrary_intent = st.fixed_dictionaries(
    {
        "intent_id": _ident,
        "agent_id": st.one_of(st.sampled_from(["billing-agent", "support-bot"]), _text),
        "runtime": st.fixed_dictionaries(
            {
                "runtime_id": _ident,
                "code_digest": _digest,
                "config_digest": _digest,
                "environment": _ident,
                "host": _text,
            }
        ),
        "action": st.one_of(st.sampled_from(["payments.transfer", "email.send"]), _text),
        "resource": _ident,
        "parameters": st.dictionaries(_text, _scalar, max_size=4),
        "context": st.dictionaries(_text, _scalar, max_size=4),
        "sequence": st.one_of(st.just(1), _long),
        "issued_at_ms": st.one_of(st.just(1_700_000_000_000), _long),
        "expires_at_ms": st.one_of(st.just(1_700_000_300_000), _long),
        "nonce": _ident,
        "key_id": _text,
        "signature": st.one_of(st.none(), st.binary(max_size=16)),
    }
)


@settings(max_examples=200, deadline=None)
@given(record=_arbitrary_intent, key_choice=st.one_of(st.none(), st.binary(max_size=16)))
def test_arbitrary_well_formed_intent_records_never_raise(
    record: dict[str, Any], key_choice: bytes | None
) -> None:
    """Any Intent the schema can carry gets exactly one outcome, approved only when valid."""
    key = record["agent_id"].encode() if key_choice is None else key_choice
    value = CODEC.encode("Intent", record)
    outputs = make_gate().process(key, value, SOURCE)

    outcome = only_outcome(outputs)
    decoded = CODEC.decode(outcome.value)
    assert lineage(outputs)
    if outcome.topic == "rejected":
        assert decoded["reason_code"] in {"missing_key", "key_mismatch", "invalid_field"}
        return
    # Decided intents are valid: keyed by their agent, finite numbers, ordered times.
    assert key == record["agent_id"].encode()
    assert outcome.key == key
    assert record["sequence"] >= 0
    assert record["expires_at_ms"] > record["issued_at_ms"]
    numbers = [*record["parameters"].values(), *record["context"].values()]
    assert all(math.isfinite(v) for v in numbers if isinstance(v, float))
    if outcome.topic == "approved":
        assert _expected_allowed(record["agent_id"], record["action"])
    else:
        assert outcome.topic == "denied"


# --- metrics ----------------------------------------------------------------------


def test_rejections_are_counted_by_reason_code() -> None:
    gate = make_gate()
    for offset in range(7):
        gate.process(b"k", b"not avro at all", SourcePosition("intents", 0, offset))
    gate.process(b"billing-agent", encode_intent(), SOURCE)
    gate.process(b"billing-agent", encode_intent(action="payments.refund"), SOURCE)

    registry = gate.metrics.registry
    assert (
        registry.get_sample_value("trustplane_rejections_total", {"reason_code": "not_avro"}) == 7.0
    )
    assert registry.get_sample_value("trustplane_intents_total", {"outcome": "rejected"}) == 7.0
    assert registry.get_sample_value("trustplane_intents_total", {"outcome": "approved"}) == 1.0
    assert registry.get_sample_value("trustplane_intents_total", {"outcome": "denied"}) == 1.0
    assert (
        registry.get_sample_value(
            "trustplane_layer_verdicts_total", {"layer": "authorization", "status": "ALLOW"}
        )
        == 1.0
    )
    # 7 rejections x 1 event + 2 decided intents x 1 event.
    assert registry.get_sample_value("trustplane_lineage_events_total") == 9.0


# --- reported executions ---------------------------------------------------------------


def _outcome_value(approval: dict[str, Any], **changes: Any) -> bytes:
    record = {
        "outcome_id": "o-1",
        "approval_id": approval["approval_id"],
        "intent_id": approval["intent_id"],
        "agent_id": approval["agent_id"],
        "executor_id": "exec-1",
        "status": "EXECUTED",
        "detail": "",
        "reported_at_ms": NOW_MS + 5,
    }
    record.update(changes)
    return CODEC.encode("Outcome", record)


def test_outcomes_are_checked_against_the_approvals_the_gate_issued() -> None:
    gate = make_gate()
    approved = only_outcome(gate.process(b"billing-agent", encode_intent(), SOURCE))
    approval = CODEC.decode(approved.value)
    outcomes_source = SourcePosition("outcomes", SOURCE.partition, 0)

    ok = gate.process_outcome(b"billing-agent", _outcome_value(approval), outcomes_source)
    forged = gate.process_outcome(
        b"billing-agent", _outcome_value(approval, approval_id="approval-forged"), outcomes_source
    )
    events = [CODEC.decode(o.value) for o in ok + forged]
    assert [(e["event_type"], e["status"]) for e in events] == [
        ("execution.reported", "ok"),
        ("execution.unauthorized", "alert"),
    ]
    assert "no approval 'approval-forged' was issued" in events[1]["reasons"][0]
    registry = gate.metrics.registry
    assert registry.get_sample_value("trustplane_unauthorized_executions_total") == 1.0


def test_an_undecodable_outcome_is_rejected() -> None:
    gate = make_gate()
    outputs = gate.process_outcome(b"x", b"garbage", SourcePosition("outcomes", 0, 3))
    assert only_outcome(outputs).topic == "rejected"
