"""Requests in Cedar's JSON form: the agent and resource entities, and context values
(every number a Cedar ``decimal`` or ``Long``, in range, or a :class:`ValueProblem`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from processors.layers.policy.request import resource_attributes

__all__ = ["ValueProblem", "agent_entity", "resource_entity", "cedar_record", "decimal_text"]

_DECIMAL_MAX: Final = Decimal("922337203685477.5807")
_DECIMAL_MIN: Final = Decimal("-922337203685477.5808")
_DECIMAL_STEP: Final = Decimal("0.0001")
_LONG_MAX: Final = 2**63 - 1


class ValueProblem(Exception):
    """A context value Cedar cannot represent (internal: becomes a decision error)."""


def agent_entity(agent_id: str, roles: Sequence[str]) -> dict[str, Any]:
    return {
        "uid": {"type": "Agent", "id": agent_id},
        "attrs": {},
        "parents": [{"type": "Role", "id": role} for role in dict.fromkeys(roles)],
    }


def resource_entity(resource: str) -> dict[str, Any]:
    return {
        "uid": {"type": "Resource", "id": resource},
        "attrs": resource_attributes(resource),
        "parents": [],
    }


def cedar_record(values: Mapping[str, Any], path: str) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if not isinstance(name, str):
            raise ValueProblem(f"{path}: attribute names must be strings, got {name!r}")
        record[name] = _cedar_value(value, f"{path}.{name}")
    return record


def _cedar_value(value: Any, path: str) -> Any:
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not -_LONG_MAX - 1 <= value <= _LONG_MAX:
            raise ValueProblem(f"{path} = {value} does not fit a Cedar Long (64-bit)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueProblem(f"{path} = {value}: Cedar numbers must be finite")
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        return {"__extn": {"fn": "decimal", "arg": decimal_text(value, path)}}
    if isinstance(value, Mapping):
        return cedar_record(value, path)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_cedar_value(v, f"{path}[]") for v in value if v is not None]
    raise ValueProblem(f"{path} is a {type(value).__name__}, which Cedar has no type for")


def decimal_text(value: Decimal, path: str) -> str:
    """The text of a Cedar ``decimal`` (``"1250.0"``), or :class:`ValueProblem`."""
    if not value.is_finite():
        raise ValueProblem(f"{path} = {value}: Cedar numbers must be finite")
    if not _DECIMAL_MIN <= value <= _DECIMAL_MAX:
        raise ValueProblem(
            f"{path} = {value} is outside Cedar's decimal range "
            "(-922337203685477.5808 .. 922337203685477.5807)"
        )
    try:
        exact = value.quantize(_DECIMAL_STEP)
    except InvalidOperation as exc:  # pragma: no cover - range is checked above
        raise ValueProblem(f"{path} = {value} is not a Cedar decimal") from exc
    if exact != value:
        raise ValueProblem(
            f"{path} = {value} has more than 4 decimal places; Cedar decimals have at "
            "most 4 (send e.g. amounts rounded to cents)"
        )
    text = f"{exact:f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
