"""The Runtime Governance Demo in Chromium: every scenario runs from the page on the real
pipeline and ends as expected; the tampered evidence it produces fails in the Proof
Viewer while the genuine one passes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import Stack, screenshot

pytestmark = pytest.mark.broker

SCENARIOS = (
    "benign",
    "tampered_runtime",
    "replay",
    "runaway_loop",
    "slow_drip_exfiltration",
    "novel_destructive_action",
    "amount_escalation",
    "forged_approval",
    "killswitch_drill",
    "tamper_one_byte",
)


@pytest.fixture(scope="module")
def demo(stack: Stack, browser: Any) -> Iterator[Any]:
    context = browser.new_context(base_url=stack.url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = stack.login(context)
    page.goto("/demo")
    yield page
    context.close()


def _run(page: Any, scenario: str) -> str:
    before = page.locator("#run-id").inner_text()
    page.locator(f"button.run[data-scenario='{scenario}']").click()
    page.wait_for_function(
        "([before, scenario]) => document.getElementById('run-id').textContent !== before"
        " && document.getElementById('run-scenario').textContent === scenario",
        arg=[before, scenario],
    )
    status = page.locator("#run-status")
    status.filter(has_text="passed").or_(status.filter(has_text="failed")).or_(
        status.filter(has_text="error")
    ).wait_for(timeout=150_000)
    return str(status.inner_text())


def test_the_page_lists_every_scenario(demo: Any) -> None:
    listed = demo.locator("#scenarios button.run").evaluate_all(
        "(buttons) => buttons.map((b) => b.dataset.scenario)"
    )
    assert set(SCENARIOS) <= set(listed)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_runs_on_the_pipeline_as_expected(demo: Any, scenario: str) -> None:
    status = _run(demo, scenario)
    rows = demo.locator("#run-intents tr")
    assert status.startswith("passed"), (status, demo.locator("#run").inner_text()[:3000])
    if scenario != "forged_approval":  # its intents are few; its findings are the point
        assert rows.count() >= 1
    assert "NOT as expected" not in demo.locator("#run-intents").inner_text()
    if scenario == "killswitch_drill":
        finding = demo.locator("#run-findings").inner_text()
        assert "engage to first denied intent" in finding
        screenshot(demo, "demo")
    if scenario == "forged_approval":
        findings = demo.locator("#run-findings").inner_text()
        assert "SignatureInvalidError" in findings and "ApprovalKeyError" in findings


def test_tampered_evidence_from_the_demo_fails_in_the_proof_viewer(demo: Any) -> None:
    assert _run(demo, "tamper_one_byte").startswith("passed")
    links = demo.locator("#run-artifacts a")
    targets = {
        links.nth(i).inner_text(): links.nth(i).get_attribute("href") for i in range(links.count())
    }
    viewer = demo.context.new_page()
    verdicts = {}
    for text, href in targets.items():
        viewer.goto(href)
        viewer.locator("#verdict.pass, #verdict.fail").wait_for()
        verdicts[text] = viewer.locator("#verdict").inner_text()
    viewer.close()
    genuine = [v for t, v in verdicts.items() if "tampered" not in t]
    tampered = [v for t, v in verdicts.items() if "tampered" in t]
    assert genuine == ["PASS"], verdicts
    assert tampered and set(tampered) == {"FAIL"}, verdicts
