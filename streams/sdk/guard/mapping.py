"""From a tool call to an intent: which Cedar action, resource and parameters.

One TOML file per tool server or toolset (examples in ``policies/tools/``)::

    [toolset]
    name = "billing"          # shown in reasons and lineage (context.toolset)
    default = "deny"          # a tool with no [tools.<name>] table: "deny" (the default)
                              # or "allow" (it maps to [default] below)

    [default]                 # only with default = "allow"
    action = "tools.call"
    resource = "tool:{tool}"

    [tools.read_invoice]
    action = "invoices.read"              # the Cedar action (Action::"invoices.read")
    resource = "invoice:{invoice_id}"     # a template over the call's arguments ({tool} too)
    parameters = ["invoice_id"]           # arguments copied into the intent's parameters
                                          # (default: none; the bundle's Cedar schema must
                                          # declare each for the action)
    context = { data_class = "finance" }  # fixed context entries (optional)

What the gate sees of a call: ``action``, ``resource`` and the chosen ``parameters``
(scalars as they are, anything else as its RFC 8785 JSON text). The intent's context
carries ``tool``, ``toolset`` and ``arguments_sha256``, the digest of *all* the arguments:
the signed approval covers the intent's exact bytes, so it binds the exact call. A tool
that no table names is denied unless the file
says ``default = "allow"``; a template naming a missing argument is denied too.
"""

from __future__ import annotations

import hashlib
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.crypto.jcs import CanonicalizationError, canonical_json
from processors.exceptions import ConfigError
from streams.sdk.guard.errors import Unmapped

__all__ = ["MappedCall", "ToolRule", "ToolMapping", "load_mapping", "arguments_digest"]

_ACTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_SCALARS = (str, bool, int, float, type(None))


@dataclass(frozen=True)
class MappedCall:
    """What one tool call becomes on ``intents``."""

    tool: str
    action: str
    resource: str
    parameters: dict[str, Any]
    context: dict[str, Any]


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the RFC 8785 JSON of every argument of the call."""
    try:
        return "sha256:" + hashlib.sha256(canonical_json(dict(arguments))).hexdigest()
    except CanonicalizationError as exc:
        raise ValueError(f"the arguments have no canonical JSON form: {exc.reason}") from exc


@dataclass(frozen=True)
class ToolRule:
    action: str
    resource: str
    parameters: tuple[str, ...] = ()
    """Arguments copied into the intent's parameters (the Cedar schema declares them)."""
    context: Mapping[str, Any] = field(default_factory=dict)

    def fields(self) -> set[str]:
        """The argument names the resource template uses."""
        return {
            name.split(".")[0].split("[")[0]
            for _, name, _, _ in string.Formatter().parse(self.resource)
            if name
        }


@dataclass(frozen=True)
class ToolMapping:
    name: str
    tools: Mapping[str, ToolRule]
    default: ToolRule | None = None
    """The rule of tools with no table of their own; None: they are denied."""
    source: str = "<inline>"

    def rule(self, tool: str) -> ToolRule | None:
        return self.tools.get(tool, self.default)

    def map(
        self, tool: str, arguments: Mapping[str, Any], rule: ToolRule | None = None
    ) -> MappedCall:
        """The intent fields of a call (by ``rule``, else the toolset's rule of ``tool``),
        or :class:`Unmapped`: the call must not run."""
        rule = rule or self.rule(tool)
        if rule is None:
            raise Unmapped(
                f"no mapping for tool {tool!r} in toolset {self.name!r} and the toolset's "
                "default is deny",
                tool=tool,
                hint=f"add a [tools.{tool}] table to {self.source}",
            )
        values = {**arguments, "tool": tool}
        missing = sorted(n for n in rule.fields() if n not in values)
        if missing:
            raise Unmapped(
                f"the resource template {rule.resource!r} of tool {tool!r} needs the "
                f"argument(s) {', '.join(missing)}, which the call does not have",
                tool=tool,
            )
        bad = sorted(n for n in rule.fields() if not isinstance(values[n], (str, int)))
        if bad:
            raise Unmapped(
                f"the argument(s) {', '.join(bad)} of tool {tool!r} are not text or integers "
                "and cannot name a resource",
                tool=tool,
            )
        try:
            resource = rule.resource.format_map(values)
            digest = arguments_digest(arguments)
        except (KeyError, IndexError, AttributeError, ValueError) as exc:
            raise Unmapped(f"tool {tool!r}: cannot map the call: {exc}", tool=tool) from exc
        parameters = {
            name: _parameter(arguments[name]) for name in rule.parameters if name in arguments
        }
        context = {**rule.context, "tool": tool, "toolset": self.name}
        context["arguments_sha256"] = digest
        return MappedCall(tool, rule.action, resource, parameters, context)


