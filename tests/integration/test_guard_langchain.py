"""A LangChain agent (``create_agent``, a scripted chat model) behind the real gate through
:class:`TrustplaneMiddleware`: an approved tool runs once and its outcome is reported, a
denied one never runs and the model reads the gate's reason, and a call held for review
interrupts the graph, then runs once when an operator approved it and the graph resumed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from streams.config import Settings
from streams.operator import OperatorClient
from streams.sdk import OutcomeReader
from streams.sdk.guard import Guard
from streams.sdk.guard.langchain import REVIEW_INTERRUPT, TrustplaneMiddleware
from tests.integration.guardkit import gated_settings, make_guard
from tests.streams.test_guard_adapters_unit import ScriptedChatModel, tool_call

pytestmark = pytest.mark.broker


class Billing:
    """The billing tools, counting what actually ran."""

    def __init__(self) -> None:
        self.runs: list[str] = []

        @tool
        def read_invoice(invoice_id: str) -> str:
            """Read an invoice."""
            self.runs.append(f"read {invoice_id}")
            return f"invoice {invoice_id}: 12.50 EUR"

        @tool
        def pay(account: str, amount: float, currency: str) -> str:
            """Pay an amount to an account."""
            self.runs.append(f"pay {account} {amount} {currency}")
            return "paid"

        self.tools = [read_invoice, pay]


def outcomes(settings: Settings, want: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    with OutcomeReader(settings, ["outcomes"]) as reader:
        while time.monotonic() < deadline and len(found) < want:
            found += [r.record for r in reader.read(timeout=0.5) if r.record]
    return found


@pytest.fixture
def gated(settings: Settings, worker_factory: Callable[[Settings], Any]) -> Settings:
    return gated_settings(settings, worker_factory)


@pytest.fixture
def guard(gated: Settings, tmp_path: Path) -> Iterator[Guard]:
    with make_guard(gated, tmp_path) as g:
        yield g


def test_an_agent_runs_the_approved_tool_once_and_reads_the_denial(
    guard: Guard, gated: Settings
) -> None:
    billing = Billing()
    model = ScriptedChatModel(
        responses=[
            tool_call("read_invoice", {"invoice_id": "INV-7"}, "call-read"),
            tool_call(
                "pay", {"account": "ACME-42", "amount": 75000.0, "currency": "EUR"}, "call-pay"
            ),
            AIMessage("I read the invoice; the payment was refused."),
        ]
    )
    agent = create_agent(model, billing.tools, middleware=[TrustplaneMiddleware(guard)])

    question: Any = {"messages": [("user", "read INV-7, then pay ACME-42 75,000 EUR")]}
    result = agent.invoke(question)

    assert billing.runs == ["read INV-7"], "read once; the payment never ran"
    read, paid = model.tool_messages()
    assert read.status == "success" and read.content == "invoice INV-7: 12.50 EUR"
    assert paid.status == "error" and paid.tool_call_id == "call-pay"
    assert "trustplane denied" in paid.content and "did not run" in paid.content
    assert "payments.limit-50k" in paid.content or "50,000" in paid.content
    assert result["messages"][-1].content.startswith("I read the invoice")
    (outcome,) = outcomes(gated, want=1)
    assert outcome["status"] == "EXECUTED" and outcome["detail"].startswith("result sha256:")


def test_a_held_call_interrupts_and_runs_once_after_the_operator_approved(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[[Settings], Any],
    tmp_path: Path,
) -> None:
    anomaly = tmp_path / "anomaly-review-second.toml"
    anomaly.write_text(
        'description = "the second same action within a minute is held"\n'
        "[default]\n"
        'rate = { max = 1, response = "review" }\n'
        'burst = { max = 100, response = "deny" }\n'
    )
    gated = gated_settings(
        settings_factory(anomaly_config_path=anomaly, review_timeout_ms=60_000), worker_factory
    )
    billing = Billing()
    model = ScriptedChatModel(
        responses=[
            tool_call("read_invoice", {"invoice_id": "INV-1"}, "call-1"),
            tool_call("read_invoice", {"invoice_id": "INV-2"}, "call-2"),
            AIMessage("both invoices read"),
        ]
    )
    with make_guard(gated, tmp_path) as guard:
        agent = create_agent(
            model,
            billing.tools,
            middleware=[TrustplaneMiddleware(guard, review_timeout_s=30.0)],
            checkpointer=InMemorySaver(),
        )
        thread: RunnableConfig = {"configurable": {"thread_id": "billing-1"}}
        question: Any = {"messages": [("user", "read INV-1 and INV-2")]}

        async def scenario() -> tuple[Any, Any]:
            first = await agent.ainvoke(question, thread)
            assert billing.runs == ["read INV-1"], "the second read is held, not run"
            (held,) = first["__interrupt__"]
            assert held.value["trustplane"] == REVIEW_INTERRUPT
            assert held.value["tool"] == "read_invoice"
            assert any("rate" in reason for reason in held.value["reasons"]), held.value
            with OperatorClient(gated) as operator:
                operator.send(
                    "review.approve",
                    {"intent_id": held.value["intent_id"], "reason": "expected batch"},
                    subject=f"review/{held.value['intent_id']}",
                )
            resume: Any = Command(resume="approved at the gate")
            final = await agent.ainvoke(resume, thread)
            return held, final

        held, final = asyncio.run(scenario())

    assert billing.runs == ["read INV-1", "read INV-2"], "each read ran once"
    assert final["messages"][-1].content == "both invoices read"
    second = model.tool_messages()[-1]
    assert second.status == "success" and second.content == "invoice INV-2: 12.50 EUR"
    reported = outcomes(gated, want=2)
    assert [o["status"] for o in reported] == ["EXECUTED", "EXECUTED"]
    assert held.value["intent_id"] in {o["intent_id"] for o in reported}
