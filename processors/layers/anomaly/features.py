"""What the anomaly layer reads from an intent: resource kinds, numeric parameter
values, and bounded text."""

from __future__ import annotations

import math
from typing import Final

__all__ = ["MAX_TEXT", "as_number", "resource_kind", "short"]

_CLAMP: Final = 1e300
MAX_TEXT: Final = 256


def resource_kind(resource: str) -> str:
    """The kind of a resource: the text before its first ``:`` or ``/`` (``acct:42`` ->
    ``acct``, ``s3://b/k`` -> ``s3``); ``(none)`` if it has no such prefix."""
    for index, char in enumerate(resource[:MAX_TEXT]):
        if char in ":/":
            return resource[:index] or "(none)"
    return "(none)"


def as_number(raw: object) -> tuple[float | None, str]:
    """A parameter value as a float, or None and why it cannot be judged."""
    if raw is None:
        return None, "absent"
    if isinstance(raw, bool):
        return None, f"{raw} is a boolean, not a number"
    if isinstance(raw, int):
        if abs(raw) >= _CLAMP:
            return (_CLAMP if raw > 0 else -_CLAMP), ""  # no float(raw): it overflows
        return float(raw), ""
    if isinstance(raw, float):
        if not math.isfinite(raw):
            return None, f"{raw} is not a finite number"
        return max(-_CLAMP, min(_CLAMP, raw)), ""
    if isinstance(raw, str):
        return None, f"{short(raw, 40)!r} is a string, not a number"
    return None, f"a {type(raw).__name__} is not a number"


def short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
