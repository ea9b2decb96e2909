"""The approval format: an in-toto Statement v1 in a DSSE envelope.

An approval is a DSSE envelope (``payloadType`` ``application/vnd.in-toto+json``) whose
payload is the RFC 8785 canonical JSON of an in-toto Statement v1::

    {
      "_type": "https://in-toto.io/Statement/v1",
      "subject": [{"name": "intent:<intent_id>",
                   "digest": {"sha256": "<hex of SHA-256 of the exact intent record bytes>"}}],
      "predicateType": "https://trustplane.dev/approval/v2",
      "predicate": {
        "approvalId": "...", "intentId": "...", "agentId": "...",
        "action": "...", "resource": "...",
        "parametersDigest": "sha256:<hex of SHA-256 of the RFC 8785 JSON of the parameters>",
        "verdicts": [{"layer": "...", "status": "ALLOW"}],
        "policyBundleDigest": "sha256:..." | null,
        "determiningPolicies": ["..."],
        "issuedAt": "2023-11-14T22:13:20.000Z", "issuedAtMs": 1700000000000,
        "expiresAt": "2023-11-14T22:18:20.000Z", "expiresAtMs": 1700000300000,
        "lineage": {"eventId": "...", "logIndex": 17 | null} | null
      }
    }

The predicate type ``https://trustplane.dev/approval/v2`` means: *every decision layer of
a trustplane gate explicitly allowed the intent named by the subject, and an executor may
act on it once, between issuedAt and expiresAt*. Fields may be added to the predicate in
v2 (verifiers ignore unknown fields); removing or changing the meaning of one is v3.
v2 is v1 without each verdict's ``reasons`` and ``evidence``: they are in the signed
lineage event the approval names (``lineage.eventId``), so the statement an executor
verifies stays small. Verifiers accept v1 too (an approval lives minutes).

Keys and signing are in :mod:`processors.approval.keyring` and
:mod:`processors.approval.signer`; executors verify with
:func:`processors.approval.verify.verify_approval`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from processors.approval.exceptions import ApprovalSigningError
from processors.crypto.jcs import CanonicalizationError, canonical_json

if TYPE_CHECKING:
    from processors.enforcement import Enforcement
    from processors.intent import Intent
    from processors.verdict import Verdict

__all__ = [
    "STATEMENT_TYPE",
    "PREDICATE_TYPE",
    "ACCEPTED_PREDICATE_TYPES",
    "PAYLOAD_TYPE",
    "LineagePosition",
    "build_statement",
    "parameters_digest",
    "rfc3339_ms",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://trustplane.dev/approval/v2"
ACCEPTED_PREDICATE_TYPES = (PREDICATE_TYPE, "https://trustplane.dev/approval/v1")
"""What a verifier accepts: v1 carried each verdict's reasons and evidence as well."""
PAYLOAD_TYPE = "application/vnd.in-toto+json"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INTENT_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def rfc3339_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2023-11-14T22:13:20.000Z``."""
    seconds, millis = divmod(ms, 1000)
    return f"{_rfc3339_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=1024)
def _rfc3339_second(seconds: int) -> str:
    """The text of a whole second (every approval issued in one second shares it)."""
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def parameters_digest(parameters: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the RFC 8785 canonical JSON of the intent's parameters.

    Raises CanonicalizationError for values JSON cannot carry exactly (integers with
    |n| >= 2^53, NaN, infinities): agents should send such values as strings.
    """
    return "sha256:" + hashlib.sha256(canonical_json(dict(parameters))).hexdigest()


@dataclass(frozen=True, slots=True)
class LineagePosition:
    """Where the approval's decision sits in the lineage log."""

    event_id: str
    log_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"eventId": self.event_id, "logIndex": self.log_index}

    @classmethod
    def coerce(cls, value: LineagePosition | Mapping[str, Any]) -> LineagePosition:
        if isinstance(value, LineagePosition):
            position = value
        else:
            position = cls(value.get("eventId"), value.get("logIndex"))  # type: ignore[arg-type]
        if not isinstance(position.event_id, str) or not position.event_id:
            raise ApprovalSigningError("lineage.eventId must be a non-empty string")
        index = position.log_index
        if index is not None and (
            isinstance(index, bool) or not isinstance(index, int) or index < 0
        ):
            raise ApprovalSigningError("lineage.logIndex must be an integer >= 0 or null")
        return position


def _policy_list(value: object) -> list[str]:
    """determining_policies evidence: a list, a JSON list in a string, or comma-separated."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return [str(item) for item in parsed]
    return [part.strip() for part in text.split(",") if part.strip()]


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {"layer": verdict.layer, "status": verdict.status.value}


def build_statement(
    intent: Intent,
    enforcement: Enforcement,
    *,
    intent_digest: str,
    approval_id: str,
    issued_at_ms: int,
    expires_at_ms: int,
    lineage: LineagePosition | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The in-toto Statement v1 of one approval (see the module docstring)."""
    if not _INTENT_DIGEST.match(intent_digest):
        raise ApprovalSigningError(
            f"intent_digest must be sha256:<64 lowercase hex>, got {intent_digest[:80]!r}"
        )
    policy = next((v for v in enforcement.verdicts if v.layer == "policy"), None)
    policy_evidence: Mapping[str, Any] = policy.evidence if policy is not None else {}
    bundle = policy_evidence.get("bundle_digest")
    try:
        params = parameters_digest(intent.parameters)
    except CanonicalizationError as exc:
        raise ApprovalSigningError(
            f"intent {intent.intent_id}: the parameters cannot be signed: {exc.reason}",
            hint="send integers beyond 2^53 and non-finite numbers as strings",
        ) from exc
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {
                "name": f"intent:{intent.intent_id}",
                "digest": {"sha256": intent_digest.removeprefix("sha256:")},
            }
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "approvalId": approval_id,
            "intentId": intent.intent_id,
            "agentId": intent.agent_id,
            "action": intent.action,
            "resource": intent.resource,
            "parametersDigest": params,
            "verdicts": [_verdict_json(v) for v in enforcement.verdicts],
            "policyBundleDigest": str(bundle) if bundle else None,
            "determiningPolicies": _policy_list(policy_evidence.get("determining_policies")),
            "issuedAt": rfc3339_ms(issued_at_ms),
            "issuedAtMs": issued_at_ms,
            "expiresAt": rfc3339_ms(expires_at_ms),
            "expiresAtMs": expires_at_ms,
            "lineage": LineagePosition.coerce(lineage).to_json() if lineage is not None else None,
        },
    }
