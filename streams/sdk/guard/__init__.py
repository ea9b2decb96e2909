"""Put an agent's tool calls behind the gate: nothing runs without a verified approval.

The core is :class:`Guard` (sync and async); the adapters are thin layers over it:

- :func:`guarded` -- a decorator for plain Python functions (sync and async);
- ``trustplane mcp-proxy`` -- an MCP server in front of another (:mod:`.mcp_proxy`);
- :mod:`.langchain` -- LangChain / LangGraph tool-call middleware;
- :mod:`.openai_agents` -- an OpenAI Agents SDK tool input guardrail.

Which Cedar action, resource and parameters a tool call becomes is declared per toolset
in a TOML file (:func:`load_mapping`); a tool it does not name is denied.
"""

from __future__ import annotations

from streams.sdk.guard.core import AgentIdentity, Authorization, Guard
from streams.sdk.guard.decorator import guarded
from streams.sdk.guard.errors import (
    Blocked,
    Denied,
    NeedsReview,
    Unavailable,
    Unmapped,
    Unverified,
)
from streams.sdk.guard.mapping import MappedCall, ToolMapping, ToolRule, load_mapping

__all__ = [
    "AgentIdentity",
    "Authorization",
    "Guard",
    "guarded",
    "Blocked",
    "Denied",
    "NeedsReview",
    "Unavailable",
    "Unmapped",
    "Unverified",
    "MappedCall",
    "ToolMapping",
    "ToolRule",
    "load_mapping",
]
