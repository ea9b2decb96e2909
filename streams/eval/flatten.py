"""List-valued tool arguments as scalar intent parameters.

An intent's parameters are scalars (``schemas/intent.avsc``), so the SDK's mapping sends a
list as its JSON text, which Cedar can only compare whole. Recipients and participants
must be checked one by one, so this mapping sends a list parameter ``name`` as
``name_count`` and ``name_0`` ... ``name_{SLOTS-1}``: each element as text (non-text
elements as their RFC 8785 JSON), ``""`` where the list is shorter. Elements past the
slots are not sent: a policy reads ``name_count`` to refuse what it cannot see. The
intent's ``arguments_sha256`` still covers every argument of the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.crypto.jcs import CanonicalizationError, canonical_json
from streams.sdk.guard.mapping import MappedCall, ToolMapping, ToolRule

__all__ = ["SLOTS", "FlatMapping", "flatten_list"]

SLOTS = 4


def flatten_list(name: str, values: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    """``{name_count: n, name_0: ..., name_3: ...}`` for one list argument."""
    flat: dict[str, Any] = {f"{name}_count": len(values)}
    for slot in range(SLOTS):
        flat[f"{name}_{slot}"] = _text(values[slot]) if slot < len(values) else ""
    return flat


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return canonical_json(value).decode()
    except CanonicalizationError:
        return repr(value)


class FlatMapping(ToolMapping):
    """A :class:`ToolMapping` that flattens the list-valued parameters it copies."""

    @classmethod
    def of(cls, mapping: ToolMapping) -> FlatMapping:
        return cls(mapping.name, mapping.tools, mapping.default, mapping.source)

    def map(
        self, tool: str, arguments: Mapping[str, Any], rule: ToolRule | None = None
    ) -> MappedCall:
        call = super().map(tool, arguments, rule)
        parameters: dict[str, Any] = {}
        for name, value in call.parameters.items():
            original = arguments.get(name)
            if isinstance(original, (list, tuple)):
                parameters.update(flatten_list(name, original))
            else:
                parameters[name] = value
        return MappedCall(call.tool, call.action, call.resource, parameters, call.context)
