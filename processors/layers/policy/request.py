"""One Cedar question (:class:`PolicyRequest`) and Cedar's answer (:class:`PolicyDecision`).

The request carries the principal, action and resource of an intent and the Cedar context
built from it (see :mod:`processors.layers.policy` for the entity model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from processors.intent import Intent

__all__ = ["PolicyRequest", "PolicyDecision", "resource_attributes"]

_MS_PER_HOUR: Final = 3_600_000
_MS_PER_DAY: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One Cedar question: may ``agent_id`` (with ``roles``) take ``action`` on ``resource``?

    ``context`` is the Cedar context as Python values: str, bool, int (Long),
    :class:`~decimal.Decimal` or float (Cedar ``decimal``), mappings (records),
    lists/tuples (sets); ``None`` values are left out. Build it from an intent with
    :meth:`from_intent`, or from parts with :meth:`build`.
    """

    agent_id: str
    roles: Sequence[str]
    action: str
    resource: str
    context: Mapping[str, Any]

    @classmethod
    def build(
        cls,
        *,
        agent_id: str,
        roles: Sequence[str],
        action: str,
        resource: str,
        environment: str,
        runtime_id: str,
        issued_at_ms: int,
        parameters: Mapping[str, Any] | None = None,
        risk: Any = None,
    ) -> PolicyRequest:
        """The request the policy layer sends for an intent with these fields."""
        context: dict[str, Any] = {
            "environment": environment,
            "runtime_id": runtime_id,
            "hour_utc": (issued_at_ms // _MS_PER_HOUR) % 24,
            # 1970-01-01 was a Thursday (ISO weekday 4)
            "weekday": (issued_at_ms // _MS_PER_DAY + 3) % 7 + 1,
            "parameters": {
                name: _parameter(value)
                for name, value in (parameters or {}).items()
                if value is not None
            },
        }
        if risk is not None:
            context["risk"] = _risk(risk)
        return cls(agent_id, tuple(roles), action, resource, context)

    @classmethod
    def from_intent(cls, intent: Intent, roles: Sequence[str]) -> PolicyRequest:
        return cls.build(
            agent_id=intent.agent_id,
            roles=roles,
            action=intent.action,
            resource=intent.resource,
            environment=intent.runtime.environment,
            runtime_id=intent.runtime.runtime_id,
            issued_at_ms=intent.issued_at_ms,
            parameters=intent.parameters,
            risk=intent.context.get("risk"),
        )


def _parameter(value: Any) -> Any:
    """Parameters: every number is a decimal (Decimal keeps the exact digits sent)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else value
    return Decimal(value)


def _risk(value: Any) -> Any:
    """Risk is a Long; an integral float (70.0) is accepted as one, anything else is
    left as is and fails request validation with Cedar's reason."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """Cedar's answer. ``determining_policies`` are ``@id`` values: the permits that
    allowed, or the forbids that denied (empty for a default deny). ``errors`` holds
    request-validation and policy-evaluation errors, in Cedar's words."""

    allowed: bool
    determining_policies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


def resource_attributes(resource: str) -> dict[str, str]:
    """``kind`` (before the first ':'), ``name`` (after it, minus a leading '//'), ``uri``."""
    kind, sep, rest = resource.partition(":")
    if not sep:
        return {"kind": "", "name": resource, "uri": resource}
    return {"kind": kind, "name": rest[2:] if rest.startswith("//") else rest, "uri": resource}
