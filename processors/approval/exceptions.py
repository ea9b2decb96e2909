"""The errors of signing and verifying approvals.

Verification errors name the step of :func:`processors.approval.verify.verify_approval`
that failed; all are :class:`processors.exceptions.VerificationError`.
"""

from __future__ import annotations

from processors.crypto.keys import KeyError_
from processors.exceptions import TrustplaneError, VerificationError

__all__ = [
    "ApprovalSigningError",
    "KeyringError",
    "ApprovalVerificationError",
    "MalformedEnvelopeError",
    "PayloadTypeError",
    "SignatureInvalidError",
    "ApprovalKeyError",
    "StatementError",
    "ApprovalExpiredError",
    "IntentMismatchError",
    "ApprovalReusedError",
    "SeenStoreError",
]


class ApprovalSigningError(TrustplaneError):
    """An approval cannot be signed (not approved, no usable key, unencodable values)."""


class KeyringError(KeyError_):
    """The signing keyring (key directory, keyring.json, environment key) is unusable."""


class ApprovalVerificationError(VerificationError):
    """An approval must not be acted on. The subclass says which check failed."""


class MalformedEnvelopeError(ApprovalVerificationError):
    """Step 1: the envelope is not a DSSE envelope (not JSON, missing fields, bad base64)."""


class PayloadTypeError(ApprovalVerificationError):
    """Step 2: the envelope's payloadType is not application/vnd.in-toto+json."""


class SignatureInvalidError(ApprovalVerificationError):
    """Step 3: no signature verifies (tampered, wrong length, not base64, unsigned)."""


class ApprovalKeyError(ApprovalVerificationError):
    """Step 3/5: the signing key is unknown, retired, or was not valid when it signed."""


class StatementError(ApprovalVerificationError):
    """Step 4: the signed payload is not a trustplane approval Statement."""


class ApprovalExpiredError(ApprovalVerificationError):
    """Step 5: the approval has expired, or claims to be issued in the future."""


class IntentMismatchError(ApprovalVerificationError):
    """Step 6: the intent about to be executed is not the one that was approved."""


class ApprovalReusedError(ApprovalVerificationError):
    """Step 7: the approval was already used (approvals are single use)."""


class SeenStoreError(ApprovalVerificationError):
    """Step 7: the single-use store cannot be consulted; fail closed, do not execute."""
