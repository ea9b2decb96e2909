"""Who wrote a lineage event: the gate signs every event it writes, the notary and the
sink verify the signature before they log or store the event.

Exact bytes (a third party can recompute them from the event alone):

- ``body = JCS(E)``, RFC 8785 JSON of the event ``E`` as a JSON object
  (``schemas/lineage_event.avsc``), **without** the members ``prev_hash``,
  ``event_hash``, ``log_index`` (the notary adds them) and ``signature``; ``signer``
  (the key id) is included, so the signature also binds the key it names.
- ``signature = base64(Ed25519-sign(DSSE PAE(LINEAGE_PAYLOAD_TYPE, body)))``, where
  ``PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``.
- The key is the gate's approval key named by ``signer`` in the gate's published JWKS
  (``approvals.jwks.json``). The payload type differs from an approval's
  (``application/vnd.in-toto+json``), so a lineage signature can never pass as an
  approval, nor an approval as a lineage event.

The notary's ``event_hash`` and Merkle leaf cover ``signer`` and ``signature``, so an
inclusion proof also shows which gate key vouched for the event.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, MutableMapping
from typing import Any

from processors.crypto.dsse import pae
from processors.crypto.jcs import CanonicalizationError, canonical_json
from processors.crypto.keys import KeyError_, Keyset, SigningKey
from processors.exceptions import VerificationError

__all__ = [
    "LINEAGE_PAYLOAD_TYPE",
    "UNSIGNED_MEMBERS",
    "LineageSignatureError",
    "signed_body",
    "sign_event",
    "verify_event_signature",
]

LINEAGE_PAYLOAD_TYPE = "application/vnd.trustplane.lineage+json"
UNSIGNED_MEMBERS = frozenset({"prev_hash", "event_hash", "log_index", "signature"})


class LineageSignatureError(VerificationError):
    """A lineage event is unsigned, or its signature is not a gate's."""


def signed_body(event: Mapping[str, Any]) -> bytes:
    """The RFC 8785 bytes a lineage signature covers (see the module docstring)."""
    try:
        return canonical_json({k: v for k, v in event.items() if k not in UNSIGNED_MEMBERS})
    except CanonicalizationError as exc:
        raise LineageSignatureError(f"the event has no canonical JSON form: {exc.reason}") from exc


def sign_event(event: MutableMapping[str, Any], key: SigningKey) -> MutableMapping[str, Any]:
    """Set ``signer`` and ``signature`` on ``event`` (in place) and return it."""
    event["signer"] = key.kid
    signature = key.sign(pae(LINEAGE_PAYLOAD_TYPE, signed_body(event)))
    event["signature"] = base64.b64encode(signature).decode()
    return event


def verify_event_signature(
    event: Mapping[str, Any], keyset: Keyset, *, at_ms: int | None = None
) -> str:
    """Return the signer's key id, or raise :class:`LineageSignatureError`.

    With ``at_ms`` (the notary passes the broker's append time of the ``lineage``
    record), the key must also be valid then (``nbf``/``retired_at`` in the JWKS): a
    retired gate key cannot vouch for events written after its retirement.
    """
    kid, text = event.get("signer"), event.get("signature")
    if not isinstance(kid, str) or not isinstance(text, str) or not kid or not text:
        raise LineageSignatureError(
            f"lineage event {event.get('event_id')!r} is not signed (no signer or signature)",
            hint="only a gate worker writes lineage; it signs every event with its approval key",
        )
    try:
        signature = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LineageSignatureError(
            f"lineage event {event.get('event_id')!r}: the signature is not base64"
        ) from exc
    try:
        keyset.verify(kid, signature, pae(LINEAGE_PAYLOAD_TYPE, signed_body(event)), at_ms)
    except KeyError_ as exc:
        raise LineageSignatureError(
            f"lineage event {event.get('event_id')!r} signed by {kid!r}: {exc.reason}",
            hint="is the gate's current JWKS (approvals.jwks.json) the one this service reads?",
        ) from exc
    return kid
