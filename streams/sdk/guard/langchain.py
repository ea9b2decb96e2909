"""LangChain 1.x / LangGraph: every tool call of an agent goes through the guard.

::

    from langchain.agents import create_agent
    from langgraph.checkpoint.memory import InMemorySaver
    from streams.sdk.guard.langchain import TrustplaneMiddleware

    agent = create_agent(model, [read_invoice, pay], checkpointer=InMemorySaver(),
                         middleware=[..., TrustplaneMiddleware(guard)])   # innermost: last

For each tool call the middleware asks the guard (:meth:`Guard.authorize`) with the call's
name and the model's arguments, and

- on a verified approval runs the tool (the rest of the chain) once inside
  :meth:`Guard.execute`, which reports the outcome (an error ``ToolMessage`` from the tool
  is reported as FAILED);
- when the gate denies the call, the tool is unmapped, the gate does not answer in time,
  or an answer does not verify, returns ``ToolMessage(status="error")`` with
  :meth:`Blocked.message` to the model: the tool did not run;
- when the gate holds the call for a person (:class:`NeedsReview`), raises a LangGraph
  ``interrupt`` whose value names the intent and the reasons: ``{"trustplane": "review",
  "tool", "intent_id", "reasons", "message", "approve_with"}`` (the CLI command). The graph
  resumes with ``Command(resume=...)``; the middleware then waits (up to
  ``review_timeout_s``) for the *gate's* answer to that intent (:meth:`Guard.await_review`)
  and runs the tool only on its verified approval. The resume value itself authorizes
  nothing: it is not signed. The reviewer answers at the gate
  (``trustplane review approve <intent id>``), before or after resuming.

Anything else that goes wrong in the guard (a bug, a broken configuration) is logged and
returned as an error ``ToolMessage``: the tool does not run. Exceptions of the tool itself
propagate as they would without the middleware (after the outcome is reported FAILED).

Notes:

- Interrupts need a checkpointer. Without one, a held call is answered with an error
  ``ToolMessage`` (the held intent and the command that approves it) instead.
- The pending reviews are kept in this middleware object (as the guard keeps the held
  intents): resume the graph in the process that ran the call. Resumed elsewhere, the
  call is asked for again (a new intent).
- Put this middleware *last* in ``middleware=[...]`` (innermost), so no other middleware
  changes the call after it was approved, and retries (``ToolRetryMiddleware``) outside
  it: each attempt is then a call of its own, approved on its own.
- A tool that itself interrupts the graph (or raises another LangGraph control-flow
  signal) is reported FAILED; when the graph resumes, its call is asked for again.
- Each tool call must be a task of its own (as ``create_agent`` runs them): LangGraph
  matches resume values to interrupts by their order within a task.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, interrupt

from streams.sdk.guard.core import Authorization, Guard
from streams.sdk.guard.errors import Blocked, NeedsReview
from streams.sdk.guard.mapping import arguments_digest

__all__ = ["TrustplaneMiddleware", "REVIEW_INTERRUPT"]

log = logging.getLogger(__name__)

REVIEW_INTERRUPT = "review"
"""``value["trustplane"]`` of the interrupts this middleware raises."""

ToolResult = ToolMessage | Command[Any]

_UNSET = object()
# the config key under which LangGraph passes a node its checkpointer (None: no checkpointer)
_CHECKPOINTER_KEY = "__pregel_checkpointer"


@dataclass(frozen=True)
class _Pending:
    """A call held for review, waiting for the graph to resume."""

    tool: str
    arguments_sha256: str
    intent_id: str
    held: NeedsReview


class _ToolFailed(Exception):
    """The tool answered with an error ``ToolMessage``: its outcome is FAILED."""


class TrustplaneMiddleware(AgentMiddleware[Any, Any, Any]):
    """Run each tool call of the agent only on the gate's verified approval."""

    def __init__(self, guard: Guard, *, review_timeout_s: float = 30.0) -> None:
        super().__init__()
        if review_timeout_s <= 0:
            raise ValueError("review_timeout_s must be > 0")
        self.guard = guard
        self.review_timeout_s = review_timeout_s
        self._pending: dict[tuple[str, str, str], _Pending] = {}
        self._lock = threading.Lock()

    # -- LangChain hooks -----------------------------------------------------------------

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolResult],
    ) -> ToolResult:
        tool, arguments = _call(request)
        key = _key(request)
        pending = self._take_pending(key, tool, arguments)
        if pending is None:
            try:
                auth = self.guard.authorize(tool, arguments)
            except Exception as exc:
                blocked = self._blocked(request, key, tool, arguments, exc)
                if isinstance(blocked, ToolMessage):
                    return blocked
                pending = blocked
            else:
                return self._execute(auth, request, handler)
        self._await_resume(key, pending)  # raises GraphInterrupt until the graph resumes
        try:
            auth = self.guard.await_review(pending.intent_id, self.review_timeout_s)
        except Exception as exc:
            return _refused(request, tool, exc)
        return self._execute(auth, request, handler)

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolResult]],
    ) -> ToolResult:
        tool, arguments = _call(request)
        key = _key(request)
        pending = self._take_pending(key, tool, arguments)
        if pending is None:
            try:
                auth = await self.guard.aauthorize(tool, arguments)
            except Exception as exc:
                blocked = self._blocked(request, key, tool, arguments, exc)
                if isinstance(blocked, ToolMessage):
                    return blocked
                pending = blocked
            else:
                return await self._aexecute(auth, request, handler)
        self._await_resume(key, pending)  # raises GraphInterrupt until the graph resumes
        try:
            auth = await asyncio.to_thread(
                self.guard.await_review, pending.intent_id, self.review_timeout_s
            )
        except Exception as exc:
            return _refused(request, tool, exc)
        return await self._aexecute(auth, request, handler)

    # -- review --------------------------------------------------------------------------

    def _blocked(
        self,
        request: ToolCallRequest,
        key: tuple[str, str, str] | None,
        tool: str,
        arguments: Mapping[str, Any],
        exc: Exception,
    ) -> _Pending | ToolMessage:
        """What a call the guard did not authorize becomes: a held call to interrupt the
        graph for, or a refusal for the model (the tool does not run)."""
        if not isinstance(exc, NeedsReview):
            return _refused(request, tool, exc)
        if key is None or not exc.intent_id:
            return _refusal(request, _review_text(exc) + " (this graph cannot be resumed)")
        pending = _Pending(tool, arguments_digest(arguments), exc.intent_id, exc)
        with self._lock:
            self._pending[key] = pending
        return pending

    def _take_pending(
        self, key: tuple[str, str, str] | None, tool: str, arguments: Mapping[str, Any]
    ) -> _Pending | None:
        """The held call this tool call resumes, if any (the same tool, the same arguments)."""
        if key is None:
            return None
        with self._lock:
            pending = self._pending.get(key)
        if pending is None:
            return None
        try:
            same = pending.tool == tool and pending.arguments_sha256 == arguments_digest(arguments)
        except ValueError:
            same = False
        if not same:  # not the call that was held: ask for this one afresh
            with self._lock:
                self._pending.pop(key, None)
            return None
        return pending

    def _await_resume(self, key: tuple[str, str, str] | None, pending: _Pending) -> None:
        """Interrupt the graph (first time) or return once it resumed; then forget the hold."""
        interrupt(
            {
                "trustplane": REVIEW_INTERRUPT,
                "tool": pending.tool,
                "intent_id": pending.intent_id,
                "reasons": list(pending.held.reasons),
                "message": pending.held.message(),
                "approve_with": f"trustplane review approve {pending.intent_id}",
            }
        )
        with self._lock:
            if key is not None:
                self._pending.pop(key, None)

    # -- execution -----------------------------------------------------------------------

    def _execute(
        self,
        auth: Authorization,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolResult],
    ) -> ToolResult:
        results: list[ToolResult] = []

        def run() -> Any:
            result = handler(request)
            results.append(result)
            return _reported(result)

        try:
            self.guard.execute(auth, run)
        except _ToolFailed:
            pass
        return results[0]

    async def _aexecute(
        self,
        auth: Authorization,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolResult]],
    ) -> ToolResult:
        """:meth:`Guard.execute` for the async handler (run once, report the outcome)."""
        try:
            result = await handler(request)
        except BaseException as exc:
            await asyncio.to_thread(self.guard.report_failure, auth, exc)
            raise
        try:
            reported = _reported(result)
        except _ToolFailed as exc:
            await asyncio.to_thread(self.guard.report_failure, auth, exc)
        else:
            await asyncio.to_thread(self.guard.report_success, auth, reported)
        return result


