"""An MCP server in front of another, whose tools run only on a verified approval.

::

    MCP host (the agent) --stdio--> trustplane mcp-proxy --stdio--> the tool server

The proxy starts the tool server as a subprocess and talks to it with the MCP client
library. ``tools/list`` passes through unchanged. Each ``tools/call`` goes through the
guard (:meth:`Guard.arun`): the call becomes a signed intent, and the upstream tool is
called only after the gate's approval of that exact call verified; the guard then
reports the outcome (EXECUTED, or FAILED when the tool raised or answered with an error
result). The proxy is the executor of its calls.

Whatever stops a call (denied, held for review, unmapped, no answer in time, an answer
that does not verify, any other error on the way) becomes a tool error result
(``isError``) whose text is :meth:`Blocked.message` (and its hint, e.g. how an operator
approves a held intent), and the upstream is not called. Only tools are proxied:
resources and prompts of the upstream are not offered.

The guard may be given built, or as a function that builds it: connecting to the broker
takes time and may fail, so it is then built off the event loop while the proxy already
serves, and a call waits for it at most ``wait_s`` (else it fails closed, and the next
call tries again).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from mcp import Client, StdioServerParameters
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    Implementation,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
)

from processors.exceptions import ConfigError, TrustplaneError
from streams.sdk.guard.errors import Blocked, Unavailable

__all__ = [
    "GuardLike",
    "GuardSource",
    "Upstream",
    "McpProxy",
    "build_proxy",
    "blocked_result",
    "open_upstream",
    "serve_proxy",
    "upstream_environment",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

PROXY_NAME = "trustplane-mcp-proxy"
META_KEY = "trustplane/blocked"
"""``_meta`` key of a blocked call's result: ``{outcome, tool, intent_id, reasons}``."""
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"


@runtime_checkable
class GuardLike(Protocol):
    """What the proxy needs of a :class:`~streams.sdk.guard.Guard`."""

    async def arun(
        self, tool: str, arguments: Mapping[str, Any], call: Callable[[], Awaitable[T]]
    ) -> T: ...


GuardSource = GuardLike | Callable[[], GuardLike]
"""A guard, or a function that builds one (then called in a thread, and closed at exit)."""


class Upstream(Protocol):
    """What the proxy needs of the upstream server's client (:class:`mcp.Client`)."""

    async def list_tools(self, *, cursor: str | None = None) -> ListToolsResult: ...

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None = None
    ) -> CallToolResult: ...


class _ToolFailed(Exception):
    """The upstream answered with an error result: the guard reports FAILED."""

    def __init__(self, result: CallToolResult) -> None:
        text = " ".join(c.text for c in result.content if isinstance(c, TextContent))
        super().__init__(text[:300] or "the tool returned an error result")


def _error_result(text: str, meta: dict[str, Any] | None = None) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True, _meta=meta)


def blocked_result(exc: Blocked) -> CallToolResult:
    """The tool error result of a call the guard stopped: the reasons, and the hint."""
    text = exc.message()
    if exc.hint:
        text += f"\nhint: {exc.hint}"
    meta = {
        META_KEY: {
            "outcome": exc.outcome,
            "tool": exc.tool,
            "intent_id": exc.intent_id,
            "reasons": list(exc.reasons),
        }
    }
    return _error_result(text, meta)


