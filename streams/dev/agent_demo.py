"""The agent demo of ``trustplane demo --agents``: a scripted MCP client (standing in for
an AI agent) calls the example billing tool server through ``trustplane mcp-proxy``, as
``billing-assistant``, on the running local deployment.

Four tool calls, each a real MCP ``tools/call`` over stdio: one the gate approves (the tool
runs, its outcome is reported), one it denies (the reason comes back as the tool's
error), one the bundle holds for a person (``payments.refunds`` says
``@response("review")``; the error names the intent to approve), and one the mapping
does not name (denied by the proxy itself).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.config import PROJECT_ROOT, Settings

__all__ = ["AgentCall", "CALLS", "run_agent_demo"]

AGENT = "billing-assistant"
MAPPING = PROJECT_ROOT / "policies" / "tools" / "billing.toml"


@dataclass(frozen=True)
class AgentCall:
    label: str
    tool: str
    arguments: dict[str, Any]
    expected: str
    """``ran`` or ``refused``."""


CALLS: tuple[AgentCall, ...] = (
    AgentCall("read an invoice", "read_invoice", {"invoice_id": "INV-7"}, "ran"),
    AgentCall(
        "pay 75,000 EUR",
        "pay_invoice",
        {"account": "ACME-42", "amount": 75000.0, "currency": "EUR", "invoice_id": "INV-8"},
        "refused",
    ),
    AgentCall(
        "refund 40 EUR (held for a person)",
        "refund_invoice",
        {"account": "ACME-42", "amount": 40.0, "currency": "EUR", "invoice_id": "INV-7"},
        "refused",
    ),
    AgentCall("delete every invoice (unmapped)", "delete_all_invoices", {}, "refused"),
)


@dataclass(frozen=True)
class AgentResult:
    call: AgentCall
    ran: bool
    text: str

    @property
    def as_expected(self) -> bool:
        return self.ran == (self.call.expected == "ran")


def _proxy_parameters(settings: Settings, log: Path) -> Any:
    from mcp import StdioServerParameters

    from streams.dev.estate import DEMO_AGENTS
    from streams.dev.mcp_billing_server import LOG_ENV

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTPLANE_")}
    env.update(
        {
            "TRUSTPLANE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "TRUSTPLANE_TOPIC_PREFIX": settings.topic_prefix,
            "TRUSTPLANE_GROUP_ID": settings.group_id,
            "TRUSTPLANE_STATE_DIR": str(settings.state_dir),
            "TRUSTPLANE_KAFKA_PRINCIPAL": "guard",
            "TRUSTPLANE_KAFKA_CREDENTIALS_DIR": str(settings.resolved_kafka_credentials_dir),
            LOG_ENV: str(log),
        }
    )
    runtime = json.dumps(DEMO_AGENTS[AGENT].runtime())
    return StdioServerParameters(
        command=sys.executable,
        args=[
            *("-m", "streams.cli.mcp", "--mapping", str(MAPPING), "--agent", AGENT),
            *("--runtime", runtime, "--", sys.executable, "-m", "streams.dev.mcp_billing_server"),
        ],
        env=env,
        cwd=PROJECT_ROOT,
    )


async def run_agent_demo(
    settings: Settings, calls: Sequence[AgentCall] = CALLS
) -> list[AgentResult]:
    """Make ``calls`` through the proxy; what ran is read from the tool server's own log."""
    from mcp import Client
    from mcp.client.stdio import stdio_client
    from mcp_types import TextContent

    folder = settings.state_dir / "agent-demo"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "billing-server.jsonl"
    log.unlink(missing_ok=True)
    results = []
    with (folder / "mcp-proxy.log").open("a") as errlog:
        async with Client(
            stdio_client(_proxy_parameters(settings, log), errlog=errlog), read_timeout_seconds=60
        ) as client:
            for call in calls:
                before = _executions(log)
                result = await client.call_tool(call.tool, call.arguments)
                text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
                ran = _executions(log) > before and not result.is_error
                results.append(AgentResult(call, ran, text))
    return results


def _executions(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0
