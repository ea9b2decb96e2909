"""DSSE (Dead Simple Signing Envelope): the pre-authentication encoding and signing.

PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN in ASCII
decimal bytes. Envelope: {"payload": b64, "payloadType": type, "signatures":
[{"keyid": kid, "sig": b64}]} (standard base64, as in the DSSE spec).

Envelopes are checked in one place, where their meaning is known: approvals by
:func:`processors.approval.verify.verify_approval`.
"""

from __future__ import annotations

import base64
from typing import Any

from processors.crypto.keys import SigningKey

__all__ = [
    "pae",
    "sign_envelope",
]


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def sign_envelope(payload: bytes, payload_type: str, key: SigningKey) -> dict[str, Any]:
    signature = key.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": payload_type,
        "signatures": [{"keyid": key.kid, "sig": base64.b64encode(signature).decode()}],
    }
