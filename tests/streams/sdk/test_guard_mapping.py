"""The tool-call mapping: validated files, unmapped tools denied, exact-call binding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from processors.exceptions import ConfigError
from streams.sdk.guard import Unmapped, load_mapping
from streams.sdk.guard.mapping import arguments_digest, mapping_from_document

ROOT = Path(__file__).resolve().parents[3]

BILLING = {
    "toolset": {"name": "billing"},
    "tools": {
        "pay": {
            "action": "payments.transfer",
            "resource": "acct:{account}",
            "parameters": ["amount", "currency", "lines"],
            "context": {"channel": "mcp"},
        }
    },
}


def test_a_call_becomes_action_resource_parameters_and_a_digest_of_all_arguments() -> None:
    mapping = mapping_from_document(BILLING)
    arguments = {"account": "ACME-42", "amount": 12.5, "currency": "EUR", "lines": [1, 2]}
    call = mapping.map("pay", arguments)
    assert (call.action, call.resource) == ("payments.transfer", "acct:ACME-42")
    # the chosen arguments only; a list travels as its RFC 8785 text
    assert call.parameters == {"amount": 12.5, "currency": "EUR", "lines": "[1,2]"}
    assert call.context == {
        "channel": "mcp",
        "tool": "pay",
        "toolset": "billing",
        "arguments_sha256": arguments_digest(arguments),
    }
    # another argument (even one that is not a parameter) is another call
    other = mapping.map("pay", {**arguments, "note": "x"})
    assert other.context["arguments_sha256"] != call.context["arguments_sha256"]


def test_an_unmapped_tool_is_denied_unless_the_file_allows_a_default() -> None:
    with pytest.raises(Unmapped, match="no mapping for tool 'wipe'"):
        mapping_from_document(BILLING).map("wipe", {})
    allowing = mapping_from_document(
        {
            "toolset": {"name": "generic", "default": "allow"},
            "default": {"action": "tools.call", "resource": "tool:{tool}"},
        }
    )
    call = allowing.map("wipe", {"x": 1})
    assert (call.action, call.resource, call.parameters) == ("tools.call", "tool:wipe", {})


@pytest.mark.parametrize(
    ("arguments", "why"),
    [({"amount": 1}, "needs the argument"), ({"account": {"a": 1}}, "not text or integers")],
)
def test_a_resource_template_that_cannot_be_filled_denies(arguments: dict, why: str) -> None:
    with pytest.raises(Unmapped, match=why):
        mapping_from_document(BILLING).map("pay", arguments)


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ({"tools": {"t": {"action": "a.b"}}}, "resource must be a text template"),
        ({"tools": {"t": {"action": "a b", "resource": "r"}}}, "Cedar action id"),
        ({"tools": {"t": {"action": "a", "resource": "r", "extra": 1}}}, "unknown key"),
        ({"toolset": {"default": "maybe"}}, "must be 'deny' or 'allow'"),
        ({"toolset": {"default": "allow"}}, "needs a \\[default\\] table"),
        ({"default": {"action": "a", "resource": "r"}}, "only used with"),
        ({"tools": {"t": {"action": "a", "resource": "{unclosed"}}}, "not a valid template"),
        ({"tools": {"t": {"action": "a", "resource": "r", "parameters": "x"}}}, "list"),
    ],
)
def test_bad_mapping_files_are_refused_with_the_key_at_fault(document: dict, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        mapping_from_document(document, source="tools.toml")


def test_the_example_mappings_load() -> None:
    files = sorted((ROOT / "policies" / "tools").glob("*.toml"))
    assert files
    for path in files:
        assert load_mapping(path).tools, path


def test_the_guard_imports_no_agent_framework() -> None:
    # each adapter is its own extra: the core must work without any of them
    code = (
        "import sys, streams.sdk.guard; "
        "print(sorted(m for m in ('mcp', 'langchain', 'langgraph', 'agents') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"
