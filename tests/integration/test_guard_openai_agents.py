"""An OpenAI Agents SDK agent (a scripted ``Model``, ``Runner.run``) behind the real gate
through guarded function tools: an approved call runs once and its outcome is reported, a
denied one never runs and the model reads the gate's reasons as the tool's output, and a
call held for review becomes an SDK approval, then runs once when an operator approved
the intent and the run resumed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner

from streams.config import Settings
from streams.operator import OperatorClient
from streams.sdk import OutcomeReader
from streams.sdk.guard import Guard
from streams.sdk.guard.openai_agents import GUARDRAIL_NAME, GuardedTools
from tests.integration.guardkit import gated_settings, make_guard
from tests.streams.test_guard_adapters_unit import (
    NO_TRACING,
    ScriptedAgentsModel,
    assistant,
    function_call,
)

pytestmark = pytest.mark.broker


class Billing:
    """The billing functions, counting what actually ran."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    def read_invoice(self, invoice_id: str) -> str:
        """Read an invoice."""
        self.runs.append(f"read {invoice_id}")
        return f"invoice {invoice_id}: 12.50 EUR"

    async def pay(self, account: str, amount: float, currency: str) -> str:
        """Pay an amount to an account."""
        self.runs.append(f"pay {account} {amount} {currency}")
        return "paid"

    def tools(self, guarded: GuardedTools) -> list[Any]:
        return [
            guarded.tool(self.read_invoice, name="read_invoice"),
            guarded.tool(self.pay, name="pay"),
        ]


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
    model = ScriptedAgentsModel(
        [
            [function_call("read_invoice", {"invoice_id": "INV-7"}, "call-read")],
            [
                function_call(
                    "pay", {"account": "ACME-42", "amount": 75000.0, "currency": "EUR"}, "call-pay"
                )
            ],
            [assistant("I read the invoice; the payment was refused.")],
        ]
    )
    agent = Agent(name="billing", model=model, tools=billing.tools(GuardedTools(guard)))

    result = asyncio.run(Runner.run(agent, "read INV-7, then pay 75,000", run_config=NO_TRACING))

    assert billing.runs == ["read INV-7"], "read once; the payment never ran"
    seen = model.tool_outputs()
    assert seen["call-read"] == "invoice INV-7: 12.50 EUR"
    assert "trustplane denied" in seen["call-pay"] and "did not run" in seen["call-pay"]
    assert "payments.limit-50k" in seen["call-pay"] or "50,000" in seen["call-pay"]
    assert result.final_output == "I read the invoice; the payment was refused."
    behaviours = [
        (r.guardrail.get_name(), r.output.behavior["type"])
        for r in result.tool_input_guardrail_results
    ]
    assert behaviours == [(GUARDRAIL_NAME, "allow"), (GUARDRAIL_NAME, "reject_content")]
    (outcome,) = outcomes(gated, want=1)
    assert outcome["status"] == "EXECUTED" and outcome["detail"].startswith("result sha256:")


def test_a_held_call_is_an_sdk_approval_and_runs_once_after_the_operator_approved(
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
    model = ScriptedAgentsModel(
        [
            [function_call("read_invoice", {"invoice_id": "INV-1"}, "call-1")],
            [function_call("read_invoice", {"invoice_id": "INV-2"}, "call-2")],
            [assistant("both invoices read")],
        ]
    )
    with make_guard(gated, tmp_path) as guard:
        guarded = GuardedTools(guard, review_timeout_s=30.0)
        agent = Agent(name="billing", model=model, tools=billing.tools(guarded))

        async def scenario() -> tuple[str, Any]:
            first = await Runner.run(agent, "read INV-1 and INV-2", run_config=NO_TRACING)
            assert billing.runs == ["read INV-1"], "the second read is held, not run"
            (item,) = first.interruptions
            held = guarded.review_of(item)
            assert held is not None and held.intent_id, item
            assert any("rate" in reason for reason in held.reasons), held.reasons
            with OperatorClient(gated) as operator:
                operator.send(
                    "review.approve",
                    {"intent_id": held.intent_id, "reason": "expected batch"},
                    subject=f"review/{held.intent_id}",
                )
            state = first.to_state()
            state.approve(item)
            return held.intent_id, await Runner.run(agent, state, run_config=NO_TRACING)

        intent_id, final = asyncio.run(scenario())

    assert billing.runs == ["read INV-1", "read INV-2"], "each read ran once"
    assert final.final_output == "both invoices read"
    assert model.tool_outputs()["call-2"] == "invoice INV-2: 12.50 EUR"
    reported = outcomes(gated, want=2)
    assert [o["status"] for o in reported] == ["EXECUTED", "EXECUTED"]
    assert intent_id in {o["intent_id"] for o in reported}
