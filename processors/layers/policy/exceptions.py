"""The policy errors: one root, :class:`PolicyError`."""

from __future__ import annotations

from processors.exceptions import TrustplaneError

__all__ = ["PolicyError", "PolicyBundleError", "PolicyEvaluationError", "PolicyCaseError"]


class PolicyError(TrustplaneError):
    """Root of the policy errors."""


class PolicyBundleError(PolicyError):
    """A policy bundle is malformed, does not parse or validate, or has expired."""


class PolicyEvaluationError(PolicyError):
    """Cedar failed while deciding a request (not a deny: a failure)."""


class PolicyCaseError(PolicyError):
    """A test table (``*.cases.json``) is malformed."""
