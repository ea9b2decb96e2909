"""Signing approvals: the in-toto Statement of an approved intent, in a DSSE envelope
signed with the keyring's current key."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from processors.approval.exceptions import ApprovalSigningError
from processors.approval.keyring import SigningKeyring
from processors.approval.statement import PAYLOAD_TYPE, LineagePosition, build_statement
from processors.crypto.dsse import sign_envelope
from processors.crypto.jcs import CanonicalizationError, canonical_json
from processors.crypto.keys import Keyset
from processors.enforcement import Enforcement, Outcome
from processors.intent import Intent
from processors.verdict import Status

__all__ = ["ApprovalSigner"]


class ApprovalSigner:
    """Signs approvals with the keyring's current key."""

    def __init__(self, keyring: SigningKeyring) -> None:
        self._keyring = keyring
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ApprovalSigner({self._keyring!r})"

    @property
    def keyring(self) -> SigningKeyring:
        return self._keyring

    def use(self, keyring: SigningKeyring) -> None:
        """Swap in a reloaded keyring (e.g. after a rotation), atomically."""
        with self._lock:
            self._keyring = keyring

    def public_keyset(self) -> Keyset:
        return self._keyring.public_keyset()

    def sign(
        self,
        intent: Intent,
        enforcement: Enforcement,
        *,
        intent_digest: str,
        approval_id: str,
        now_ms: int,
        ttl_ms: int,
        lineage: LineagePosition | Mapping[str, Any] | None = None,
    ) -> tuple[bytes, int]:
        """Return (DSSE envelope as UTF-8 JSON, expires_at_ms).

        The approval expires ``ttl_ms`` after ``now_ms`` or when the intent expires,
        whichever is first. Raises ApprovalSigningError for anything not approved by
        every layer, an approval that would be born expired, or no usable key.
        """
        if enforcement.outcome is not Outcome.APPROVED:
            raise ApprovalSigningError(
                f"refusing to sign an approval for a {enforcement.outcome} intent"
            )
        if not enforcement.verdicts or any(
            v.status is not Status.ALLOW for v in enforcement.verdicts
        ):
            raise ApprovalSigningError(
                "refusing to sign: an approval needs an explicit ALLOW from every layer"
            )
        if ttl_ms <= 0:
            raise ApprovalSigningError(f"ttl_ms must be > 0, got {ttl_ms}")
        expires_at_ms = min(now_ms + ttl_ms, intent.expires_at_ms)
        if expires_at_ms <= now_ms:
            raise ApprovalSigningError(
                f"intent {intent.intent_id} expired at {intent.expires_at_ms}, before the "
                f"approval would be issued ({now_ms})"
            )
        statement = build_statement(
            intent,
            enforcement,
            intent_digest=intent_digest,
            approval_id=approval_id,
            issued_at_ms=now_ms,
            expires_at_ms=expires_at_ms,
            lineage=lineage,
        )
        try:
            payload = canonical_json(statement)
        except CanonicalizationError as exc:
            raise ApprovalSigningError(
                f"intent {intent.intent_id}: the approval cannot be canonicalized: {exc.reason}",
                hint="send integers beyond 2^53 and non-finite numbers as strings",
            ) from exc
        key = self._keyring.signing_key(now_ms)
        envelope = sign_envelope(payload, PAYLOAD_TYPE, key)
        return json.dumps(envelope, separators=(",", ":")).encode(), expires_at_ms
