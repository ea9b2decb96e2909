"""The MCP proxy without Kafka: every way a guarded call can stop is a tool error result
that says why, and the upstream tool is never called; an approved call returns the
upstream's result as it is; the command checks its settings before anything starts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, ListToolsResult, TextContent, Tool
from typer.testing import CliRunner

from processors.exceptions import ConfigError
from streams.cli.mcp import guard_client_config, mcp_app, read_runtime
from streams.config import Settings
from streams.dev.mcp_billing_server import LOG_ENV, build_server
from streams.dev.ports import free_port
from streams.sdk.guard import Blocked, Denied, NeedsReview, Unavailable, Unmapped, Unverified
from streams.sdk.guard.mcp_proxy import (
    META_KEY,
    McpProxy,
    blocked_result,
    serve_proxy,
    upstream_environment,
)


class FakeUpstream:
    """Records every call that reached the tool server."""

    def __init__(self, result: CallToolResult | Exception | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any] | None]] = []
        self.result = result or CallToolResult(content=[TextContent(type="text", text="ok")])

    async def list_tools(self, *, cursor: str | None = None) -> ListToolsResult:
        return ListToolsResult(tools=[Tool(name="t", input_schema={"type": "object"})])

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
        self.calls.append((name, arguments))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class FakeGuard:
    """Raises ``refuse`` before running anything, else runs the call once (as the Guard
    does) and remembers how it ended."""

    def __init__(self, refuse: BaseException | None = None) -> None:
        self.refuse = refuse
        self.outcomes: list[str] = []

    async def arun(
        self, tool: str, arguments: Mapping[str, Any], call: Callable[[], Awaitable[Any]]
    ) -> Any:
        if self.refuse is not None:
            raise self.refuse
        try:
            result = await call()
        except BaseException as exc:
            self.outcomes.append(f"FAILED {type(exc).__name__}")
            raise
        self.outcomes.append("EXECUTED")
        return result


def text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def call(proxy: McpProxy, tool: str = "read_invoice", **arguments: Any) -> CallToolResult:
    return asyncio.run(proxy.call(tool, arguments or {"invoice_id": "INV-7"}))


BLOCKED = [
    Unmapped("no mapping for tool 'drop'", tool="drop", hint="add a [tools.drop] table"),
    Denied(
        "denied: payments.limit-50k",
        tool="pay_invoice",
        reasons=["payments.limit-50k: transfers above 50,000.00 are never automated"],
        intent_id="i-1",
    ),
    NeedsReview(
        "held for review: payments.refunds",
        tool="refund",
        reasons=["payments.refunds: every refund is held for a person"],
        intent_id="i-2",
        hint="an operator answers with `trustplane review approve i-2`",
    ),
    Unavailable("no decision within 2 s", tool="read_invoice", intent_id="i-3"),
    Unverified("an answer that does not verify: bad signature", tool="read_invoice"),
]


@pytest.mark.parametrize("blocked", BLOCKED, ids=lambda b: type(b).__name__)
def test_a_blocked_call_is_an_error_result_and_never_reaches_the_tool(blocked: Blocked) -> None:
    upstream = FakeUpstream()
    result = call(McpProxy(FakeGuard(blocked), upstream))
    assert result.is_error
    assert text(result).startswith(blocked.message())
    for reason in blocked.reasons:
        assert reason in text(result)
    assert result.meta is not None
    assert result.meta[META_KEY]["outcome"] == blocked.outcome
    assert result.meta[META_KEY]["intent_id"] == blocked.intent_id
    assert upstream.calls == []


def test_a_held_call_says_its_intent_id_and_how_an_operator_approves_it() -> None:
    held = BLOCKED[2]
    assert isinstance(held, NeedsReview)
    message = text(blocked_result(held))
    assert "intent i-2" in message
    assert "trustplane review approve i-2" in message


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyError("sequence"), OSError("disk")])
def test_any_other_error_on_the_guard_path_fails_closed(error: Exception) -> None:
    upstream = FakeUpstream()
    result = call(McpProxy(FakeGuard(error), upstream))
    assert result.is_error
    assert "did not run" in text(result) and type(error).__name__ in text(result)
    assert upstream.calls == []


def test_a_guard_that_returns_without_running_the_tool_is_an_error() -> None:
    class Lazy:
        async def arun(self, tool: str, arguments: Any, call: Any) -> Any:
            return {"content": []}

    upstream = FakeUpstream()
    result = call(McpProxy(Lazy(), upstream))
    assert result.is_error and "did not run" in text(result)
    assert upstream.calls == []


def test_an_approved_call_returns_the_upstream_result_as_it_is() -> None:
    guard, upstream = FakeGuard(), FakeUpstream()
    result = call(McpProxy(guard, upstream), "read_invoice", invoice_id="INV-7")
    assert not result.is_error and text(result) == "ok"
    assert upstream.calls == [("read_invoice", {"invoice_id": "INV-7"})]
    assert guard.outcomes == ["EXECUTED"]


def test_an_upstream_error_result_is_returned_as_it_is_and_reported_failed() -> None:
    failed = CallToolResult(
        content=[TextContent(type="text", text="no such invoice")], is_error=True
    )
    guard, upstream = FakeGuard(), FakeUpstream(failed)
    result = call(McpProxy(guard, upstream))
    assert result == failed
    assert guard.outcomes == ["FAILED _ToolFailed"]


def test_an_upstream_that_raises_is_an_error_result_and_reported_failed() -> None:
    guard, upstream = FakeGuard(), FakeUpstream(ConnectionError("the tool server died"))
    result = call(McpProxy(guard, upstream))
    assert result.is_error and "the tool server died" in text(result)
    assert "did not run" not in text(result)  # it was called: whether it acted is unknown
    assert len(upstream.calls) == 1
    assert guard.outcomes == ["FAILED ConnectionError"]


def test_a_guard_that_cannot_connect_fails_closed_and_is_tried_again() -> None:
    attempts: list[int] = []

    def connect() -> FakeGuard:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConfigError("cannot read the decision topics", hint="is the broker up?")
        return FakeGuard()

    upstream = FakeUpstream()

    async def scenario() -> tuple[CallToolResult, CallToolResult]:
        proxy = McpProxy(connect, upstream, wait_s=5.0)
        first = await proxy.call("read_invoice", {"invoice_id": "INV-7"})
        second = await proxy.call("read_invoice", {"invoice_id": "INV-7"})
        await proxy.aclose()
        return first, second

    first, second = asyncio.run(scenario())
    assert first.is_error and "trustplane unavailable" in text(first)
    assert "cannot read the decision topics" in text(first) and "is the broker up?" in text(first)
    assert not second.is_error and len(attempts) == 2
    assert upstream.calls == [("read_invoice", {"invoice_id": "INV-7"})]


def test_a_guard_still_connecting_fails_the_call_within_the_wait() -> None:
    def connect() -> FakeGuard:
        time.sleep(3)
        return FakeGuard()

    upstream = FakeUpstream()

    async def scenario() -> CallToolResult:
        proxy = McpProxy(connect, upstream, wait_s=0.3)
        try:
            return await proxy.call("read_invoice", {"invoice_id": "INV-7"})
        finally:
            await proxy.aclose()

    started = time.monotonic()
    result = asyncio.run(scenario())
    assert time.monotonic() - started < 2
    assert result.is_error and "not connected to the broker yet" in text(result)
    assert upstream.calls == []


def test_tools_list_passes_through_and_calls_run_once(tmp_path: Path) -> None:
    log = tmp_path / "billing.jsonl"

    async def scenario() -> tuple[list[Tool], list[Tool], CallToolResult, CallToolResult]:
        async with Client(build_server(log)) as direct:
            expected = (await direct.list_tools()).tools
        async with Client(build_server(log)) as upstream:
            proxy = McpProxy(FakeGuard(), upstream)
            async with Client(proxy.server()) as client:
                listed = (await client.list_tools()).tools
                read = await client.call_tool("read_invoice", {"invoice_id": "INV-7"})
                refused = await McpProxy(FakeGuard(BLOCKED[0]), upstream).call(
                    "delete_all_invoices", {}
                )
        return expected, listed, read, refused

    expected, listed, read, refused = asyncio.run(scenario())
    assert [t.name for t in listed] == [
        "read_invoice",
        "pay_invoice",
        "refund_invoice",
        "delete_all_invoices",
    ]
    assert [t.model_dump() for t in listed] == [t.model_dump() for t in expected]
    assert not read.is_error and read.structured_content["invoice_id"] == "INV-7"
    assert refused.is_error
    runs = [json.loads(line)["tool"] for line in log.read_text().splitlines()]
    assert runs == ["read_invoice"]


# -- the command ---------------------------------------------------------------------------

runner = CliRunner()


def test_help_says_what_it_does_and_who_it_runs_as() -> None:
    done = runner.invoke(mcp_app, ["--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0
    for words in (
        "verified approval",
        "does not name",
        "TRUSTPLANE_KAFKA_PRINCIPAL=guard",
        "TRUSTPLANE_USERNAME=guard",
        "stderr",
        "--mapping",
        "--agent",
        "--deadline",
    ):
        assert words in done.output, words


def test_a_missing_agent_key_is_refused_before_anything_starts(tmp_path: Path) -> None:
    done = runner.invoke(
        mcp_app,
        ["--mapping", "policies/tools/billing.toml", "--agent", "nobody", "--", "true"],
        env={"TRUSTPLANE_STATE_DIR": str(tmp_path), "TRUSTPLANE_KEYS_DIR": str(tmp_path)},
    )
    assert isinstance(done.exception, ConfigError)
    assert "no private key of agent 'nobody'" in done.exception.reason
    assert done.stdout == ""  # stdout is the MCP channel


def test_the_runtime_is_json_a_file_or_the_demo_registration(tmp_path: Path) -> None:
    runtime = {
        "runtime_id": "rt-1",
        "code_digest": "sha256:" + "1" * 64,
        "config_digest": "sha256:" + "2" * 64,
        "environment": "prod",
        "host": "h",
    }
    assert read_runtime(json.dumps(runtime), tmp_path / "none", "x") == runtime
    (tmp_path / "rt.json").write_text(json.dumps(runtime))
    assert read_runtime(str(tmp_path / "rt.json"), tmp_path / "none", "x") == runtime
    assert read_runtime(None, tmp_path / "rt.json", "x") == runtime
    demo = read_runtime(None, tmp_path / "none", "billing-agent")
    assert demo is not None and demo["runtime_id"] == "billing-rt-1"
    with pytest.raises(ConfigError, match="lacks host"):
        read_runtime(json.dumps({k: v for k, v in runtime.items() if k != "host"}), tmp_path, "x")


def test_kafka_is_the_guard_principal_unless_one_is_configured(tmp_path: Path) -> None:
    (tmp_path / "guard").write_text("secret-g\n")
    (tmp_path / "other").write_text("secret-o\n")
    base = Settings(bootstrap_servers="127.0.0.1:1", kafka_credentials_dir=tmp_path)
    config = guard_client_config(base, {})
    assert config.username == "guard" and config.password.get() == "secret-g"
    config = guard_client_config(
        base,
        {"TRUSTPLANE_USERNAME": "other", "TRUSTPLANE_PASSWORD_FILE": str(tmp_path / "other")},
    )
    assert config.username == "other" and config.password.get() == "secret-o"


def test_streamable_http_serves_the_same_guarded_tools(tmp_path: Path) -> None:
    log = tmp_path / "billing.jsonl"
    port = free_port()
    upstream = [sys.executable, "-m", "streams.dev.mcp_billing_server"]
    env = {**upstream_environment(), LOG_ENV: str(log)}

    async def scenario() -> tuple[list[str], CallToolResult, CallToolResult]:
        serving = asyncio.create_task(
            serve_proxy(GuardByTool(), upstream, transport="streamable-http", port=port, env=env)
        )
        try:
            await wait_for_port(port)
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                names = [t.name for t in (await client.list_tools()).tools]
                read = await client.call_tool("read_invoice", {"invoice_id": "INV-7"})
                delete = await client.call_tool("delete_all_invoices", {})
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        return names, read, delete

    names, read, delete = asyncio.run(scenario())
    assert names == ["read_invoice", "pay_invoice", "refund_invoice", "delete_all_invoices"]
    assert not read.is_error and delete.is_error and "trustplane unmapped" in text(delete)
    assert [json.loads(line)["tool"] for line in log.read_text().splitlines()] == ["read_invoice"]


def test_streamable_http_listens_on_loopback_only() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        asyncio.run(
            serve_proxy(FakeGuard(), ["true"], transport="streamable-http", host="192.0.2.1")
        )


class GuardByTool(FakeGuard):
    """Refuses ``delete_all_invoices`` as the mapping of billing.toml does."""

    async def arun(
        self, tool: str, arguments: Mapping[str, Any], call: Callable[[], Awaitable[Any]]
    ) -> Any:
        if tool == "delete_all_invoices":
            raise Unmapped("no mapping for tool 'delete_all_invoices'", tool=tool)
        return await super().arun(tool, arguments, call)


async def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"nothing listens on port {port}")
