"""OpenAI Agents SDK: function tools that run only on the gate's verified approval.

::

    from agents import Agent, Runner
    from streams.sdk.guard.openai_agents import guarded_function_tool

    agent = Agent(name="billing", tools=[guarded_function_tool(guard, read_invoice),
                                         guarded_function_tool(guard, pay)])
    result = await Runner.run(agent, "pay ACME-42 120 EUR")

Each tool is a ``FunctionTool`` built from the Python function (as ``@function_tool``
builds it) with three parts that share one ledger of decisions, keyed by the tool and
the model's call id:

1. ``needs_approval`` (with ``review="approval"``, the default): asks the guard
   (:meth:`Guard.aauthorize`) and records its answer; only a call the gate holds for a
   person needs the SDK's approval (``result.interruptions``);
2. a tool input guardrail, ``trustplane``: asks the guard when nothing is recorded yet
   for the call, allows an approved call, and rejects every other one with
   :meth:`Blocked.message` (``ToolGuardrailFunctionOutput.reject_content``: the model
   receives the reasons as the tool's output, the tool does not run). After the SDK
   approval of a held call it waits (``review_timeout_s``) for the *gate's* answer
   (:meth:`Guard.await_review`) and allows the call only on its verified approval;
3. the tool's invocation: takes the call's verified :class:`Authorization` out of the
   ledger (once: it is removed), checks it is for this tool and these exact arguments,
   runs the function once and reports the outcome (EXECUTED, or FAILED with the error).
   Without such an authorization it returns a refusal and does not run the function.

Why a ledger and not the guardrail alone: a guardrail can only allow or reject, it
cannot hand anything to the invocation, and the invocation is the only place where the
outcome can be reported. Why not the invocation alone: a rejection through the guardrail
is what the SDK records as one (``result.tool_input_guardrail_results``), and the SDK's
approval (``needs_approval``) is decided before guardrails and invocation run. The ledger
is keyed by the call id and bound to the arguments' digest, an entry is used once, and a
missing or mismatched entry never runs the function (fail closed).

Review: with ``review="approval"`` a held call surfaces as an SDK interruption (a
``ToolApprovalItem``; :meth:`GuardedTools.review_of` gives its intent id and reasons).
Approving it in the SDK (``state = result.to_state(); state.approve(item);
Runner.run(agent, state)``) authorizes nothing by itself: the tool runs only when the
gate's reviewer approved the intent (``trustplane review approve <intent id>``), before
or within ``review_timeout_s`` after the resume. With ``review="reject"`` a held call is
rejected at once with the intent id and the command that approves it (a later call is
a new intent).

The ledger lives in this process (as the guard keeps the held intents): resume a run
in the process that started it. Entries of calls that never ran (a run abandoned after
its decisions, an SDK rejection of a held call) are dropped after ``max_age_s``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agents import (
    FunctionTool,
    RunContextWrapper,
    ToolGuardrailFunctionOutput,
    ToolInputGuardrail,
    ToolInputGuardrailData,
    default_tool_error_function,
    function_tool,
)
from agents.tool import ToolErrorFunction
from agents.tool_context import ToolContext

from streams.sdk.guard.core import Authorization, Guard
from streams.sdk.guard.errors import Blocked, NeedsReview, Unmapped, Unverified
from streams.sdk.guard.mapping import arguments_digest

__all__ = ["GuardedTools", "guarded_function_tool", "GUARDRAIL_NAME"]

log = logging.getLogger(__name__)

GUARDRAIL_NAME = "trustplane"


@dataclass
class _Decision:
    """The guard's answer about one call: its authorization, or why it must not run."""

    arguments_sha256: str
    outcome: Authorization | Exception
    at: float


