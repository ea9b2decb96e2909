"""``trustplane mcp-proxy`` on the real broker and gate: a real MCP client talks over stdio
to the proxy command (a subprocess, the ``guard`` principal), which fronts the billing
MCP server (its subprocess). tools/list passes through; an approved call runs once; a
denied, an unmapped and an unreachable-broker call are tool errors that say why, and the
billing server's log proves they never ran."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult, TextContent, Tool

from streams.config import PROJECT_ROOT, Settings
from streams.dev.estate import DEMO_AGENTS
from streams.dev.mcp_billing_server import LOG_ENV, build_server
from streams.operator import agent_key
from streams.sdk import OutcomeReader
from tests.conftest import free_port
from tests.integration.guardkit import gated_settings

pytestmark = pytest.mark.broker

MAPPING = PROJECT_ROOT / "policies" / "tools" / "billing.toml"
BILLING_SERVER = [sys.executable, "-m", "streams.dev.mcp_billing_server"]


@pytest.fixture
def gated(settings: Settings, worker_factory: Callable[[Settings], Any]) -> Settings:
    return gated_settings(settings, worker_factory)


def proxy(
    settings: Settings, log: Path, *, deadline: float = 10.0, bootstrap: str | None = None
) -> StdioServerParameters:
    """``trustplane mcp-proxy`` as an MCP host would start it, as the ``guard`` principal;
    the agent's key and the gate's JWKS are found in the deployment's state folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTPLANE_")}
    env.update(
        {
            "TRUSTPLANE_BOOTSTRAP_SERVERS": bootstrap or settings.bootstrap_servers,
            "TRUSTPLANE_TOPIC_PREFIX": settings.topic_prefix,
            "TRUSTPLANE_GROUP_ID": settings.group_id,
            "TRUSTPLANE_USERNAME": "guard",
            "TRUSTPLANE_PASSWORD_FILE": str(settings.resolved_kafka_credentials_dir / "guard"),
            "TRUSTPLANE_STATE_DIR": str(settings.state_dir),
            LOG_ENV: str(log),
        }
    )
    runtime = json.dumps(DEMO_AGENTS["billing-agent"].runtime())
    return StdioServerParameters(
        command=sys.executable,
        args=[
            *("-m", "streams.cli.mcp", "--mapping", str(MAPPING), "--agent", "billing-agent"),
            *("--runtime", runtime, "--deadline", str(deadline), "--", *BILLING_SERVER),
        ],
        env=env,
        cwd=PROJECT_ROOT,
    )


@asynccontextmanager
async def connected(parameters: StdioServerParameters, stderr: Path) -> AsyncIterator[Client]:
    """A real MCP client session with the proxy; its logs go to ``stderr``."""
    with stderr.open("a") as errlog:
        async with Client(
            stdio_client(parameters, errlog=errlog), read_timeout_seconds=60
        ) as client:
            yield client


def executions(log: Path) -> list[tuple[str, dict[str, Any]]]:
    """What the billing server actually ran."""
    if not log.exists():
        return []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return [(r["tool"], r["arguments"]) for r in records]


def text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def test_the_proxy_runs_approved_calls_once_and_refuses_the_others(
    gated: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "billing.jsonl"

    async def scenario() -> dict[str, Any]:
        async with Client(build_server(tmp_path / "direct.jsonl")) as direct:
            expected = (await direct.list_tools()).tools
        seen: dict[str, Any] = {"expected": expected}
        async with connected(proxy(gated, log), tmp_path / "proxy.log") as client:
            seen["listed"] = (await client.list_tools()).tools
            seen["read"] = await client.call_tool("read_invoice", {"invoice_id": "INV-7"})
            seen["runs after read"] = executions(log)
            seen["small"] = await client.call_tool(
                "pay_invoice",
                {"account": "ACME-42", "amount": 120.0, "currency": "EUR", "invoice_id": "INV-7"},
            )
            seen["large"] = await client.call_tool(
                "pay_invoice",
                {"account": "ACME-42", "amount": 75000.0, "currency": "EUR", "invoice_id": "INV-8"},
            )
            seen["delete"] = await client.call_tool("delete_all_invoices", {})
        return seen

    try:
        seen = asyncio.run(scenario())
    except BaseException:
        print((tmp_path / "proxy.log").read_text(errors="replace")[-4000:], file=sys.stderr)
        raise
    listed: list[Tool] = seen["listed"]
    assert [t.name for t in listed] == [
        "read_invoice",
        "pay_invoice",
        "refund_invoice",
        "delete_all_invoices",
    ]
    assert [t.model_dump() for t in listed] == [t.model_dump() for t in seen["expected"]]

    read = seen["read"]
    assert not read.is_error, text(read)
    assert read.structured_content == {
        "invoice_id": "INV-7",
        "account": "ACME-42",
        "amount": "1250.00",
        "currency": "EUR",
        "status": "open",
    }
    assert seen["runs after read"] == [("read_invoice", {"invoice_id": "INV-7"})]
    assert not seen["small"].is_error and "paid 120.00 EUR to ACME-42" in text(seen["small"])

    large = seen["large"]
    assert large.is_error
    assert text(large).startswith("trustplane denied: the tool 'pay_invoice' did not run")
    assert "payments.limit-50k" in text(large) or "50,000" in text(large)
    assert large.meta["trustplane/blocked"]["intent_id"]

    delete = seen["delete"]
    assert delete.is_error
    assert "trustplane unmapped" in text(delete)
    assert "no mapping for tool 'delete_all_invoices'" in text(delete)

    assert executions(log) == [
        ("read_invoice", {"invoice_id": "INV-7"}),
        (
            "pay_invoice",
            {"account": "ACME-42", "amount": 120.0, "currency": "EUR", "invoice_id": "INV-7"},
        ),
    ]
    with OutcomeReader(gated, ["outcomes"]) as reader:
        outcomes = [r.record for r in reader.read(timeout=3.0) if r.record]
    assert sorted(o["status"] for o in outcomes) == ["EXECUTED", "EXECUTED"]
    assert all(o["executor_id"].startswith("guard:billing-agent@") for o in outcomes)


def test_with_the_broker_unreachable_a_call_fails_closed_within_the_deadline(
    settings: Settings, tmp_path: Path
) -> None:
    agent_key(settings, "billing-agent")  # the key exists; the gate is out of reach
    log = tmp_path / "billing.jsonl"
    closed = f"127.0.0.1:{free_port()}"
    deadline = 3.0

    async def scenario() -> tuple[list[str], CallToolResult, float]:
        async with connected(
            proxy(settings, log, deadline=deadline, bootstrap=closed), tmp_path / "proxy.log"
        ) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            started = time.monotonic()
            result = await client.call_tool("read_invoice", {"invoice_id": "INV-7"})
            return names, result, time.monotonic() - started

    names, result, took = asyncio.run(scenario())
    assert names == ["read_invoice", "pay_invoice", "refund_invoice", "delete_all_invoices"]
    assert result.is_error
    assert text(result).startswith("trustplane unavailable: the tool 'read_invoice' did not run")
    assert took < deadline + 2
    assert executions(log) == []
