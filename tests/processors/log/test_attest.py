"""Lineage signatures (processors/log/attest.py): the exact bytes, and what is refused."""

from __future__ import annotations

import base64

import pytest

from processors.crypto.dsse import pae
from processors.crypto.jcs import canonical_json
from processors.crypto.keys import KeyEntry, Keyset, generate_signing_key
from processors.log.attest import (
    LINEAGE_PAYLOAD_TYPE,
    LineageSignatureError,
    sign_event,
    signed_body,
    verify_event_signature,
)
from processors.log.chain import link

KEY = generate_signing_key()
KEYSET = Keyset([KeyEntry(KEY.kid, KEY.public_key)])


def event(**changes: object) -> dict:
    base = {
        "event_id": "event-1",
        "intent_id": "intent-1",
        "agent_id": "billing-agent",
        "stage": "enforcement",
        "event_type": "intent.denied",
        "status": "denied",
        "reasons": ["policy: forbidden"],
        "attributes": {"topic": "denied"},
        "occurred_at_ms": 1_700_000_000_000,
        "worker": "w1",
        "verdicts": [
            {
                "layer": "policy",
                "status": "DENY",
                "reasons": ["forbidden"],
                "evidence": {"policy": "p1"},
                "duration_us": 12,
            }
        ],
        "signer": None,
        "signature": None,
        "prev_hash": None,
        "event_hash": None,
        "log_index": None,
    }
    return {**base, **changes}


def test_the_signature_is_ed25519_over_pae_of_the_jcs_body_without_the_notary_members():
    signed = sign_event(event(), KEY)
    body = {
        k: v
        for k, v in signed.items()
        if k not in {"prev_hash", "event_hash", "log_index", "signature"}
    }
    assert body["signer"] == KEY.kid
    assert signed_body(signed) == canonical_json(body)
    message = pae(LINEAGE_PAYLOAD_TYPE, canonical_json(body))
    KEY.public_key.verify(base64.b64decode(signed["signature"]), message)  # raises if wrong
    assert verify_event_signature(signed, KEYSET) == KEY.kid


def test_the_notary_members_may_be_set_after_signing():
    signed = sign_event(event(), KEY)
    linked = link({**signed, "log_index": 7}, "sha256:" + "a" * 64)
    assert verify_event_signature(linked, KEYSET) == KEY.kid


@pytest.mark.parametrize(
    "change",
    [
        {"status": "approved"},
        {"event_type": "intent.approved"},
        {"reasons": []},
        {"worker": "attacker"},
        {"occurred_at_ms": 1},
        {"verdicts": []},
        {"attributes": {"topic": "approved"}},
    ],
)
def test_any_change_after_signing_is_refused(change):
    signed = sign_event(event(), KEY)
    with pytest.raises(LineageSignatureError):
        verify_event_signature({**signed, **change}, KEYSET)


def test_unsigned_foreign_and_garbled_signatures_are_refused():
    with pytest.raises(LineageSignatureError, match="not signed"):
        verify_event_signature(event(), KEYSET)
    stranger = generate_signing_key()
    with pytest.raises(LineageSignatureError):
        verify_event_signature(sign_event(event(), stranger), KEYSET)
    impostor = sign_event(event(), stranger)
    impostor["signer"] = KEY.kid  # claims the gate's key id; the body then differs too
    with pytest.raises(LineageSignatureError):
        verify_event_signature(impostor, KEYSET)
    with pytest.raises(LineageSignatureError, match="base64"):
        verify_event_signature({**sign_event(event(), KEY), "signature": "%%%"}, KEYSET)


def test_a_retired_key_cannot_vouch_for_events_appended_after_its_retirement():
    retired = Keyset([KeyEntry(KEY.kid, KEY.public_key, retired_at_ms=2_000)])
    signed = sign_event(event(), KEY)
    assert verify_event_signature(signed, retired, at_ms=1_999) == KEY.kid
    with pytest.raises(LineageSignatureError):
        verify_event_signature(signed, retired, at_ms=2_000)
