"""What goes wrong in the sink."""

from __future__ import annotations

from processors.exceptions import TrustplaneError

__all__ = ["SinkRunError"]


class SinkRunError(TrustplaneError):
    """The sink cannot go on (fenced by a newer sink, broker unreachable, port taken, …)."""
