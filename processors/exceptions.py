"""The one root error of trustplane, and the errors of the decision layers.

Every error a person can see carries a reason they can act on: ``diagnostics()``
returns it as text, and the CLI prints it once and exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "TrustplaneError",
    "ConfigError",
    "ValidationError",
]


class TrustplaneError(Exception):
    """Root of every error trustplane raises on purpose."""

    def __init__(self, reason: str, *, hint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint

    def diagnostics(self) -> str:
        """A text a person can act on: what went wrong, then what to do."""
        text = f"{type(self).__name__}: {self.reason}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigError(TrustplaneError):
    """A setting is missing, malformed or inconsistent."""


class ValidationError(TrustplaneError):
    """An input record is well-formed Avro but not an acceptable value."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
