"""RFC 8785 JSON Canonicalization Scheme (JCS): the bytes every signature covers."""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from processors.exceptions import TrustplaneError

__all__ = ["CanonicalizationError", "canonical_json"]


class CanonicalizationError(TrustplaneError):
    """A value has no RFC 8785 form (integers beyond 2^53, NaN, infinities)."""


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
