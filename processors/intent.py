"""The Intent as the decision layers see it: typed, immutable, validated.

Built from a decoded Avro record (``schemas/intent.avsc``). Anything that decodes but
is not an acceptable intent raises :class:`~processors.exceptions.ValidationError`
with a machine-readable code, and the gate sends the record to ``rejected``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processors.exceptions import ValidationError

__all__ = ["Intent", "RuntimeAttestation", "ParamValue"]

ParamValue = bool | int | float | str | None

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_MAX_ID = 256


@dataclass(frozen=True, slots=True)
class RuntimeAttestation:
    runtime_id: str
    code_digest: str
    config_digest: str
    environment: str
    host: str


@dataclass(frozen=True, slots=True)
class Intent:
    intent_id: str
    agent_id: str
    runtime: RuntimeAttestation
    action: str
    resource: str
    parameters: Mapping[str, ParamValue]
    context: Mapping[str, ParamValue]
    sequence: int
    issued_at_ms: int
    expires_at_ms: int
    nonce: str
    key_id: str
    signature: bytes | None

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, key: bytes | None = None) -> Intent:
        """Validate a decoded Intent record (and its Kafka key) and build the Intent."""
        if not key:
            raise ValidationError(
                "missing_key", "the record has no key; intents are keyed by agent id"
            )
        runtime = record["runtime"]
        intent = cls(
            intent_id=_identifier(record, "intent_id"),
            agent_id=_identifier(record, "agent_id"),
            runtime=RuntimeAttestation(
                runtime_id=_identifier(runtime, "runtime_id", prefix="runtime."),
                code_digest=_digest(runtime, "code_digest"),
                config_digest=_digest(runtime, "config_digest"),
                environment=_identifier(runtime, "environment", prefix="runtime."),
                host=str(runtime["host"]),
            ),
            action=_identifier(record, "action"),
            resource=_identifier(record, "resource", limit=2048),
            parameters=_params(record["parameters"], "parameters"),
            context=_params(record.get("context") or {}, "context"),
            sequence=int(record["sequence"]),
            issued_at_ms=int(record["issued_at_ms"]),
            expires_at_ms=int(record["expires_at_ms"]),
            nonce=_identifier(record, "nonce"),
            key_id=str(record["key_id"]),
            signature=record.get("signature"),
        )
        if key != intent.agent_id.encode():
            raise ValidationError(
                "key_mismatch",
                f"record key {key[:64]!r} is not the intent's agent id {intent.agent_id!r}",
            )
        if intent.sequence < 0:
            raise ValidationError("invalid_field", f"sequence must be >= 0, got {intent.sequence}")
        if intent.expires_at_ms <= intent.issued_at_ms:
            raise ValidationError(
                "invalid_field",
                f"expires_at_ms ({intent.expires_at_ms}) must be after issued_at_ms "
                f"({intent.issued_at_ms})",
            )
        return intent


def _identifier(
    record: Mapping[str, Any], name: str, *, limit: int = _MAX_ID, prefix: str = ""
) -> str:
    value = record[name]
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("invalid_field", f"{prefix}{name} must be a non-empty string")
    if len(value) > limit:
        raise ValidationError(
            "invalid_field", f"{prefix}{name} is {len(value)} characters; the limit is {limit}"
        )
    return value


def _digest(record: Mapping[str, Any], name: str) -> str:
    value = record[name]
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise ValidationError(
            "invalid_field",
            f"runtime.{name} must look like sha256:<64 lowercase hex>, got {str(value)[:80]!r}",
        )
    return value


def _params(values: Mapping[str, Any], where: str) -> Mapping[str, ParamValue]:
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError(
                "invalid_field", f"{where}.{name} is {value}; numbers must be finite"
            )
    return dict(values)