class GuardedTools:
    """Function tools put behind one guard, sharing the ledger of their decisions."""

    def __init__(
        self,
        guard: Guard,
        *,
        review: Literal["approval", "reject"] = "approval",
        review_timeout_s: float = 30.0,
        max_age_s: float = 3600.0,
    ) -> None:
        if review not in ("approval", "reject"):
            raise ValueError("review must be 'approval' or 'reject'")
        if review_timeout_s <= 0 or max_age_s <= 0:
            raise ValueError("review_timeout_s and max_age_s must be > 0")
        self.guard = guard
        self.review = review
        self.review_timeout_s = review_timeout_s
        self.max_age_s = max_age_s
        self._ledger: dict[tuple[str, str], _Decision] = {}

    # -- building tools ------------------------------------------------------------------

    def tool(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        failure_error_function: ToolErrorFunction | None = default_tool_error_function,
        **options: Any,
    ) -> FunctionTool:
        """A ``FunctionTool`` of ``fn`` (``options`` as for ``agents.function_tool``, but
        ``needs_approval``) that runs only through the guard. The tool's name is the name
        the guard's mapping knows it by. ``failure_error_function`` turns an exception of
        ``fn`` into the model's message (after its outcome is reported FAILED); None: the
        exception fails the run."""
        if "needs_approval" in options:
            raise TypeError("the guard decides which calls need approval: no needs_approval")
        inner = function_tool(
            fn,
            name_override=name,
            description_override=description,
            failure_error_function=None,
            **options,
        )
        tool = inner.name

        async def needs_approval(
            _context: RunContextWrapper[Any], parameters: dict[str, Any], call_id: str
        ) -> bool:
            decision = await self._decide(tool, call_id, parameters)
            return isinstance(decision.outcome, NeedsReview)

        async def guardrail(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
            context = data.context
            return await self._guardrail(tool, context.tool_call_id, context)

        async def invoke(context: ToolContext[Any], arguments: str) -> Any:
            auth = self._take(tool, context.tool_call_id, arguments)
            if isinstance(auth, str):
                return auth
            try:
                result = await inner.on_invoke_tool(context, arguments)
            except Exception as exc:
                await asyncio.to_thread(self.guard.report_failure, auth, exc)
                if failure_error_function is None:
                    raise
                message = failure_error_function(context, exc)
                return await message if inspect.isawaitable(message) else message
            except BaseException as exc:  # cancelled (a timeout): it may have run partly
                await asyncio.to_thread(self.guard.report_failure, auth, exc)
                raise
            await asyncio.to_thread(self.guard.report_success, auth, result)
            return result

        return dataclasses.replace(
            inner,
            on_invoke_tool=invoke,
            needs_approval=needs_approval if self.review == "approval" else False,
            tool_input_guardrails=[
                *(inner.tool_input_guardrails or []),
                ToolInputGuardrail(guardrail_function=guardrail, name=GUARDRAIL_NAME),
            ],
        )

    def review_of(self, call: Any) -> NeedsReview | None:
        """Why a call (a ``ToolApprovalItem`` of ``result.interruptions``, or its call id)
        waits for a person: its intent id, reasons and message; None if it does not."""
        call_id = call if isinstance(call, str) else getattr(call, "call_id", None)
        for (_, recorded), decision in self._ledger.items():
            if recorded == call_id and isinstance(decision.outcome, NeedsReview):
                return decision.outcome
        return None

    # -- the three parts -----------------------------------------------------------------

    async def _decide(
        self, tool: str, call_id: str, arguments: str | Mapping[str, Any]
    ) -> _Decision:
        """The recorded decision about this call, or the guard's, recorded now."""
        self._prune()
        key = (tool, call_id)
        try:
            parsed = _arguments(tool, arguments)
            digest = arguments_digest(parsed)
        except (Unmapped, ValueError) as exc:
            self._ledger.pop(key, None)
            return _Decision("", exc, time.monotonic())
        decision = self._ledger.get(key)
        if decision is not None and decision.arguments_sha256 == digest:
            return decision
        if decision is not None:
            log.warning("trustplane: call %s of %r came again with other arguments", call_id, tool)
        outcome: Authorization | Exception
        try:
            outcome = await self.guard.aauthorize(tool, parsed)
        except Exception as exc:
            outcome = exc
        decision = _Decision(digest, outcome, time.monotonic())
        self._ledger[key] = decision
        return decision

    async def _guardrail(
        self, tool: str, call_id: str, context: ToolContext[Any]
    ) -> ToolGuardrailFunctionOutput:
        decision = await self._decide(tool, call_id, context.tool_arguments)
        outcome = decision.outcome
        if isinstance(outcome, NeedsReview) and self.review == "approval":
            approved = context.is_tool_approved(context.tool_name, call_id)
            if approved is None:  # guardrails before the SDK's approval: it asks a person
                return ToolGuardrailFunctionOutput.allow({"review": outcome.intent_id})
            if approved:
                try:
                    outcome = await asyncio.to_thread(
                        self.guard.await_review, outcome.intent_id or "", self.review_timeout_s
                    )
                except Exception as exc:
                    outcome = exc
                decision.outcome = outcome
        if isinstance(outcome, Authorization):
            return ToolGuardrailFunctionOutput.allow({"intent_id": outcome.intent_id})
        self._ledger.pop((tool, call_id), None)
        return ToolGuardrailFunctionOutput.reject_content(
            _refusal(tool, outcome), {"intent_id": getattr(outcome, "intent_id", None)}
        )

    def _take(self, tool: str, call_id: str, arguments: str) -> Authorization | str:
        """The verified authorization of exactly this call (used once), or a refusal."""
        decision = self._ledger.pop((tool, call_id), None)
        outcome = decision.outcome if decision is not None else None
        try:
            digest = arguments_digest(_arguments(tool, arguments))
        except (Unmapped, ValueError):
            digest = ""
        if (
            decision is not None
            and isinstance(outcome, Authorization)
            and outcome.tool == tool
            and decision.arguments_sha256 == digest
            and outcome.call.context.get("arguments_sha256") == digest
        ):
            return outcome
        if isinstance(outcome, Exception):
            return _refusal(tool, outcome)
        log.error("trustplane: no verified approval for call %s of %r; not run", call_id, tool)
        return _refusal(
            tool,
            Unverified(
                "no verified approval for this call (its trustplane guardrail did not allow "
                "it, or its arguments changed)",
                tool=tool,
            ),
        )

    def _prune(self) -> None:
        horizon = time.monotonic() - self.max_age_s
        for key in [k for k, d in self._ledger.items() if d.at < horizon]:
            decision = self._ledger.pop(key)
            if isinstance(decision.outcome, Authorization):
                log.warning(
                    "trustplane: approval of intent %s (%s) was never used",
                    decision.outcome.intent_id,
                    key[0],
                )


def guarded_function_tool(
    guard: Guard,
    fn: Callable[..., Any],
    *,
    review: Literal["approval", "reject"] = "approval",
    review_timeout_s: float = 30.0,
    **options: Any,
) -> FunctionTool:
    """One guarded ``FunctionTool`` of ``fn`` (see :meth:`GuardedTools.tool`). Use one
    :class:`GuardedTools` for several tools to ask it about held calls (``review_of``)."""
    tools = GuardedTools(guard, review=review, review_timeout_s=review_timeout_s)
    return tools.tool(fn, **options)


# -- helpers -------------------------------------------------------------------------------


def _arguments(tool: str, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(arguments, Mapping):
        return dict(arguments)
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise Unmapped(f"the arguments of {tool!r} are not a JSON object", tool=tool)
    return parsed


def _refusal(tool: str, exc: Exception) -> str:
    """What the model receives instead of the tool's output."""
    if isinstance(exc, NeedsReview):
        text = exc.message()
        if exc.intent_id:
            text += f"; a reviewer approves it with `trustplane review approve {exc.intent_id}`"
        return text
    if isinstance(exc, Blocked):
        return exc.message()
    log.error("trustplane: the guard failed on a call of %r; not run", tool, exc_info=exc)
    return (
        f"trustplane error: the tool {tool!r} did not run: the guard failed "
        f"({type(exc).__name__}; see the agent's log)"
    )
