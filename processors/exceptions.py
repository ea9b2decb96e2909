"""The one root error of trustplane, and the errors every package shares.

Every error a person can see carries a reason they can act on: ``diagnostics()``
returns it as text, and the CLI prints it once and exits non-zero.

The hierarchy of the failed checks (each package keeps its own subclasses)::

    TrustplaneError
    ├── ConfigError
    ├── ValidationError
    └── VerificationError                   something must not be trusted or acted on
        ├── ApprovalVerificationError       processors.approval.exceptions (one per step)
        │   └── ApprovalRecordError         streams.sdk.executor
        ├── ProofError                      processors.log.merkle (inclusion, consistency)
        ├── NoteError                       processors.log.checkpoint (signed notes)
        │   └── CheckpointError
        ├── ChainError                      processors.log.chain (hash links)
        └── SignatureError                  processors.crypto.keys (also a KeyError_)

Catch :class:`VerificationError` to refuse anything that failed a check, whatever it was.
"""

from __future__ import annotations

__all__ = [
    "TrustplaneError",
    "ConfigError",
    "ValidationError",
    "VerificationError",
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


class VerificationError(TrustplaneError):
    """A check failed (signature, approval, proof, checkpoint, chain link): what was
    checked must not be trusted or acted on. The subclass says which check."""
