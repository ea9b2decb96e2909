"""The error of an evaluation run that cannot go on."""

from __future__ import annotations

from processors.exceptions import TrustplaneError

__all__ = ["EvalError"]


class EvalError(TrustplaneError):
    """The evaluation could not run (a missing package, a suite that does not load, a
    worker that did not start, calls that got no decision)."""
