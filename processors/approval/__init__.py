"""Signed approvals: the in-toto Statement in a DSSE envelope, signing, and verification.

The rooms (import the one you need; an executor needs ``verify`` and ``seen`` only):

- :mod:`~processors.approval.statement`: the format (Statement, predicate, digests);
- :mod:`~processors.approval.keyring`: the gate's signing keys (:class:`SigningKeyring`);
- :mod:`~processors.approval.signer`: :class:`ApprovalSigner`;
- :mod:`~processors.approval.verify`: :func:`verify_approval`, :class:`VerifiedApproval`;
- :mod:`~processors.approval.seen`: single-use stores;
- :mod:`~processors.approval.exceptions`: the errors, one per failed step.

This front door re-exports their public names; the signing side (keyring, signer) only
lazily (PEP 562): ``from processors.approval import ApprovalSigner`` loads the signer,
while an executor that imports this package or ``processors.approval.verify`` loads
neither the signer nor the keyring.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from processors.approval.exceptions import (
    ApprovalExpiredError,
    ApprovalKeyError,
    ApprovalReusedError,
    ApprovalSigningError,
    ApprovalVerificationError,
    IntentMismatchError,
    KeyringError,
    MalformedEnvelopeError,
    PayloadTypeError,
    SeenStoreError,
    SignatureInvalidError,
    StatementError,
)
from processors.approval.seen import InMemorySeenStore, SeenStore, SqliteSeenStore
from processors.approval.statement import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    LineagePosition,
    build_statement,
    parameters_digest,
    rfc3339_ms,
)
from processors.approval.verify import (
    DEFAULT_MAX_SKEW_MS,
    MAX_ENVELOPE_BYTES,
    MAX_SIGNATURES,
    VerifiedApproval,
    claim_once,
    verify_approval,
)

if TYPE_CHECKING:  # the gate's signing side, loaded on first use only (see __getattr__)
    from processors.approval.keyring import (
        KEYRING_FILE,
        SIGNING_KEY_ENV,
        KeyringEntry,
        SigningKeyring,
    )
    from processors.approval.signer import ApprovalSigner

_LAZY = {
    "SIGNING_KEY_ENV": "keyring",
    "KEYRING_FILE": "keyring",
    "KeyringEntry": "keyring",
    "SigningKeyring": "keyring",
    "ApprovalSigner": "signer",
}

__all__ = [
    # format
    "STATEMENT_TYPE",
    "PREDICATE_TYPE",
    "PAYLOAD_TYPE",
    "SIGNING_KEY_ENV",
    "KEYRING_FILE",
    "DEFAULT_MAX_SKEW_MS",
    "MAX_ENVELOPE_BYTES",
    "MAX_SIGNATURES",
    "LineagePosition",
    "build_statement",
    "parameters_digest",
    "rfc3339_ms",
    # signing (the gate)
    "ApprovalSigningError",
    "KeyringError",
    "KeyringEntry",
    "SigningKeyring",
    "ApprovalSigner",
    # verification (executors)
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
    "VerifiedApproval",
    "verify_approval",
    "claim_once",
    "SeenStore",
    "InMemorySeenStore",
    "SqliteSeenStore",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
