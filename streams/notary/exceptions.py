"""What goes wrong in the notary."""

from __future__ import annotations

from processors.exceptions import TrustplaneError

__all__ = ["NotaryServiceError", "LogIntegrityError", "ProofRequestError", "SnapshotError"]


class NotaryServiceError(TrustplaneError):
    """The notary cannot go on (broker, key, fenced by a newer notary, ...)."""


class LogIntegrityError(NotaryServiceError):
    """``lineage-log`` or ``checkpoints`` contradict themselves or this notary's key."""


class SnapshotError(NotaryServiceError):
    """A snapshot of the notary's state cannot be used: missing parts, corrupt, of another
    log, or not what ``lineage-log`` and ``checkpoints`` hold. The notary then replays
    ``lineage-log`` instead."""


class ProofRequestError(NotaryServiceError):
    """A proof cannot be served; ``status`` is the HTTP status that says why."""

    def __init__(self, reason: str, *, status: int, hint: str | None = None) -> None:
        super().__init__(reason, hint=hint)
        self.status = status
