"""Verifying an approval before acting on it: what executors run.

:func:`verify_approval` returns the :class:`VerifiedApproval` or raises a subclass of
:class:`~processors.approval.exceptions.ApprovalVerificationError` naming the step that
failed, never a bool. The steps, numbered in the code:

1. the envelope is a DSSE envelope (JSON object, ``payload``, ``payloadType``,
   ``signatures``; at most 256 KiB and 8 signatures);
2. its ``payloadType`` is ``application/vnd.in-toto+json``;
3. a signature by a key of the gate's keyset (JWKS), valid at the time, verifies over
   ``PAE(payloadType, payload)`` (DSSE);
4. the payload is an in-toto Statement v1 with the approval predicate
   (:mod:`processors.approval.statement`);
5. it has not expired, is not issued in the future, and was signed inside its key's window;
6. (given the intent bytes) it approves exactly that intent;
7. (given a :class:`~processors.approval.seen.SeenStore`) it was not used before.

This module imports neither the signer nor the keyring: an executor holds public keys only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from processors.approval.exceptions import (
    ApprovalExpiredError,
    ApprovalKeyError,
    ApprovalReusedError,
    ApprovalVerificationError,
    IntentMismatchError,
    MalformedEnvelopeError,
    PayloadTypeError,
    SeenStoreError,
    SignatureInvalidError,
    StatementError,
)
from processors.approval.seen import SeenStore
from processors.approval.statement import (
    ACCEPTED_PREDICATE_TYPES,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    parameters_digest,
    rfc3339_ms,
)
from processors.crypto.dsse import pae
from processors.crypto.jcs import CanonicalizationError
from processors.crypto.keys import KeyEntry, SignatureError, verify_signature

__all__ = [
    "DEFAULT_MAX_SKEW_MS",
    "MAX_ENVELOPE_BYTES",
    "MAX_SIGNATURES",
    "VerifiedApproval",
    "verify_approval",
    "claim_once",
]

DEFAULT_MAX_SKEW_MS = 30_000
MAX_ENVELOPE_BYTES = 256 * 1024
MAX_SIGNATURES = 8

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class VerifiedApproval:
    """An approval whose every check passed: act on exactly this, once."""

    approval_id: str
    intent_id: str
    agent_id: str
    action: str
    resource: str
    intent_digest: str
    """``sha256:<hex>`` of the approved intent record's bytes."""
    issued_at_ms: int
    expires_at_ms: int
    predicate: dict[str, Any] = field(compare=False, repr=False)
    keyid: str = ""

    @property
    def parameters_digest(self) -> str:
        return str(self.predicate.get("parametersDigest", ""))

    def check_parameters(self, parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return ``parameters`` if they are the approved ones, else raise IntentMismatchError."""
        try:
            actual = parameters_digest(parameters)
        except CanonicalizationError as exc:
            raise IntentMismatchError(
                f"the parameters cannot be digested, so they are not the approved ones: "
                f"{exc.reason}"
            ) from exc
        if not hmac.compare_digest(actual, self.parameters_digest):
            raise IntentMismatchError(
                f"parameters digest {actual} is not the approved {self.parameters_digest}: "
                "the executor is about to run something other than what was approved"
            )
        return parameters


def _b64decode(text: str, what: str, error: type[ApprovalVerificationError]) -> bytes:
    """Standard or URL-safe base64, padding optional (as the DSSE spec allows)."""
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.b64decode(padded, altchars=b"-_", validate=True)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(f"the {what} is not valid base64") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        names = [name for name, _ in pairs]
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"duplicate member {duplicate!r}")
    return result


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(predicate: Mapping[str, Any], name: str) -> str:
    value = predicate.get(name)
    if not isinstance(value, str) or not value:
        raise StatementError(f"predicate.{name} is missing or not a non-empty string")
    return value


def verify_approval(
    envelope: bytes | str | Mapping[str, Any],
    keyset: Mapping[str, KeyEntry],
    now_ms: int,
    intent: bytes | None = None,
    seen: SeenStore | None = None,
    *,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
) -> VerifiedApproval:
    """Verify a signed approval before acting on it; return it or raise.

    Every failure is an :class:`ApprovalVerificationError` subclass naming the step. Pass
    ``intent`` (the raw intent record bytes) to check the approval is for exactly that
    intent, and ``seen`` to make the approval single use (the claim is made last, so a
    rejected approval is never marked used; a claimed one must then be executed or
    reported FAILED: it will not verify again).
    """
    # (1) Parse the envelope: a JSON object with payload, payloadType and signatures.
    if isinstance(envelope, bytes | bytearray | memoryview | str):
        if len(envelope) > MAX_ENVELOPE_BYTES:
            raise MalformedEnvelopeError(
                f"the envelope is {len(envelope)} bytes; approvals are at most {MAX_ENVELOPE_BYTES}"
            )
        try:
            parsed = json.loads(bytes(envelope) if not isinstance(envelope, str) else envelope)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedEnvelopeError(f"the envelope is not JSON: {exc}") from exc
    elif isinstance(envelope, Mapping):
        parsed = dict(envelope)
    else:
        raise MalformedEnvelopeError(
            f"the envelope must be JSON bytes/text or a mapping, not {type(envelope).__name__}"
        )
    if not isinstance(parsed, dict):
        raise MalformedEnvelopeError("the envelope is not a JSON object")
    payload_b64 = parsed.get("payload")
    payload_type = parsed.get("payloadType")
    signatures = parsed.get("signatures")
    if not isinstance(payload_b64, str) or not isinstance(payload_type, str):
        raise MalformedEnvelopeError("the envelope's payload or payloadType is missing or not text")
    if not isinstance(signatures, list):
        raise MalformedEnvelopeError("the envelope's signatures is missing or not a list")
    if len(signatures) > MAX_SIGNATURES:
        raise MalformedEnvelopeError(
            f"the envelope has {len(signatures)} signatures; at most {MAX_SIGNATURES} are read"
        )
    payload = _b64decode(payload_b64, "envelope's payload", MalformedEnvelopeError)

    # (2) The payload type is the in-toto one (it is signed too, via PAE).
    if payload_type != PAYLOAD_TYPE:
        raise PayloadTypeError(
            f"payloadType is {payload_type[:100]!r}, expected {PAYLOAD_TYPE!r}: "
            "this is not a trustplane approval"
        )

    # (3) A signature by a known key that is not retired verifies over PAE(type, payload).
    keyid, entry = _verify_signatures(
        signatures, keyset, pae(payload_type, payload), now_ms, max_skew_ms
    )

    # (4) The payload is an in-toto Statement v1 with the trustplane approval predicate.
    try:
        statement = json.loads(payload, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StatementError(f"the signed payload is not a JSON document: {exc}") from exc
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise StatementError(f"the signed payload is not an in-toto Statement ({STATEMENT_TYPE})")
    if statement.get("predicateType") not in ACCEPTED_PREDICATE_TYPES:
        raise StatementError(
            f"predicateType is {str(statement.get('predicateType'))[:100]!r}, "
            f"expected {PREDICATE_TYPE!r}"
        )
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise StatementError("an approval has exactly one subject, the intent")
    name = subjects[0].get("name")
    digests = subjects[0].get("digest")
    if not isinstance(name, str) or not name.startswith("intent:") or len(name) == 7:
        raise StatementError("the subject's name must be intent:<intent_id>")
    sha256_hex = digests.get("sha256") if isinstance(digests, dict) else None
    if not isinstance(sha256_hex, str) or not _HEX64.match(sha256_hex):
        raise StatementError("the subject has no sha256 digest of 64 lowercase hex digits")
    intent_id = name[len("intent:") :]
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        raise StatementError("the Statement has no predicate object")
    approval_id = _text(predicate, "approvalId")
    agent_id = _text(predicate, "agentId")
    action = _text(predicate, "action")
    resource = _text(predicate, "resource")
    if predicate.get("intentId", intent_id) != intent_id:
        raise StatementError("predicate.intentId is not the intent named by the subject")
    if not _is_int(predicate.get("issuedAtMs")) or not _is_int(predicate.get("expiresAtMs")):
        raise StatementError("predicate.issuedAtMs / expiresAtMs must be integers (ms)")
    issued_at_ms: int = predicate["issuedAtMs"]
    expires_at_ms: int = predicate["expiresAtMs"]
    if expires_at_ms <= issued_at_ms:
        raise StatementError("the approval expires before it is issued")
    verdicts = predicate.get("verdicts")
    if (
        not isinstance(verdicts, list)
        or not verdicts
        or any(not isinstance(v, dict) or v.get("status") != "ALLOW" for v in verdicts)
    ):
        raise StatementError(
            "predicate.verdicts must list every layer, each with status ALLOW; "
            "anything else is not an approval"
        )

    # (5) Fresh: not expired at now_ms, not issued in the future (beyond the clock skew),
    #     and signed while its key was valid.
    if now_ms >= expires_at_ms:
        raise ApprovalExpiredError(
            f"approval {approval_id} expired at {rfc3339_ms(expires_at_ms)} "
            f"({now_ms - expires_at_ms} ms ago)",
            hint="do not execute; the agent must submit the intent again",
        )
    if issued_at_ms > now_ms + max_skew_ms:
        raise ApprovalExpiredError(
            f"approval {approval_id} claims to be issued at {rfc3339_ms(issued_at_ms)}, "
            f"{issued_at_ms - now_ms} ms in the future (allowed skew {max_skew_ms} ms)",
            hint="check the clocks of the gate and this executor (NTP)",
        )
    if entry.not_before_ms is not None and issued_at_ms + max_skew_ms < entry.not_before_ms:
        raise ApprovalKeyError(
            f"approval {approval_id} was issued before key {keyid} became valid "
            f"({entry.not_before_ms})"
        )
    if entry.retired_at_ms is not None and issued_at_ms >= entry.retired_at_ms:
        raise ApprovalKeyError(
            f"approval {approval_id} was issued after key {keyid} was retired "
            f"({entry.retired_at_ms})"
        )

    # (6) If the intent is at hand: it is exactly the approved one.
    intent_digest = "sha256:" + sha256_hex
    if intent is not None:
        actual = hashlib.sha256(intent).hexdigest()
        if not hmac.compare_digest(actual, sha256_hex):
            raise IntentMismatchError(
                f"the intent's sha256 is {actual}, the approval is for {sha256_hex}: the "
                "executor is about to run something other than what was approved",
                hint="execute only the intent record the approval names (intent_id "
                f"{intent_id!r}), byte for byte",
            )

    verified = VerifiedApproval(
        approval_id=approval_id,
        intent_id=intent_id,
        agent_id=agent_id,
        action=action,
        resource=resource,
        intent_digest=intent_digest,
        issued_at_ms=issued_at_ms,
        expires_at_ms=expires_at_ms,
        predicate=predicate,
        keyid=keyid,
    )

    # (7) Single use: claim the approval id (last, so only a fully valid approval is used up).
    if seen is not None:
        claim_once(seen, verified)
    return verified


def claim_once(seen: SeenStore, approval: VerifiedApproval) -> VerifiedApproval:
    """Step 7 on its own: claim ``approval`` in ``seen`` or raise ApprovalReusedError.

    For callers that run further checks of their own after :func:`verify_approval`
    (called without ``seen``) and want the claim to stay the very last step.
    """
    try:
        claimed = seen.claim(approval.approval_id, approval.expires_at_ms)
    except ApprovalVerificationError:
        raise
    except Exception as exc:  # a third-party store failed: fail closed, typed
        raise SeenStoreError(
            f"the single-use store {seen!r} failed for approval {approval.approval_id}: "
            f"{type(exc).__name__}: {exc}",
            hint="the approval was not executed; fix the store and redeliver it",
        ) from exc
    if not claimed:
        raise ApprovalReusedError(
            f"approval {approval.approval_id} was already used; an approval authorizes one "
            "execution",
            hint="a redelivered record: it was executed (or claimed) before; do not run it again",
        )
    return approval


def _verify_signatures(
    signatures: list[Any],
    keyset: Mapping[str, KeyEntry],
    message: bytes,
    now_ms: int,
    max_skew_ms: int,
) -> tuple[str, KeyEntry]:
    """Step 3: the first signature that verifies wins; otherwise the most telling error."""
    if not signatures:
        raise SignatureInvalidError(
            "the envelope has no signatures: an unsigned approval must not be acted on"
        )
    key_problems: list[str] = []
    sig_problems: list[str] = []
    for n, item in enumerate(signatures):
        if not isinstance(item, dict) or not isinstance(item.get("sig"), str):
            sig_problems.append(f"signatures[{n}] has no 'sig' text")
            continue
        kid = item.get("keyid")
        if not isinstance(kid, str) or not kid:
            key_problems.append(f"signatures[{n}] names no keyid")
            continue
        entry = keyset.get(kid)
        if entry is None:
            key_problems.append(f"signatures[{n}]: key {kid!r} is not in the keyset")
            continue
        if entry.retired_at_ms is not None and now_ms >= entry.retired_at_ms:
            key_problems.append(
                f"signatures[{n}]: key {kid!r} was retired at {rfc3339_ms(entry.retired_at_ms)}"
            )
            continue
        if entry.not_before_ms is not None and now_ms + max_skew_ms < entry.not_before_ms:
            key_problems.append(
                f"signatures[{n}]: key {kid!r} is not valid before "
                f"{rfc3339_ms(entry.not_before_ms)}"
            )
            continue
        try:
            signature = _b64decode(item["sig"], f"signatures[{n}].sig", SignatureInvalidError)
        except SignatureInvalidError as exc:
            sig_problems.append(exc.reason)
            continue
        if len(signature) != 64:
            sig_problems.append(
                f"signatures[{n}] is {len(signature)} bytes; an Ed25519 signature is 64"
            )
            continue
        try:
            verify_signature(entry.public_key, signature, message)
        except SignatureError:
            sig_problems.append(
                f"signatures[{n}] by key {kid!r} does not verify: the payload or its type "
                "was changed after signing, or the signature is corrupt"
            )
            continue
        return kid, entry
    if sig_problems:
        raise SignatureInvalidError(
            "; ".join(sig_problems + key_problems),
            hint="do not execute; the approval was altered or damaged in transit",
        )
    raise ApprovalKeyError(
        "; ".join(key_problems),
        hint="refresh the keyset (JWKS) from the gate operators; if the key is retired, the "
        f"approval is no longer valid. Known keys: {', '.join(keyset) or 'none'}",
    )
