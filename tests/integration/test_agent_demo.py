"""`trustplane demo --agents` on the real broker and gate: through `trustplane mcp-proxy`,
the approved call runs, the denied, held and unmapped ones do not, and each says why."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from streams.config import Settings
from streams.dev.agent_demo import run_agent_demo
from tests.integration.guardkit import gated_settings

pytestmark = pytest.mark.broker


def test_the_agent_demo_runs_one_call_and_refuses_three_with_reasons(
    settings: Settings, worker_factory: Callable[[Settings], Any]
) -> None:
    results = asyncio.run(run_agent_demo(gated_settings(settings, worker_factory)))
    by_tool = {r.call.tool: r for r in results}
    assert all(r.as_expected for r in results), [(r.call.tool, r.ran, r.text) for r in results]
    assert by_tool["read_invoice"].ran and "INV-7" in by_tool["read_invoice"].text
    assert "payments.limit" in by_tool["pay_invoice"].text
    held = by_tool["refund_invoice"].text
    assert "held for review" in held and "trustplane review approve" in held
    assert "no mapping for tool 'delete_all_invoices'" in by_tool["delete_all_invoices"].text
