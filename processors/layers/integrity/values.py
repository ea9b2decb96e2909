"""Describing and checking untrusted values (command payloads, settings, stored state)
in the integrity layer's error messages.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_TEXT", "is_text", "kind_of"]

MAX_TEXT: Final = 256


def is_text(value: object, *, limit: int = MAX_TEXT) -> bool:
    return isinstance(value, str) and bool(value.strip()) and len(value) <= limit


def kind_of(value: object) -> str:
    return "null" if value is None else type(value).__name__
