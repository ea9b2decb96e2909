"""The LangChain middleware and the OpenAI Agents tools over a fake guard (no Kafka): a
call runs only on an Authorization, every Blocked becomes the model's error message, a
held call interrupts (LangGraph) or asks for the SDK's approval (Agents) and runs only on
the reviewer's answer, and a guard that fails for any other reason runs nothing.

The scripted models here are used by the adapters' integration tests too."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

import pytest
from agents import Agent, RunConfig, Runner, ToolGuardrailFunctionOutput
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.run_config import ToolExecutionConfig
from agents.tool_context import ToolContext
from agents.usage import Usage
from langchain.agents import create_agent
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from pydantic import Field

from streams.sdk.guard import (
    Authorization,
    Blocked,
    Denied,
    Guard,
    NeedsReview,
    Unavailable,
    Unmapped,
    Unverified,
)
from streams.sdk.guard.langchain import REVIEW_INTERRUPT, TrustplaneMiddleware
from streams.sdk.guard.mapping import MappedCall, arguments_digest
from streams.sdk.guard.openai_agents import GUARDRAIL_NAME, GuardedTools, guarded_function_tool

# -- scripted models ---------------------------------------------------------------------


class ScriptedChatModel(BaseChatModel):
    """A LangChain chat model that answers with the next scripted message (tool calls
    included) and records what it was given; ``bind_tools`` keeps the script."""

    responses: list[AIMessage]
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any
    ) -> ChatResult:
        self.seen.append(list(messages))
        message = self.responses[len(self.seen) - 1]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Sequence[Any], **_: Any) -> ScriptedChatModel:
        return self

    def tool_messages(self) -> list[ToolMessage]:
        last = self.seen[-1] if self.seen else []
        return [m for m in last if isinstance(m, ToolMessage)]


def tool_call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id}])


class ScriptedAgentsModel(Model):
    """An OpenAI Agents ``Model`` that answers with the next scripted output items and
    records each input it was given (no network)."""

    def __init__(self, outputs: Sequence[Sequence[Any]]) -> None:
        self.outputs = [list(o) for o in outputs]
        self.inputs: list[Any] = []

    async def get_response(
        self,
        system_instructions: str | None,
        input: Any,
        model_settings: Any,
        tools: Any,
        output_schema: Any,
        handoffs: Any,
        tracing: Any,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> ModelResponse:
        self.inputs.append(input)
        return ModelResponse(output=self.outputs.pop(0), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("scripted: no streaming")

    def tool_outputs(self) -> dict[str, str]:
        """call id -> the output the model was given for it (last input)."""
        items = self.inputs[-1] if self.inputs and isinstance(self.inputs[-1], list) else []
        return {
            str(i["call_id"]): str(i["output"])
            for i in items
            if isinstance(i, Mapping) and i.get("type") == "function_call_output"
        }


def function_call(name: str, args: dict[str, Any], call_id: str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        id=call_id, call_id=call_id, type="function_call", name=name, arguments=json.dumps(args)
    )


def assistant(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id="msg",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(text=text, type="output_text", annotations=[])],
    )


NO_TRACING = RunConfig(tracing_disabled=True)


# -- a fake guard ------------------------------------------------------------------------


class FakeGuard:
    """The guard's interface: answers ``authorize`` with ``answer`` (an exception is
    raised), ``await_review`` with ``review``; records what it was asked and reported.
    ``execute`` is the real :meth:`Guard.execute`."""

    execute = Guard.execute

    def __init__(
        self,
        answer: BaseException | None = None,
        review: BaseException | None = None,
    ) -> None:
        self.answer = answer
        self.review = review
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.reviews: list[tuple[str, float]] = []
        self.reports: list[tuple[str, str, str]] = []
        self._calls: dict[str, tuple[str, dict[str, Any]]] = {}

    def _auth(self, tool: str, arguments: Mapping[str, Any], intent_id: str) -> Authorization:
        call = MappedCall(
            tool, "a.b", "r:1", {}, {"tool": tool, "arguments_sha256": arguments_digest(arguments)}
        )
        return Authorization(tool, intent_id, call, cast(Any, object()))

    def authorize(self, tool: str, arguments: Mapping[str, Any], *, rule: Any = None) -> Any:
        intent_id = f"intent-{len(self.asked) + 1}"
        self.asked.append((tool, dict(arguments)))
        self._calls[intent_id] = (tool, dict(arguments))
        if self.answer is not None:
            if isinstance(self.answer, Blocked):
                self.answer.intent_id = self.answer.intent_id or intent_id
            raise self.answer
        return self._auth(tool, arguments, intent_id)

    async def aauthorize(self, tool: str, arguments: Mapping[str, Any], *, rule: Any = None) -> Any:
        return self.authorize(tool, arguments, rule=rule)

    def await_review(self, intent_id: str, timeout_s: float) -> Authorization:
        self.reviews.append((intent_id, timeout_s))
        if self.review is not None:
            raise self.review
        tool, arguments = self._calls[intent_id]
        return self._auth(tool, arguments, intent_id)

    def report_success(self, auth: Authorization, result: Any) -> None:
        self.reports.append((auth.intent_id, "EXECUTED", repr(result)))

    def report_failure(self, auth: Authorization, exc: BaseException) -> None:
        self.reports.append((auth.intent_id, "FAILED", f"{type(exc).__name__}: {exc}"))


def as_guard(fake: FakeGuard) -> Guard:
    return cast(Guard, fake)


def blocked(kind: type[Blocked]) -> Blocked:
    return kind("why not: rule-7", tool="pay", reasons=["rule-7: over the limit"])


BLOCKED_KINDS = [Denied, Unmapped, Unavailable, Unverified]


def needs_review() -> NeedsReview:
    return NeedsReview(
        "held for review: rate", tool="pay", reasons=["anomaly.rate: 2 in 60 s"], intent_id=None
    )


# -- LangChain -----------------------------------------------------------------------------


def lc_agent(
    fake: FakeGuard, responses: list[AIMessage], *, checkpointer: bool = False
) -> tuple[Any, ScriptedChatModel, list[str]]:
    runs: list[str] = []

    @tool
    def pay(account: str, amount: float) -> str:
        """Pay an amount to an account."""
        runs.append(f"pay {account} {amount}")
        return f"paid {amount}"

    @tool
    def explode(reason: str) -> str:
        """Fail."""
        runs.append("explode")
        raise RuntimeError(reason)

    model = ScriptedChatModel(responses=responses)
    agent = create_agent(
        model,
        [pay, explode],
        middleware=[TrustplaneMiddleware(as_guard(fake), review_timeout_s=7.0)],
        checkpointer=InMemorySaver() if checkpointer else None,
    )
    return agent, model, runs


PAY = {"account": "ACME-42", "amount": 75000.0}
THREAD = {"configurable": {"thread_id": "t-1"}}


def test_langchain_an_authorized_call_runs_once_and_is_reported() -> None:
    fake = FakeGuard()
    agent, model, runs = lc_agent(fake, [tool_call("pay", PAY, "c1"), AIMessage("done")])
    result = agent.invoke({"messages": [("user", "pay")]})
    assert runs == ["pay ACME-42 75000.0"]
    assert fake.asked == [("pay", PAY)]
    assert fake.reports == [("intent-1", "EXECUTED", "'paid 75000.0'")]
    (message,) = model.tool_messages()
    assert message.status == "success" and message.content == "paid 75000.0"
    assert result["messages"][-1].content == "done"


@pytest.mark.parametrize("kind", BLOCKED_KINDS)
@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_langchain_a_blocked_call_is_an_error_message_and_does_not_run(
    kind: type[Blocked], run_async: bool
) -> None:
    refusal = blocked(kind)
    fake = FakeGuard(answer=refusal)
    agent, model, runs = lc_agent(fake, [tool_call("pay", PAY, "c1"), AIMessage("ok")])
    state = {"messages": [("user", "pay")]}
    asyncio.run(agent.ainvoke(state)) if run_async else agent.invoke(state)
    assert runs == [] and fake.reports == []
    (message,) = model.tool_messages()
    assert message.status == "error" and message.tool_call_id == "c1"
    assert message.content == refusal.message()
    assert "rule-7: over the limit" in message.content


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_langchain_a_failing_guard_runs_nothing(run_async: bool) -> None:
    fake = FakeGuard(answer=RuntimeError("a bug in the guard"))
    agent, model, runs = lc_agent(fake, [tool_call("pay", PAY, "c1"), AIMessage("ok")])
    state = {"messages": [("user", "pay")]}
    asyncio.run(agent.ainvoke(state)) if run_async else agent.invoke(state)
    assert runs == [] and fake.reports == []
    (message,) = model.tool_messages()
    assert message.status == "error"
    assert "did not run" in str(message.content) and "RuntimeError" in str(message.content)
    assert "a bug in the guard" not in str(message.content), "internals stay in the log"


def test_langchain_a_tool_that_fails_is_reported_failed() -> None:
    fake = FakeGuard()
    agent, _, runs = lc_agent(fake, [tool_call("explode", {"reason": "boom"}, "c1")])
    with pytest.raises(RuntimeError, match="boom"):
        agent.invoke({"messages": [("user", "x")]})
    assert runs == ["explode"]
    assert fake.reports == [("intent-1", "FAILED", "RuntimeError: boom")]


def test_langchain_a_held_call_without_checkpointer_is_refused_with_the_intent() -> None:
    fake = FakeGuard(answer=needs_review())
    agent, model, runs = lc_agent(fake, [tool_call("pay", PAY, "c1"), AIMessage("ok")])
    result = agent.invoke({"messages": [("user", "pay")]})
    assert "__interrupt__" not in result
    assert runs == [] and fake.reviews == []
    (message,) = model.tool_messages()
    assert message.status == "error"
    assert "trustplane review approve intent-1" in str(message.content)


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_langchain_a_held_call_interrupts_and_runs_once_on_the_reviewers_approval(
    run_async: bool,
) -> None:
    fake = FakeGuard(answer=needs_review())
    agent, model, runs = lc_agent(
        fake, [tool_call("pay", PAY, "c1"), AIMessage("paid")], checkpointer=True
    )

    def invoke(value: Any) -> Any:
        if run_async:
            return asyncio.run(agent.ainvoke(value, THREAD))
        return agent.invoke(value, THREAD)

    first = invoke({"messages": [("user", "pay")]})
    (held,) = first["__interrupt__"]
    assert held.value["trustplane"] == REVIEW_INTERRUPT
    assert held.value["intent_id"] == "intent-1" and held.value["tool"] == "pay"
    assert held.value["reasons"] == ["anomaly.rate: 2 in 60 s"]
    assert runs == [] and fake.reviews == []

    # invoked again without an answer: still held, nothing asked again
    again = invoke(None)
    assert again["__interrupt__"][0].value["intent_id"] == "intent-1"
    assert len(fake.asked) == 1 and runs == []

    final = invoke(Command(resume={"approved": True}))
    assert fake.reviews == [("intent-1", 7.0)]
    assert len(fake.asked) == 1, "resuming publishes no second intent"
    assert runs == ["pay ACME-42 75000.0"]
    assert fake.reports == [("intent-1", "EXECUTED", "'paid 75000.0'")]
    assert final["messages"][-1].content == "paid"


def test_langchain_a_held_call_the_reviewer_denies_does_not_run() -> None:
    denial = Denied("denied by a reviewer", tool="pay", intent_id="intent-1")
    fake = FakeGuard(answer=needs_review(), review=denial)
    agent, model, runs = lc_agent(
        fake, [tool_call("pay", PAY, "c1"), AIMessage("ok")], checkpointer=True
    )
    agent.invoke({"messages": [("user", "pay")]}, THREAD)
    agent.invoke(Command(resume="go on"), THREAD)
    assert runs == [] and fake.reports == []
    (message,) = model.tool_messages()
    assert message.status == "error" and message.content == denial.message()


# -- OpenAI Agents -----------------------------------------------------------------------


def oa_tools(fake: FakeGuard, **options: Any) -> tuple[GuardedTools, list[Any], list[str]]:
    runs: list[str] = []

    def pay(account: str, amount: float) -> str:
        """Pay an amount to an account."""
        runs.append(f"pay {account} {amount}")
        return f"paid {amount}"

    async def explode(reason: str) -> str:
        """Fail."""
        runs.append("explode")
        raise RuntimeError(reason)

    tools = GuardedTools(as_guard(fake), review_timeout_s=7.0, **options)
    return tools, [tools.tool(pay), tools.tool(explode)], runs


def oa_run(
    tools: list[Any], outputs: list[list[Any]], state: Any = "go"
) -> tuple[Any, ScriptedAgentsModel]:
    model = ScriptedAgentsModel(outputs)
    agent = Agent(name="billing", model=model, tools=tools)
    return asyncio.run(Runner.run(agent, state, run_config=NO_TRACING)), model


def test_agents_an_authorized_call_runs_once_and_is_reported() -> None:
    fake = FakeGuard()
    _, tools, runs = oa_tools(fake)
    result, model = oa_run(tools, [[function_call("pay", PAY, "c1")], [assistant("done")]])
    assert result.final_output == "done"
    assert runs == ["pay ACME-42 75000.0"]
    assert fake.asked == [("pay", PAY)], "asked once (needs_approval, guardrail, invoke)"
    assert fake.reports == [("intent-1", "EXECUTED", "'paid 75000.0'")]
    assert model.tool_outputs() == {"c1": "paid 75000.0"}
    (guardrail,) = result.tool_input_guardrail_results
    assert guardrail.guardrail.get_name() == GUARDRAIL_NAME
    assert guardrail.output.behavior["type"] == "allow"


@pytest.mark.parametrize("kind", BLOCKED_KINDS)
def test_agents_a_blocked_call_is_rejected_with_the_reasons(kind: type[Blocked]) -> None:
    refusal = blocked(kind)
    fake = FakeGuard(answer=refusal)
    _, tools, runs = oa_tools(fake)
    result, model = oa_run(tools, [[function_call("pay", PAY, "c1")], [assistant("ok")]])
    assert runs == [] and fake.reports == []
    assert model.tool_outputs() == {"c1": refusal.message()}
    (guardrail,) = result.tool_input_guardrail_results
    assert guardrail.output.behavior == {"type": "reject_content", "message": refusal.message()}
    assert result.interruptions == []


def test_agents_a_failing_guard_runs_nothing() -> None:
    fake = FakeGuard(answer=RuntimeError("a bug in the guard"))
    _, tools, runs = oa_tools(fake)
    _, model = oa_run(tools, [[function_call("pay", PAY, "c1")], [assistant("ok")]])
    assert runs == [] and fake.reports == []
    output = model.tool_outputs()["c1"]
    assert "did not run" in output and "RuntimeError" in output
    assert "a bug" not in output


def test_agents_a_tool_that_fails_is_reported_failed() -> None:
    fake = FakeGuard()
    _, tools, runs = oa_tools(fake)
    _, model = oa_run(
        tools, [[function_call("explode", {"reason": "boom"}, "c1")], [assistant("ok")]]
    )
    assert runs == ["explode"]
    assert fake.reports == [("intent-1", "FAILED", "RuntimeError: boom")]
    assert model.tool_outputs()["c1"].startswith("An error occurred while running the tool")


PRE_APPROVAL_GUARDRAILS = RunConfig(
    tracing_disabled=True,
    tool_execution=ToolExecutionConfig(pre_approval_tool_input_guardrails=True),
)


@pytest.mark.parametrize(
    "config", [NO_TRACING, PRE_APPROVAL_GUARDRAILS], ids=["default", "pre-approval-guardrails"]
)
def test_agents_a_held_call_needs_the_sdk_approval_then_the_reviewers(config: RunConfig) -> None:
    fake = FakeGuard(answer=needs_review())
    guarded, tools, runs = oa_tools(fake)
    model = ScriptedAgentsModel([[function_call("pay", PAY, "c1")], [assistant("paid")]])
    agent = Agent(name="billing", model=model, tools=tools)

    async def scenario() -> Any:
        first = await Runner.run(agent, "pay", run_config=config)
        (item,) = first.interruptions
        held = guarded.review_of(item)
        assert held is not None and held.intent_id == "intent-1"
        assert runs == [] and fake.reviews == []
        state = first.to_state()
        state.approve(item)
        return await Runner.run(agent, state, run_config=config)

    result = asyncio.run(scenario())
    assert fake.reviews == [("intent-1", 7.0)]
    assert len(fake.asked) == 1, "the approval publishes no second intent"
    assert runs == ["pay ACME-42 75000.0"]
    assert fake.reports == [("intent-1", "EXECUTED", "'paid 75000.0'")]
    assert result.final_output == "paid"


def test_agents_a_denied_call_is_rejected_before_any_sdk_approval() -> None:
    refusal = blocked(Denied)
    fake = FakeGuard(answer=refusal)
    _, tools, runs = oa_tools(fake)
    model = ScriptedAgentsModel([[function_call("pay", PAY, "c1")], [assistant("ok")]])
    agent = Agent(name="billing", model=model, tools=tools)
    result = asyncio.run(Runner.run(agent, "pay", run_config=PRE_APPROVAL_GUARDRAILS))
    assert result.interruptions == [] and runs == []
    assert model.tool_outputs() == {"c1": refusal.message()}


def test_agents_a_held_call_the_reviewer_does_not_answer_does_not_run() -> None:
    fake = FakeGuard(
        answer=needs_review(),
        review=NeedsReview("no reviewer answered within 7 s", tool="pay", intent_id="intent-1"),
    )
    guarded, tools, runs = oa_tools(fake)
    model = ScriptedAgentsModel([[function_call("pay", PAY, "c1")], [assistant("ok")]])
    agent = Agent(name="billing", model=model, tools=tools)

    async def scenario() -> None:
        first = await Runner.run(agent, "pay", run_config=NO_TRACING)
        state = first.to_state()
        state.approve(first.interruptions[0])
        await Runner.run(agent, state, run_config=NO_TRACING)

    asyncio.run(scenario())
    assert runs == [] and fake.reports == []
    output = model.tool_outputs()["c1"]
    assert "no reviewer answered" in output and "trustplane review approve intent-1" in output
    assert guarded.review_of("c1") is None


def test_agents_review_as_rejection_names_the_intent_and_who_approves() -> None:
    fake = FakeGuard(answer=needs_review())
    _, tools, runs = oa_tools(fake, review="reject")
    result, model = oa_run(tools, [[function_call("pay", PAY, "c1")], [assistant("ok")]])
    assert result.interruptions == [] and runs == [] and fake.reviews == []
    output = model.tool_outputs()["c1"]
    assert "held for review" in output and "trustplane review approve intent-1" in output


def _context(tool_name: str, call_id: str, arguments: str) -> ToolContext[Any]:
    return ToolContext(
        context=None, tool_name=tool_name, tool_call_id=call_id, tool_arguments=arguments
    )


def test_agents_the_tool_does_not_run_without_its_guardrail() -> None:
    fake = FakeGuard()
    guarded, (pay, _), runs = oa_tools(fake)
    arguments = json.dumps(PAY)
    output = asyncio.run(pay.on_invoke_tool(_context("pay", "c9", arguments), arguments))
    assert runs == [] and fake.reports == [] and fake.asked == []
    assert "did not run" in output and "no verified approval" in output


def test_agents_an_authorization_is_for_its_exact_arguments_and_used_once() -> None:
    fake = FakeGuard()
    guarded, (pay, _), runs = oa_tools(fake)
    (guardrail,) = pay.tool_input_guardrails
    arguments = json.dumps(PAY)

    async def scenario() -> list[Any]:
        context = _context("pay", "c1", arguments)
        decision = await guardrail.run(cast(Any, type("Data", (), {"context": context})))
        assert isinstance(decision, ToolGuardrailFunctionOutput)
        assert decision.behavior["type"] == "allow"
        other = json.dumps({**PAY, "amount": 9_999_999.0})
        changed = await pay.on_invoke_tool(_context("pay", "c1", other), other)
        decision = await guardrail.run(cast(Any, type("Data", (), {"context": context})))
        first = await pay.on_invoke_tool(context, arguments)
        second = await pay.on_invoke_tool(context, arguments)
        return [changed, first, second]

    changed, first, second = asyncio.run(scenario())
    assert "did not run" in changed, "other arguments than the approved ones"
    assert first == "paid 75000.0"
    assert "did not run" in second, "an authorization runs its call once"
    assert runs == ["pay ACME-42 75000.0"]
    assert len(fake.asked) == 2, "the refused call's authorization was dropped"


def test_agents_guarded_function_tool_and_its_options() -> None:
    def read_invoice(invoice_id: str) -> str:
        """Read an invoice."""
        return invoice_id

    fake = FakeGuard()
    one = guarded_function_tool(as_guard(fake), read_invoice, name="read")
    assert one.name == "read" and one.description == "Read an invoice."
    assert callable(one.needs_approval)
    assert one.params_json_schema["required"] == ["invoice_id"]
    rejecting = guarded_function_tool(as_guard(fake), read_invoice, review="reject")
    assert rejecting.needs_approval is False
    with pytest.raises(TypeError, match="needs_approval"):
        GuardedTools(as_guard(fake)).tool(read_invoice, needs_approval=True)
    with pytest.raises(ValueError):
        GuardedTools(as_guard(fake), review="ask")  # type: ignore[arg-type]