class McpProxy:
    """The proxy's handlers: ``tools/list`` passed through, ``tools/call`` guarded."""

    def __init__(self, guard: GuardSource, upstream: Upstream, *, wait_s: float = 10.0) -> None:
        self.upstream = upstream
        self.wait_s = wait_s
        self._guard: GuardLike | None = guard if isinstance(guard, GuardLike) else None
        self._factory = None if isinstance(guard, GuardLike) else guard
        self._building: asyncio.Future[GuardLike] | None = None

    # -- the guard ---------------------------------------------------------------------

    def connect(self) -> None:
        """Start building the guard in the background, unless it is built or being built
        (needs a running event loop)."""
        if self._guard is not None or self._factory is None:
            return
        if self._building is not None and not _failed(self._building):
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[GuardLike] = loop.create_future()
        future.add_done_callback(_report_connection)
        factory = self._factory

        def settle(built: tuple[GuardLike | None, BaseException | None]) -> None:
            guard, error = built
            if future.cancelled():
                _close(guard)
            elif guard is not None:
                future.set_result(guard)
            else:
                future.set_exception(error or RuntimeError("no guard was built"))

        def build() -> None:
            try:
                built: tuple[GuardLike | None, BaseException | None] = (factory(), None)
            except Exception as exc:  # noqa: BLE001 - handed to the waiting calls
                built = (None, exc)
            try:
                loop.call_soon_threadsafe(settle, built)
            except RuntimeError:  # the loop is gone: nobody will use this guard
                _close(built[0])

        # a daemon thread: a broker that does not answer must not hold the exit up
        threading.Thread(target=build, name="trustplane-guard-connect", daemon=True).start()
        self._building = future

    async def guard(self, tool: str) -> GuardLike:
        """The guard, waiting for it at most ``wait_s``; :class:`Unavailable` otherwise."""
        if self._guard is not None:
            return self._guard
        self.connect()
        building = self._building
        if building is None:
            raise Unavailable("no guard to authorize the call", tool=tool)
        try:
            guard = await asyncio.wait_for(asyncio.shield(building), self.wait_s)
        except TimeoutError as exc:
            raise Unavailable(
                f"the guard is not connected to the broker yet (waited {self.wait_s:g} s)",
                tool=tool,
                hint="is the broker reachable (TRUSTPLANE_BOOTSTRAP_SERVERS), and may the "
                "`guard` principal read the decision topics?",
            ) from exc
        except TrustplaneError as exc:
            raise Unavailable(
                f"the guard cannot connect: {exc.reason}", tool=tool, hint=exc.hint
            ) from exc
        except Exception as exc:
            raise Unavailable(
                f"the guard cannot connect: {type(exc).__name__}: {exc}", tool=tool
            ) from exc
        self._guard = guard
        return guard

    async def aclose(self) -> None:
        """Close the guard if this proxy built it."""
        if self._factory is None:
            return
        if self._building is not None and not self._building.done():
            self._building.cancel()  # the thread closes what it builds
        if self._guard is not None:
            await asyncio.to_thread(_close, self._guard)
            self._guard = None

    # -- the handlers ------------------------------------------------------------------

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        listed = await self.upstream.list_tools(cursor=params.cursor if params else None)
        return ListToolsResult(tools=listed.tools, next_cursor=listed.next_cursor)

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult:
        return await self.call(params.name, dict(params.arguments or {}))

    async def call(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        """One guarded call: the upstream's result, or an error result saying why not."""
        answered: list[CallToolResult] = []

        async def run_upstream() -> dict[str, Any]:
            result = await self.upstream.call_tool(name, arguments)
            if result.meta and SERVER_INFO_KEY in result.meta:  # the proxy stamps its own
                meta = {k: v for k, v in result.meta.items() if k != SERVER_INFO_KEY}
                result = result.model_copy(update={"meta": meta or None})
            answered.append(result)
            if result.is_error:
                raise _ToolFailed(result)
            # what the guard digests for the outcome: the result as the wire carries it
            return result.model_dump(mode="json", by_alias=True, exclude_none=True)

        started = False

        async def call_once() -> dict[str, Any]:
            nonlocal started
            if started:
                raise RuntimeError("the guard asked to run the tool twice")
            started = True
            return await run_upstream()

        try:
            guard = await self.guard(name)
            await guard.arun(name, arguments, call_once)
        except Blocked as exc:
            if answered:  # cannot happen with the Guard; never hide a result that exists
                return answered[0]
            log.warning("%s", exc.message())
            return blocked_result(exc)
        except Exception as exc:
            if answered:
                if not isinstance(exc, _ToolFailed):
                    log.error("tool %r ran, then: %s: %s", name, type(exc).__name__, exc)
                return answered[0]
            if started:
                log.exception("the upstream tool %r failed", name)
                return _error_result(f"the tool {name!r} failed: {type(exc).__name__}: {exc}")
            log.exception("tool %r: the guard failed; the tool did not run", name)
            return _error_result(
                f"trustplane error: the tool {name!r} did not run: {type(exc).__name__}: {exc}"
            )
        if not answered:
            log.error("tool %r: the guard returned without running it", name)
            return _error_result(f"trustplane error: the tool {name!r} did not run")
        return answered[0]

    def server(self, *, name: str = PROXY_NAME, instructions: str | None = None) -> Server[Any]:
        """The low-level MCP server of these handlers (serve it, or ``mcp.Client(it)``)."""
        return Server(
            name,
            instructions=instructions,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
        )


def build_proxy(guard: GuardSource, upstream: Upstream, *, wait_s: float = 10.0) -> Server[Any]:
    """An in-process proxy server over a connected upstream client (e.g. for tests)."""
    return McpProxy(guard, upstream, wait_s=wait_s).server()


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


def _report_connection(future: asyncio.Future[GuardLike]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is None:
        log.info("the guard is connected")
    else:
        why = exc.reason if isinstance(exc, TrustplaneError) else f"{type(exc).__name__}: {exc}"
        log.error("the guard cannot connect (calls fail closed until it can): %s", why)


def _close(guard: object | None) -> None:
    close = getattr(guard, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - closing at exit: say so, go on
            log.exception("closing the guard failed")


def upstream_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tool server's environment: the proxy's, without the ``TRUSTPLANE_*`` variables
    (the tool server is not the guard, and gets none of its settings)."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if not k.startswith("TRUSTPLANE_")}


@asynccontextmanager
async def open_upstream(
    command: Sequence[str], *, env: Mapping[str, str] | None = None
) -> AsyncIterator[Client]:
    """Start the tool server ``command`` and connect to it over stdio."""
    if not command:
        raise ConfigError(
            "no MCP server command given", hint="trustplane mcp-proxy [OPTIONS] -- COMMAND ..."
        )
    parameters = StdioServerParameters(
        command=command[0],
        args=list(command[1:]),
        env=dict(upstream_environment() if env is None else env),
    )
    client = Client(
        parameters,
        cache=None,  # tools/list goes to the upstream every time
        client_info=Implementation(name=PROXY_NAME, version="1"),
    )
    async with AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(client)
        except Exception as exc:
            raise ConfigError(
                f"cannot start or reach the MCP server {' '.join(command)!r}: "
                f"{type(exc).__name__}: {exc}",
                hint="run the command by hand: it must serve MCP on its stdin and stdout",
            ) from exc
        yield client


async def serve_proxy(
    guard: GuardSource,
    upstream_command: Sequence[str],
    *,
    transport: Literal["stdio", "streamable-http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    wait_s: float = 10.0,
    env: Mapping[str, str] | None = None,
) -> None:
    """Start the tool server and serve the guarded proxy in front of it until the client
    leaves (stdio: its stdin closes) or the process is stopped. ``streamable-http`` serves
    ``http://host:port/mcp`` on a loopback address only: the proxy speaks for the agent."""
    if transport == "streamable-http" and not _is_loopback(host):
        raise ConfigError(
            f"the proxy only listens on a loopback address, not {host!r}",
            hint="whoever reaches it calls tools as the agent; use 127.0.0.1 or ::1",
        )
    async with open_upstream(upstream_command, env=env) as upstream:
        proxy = McpProxy(guard, upstream, wait_s=wait_s)
        proxy.connect()
        server = proxy.server(instructions=upstream.instructions)
        try:
            if transport == "stdio":
                async with stdio_server() as (read, write):
                    await server.run(read, write, server.create_initialization_options())
            else:
                await _serve_http(server, host, port)
        finally:
            await proxy.aclose()


async def _serve_http(server: Server[Any], host: str, port: int) -> None:
    import uvicorn

    app = server.streamable_http_app(host=host)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    http = uvicorn.Server(config)
    serving = asyncio.ensure_future(http.serve())
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:  # stop as on a signal: close the connections, then go
        http.should_exit = True
        await serving
        raise


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
