"""DSSE (Dead Simple Signing Envelope) and RFC 8785 canonical JSON.

PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN in ASCII
decimal bytes. Envelope: {"payload": b64, "payloadType": type, "signatures":
[{"keyid": kid, "sig": b64}]} (standard base64, as in the DSSE spec).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import rfc8785

from processors.crypto.keys import KeyError_, Keyset, SigningKey
from processors.exceptions import TrustplaneError

__all__ = [
    "CanonicalizationError",
    "EnvelopeError",
    "canonical_json",
    "pae",
    "sign_envelope",
    "verify_envelope",
    "parse_envelope",
]


class CanonicalizationError(TrustplaneError):
    """A value has no RFC 8785 form (integers beyond 2^53, NaN, infinities)."""


class EnvelopeError(TrustplaneError):
    """A DSSE envelope is malformed, of the wrong type, or not signed by a trusted key."""


_MAX_SAFE_INT = 2**53 - 1
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


class _Slow(Exception):
    """The C JSON encoder might not write this value as RFC 8785 does."""


def _fast(value: Any) -> Any:
    """``value`` with integral doubles as ints, if the C encoder then writes its exact RFC
    8785 bytes; raises _Slow otherwise (non-ASCII keys sort differently in UTF-16, and
    doubles outside [1e-4, 1e16) are formatted differently by ECMAScript)."""
    kind = type(value)
    if value is None or kind is str or kind is bool:
        return value
    if kind is int:
        if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
            return value
        raise _Slow
    if kind is float:
        if value.is_integer():  # ECMAScript prints 10.0 as 10; repr() adds ".0"
            if abs(value) <= _MAX_SAFE_INT:
                return int(value)
            raise _Slow
        if 1e-4 <= abs(value) < 1e16:
            return value
        raise _Slow
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise _Slow
            out[key] = _fast(item)
        return out
    if kind is list or kind is tuple:
        return [_fast(item) for item in value]
    raise _Slow


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes. Integers with |n| >= 2^53 and NaN/inf are refused: send
    such values as strings.

    Typical values go through the C JSON encoder (byte-identical, checked against the
    ``rfc8785`` package by a property test); anything it might print differently goes
    through ``rfc8785``."""
    try:
        return _ENCODER.encode(_fast(value)).encode("utf-8")
    except (_Slow, UnicodeEncodeError, ValueError, TypeError):
        pass
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalizationError(f"cannot canonicalize: {exc}") from exc


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


def parse_envelope(data: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """Decode an envelope given as JSON bytes/text or a mapping; check its shape."""
    if isinstance(data, (bytes, str)):
        try:
            envelope = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EnvelopeError(f"the envelope is not JSON: {exc}") from exc
    else:
        envelope = dict(data)
    if not isinstance(envelope, dict):
        raise EnvelopeError("the envelope is not a JSON object")
    for name, kind in (("payload", str), ("payloadType", str), ("signatures", list)):
        if not isinstance(envelope.get(name), kind):
            raise EnvelopeError(f"the envelope's {name!r} is missing or not a {kind.__name__}")
    return envelope


def verify_envelope(
    data: bytes | str | Mapping[str, Any],
    keyset: Keyset,
    *,
    payload_type: str,
    now_ms: int | None = None,
) -> tuple[bytes, str]:
    """Return (payload, keyid of the verifying signature) or raise EnvelopeError.

    (1) the envelope parses; (2) its payloadType is the expected one; (3) the payload is
    valid base64; (4) at least one signature by a key of the keyset (valid at now_ms)
    verifies over PAE(payloadType, payload).
    """
    envelope = parse_envelope(data)
    if envelope["payloadType"] != payload_type:
        raise EnvelopeError(
            f"payload type is {envelope['payloadType']!r}, expected {payload_type!r}"
        )
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError("the payload is not valid base64") from exc
    message = pae(payload_type, payload)
    failures: list[str] = []
    for n, entry in enumerate(envelope["signatures"]):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("sig"), str):
            failures.append(f"signatures[{n}] is malformed")
            continue
        kid = str(entry.get("keyid", ""))
        try:
            signature = base64.b64decode(entry["sig"], validate=True)
            keyset.verify(kid, signature, message, now_ms)
        except (binascii.Error, ValueError):
            failures.append(f"signatures[{n}] is not valid base64")
        except KeyError_ as exc:
            failures.append(f"signatures[{n}] (keyid {kid!r}): {exc.reason}")
        else:
            return payload, kid
    detail = "; ".join(failures) or "the envelope has no signatures"
    raise EnvelopeError(f"0 of {len(envelope['signatures'])} signatures verify: {detail}")