def _parameter(value: Any) -> Any:
    """An intent parameter: scalars as they are, anything else as RFC 8785 JSON text."""
    if isinstance(value, _SCALARS) and not (isinstance(value, int) and abs(value) >= 2**53):
        return value
    try:
        return canonical_json(value).decode()
    except CanonicalizationError:
        return repr(value)


def load_mapping(path: Path | str) -> ToolMapping:
    """Read and validate a mapping file; :class:`ConfigError` names the key at fault."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the tool mapping {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the tool mapping {path} is not valid TOML: {exc}") from exc
    return mapping_from_document(document, source=str(path))


def mapping_from_document(document: Mapping[str, Any], *, source: str = "<inline>") -> ToolMapping:
    _only(document, {"toolset", "default", "tools"}, "", source)
    toolset = document.get("toolset", {})
    if not isinstance(toolset, Mapping):
        raise ConfigError(f"{source}: [toolset] must be a table")
    _only(toolset, {"name", "default"}, "toolset", source)
    name = toolset.get("name", Path(source).stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{source}: toolset.name must be a short name, got {name!r}")
    policy = toolset.get("default", "deny")
    if policy not in ("deny", "allow"):
        raise ConfigError(f"{source}: toolset.default must be 'deny' or 'allow', got {policy!r}")
    default = None
    if policy == "allow":
        if "default" not in document:
            raise ConfigError(
                f"{source}: toolset.default = 'allow' needs a [default] table "
                "(action and resource of tools with no table of their own)"
            )
        default = _rule(document["default"], "default", source)
    elif "default" in document:
        raise ConfigError(
            f"{source}: a [default] table is only used with toolset.default = 'allow'",
            hint="remove it, or allow unmapped tools explicitly",
        )
    tools = document.get("tools", {})
    if not isinstance(tools, Mapping):
        raise ConfigError(f"{source}: [tools] must be a table of tables")
    rules = {tool: _rule(table, f"tools.{tool}", source) for tool, table in tools.items()}
    return ToolMapping(name, rules, default, source)


def _rule(table: Any, where: str, source: str) -> ToolRule:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [{where}] must be a table")
    _only(table, {"action", "resource", "parameters", "context"}, where, source)
    action = table.get("action")
    if not isinstance(action, str) or not _ACTION.match(action):
        raise ConfigError(f"{source}: {where}.action must be a Cedar action id, got {action!r}")
    resource = table.get("resource")
    if not isinstance(resource, str) or not resource:
        raise ConfigError(f"{source}: {where}.resource must be a text template, got {resource!r}")
    try:
        list(string.Formatter().parse(resource))
    except ValueError as exc:
        raise ConfigError(f"{source}: {where}.resource is not a valid template: {exc}") from exc
    parameters = table.get("parameters")
    if parameters is not None and (
        not isinstance(parameters, list) or not all(isinstance(p, str) for p in parameters)
    ):
        raise ConfigError(f"{source}: {where}.parameters must be a list of argument names")
    context = table.get("context", {})
    if not isinstance(context, Mapping) or not all(
        isinstance(v, _SCALARS) for v in context.values()
    ):
        raise ConfigError(f"{source}: {where}.context must be a table of scalar values")
    return ToolRule(action, resource, tuple(parameters or ()), context)


def _only(table: Mapping[str, Any], allowed: set[str], where: str, source: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        place = f"[{where}]" if where else "the top level"
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)} in {place}",
            hint=f"allowed: {', '.join(sorted(allowed))}",
        )


def single_tool_mapping(tool: str, action: str, resource: str) -> ToolMapping:
    """A mapping of one tool (what ``@guarded(action=..., resource=...)`` builds)."""
    rule = ToolRule(action, resource)
    return ToolMapping(tool, {tool: rule}, None, f"@guarded({tool})")
