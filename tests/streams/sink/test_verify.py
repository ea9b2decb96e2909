"""What the sink checks before it stores a record (``streams/sink/verify.py``): a
lineage-log event must carry a gate signature and its own event_hash; an approval must
carry a DSSE envelope the gate's keys verify as of its issue time, saying what the
record says. Anything else is a MappingError, so it goes to ``rejected``."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from processors.approval.keyring import KeyringEntry, SigningKeyring
from processors.approval.signer import ApprovalSigner
from processors.crypto.keys import KeyEntry, Keyset, SigningKey, generate_signing_key
from processors.enforcement import combine
from processors.intent import Intent
from processors.log.attest import sign_event
from processors.log.chain import link
from processors.records import approval_record, digest
from processors.verdict import Verdict
from sinks.base import MappingError
from streams.codec import default_codec
from streams.gatekeys import GateKeys
from streams.sink.verify import RecordVerifier
from tests.processors.factories import intent_record

NOW = 1_700_000_000_000  # the factories' intents are issued then
GATE_KEY = generate_signing_key()
STRANGER_KEY = generate_signing_key()
GATE_SIGNER = ApprovalSigner(SigningKeyring([KeyringEntry(GATE_KEY, 0, None)]))
GATE_KEYSET = GATE_SIGNER.keyring.public_keyset()


@pytest.fixture
def verifier() -> RecordVerifier:
    return RecordVerifier(GateKeys.of(GATE_KEYSET))


def avro(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """The record as the sink has it: written and read by the codec."""
    codec = default_codec()
    return codec.decode(codec.encode(name, record), name)


def refused(verifier: RecordVerifier, topic: str, record: dict[str, Any], code: str) -> str:
    with pytest.raises(MappingError) as caught:
        verifier.check(topic, record)
    assert caught.value.code == code, caught.value.reason
    return caught.value.reason


# -- lineage-log ------------------------------------------------------------------------


def lineage_event(
    n: int = 1, *, key: SigningKey | None = GATE_KEY, prev_hash: str | None = None, **changes: Any
) -> dict[str, Any]:
    """A decision event signed by ``key`` (None: unsigned), with ``changes`` made after
    signing, then linked by the notary at log index ``n``."""
    event: dict[str, Any] = {
        "event_id": f"event-{n}",
        "intent_id": f"intent-{n}",
        "agent_id": "billing-agent",
        "stage": "enforcement",
        "event_type": "intent.approved",
        "status": "approved",
        "reasons": [],
        "attributes": {"topic": "approved", "intent_digest": "sha256:" + "ab" * 32},
        "occurred_at_ms": NOW + n,
        "worker": "gate-1",
        "verdicts": [
            {
                "layer": "policy",
                "status": "ALLOW",
                "reasons": ["permitted by payments-transfer"],
                "evidence": {"determining_policies": "payments-transfer"},
                "duration_us": 41,
            }
        ],
        "signer": None,
        "signature": None,
        "prev_hash": None,
        "event_hash": None,
        "log_index": None,
    }
    if key is not None:
        sign_event(event, key)
    event.update(changes)
    event["log_index"] = n
    return avro("LineageEvent", link(event, prev_hash))


def test_a_signed_linked_event_is_accepted(verifier):
    verifier.check("lineage-log", lineage_event(0))
    verifier.check("lineage-log", lineage_event(1, prev_hash="sha256:" + "0" * 64))


@pytest.mark.parametrize(
    "event",
    [
        lineage_event(key=None),
        lineage_event(signature=None),
        lineage_event(signer=None),
        lineage_event(signature="not base64!"),
        lineage_event(key=STRANGER_KEY),
        lineage_event(key=SigningKey(STRANGER_KEY.private_key, GATE_KEY.kid)),
        lineage_event(status="denied", event_type="intent.denied"),
        lineage_event(verdicts=[]),
        lineage_event(intent_id="intent-2"),
        lineage_event(occurred_at_ms=NOW - 1),
    ],
    ids=[
        "unsigned",
        "no signature",
        "no signer",
        "signature not base64",
        "signed by a key not in the gate keyset",
        "stranger key claiming the gate key id",
        "outcome changed after signing",
        "verdicts dropped after signing",
        "intent changed after signing",
        "time changed after signing",
    ],
)
def test_a_lineage_event_no_gate_key_vouches_for_is_refused(verifier, event):
    # each is correctly linked: only the signature tells
    reason = refused(verifier, "lineage-log", event, "unsigned_lineage")
    assert "event-1" in reason


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: {**e, "event_hash": "sha256:" + "f" * 64},
        lambda e: {**e, "event_hash": None},
        lambda e: {**e, "event_hash": "sha256:nothex"},
        lambda e: {**e, "log_index": 7},
        lambda e: {**e, "prev_hash": "sha256:" + "0" * 64},
    ],
    ids=["another hash", "no hash", "not a hash", "moved in the log", "relinked"],
)
def test_a_signed_lineage_event_with_a_wrong_event_hash_is_refused(verifier, tamper):
    event = lineage_event()
    verifier.check("lineage-log", event)
    refused(verifier, "lineage-log", tamper(event), "bad_event_hash")


def test_a_key_the_gate_publishes_after_startup_is_picked_up(tmp_path: Path):
    rotated = generate_signing_key()
    jwks = tmp_path / "approvals.jwks.json"
    jwks.write_text(json.dumps(Keyset([KeyEntry(GATE_KEY.kid, GATE_KEY.public_key)]).to_jwks()))
    verifier = RecordVerifier(GateKeys(jwks, reload_every_s=0))
    verifier.check("lineage-log", lineage_event())
    refused(verifier, "lineage-log", lineage_event(key=rotated), "unsigned_lineage")

    both = [KeyEntry(k.kid, k.public_key) for k in (GATE_KEY, rotated)]
    jwks.write_text(json.dumps(Keyset(both).to_jwks()))  # `trustplane keys rotate`
    verifier.check("lineage-log", lineage_event(key=rotated))
    refused(verifier, "lineage-log", lineage_event(key=STRANGER_KEY), "unsigned_lineage")


# -- approvals --------------------------------------------------------------------------


def approved_intent(**overrides: Any) -> tuple[Intent, bytes]:
    record = intent_record(**overrides)
    return (
        Intent.from_record(record, key=record["agent_id"].encode()),
        default_codec().encode("Intent", record),
    )


def approval(
    signer: ApprovalSigner = GATE_SIGNER, *, now_ms: int = NOW, **overrides: Any
) -> dict[str, Any]:
    """An approval record as the gate writes it to ``approved``."""
    intent, raw = approved_intent(**overrides)
    layers = ["schema", "freshness", "policy"]
    allowed = combine([Verdict.allow(layer) for layer in layers], layers)
    record = approval_record(
        intent,
        allowed,
        intent_digest=digest(raw),
        intent_bytes=raw,
        now_ms=now_ms,
        worker="gate-1",
        signer=signer,
    )
    return avro("Approval", record)


def test_an_approval_the_gate_signed_is_accepted(verifier):
    record = approval()
    verifier.check("approved", record)
    # verified as of its issue time: it is stored although it expired long ago
    assert record["expires_at_ms"] < time.time_ns() // 1_000_000


def _payload_changed(envelope: bytes) -> bytes:
    data = json.loads(envelope)
    statement = json.loads(base64.b64decode(data["payload"]))
    statement["predicate"]["agentId"] = "other-agent"
    data["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(data).encode()


def _signature_zeroed(envelope: bytes) -> bytes:
    data = json.loads(envelope)
    data["signatures"][0]["sig"] = base64.b64encode(b"\0" * 64).decode()
    return json.dumps(data).encode()


def _unsigned(envelope: bytes) -> bytes:
    data = json.loads(envelope)
    data["signatures"] = []
    return json.dumps(data).encode()


STRANGER_SIGNER = ApprovalSigner(SigningKeyring([KeyringEntry(STRANGER_KEY, 0, None)]))
IMPOSTOR_SIGNER = ApprovalSigner(
    SigningKeyring([KeyringEntry(SigningKey(STRANGER_KEY.private_key, GATE_KEY.kid), 0, None)])
)


@pytest.mark.parametrize(
    "forge",
    [
        lambda r: approval(STRANGER_SIGNER),
        lambda r: approval(IMPOSTOR_SIGNER),
        lambda r: {**r, "envelope": _payload_changed(r["envelope"])},
        lambda r: {**r, "envelope": _signature_zeroed(r["envelope"])},
        lambda r: {**r, "envelope": _unsigned(r["envelope"])},
        lambda r: {
            **r,
            "envelope": b'{"payload":"e30=","payloadType":"application/vnd.in-toto+json"}',
        },
        lambda r: {**r, "envelope": b"APPROVED"},
        lambda r: {**r, "envelope": b""},
        lambda r: {**r, "intent": approved_intent(resource="acct:666")[1]},
    ],
    ids=[
        "signed by a key not in the gate keyset",
        "stranger key claiming the gate key id",
        "signed payload changed",
        "signature zeroed",
        "no signatures",
        "placeholder envelope",
        "not JSON",
        "empty",
        "other intent bytes",
    ],
)
def test_an_approval_with_a_forged_or_invalid_envelope_is_refused(verifier, forge):
    reason = refused(verifier, "approved", forge(approval()), "bad_approval")
    assert "does not verify" in reason


def test_an_approval_is_verified_against_the_gate_keys_as_of_its_issue_time():
    retired_at = NOW + 60_000
    keyset = Keyset([KeyEntry(GATE_KEY.kid, GATE_KEY.public_key, 0, retired_at)])
    verifier = RecordVerifier(GateKeys.of(keyset))
    verifier.check("approved", approval())  # issued before the key was retired
    late = approval(now_ms=retired_at + 1, issued_at_ms=NOW, expires_at_ms=retired_at + 300_000)
    reason = refused(verifier, "approved", late, "bad_approval")
    assert "retired" in reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("approval_id", "approval-forged"),
        ("intent_id", "intent-denied-one"),
        ("agent_id", "other-agent"),
        ("action", "payments.refund"),
        ("resource", "acct:666"),
        ("intent_digest", "sha256:" + "cd" * 32),
        ("issued_at_ms", NOW + 1),
        ("expires_at_ms", NOW + 10 * 3_600_000),
    ],
)
def test_an_approval_record_that_differs_from_its_signed_envelope_is_refused(
    verifier, field, value
):
    record = approval()
    assert record[field] != value
    reason = refused(verifier, "approved", {**record, field: value}, "bad_approval")
    assert f"the record's {field}" in reason and "is not the signed one" in reason


def test_an_approval_record_with_the_envelope_of_another_approval_is_refused(verifier):
    other = approval(intent_id="intent-2", nonce="n-2")
    record = approval()
    verifier.check("approved", other)
    reason = refused(
        verifier, "approved", {**record, "envelope": other["envelope"]}, "bad_approval"
    )
    # the intent bytes give it away first; with them swapped too, the fields do
    assert "does not verify" in reason
    swapped = {**record, "envelope": other["envelope"], "intent": other["intent"]}
    reason = refused(verifier, "approved", swapped, "bad_approval")
    assert "is not the signed one" in reason


@pytest.mark.parametrize("issued", [None, "soon"])
def test_an_approval_without_an_issue_time_is_refused(verifier, issued):
    reason = refused(verifier, "approved", {**approval(), "issued_at_ms": issued}, "bad_approval")
    assert "issued_at_ms" in reason


# -- other topics -----------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["denied", "review", "rejected", "outcomes"])
def test_records_without_a_gate_signature_of_their_own_are_left_to_the_mapping(verifier, topic):
    verifier.check(topic, {})  # nothing to verify: map_record checks their fields