# -- helpers -------------------------------------------------------------------------------


def _call(request: ToolCallRequest) -> tuple[str, dict[str, Any]]:
    call = request.tool_call
    arguments = call.get("args")
    return str(call.get("name")), dict(arguments) if isinstance(arguments, Mapping) else {}


def _key(request: ToolCallRequest) -> tuple[str, str, str] | None:
    """Where a held call is remembered until its graph resumes: thread, task, tool call.
    None when the graph cannot be resumed (no checkpointer, no thread)."""
    config = getattr(request.runtime, "config", None) or {}
    configurable = config.get("configurable") or {}
    thread = configurable.get("thread_id")
    call_id = request.tool_call.get("id")
    if thread is None or not call_id or configurable.get(_CHECKPOINTER_KEY, _UNSET) is None:
        return None
    return str(thread), str(configurable.get("checkpoint_ns", "")), str(call_id)


def _reported(result: ToolResult) -> Any:
    """What the outcome's digest covers: the tool message's content (a Command as a whole).
    An error tool message is a failed call."""
    if isinstance(result, ToolMessage):
        if result.status == "error":
            raise _ToolFailed(str(result.content)[:300])
        return result.content
    return result


def _review_text(held: NeedsReview) -> str:
    text = held.message()
    if held.intent_id:
        text += f"; a reviewer approves it with `trustplane review approve {held.intent_id}`"
    return text


def _refusal(request: ToolCallRequest, text: str) -> ToolMessage:
    return ToolMessage(
        content=text,
        tool_call_id=request.tool_call.get("id") or "",
        name=request.tool_call.get("name"),
        status="error",
    )


def _refused(request: ToolCallRequest, tool: str, exc: Exception) -> ToolMessage:
    """The refusal the model sees: the guard's reason, or (a failure of the guard itself,
    logged) that the tool did not run."""
    if isinstance(exc, Blocked):
        return _refusal(request, exc.message())
    log.error(
        "trustplane: the guard failed on a call of %r; the tool did not run", tool, exc_info=exc
    )
    return _refusal(
        request,
        f"trustplane error: the tool {tool!r} did not run: the guard failed "
        f"({type(exc).__name__}; see the agent's log)",
    )
