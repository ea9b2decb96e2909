"""Signed approvals: statement, signing keyring and rotation, executor verification."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc.jwk import KeySet, OKPKey
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]  # documented path

from processors.approval import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    ApprovalExpiredError,
    ApprovalKeyError,
    ApprovalReusedError,
    ApprovalSigner,
    ApprovalSigningError,
    ApprovalVerificationError,
    InMemorySeenStore,
    IntentMismatchError,
    KeyringEntry,
    KeyringError,
    LineagePosition,
    MalformedEnvelopeError,
    PayloadTypeError,
    SeenStore,
    SignatureInvalidError,
    SigningKeyring,
    SqliteSeenStore,
    StatementError,
    VerifiedApproval,
    parameters_digest,
    rfc3339_ms,
    verify_approval,
)
from processors.crypto.dsse import pae, sign_envelope
from processors.crypto.jcs import CanonicalizationError, canonical_json
from processors.crypto.keys import KeyFileError, Keyset, generate_signing_key, raw_public_key
from processors.enforcement import Enforcement, Outcome, combine
from processors.exceptions import TrustplaneError
from processors.intent import Intent
from processors.verdict import Verdict
from tests.processors.factories import make_intent

NOW = 1_700_000_000_000
TTL = 120_000
INTENT_BYTES = b"\xc3\x01" + b"\x00" * 8 + b"the exact intent record bytes"
INTENT_DIGEST = "sha256:" + hashlib.sha256(INTENT_BYTES).hexdigest()
BUNDLE = "sha256:" + "cd" * 32


def approved(*extra: Verdict) -> Enforcement:
    verdicts = [
        Verdict.allow("schema"),
        Verdict.allow("freshness", "expires in 300000 ms"),
        Verdict.allow(
            "policy",
            "permitted by payments-transfer",
            bundle_digest=BUNDLE,
            determining_policies="payments-transfer, business-hours",
        ),
        *extra,
    ]
    enforcement = combine(verdicts, [v.layer for v in verdicts])
    assert enforcement.outcome is Outcome.APPROVED
    return enforcement


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    SigningKeyring.generate(directory)
    return directory


@pytest.fixture
def ring(keydir: Path) -> SigningKeyring:
    return SigningKeyring.from_directory(keydir)


@pytest.fixture
def signer(ring: SigningKeyring) -> ApprovalSigner:
    return ApprovalSigner(ring)


@pytest.fixture
def keyset(ring: SigningKeyring) -> Keyset:
    return ring.public_keyset()


def sign(
    signer: ApprovalSigner,
    intent: Intent | None = None,
    *,
    now_ms: int = NOW,
    ttl_ms: int = TTL,
    approval_id: str = "approval-1",
    lineage: LineagePosition | dict[str, Any] | None = None,
) -> bytes:
    envelope, _ = signer.sign(
        intent or make_intent(),
        approved(),
        intent_digest=INTENT_DIGEST,
        approval_id=approval_id,
        now_ms=now_ms,
        ttl_ms=ttl_ms,
        lineage=lineage,
    )
    return envelope


def statement_of(envelope: bytes) -> dict[str, Any]:
    return json.loads(base64.b64decode(json.loads(envelope)["payload"]))  # type: ignore[no-any-return]


def with_changes(envelope: bytes, **changes: Any) -> bytes:
    data = json.loads(envelope)
    data.update(changes)
    return json.dumps(data).encode()


def with_sig(envelope: bytes, sig: str) -> bytes:
    data = json.loads(envelope)
    data["signatures"][0]["sig"] = sig
    return json.dumps(data).encode()


# --- round trip ---------------------------------------------------------------------------


def test_round_trip_intent_to_verified_approval(signer: ApprovalSigner, keyset: Keyset) -> None:
    intent = make_intent()
    envelope, expires = signer.sign(
        intent,
        approved(),
        intent_digest=INTENT_DIGEST,
        approval_id="approval-1",
        now_ms=NOW,
        ttl_ms=TTL,
        lineage={"eventId": "event-9", "logIndex": 41},
    )
    assert expires == NOW + TTL
    seen = InMemorySeenStore(clock=lambda: NOW)
    verified = verify_approval(envelope, keyset, NOW + 1, intent=INTENT_BYTES, seen=seen)
    assert isinstance(verified, VerifiedApproval)
    assert verified.approval_id == "approval-1"
    assert verified.intent_id == intent.intent_id
    assert verified.agent_id == intent.agent_id
    assert verified.action == "payments.transfer"
    assert verified.resource == "acct:42"
    assert verified.intent_digest == INTENT_DIGEST
    assert verified.issued_at_ms == NOW
    assert verified.expires_at_ms == NOW + TTL
    assert verified.keyid == signer.keyring.signing_key(NOW).kid
    assert verified.check_parameters({"currency": "EUR", "amount": 10.5}) == {
        "currency": "EUR",
        "amount": 10.5,
    }
    with pytest.raises(IntentMismatchError):
        verified.check_parameters({"currency": "EUR", "amount": 10_000})


def test_statement_is_in_toto_v1_with_the_approval_predicate(signer: ApprovalSigner) -> None:
    envelope = json.loads(sign(signer, lineage=LineagePosition("event-9", None)))
    assert envelope["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"
    payload = base64.b64decode(envelope["payload"])
    statement = json.loads(payload)
    assert canonical_json(statement) == payload  # the payload is RFC 8785 canonical JSON
    assert statement["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [
        {"name": "intent:intent-1", "digest": {"sha256": INTENT_DIGEST.removeprefix("sha256:")}}
    ]
    assert statement["predicateType"] == PREDICATE_TYPE == "https://trustplane.dev/approval/v2"
    predicate = statement["predicate"]
    assert predicate["approvalId"] == "approval-1"
    assert predicate["agentId"] == "billing-agent"
    expected_params = hashlib.sha256(b'{"amount":10.5,"currency":"EUR"}').hexdigest()
    assert predicate["parametersDigest"] == "sha256:" + expected_params
    assert predicate["policyBundleDigest"] == BUNDLE
    assert predicate["determiningPolicies"] == ["payments-transfer", "business-hours"]
    assert [v["layer"] for v in predicate["verdicts"]] == ["schema", "freshness", "policy"]
    # lean (v2): reasons and evidence live in the signed lineage event the approval names
    assert predicate["verdicts"][2] == {"layer": "policy", "status": "ALLOW"}
    assert predicate["issuedAt"] == "2023-11-14T22:13:20.000Z"
    assert predicate["issuedAtMs"] == NOW
    assert predicate["expiresAt"] == "2023-11-14T22:15:20.000Z"
    assert predicate["expiresAtMs"] == NOW + TTL
    assert predicate["lineage"] == {"eventId": "event-9", "logIndex": None}


def test_no_policy_layer_means_null_bundle_and_no_policies(signer: ApprovalSigner) -> None:
    enforcement = combine([Verdict.allow("schema")], ["schema"])
    envelope, _ = signer.sign(
        make_intent(),
        enforcement,
        intent_digest=INTENT_DIGEST,
        approval_id="a",
        now_ms=NOW,
        ttl_ms=TTL,
    )
    predicate = statement_of(envelope)["predicate"]
    assert predicate["policyBundleDigest"] is None
    assert predicate["determiningPolicies"] == []
    assert predicate["lineage"] is None


def test_expiry_is_the_earlier_of_ttl_and_intent_expiry(signer: ApprovalSigner) -> None:
    intent = make_intent(expires_at_ms=NOW + 5_000)
    _, expires = signer.sign(
        intent, approved(), intent_digest=INTENT_DIGEST, approval_id="a", now_ms=NOW, ttl_ms=TTL
    )
    assert expires == NOW + 5_000


def test_rfc3339_ms() -> None:
    assert rfc3339_ms(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339_ms(NOW + 7) == "2023-11-14T22:13:20.007Z"


# --- signing refuses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "enforcement",
    [
        Enforcement(Outcome.DENIED, ("authorization: no",), (Verdict.deny("authorization"),)),
        Enforcement(Outcome.REVIEW, ("anomaly: odd",), (Verdict.review("anomaly"),)),
        Enforcement(Outcome.APPROVED, (), ()),
        Enforcement(Outcome.APPROVED, (), (Verdict.allow("a"), Verdict.error("b"))),
    ],
)
def test_signer_refuses_anything_but_allow_from_every_layer(
    signer: ApprovalSigner, enforcement: Enforcement
) -> None:
    with pytest.raises(ApprovalSigningError):
        signer.sign(
            make_intent(),
            enforcement,
            intent_digest=INTENT_DIGEST,
            approval_id="a",
            now_ms=NOW,
            ttl_ms=TTL,
        )


def test_signer_refuses_expired_intent_bad_digest_and_unsignable_parameters(
    signer: ApprovalSigner,
) -> None:
    kwargs: dict[str, Any] = {"approval_id": "a", "now_ms": NOW, "ttl_ms": TTL}
    expired = make_intent(issued_at_ms=NOW - 10_000, expires_at_ms=NOW)
    with pytest.raises(ApprovalSigningError, match="expired"):
        signer.sign(expired, approved(), intent_digest=INTENT_DIGEST, **kwargs)
    with pytest.raises(ApprovalSigningError, match="sha256"):
        signer.sign(make_intent(), approved(), intent_digest="md5:abc", **kwargs)
    huge = make_intent(parameters={"amount": 2**60})
    with pytest.raises(ApprovalSigningError, match="cannot be signed") as caught:
        signer.sign(huge, approved(), intent_digest=INTENT_DIGEST, **kwargs)
    assert caught.value.hint and "strings" in caught.value.hint


# --- each verification failure has its own error ------------------------------------------


def test_tampered_payload_is_refused(signer: ApprovalSigner, keyset: Keyset) -> None:
    envelope = sign(signer)
    payload = bytearray(base64.b64decode(json.loads(envelope)["payload"]))
    payload[payload.index(b"acct:42")] ^= 0x01
    tampered = with_changes(envelope, payload=base64.b64encode(bytes(payload)).decode())
    with pytest.raises(SignatureInvalidError, match="does not verify"):
        verify_approval(tampered, keyset, NOW)


def test_reencoded_envelope_with_changed_payload_is_refused(
    signer: ApprovalSigner, keyset: Keyset
) -> None:
    envelope = sign(signer)
    statement = statement_of(envelope)
    statement["predicate"]["resource"] = "acct:666"
    statement["predicate"]["action"] = "payments.transfer_all"
    forged = with_changes(envelope, payload=base64.b64encode(canonical_json(statement)).decode())
    with pytest.raises(SignatureInvalidError):
        verify_approval(forged, keyset, NOW)


def test_payload_type_mismatch_is_refused(signer: ApprovalSigner, keyset: Keyset) -> None:
    envelope = with_changes(sign(signer), payloadType="application/json")
    with pytest.raises(PayloadTypeError, match="application/vnd.in-toto"):
        verify_approval(envelope, keyset, NOW)


def test_signature_of_wrong_length_is_refused(signer: ApprovalSigner, keyset: Keyset) -> None:
    envelope = sign(signer)
    sig = base64.b64decode(json.loads(envelope)["signatures"][0]["sig"])
    for wrong in (sig[:63], sig + b"\x00", b""):
        with pytest.raises(SignatureInvalidError, match="64"):
            verify_approval(with_sig(envelope, base64.b64encode(wrong).decode()), keyset, NOW)


def test_garbled_base64_is_refused(signer: ApprovalSigner, keyset: Keyset) -> None:
    envelope = sign(signer)
    with pytest.raises(SignatureInvalidError, match="base64"):
        verify_approval(with_sig(envelope, "!!not*base64!!"), keyset, NOW)
    with pytest.raises(MalformedEnvelopeError, match="base64"):
        verify_approval(with_changes(envelope, payload="%%%%"), keyset, NOW)


def test_unknown_key_is_refused(signer: ApprovalSigner) -> None:
    other = SigningKeyring([_entry()]).public_keyset()
    with pytest.raises(ApprovalKeyError, match="not in the keyset") as caught:
        verify_approval(sign(signer), other, NOW)
    assert caught.value.hint and "JWKS" in caught.value.hint


def test_retired_key_is_refused(keydir: Path, signer: ApprovalSigner) -> None:
    envelope = sign(signer)
    SigningKeyring.rotate(keydir, NOW - 1)
    old_kid = json.loads(envelope)["signatures"][0]["keyid"]
    SigningKeyring.retire(keydir, old_kid, NOW + 10)
    keyset = SigningKeyring.from_directory(keydir).public_keyset()
    assert verify_approval(envelope, keyset, NOW + 9).keyid == old_kid
    with pytest.raises(ApprovalKeyError, match="retired"):
        verify_approval(envelope, keyset, NOW + 10)


def test_expired_approval_is_refused(signer: ApprovalSigner, keyset: Keyset) -> None:
    envelope = sign(signer)
    verify_approval(envelope, keyset, NOW + TTL - 1)
    with pytest.raises(ApprovalExpiredError, match="expired") as caught:
        verify_approval(envelope, keyset, NOW + TTL)
    assert caught.value.hint and "submit the intent again" in caught.value.hint


def test_approval_issued_in_the_future_is_refused(signer: ApprovalSigner, keyset: Keyset) -> None:
    envelope = sign(signer, now_ms=NOW + 60_000)
    verify_approval(envelope, keyset, NOW + 31_000)  # within the 30 s default skew
    with pytest.raises(ApprovalExpiredError, match="future"):
        verify_approval(envelope, keyset, NOW)


def test_intent_digest_mismatch_is_refused(signer: ApprovalSigner, keyset: Keyset) -> None:
    envelope = sign(signer)
    with pytest.raises(IntentMismatchError, match="something other than what was approved"):
        verify_approval(envelope, keyset, NOW, intent=INTENT_BYTES + b"\x00")


def test_reuse_is_refused(signer: ApprovalSigner, keyset: Keyset) -> None:
    envelope = sign(signer)
    seen = InMemorySeenStore(clock=lambda: NOW)
    verify_approval(envelope, keyset, NOW, seen=seen)
    with pytest.raises(ApprovalReusedError, match="already used"):
        verify_approval(envelope, keyset, NOW, seen=seen)


def test_a_rejected_approval_is_not_marked_used(signer: ApprovalSigner, keyset: Keyset) -> None:
    envelope = sign(signer)
    seen = InMemorySeenStore(clock=lambda: NOW)
    with pytest.raises(IntentMismatchError):
        verify_approval(envelope, keyset, NOW, intent=b"other", seen=seen)
    verify_approval(envelope, keyset, NOW, intent=INTENT_BYTES, seen=seen)


def test_malformed_envelopes_are_refused(keyset: Keyset) -> None:
    for bad in (b"not json", b"[]", b'{"payload": 1}', "{}", b"\xff\xfe"):
        with pytest.raises(MalformedEnvelopeError):
            verify_approval(bad, keyset, NOW)
    with pytest.raises(MalformedEnvelopeError, match="bytes"):
        verify_approval(b" " * (300 * 1024), keyset, NOW)


def test_unsigned_envelope_is_refused(signer: ApprovalSigner, keyset: Keyset) -> None:
    with pytest.raises(SignatureInvalidError, match="no signatures"):
        verify_approval(with_changes(sign(signer), signatures=[]), keyset, NOW)


def _sign_statement(ring: SigningKeyring, statement: Any, raw: bytes | None = None) -> bytes:
    payload = raw if raw is not None else canonical_json(statement)
    return json.dumps(sign_envelope(payload, PAYLOAD_TYPE, ring.signing_key(NOW))).encode()


def test_signed_but_not_an_approval_statement_is_refused(
    signer: ApprovalSigner, ring: SigningKeyring, keyset: Keyset
) -> None:
    good = statement_of(sign(signer))

    def variant(path: tuple[str, ...], value: Any) -> dict[str, Any]:
        changed = copy.deepcopy(good)
        target = changed
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        return changed

    cases = [
        variant(("predicateType",), "https://slsa.dev/provenance/v1"),
        variant(("_type",), "https://in-toto.io/Statement/v0.1"),
        variant(("subject",), []),
        variant(("subject",), [good["subject"][0], good["subject"][0]]),
        variant(("subject",), [{"name": "intent:x", "digest": {"sha512": "ab"}}]),
        variant(("predicate", "verdicts"), [{"layer": "x", "status": "DENY", "reasons": []}]),
        variant(("predicate", "verdicts"), []),
        variant(("predicate", "expiresAtMs"), "soon"),
        variant(("predicate", "approvalId"), ""),
        variant(("predicate", "intentId"), "another-intent"),
        ["not", "an", "object"],
    ]
    for case in cases:
        with pytest.raises(StatementError):
            verify_approval(_sign_statement(ring, case), keyset, NOW)
    duplicate = canonical_json(good).replace(b'"action":', b'"action":"x","action":', 1)
    with pytest.raises(StatementError, match="duplicate"):
        verify_approval(_sign_statement(ring, None, duplicate), keyset, NOW)


def test_every_failure_is_an_approval_verification_error() -> None:
    for error in (
        MalformedEnvelopeError,
        PayloadTypeError,
        SignatureInvalidError,
        ApprovalKeyError,
        StatementError,
        ApprovalExpiredError,
        IntentMismatchError,
        ApprovalReusedError,
    ):
        assert issubclass(error, ApprovalVerificationError)
        assert issubclass(error, TrustplaneError)


def test_mapping_and_text_envelopes_verify(signer: ApprovalSigner, keyset: Keyset) -> None:
    envelope = sign(signer)
    assert verify_approval(envelope.decode(), keyset, NOW).approval_id == "approval-1"
    assert verify_approval(json.loads(envelope), keyset, NOW).approval_id == "approval-1"


def test_url_safe_unpadded_base64_is_accepted(signer: ApprovalSigner, keyset: Keyset) -> None:
    data = json.loads(sign(signer))
    for item in (data, data["signatures"][0]):
        name = "payload" if item is data else "sig"
        raw = base64.b64decode(item[name])
        item[name] = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert verify_approval(data, keyset, NOW).approval_id == "approval-1"


def test_a_second_signature_by_an_unknown_key_does_not_matter(
    signer: ApprovalSigner, keyset: Keyset
) -> None:
    data = json.loads(sign(signer))
    stranger = generate_signing_key()
    payload = base64.b64decode(data["payload"])
    stray = base64.b64encode(stranger.sign(pae(PAYLOAD_TYPE, payload))).decode()
    data["signatures"].insert(0, {"keyid": stranger.kid, "sig": stray})
    assert verify_approval(data, keyset, NOW).keyid == signer.keyring.signing_key(NOW).kid


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_byte_change_is_refused_or_harmless(data: st.DataObject) -> None:
    envelope = _FUZZ_ENVELOPE
    index = data.draw(st.integers(0, len(envelope) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != envelope[index]))
    mutated = envelope[:index] + bytes([value]) + envelope[index + 1 :]
    try:
        verified = verify_approval(mutated, _FUZZ_KEYSET, NOW)
    except ApprovalVerificationError:
        return
    # only encodings of the same bytes survive (e.g. base64 padding bits, JSON escapes)
    assert verified == verify_approval(envelope, _FUZZ_KEYSET, NOW)
    assert verified.predicate == statement_of(envelope)["predicate"]


def _entry() -> KeyringEntry:
    return KeyringEntry(generate_signing_key(), 0, None)


_FUZZ_RING = SigningKeyring([_entry()])
_FUZZ_KEYSET = _FUZZ_RING.public_keyset()
_FUZZ_ENVELOPE = sign(ApprovalSigner(_FUZZ_RING))


# --- key rotation --------------------------------------------------------------------------


def test_rotation_switches_signing_key_at_not_before_and_old_approvals_verify(
    keydir: Path,
) -> None:
    first = SigningKeyring.from_directory(keydir).entries[0].kid
    new = SigningKeyring.rotate(keydir, NOW + 1_000)
    assert new.kid != first and new.not_before_ms == NOW + 1_000
    signer = ApprovalSigner(SigningKeyring.from_directory(keydir))
    keyset = signer.public_keyset()
    assert set(keyset) == {first, new.kid}

    before = sign(signer, now_ms=NOW + 999, approval_id="before")
    after = sign(signer, now_ms=NOW + 1_000, approval_id="after")
    assert json.loads(before)["signatures"][0]["keyid"] == first
    assert json.loads(after)["signatures"][0]["keyid"] == new.kid
    # the old key's approvals still verify after the switch, until the key is retired
    assert verify_approval(before, keyset, NOW + 60_000).keyid == first
    assert verify_approval(after, keyset, NOW + 60_000).keyid == new.kid

    SigningKeyring.retire(keydir, first, NOW + 60_000)
    ring = SigningKeyring.from_directory(keydir)
    keyset = ring.public_keyset()
    assert keyset[first].retired_at_ms == NOW + 60_000
    with pytest.raises(ApprovalKeyError, match="retired"):
        verify_approval(before, keyset, NOW + 60_000)
    assert verify_approval(after, keyset, NOW + 60_000).keyid == new.kid
    assert ring.signing_key(NOW + 60_000).kid == new.kid


def test_approval_signed_by_a_key_before_its_window_is_refused(keydir: Path) -> None:
    new = SigningKeyring.rotate(keydir, NOW + 3_600_000)
    keyset = SigningKeyring.from_directory(keydir).public_keyset()
    statement = statement_of(sign(ApprovalSigner(SigningKeyring.from_directory(keydir))))
    early = sign_envelope(canonical_json(statement), PAYLOAD_TYPE, new.key)
    envelope = json.dumps(early).encode()
    with pytest.raises(ApprovalKeyError, match="not valid before"):
        verify_approval(envelope, keyset, NOW)


def test_no_key_valid_now_cannot_sign(tmp_path: Path) -> None:
    SigningKeyring.generate(tmp_path / "k", not_before_ms=NOW + 10)
    signer = ApprovalSigner(SigningKeyring.from_directory(tmp_path / "k"))
    with pytest.raises(ApprovalSigningError, match="no signing key") as caught:
        sign(signer)
    assert caught.value.hint and "rotate" in caught.value.hint


def test_retiring_the_last_key_needs_force(keydir: Path) -> None:
    kid = SigningKeyring.from_directory(keydir).entries[0].kid
    with pytest.raises(KeyringError, match="no key to sign") as caught:
        SigningKeyring.retire(keydir, kid, NOW)
    assert caught.value.hint and "rotate" in caught.value.hint
    assert SigningKeyring.retire(keydir, kid, NOW, force=True).retired_at_ms == NOW
    with pytest.raises(KeyringError, match="no key"):
        SigningKeyring.retire(keydir, "nope", NOW)


# --- key files -----------------------------------------------------------------------------


def test_generate_creates_owner_only_files(keydir: Path) -> None:
    ring = SigningKeyring.from_directory(keydir)
    (entry,) = ring.entries
    pem = keydir / f"{entry.kid}.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert stat.S_IMODE(keydir.stat().st_mode) & 0o077 == 0
    assert json.loads((keydir / "keyring.json").read_text()) == {
        "keys": {entry.kid: {"not_before_ms": 0, "retired_at_ms": None}}
    }
    with pytest.raises(KeyringError, match="already has a keyring"):
        SigningKeyring.generate(keydir)


def test_world_readable_key_file_is_refused_with_a_hint(keydir: Path) -> None:
    (pem,) = keydir.glob("*.pem")
    os.chmod(pem, 0o644)
    with pytest.raises(KeyFileError, match="readable by group or others") as caught:
        SigningKeyring.from_directory(keydir)
    assert caught.value.hint == f"chmod 600 {pem}"


def test_key_material_never_shows(keydir: Path, ring: SigningKeyring) -> None:
    (pem,) = keydir.glob("*.pem")
    secret = pem.read_text()
    raw = ring.entries[0].key.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    for text in (repr(ring), str(ring), repr(ring.entries), repr(ApprovalSigner(ring))):
        assert "PRIVATE" not in text and secret[40:80] not in text
        assert raw.hex() not in text and base64.b64encode(raw).decode() not in text
    env = SigningKeyring.from_env({"TRUSTPLANE_SIGNING_KEY": secret})
    assert "PRIVATE" not in repr(env) and "TRUSTPLANE_SIGNING_KEY" in repr(env)


def test_env_key_signs_and_accepts_escaped_newlines(keydir: Path, ring: SigningKeyring) -> None:
    (pem,) = keydir.glob("*.pem")
    escaped = pem.read_text().replace("\n", "\\n")
    env_ring = SigningKeyring.load(None, environ={"TRUSTPLANE_SIGNING_KEY": escaped})
    assert env_ring.entries[0].kid == ring.entries[0].kid
    assert SigningKeyring.load(keydir, environ={}).entries[0].kid == ring.entries[0].kid
    with pytest.raises(KeyringError, match="PKCS#8"):
        SigningKeyring.from_env({"TRUSTPLANE_SIGNING_KEY": "not a key"})
    with pytest.raises(KeyringError, match="no signing key"):
        SigningKeyring.load(None, environ={})


def test_unlisted_or_swapped_key_files_are_refused(keydir: Path) -> None:
    from processors.crypto.keys import save_private_key

    (pem,) = keydir.glob("*.pem")
    stray = generate_signing_key()
    save_private_key(keydir / f"{stray.kid}.pem", stray)
    with pytest.raises(KeyringError, match="not listed"):
        SigningKeyring.from_directory(keydir)
    os.replace(keydir / f"{stray.kid}.pem", pem)  # a different key under the listed name
    with pytest.raises(KeyringError, match="holds key"):
        SigningKeyring.from_directory(keydir)


def test_missing_or_malformed_keyring_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="does not exist") as caught:
        SigningKeyring.from_directory(tmp_path)
    assert caught.value.hint and "generate" in caught.value.hint
    (tmp_path / "keyring.json").write_text('{"keys": {"../../etc/passwd": {}}}')
    with pytest.raises(KeyringError, match="not a key id"):
        SigningKeyring.from_directory(tmp_path)


# --- independent verifiers: securesystemslib (DSSE) and joserfc (JWKS) ---------------------


def test_securesystemslib_verifies_our_approvals_and_rejects_tampered(
    signer: ApprovalSigner, ring: SigningKeyring
) -> None:
    envelope = json.loads(sign(signer))
    entry = ring.entries[0]
    key = SSlibKey(
        entry.kid, "ed25519", "ed25519", {"public": raw_public_key(entry.key.public_key).hex()}
    )
    accepted = Envelope.from_dict(copy.deepcopy(envelope)).verify([key], 1)
    assert list(accepted) == [entry.kid]
    parsed = Envelope.from_dict(copy.deepcopy(envelope))
    assert parsed.payload_type == PAYLOAD_TYPE
    assert json.loads(parsed.payload)["predicateType"] == PREDICATE_TYPE

    tampered = copy.deepcopy(envelope)
    statement = statement_of(json.dumps(envelope).encode())
    statement["predicate"]["resource"] = "acct:666"
    tampered["payload"] = base64.b64encode(canonical_json(statement)).decode()
    with pytest.raises(VerificationError):
        Envelope.from_dict(copy.deepcopy(tampered)).verify([key], 1)


def test_jwks_read_by_joserfc_gives_the_same_public_keys(keydir: Path) -> None:
    SigningKeyring.rotate(keydir, NOW)
    ring = SigningKeyring.from_directory(keydir)
    jwks = ring.jwks()
    imported = KeySet.import_key_set(jwks)  # type: ignore[arg-type]  # a plain JWKS dict
    assert len(imported.keys) == 2
    for entry, jwk in zip(ring.entries, imported.keys, strict=True):
        assert isinstance(jwk, OKPKey)
        assert jwk.kid == entry.kid == jwk.thumbprint()  # kid is the RFC 7638 thumbprint
        assert isinstance(jwk.public_key, Ed25519PublicKey)
        assert raw_public_key(jwk.public_key) == raw_public_key(entry.key.public_key)
    one = OKPKey.import_key(jwks["keys"][0])
    assert one.as_dict(private=False)["x"] == jwks["keys"][0]["x"]
    # and our own reader takes it back with the windows
    again = Keyset.from_jwks(json.loads(json.dumps(jwks)))
    assert {k: (e.not_before_ms, e.retired_at_ms) for k, e in again.items()} == {
        e.kid: (e.not_before_ms, e.retired_at_ms) for e in ring.entries
    }


# --- DSSE and RFC 8785 primitives ----------------------------------------------------------


def test_pae_known_answer_from_the_dsse_spec() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_rfc8785_refuses_large_integers_and_nan() -> None:
    assert canonical_json({"b": 2**53 - 1, "a": 1.0}) == b'{"a":1,"b":9007199254740991}'
    for bad in ({"n": 2**53}, {"n": -(2**53)}, {"n": float("nan")}, {"n": float("inf")}):
        with pytest.raises(CanonicalizationError):
            canonical_json(bad)
    with pytest.raises(CanonicalizationError):
        parameters_digest({"n": 2**63 - 1})


# --- single-use stores ---------------------------------------------------------------------


def test_in_memory_store_drops_entries_after_expiry() -> None:
    now = [NOW]
    store = InMemorySeenStore(clock=lambda: now[0], grace_ms=1_000)
    assert isinstance(store, SeenStore)
    assert store.claim("a", NOW + 10) is True
    assert store.claim("a", NOW + 10) is False
    now[0] = NOW + 1_009
    assert store.claim("b", NOW + 5_000) is True
    assert store.claim("a", NOW + 10) is False  # not yet past expiry + grace
    now[0] = NOW + 1_010
    assert store.claim("c", NOW + 5_000) is True
    assert len(store) == 2  # "a" dropped
    assert store.claim("a", NOW + 10) is True


def test_sqlite_store_is_durable_and_single_use(tmp_path: Path) -> None:
    path = tmp_path / "state" / "seen.db"
    with SqliteSeenStore(path, clock=lambda: NOW) as store:
        assert isinstance(store, SeenStore)
        assert store.claim("a", NOW + 10) is True
        assert store.claim("a", NOW + 10) is False
    with SqliteSeenStore(path, clock=lambda: NOW) as reopened:
        assert reopened.claim("a", NOW + 10) is False
        assert reopened.claim("b", NOW + 10) is True
    # reopening after expiry + grace purges old claims
    with SqliteSeenStore(path, clock=lambda: NOW + 10 + 300_000) as later:
        assert later.claim("a", NOW + 400_000) is True


def test_sqlite_store_with_verify_approval(
    tmp_path: Path, signer: ApprovalSigner, keyset: Keyset
) -> None:
    envelope = sign(signer)
    with SqliteSeenStore(tmp_path / "seen.db", clock=lambda: NOW) as store:
        verify_approval(envelope, keyset, NOW, seen=store)
    with SqliteSeenStore(tmp_path / "seen.db", clock=lambda: NOW) as store:  # a restart
        with pytest.raises(ApprovalReusedError):
            verify_approval(envelope, keyset, NOW, seen=store)


# --- RFC 8785: the fast path is byte-identical to the reference implementation -------

import rfc8785  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(_json)
def test_canonical_json_matches_rfc8785(value):
    try:
        expected = bytes(rfc8785.dumps(value))
    except Exception:  # noqa: BLE001 - what rfc8785 refuses, we refuse too
        with pytest.raises(Exception):  # noqa: B017
            canonical_json(value)
        return
    assert canonical_json(value) == expected
