"""The console's three surfaces in Chromium, against a running pipeline.

Every state change goes the way an operator's would: a key made in this browser
(non-extractable WebCrypto Ed25519), enrolled with a one-time invitation, signs the
command; the console relays it; the workers verify it and act.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from processors.approval.verify import verify_approval
from processors.crypto.keys import Keyset
from streams.cli.proof import load_verifier, verify_inclusion_answer
from streams.gatekeys import gate_jwks_path
from streams.sdk.client import IntentPublisher, OutcomeReader, Received
from tests.browser.conftest import Stack, screenshot

pytestmark = pytest.mark.broker


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def publish(stack: Stack, agent_id: str, action: str, resource: str, **parameters: Any) -> str:
    assert stack.estate is not None
    intent = stack.estate.intent(agent_id, action, resource, **parameters)
    with IntentPublisher(stack.settings.for_role("agent")) as publisher:
        publisher.publish(intent)
    return str(intent["intent_id"])


def wait_for(
    reader: OutcomeReader, match: Callable[[Received], bool], timeout: float = 60
) -> Received:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for received in reader.read(timeout=0.5):
            if match(received):
                return received
    raise AssertionError("the expected record did not arrive")


def control_metric(stack: Stack, kind: str) -> float:
    url = f"http://127.0.0.1:{stack.settings.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    pattern = rf'^trustplane_control_commands_total\{{kind="{re.escape(kind)}"\}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def operator(stack: Stack, browser: Any) -> Iterator[Any]:
    """A browser profile whose key was enrolled through a one-time invitation link."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    link, inviter = stack.invite("ada")
    try:
        page = context.new_page()
        page.goto(link)
        page.fill("#label", "ada")
        page.click("#enroll-form button")
        page.wait_for_selector("#next:not([hidden])", timeout=90_000)
        assert inviter.wait(30) == 0
    finally:
        if inviter.poll() is None:
            inviter.kill()
            inviter.wait(10)
        if inviter.stdout is not None:
            inviter.stdout.close()
    yield context
    context.close()


@pytest.fixture
def page(stack: Stack, operator: Any) -> Iterator[Any]:
    """A logged-in page of the enrolled operator, closed after the test (each open page
    holds one of the browser's six connections to the console: its event stream)."""
    opened = stack.login(operator)
    yield opened
    opened.close()


def test_reading_needs_a_login(stack: Stack, context: Any) -> None:
    page = context.new_page()
    page.goto(f"{stack.url}/governance")
    assert page.url.endswith("/login")
    page.fill('input[name="token"]', "not-the-token-" + "x" * 40)
    page.click('form[action="/login"] button')
    assert "That token is wrong" in page.content()
    answer = page.request.get(f"{stack.url}/api/health")
    assert answer.status == 401
    page.fill('input[name="token"]', stack.token)
    page.click('form[action="/login"] button')
    page.wait_for_url(re.compile(r".*/governance$"))


def test_governance_shows_the_estate(stack: Stack, page: Any) -> None:
    agents = page.locator("#agents").inner_text()
    for agent in ("billing-agent", "support-bot", "deploy-bot", "ops-agent"):
        assert agent in agents
    assert "quarantined" in agents  # the demo's tampered runtime quarantines ops-agent
    assert "payments-agent" in agents
    runtimes = page.locator("#runtimes").inner_text()
    assert "billing-rt-1" in runtimes and "sha256:" in runtimes
    policies = page.locator("#policies").inner_text()
    assert "payments.limit" in policies
    assert page.locator("#bundle-history tbody tr").count() >= 1
    page.wait_for_selector("#key-status[data-trusted='yes']")
    operators = page.locator("#operators").inner_text()
    assert "ada" in operators and "active" in operators and "root" in operators
    feed = page.locator("#feed-body").inner_text()
    assert "approved" in feed and "denied" in feed
    screenshot(page, "governance")


def test_a_decision_appears_live_in_the_feed(stack: Stack, page: Any) -> None:
    page.wait_for_timeout(1500)  # the page's event stream is open
    intent_id = publish(stack, "support-bot", "tickets.reply", "ticket:live-1")
    page.wait_for_selector(f"#feed-body a[href$='{intent_id}']", timeout=30_000)


def test_a_kill_switch_engaged_in_the_browser_denies_the_next_intent(
    stack: Stack, page: Any
) -> None:
    form = page.locator("#engage-form")
    form.locator("select").select_option("agent")
    form.locator('[data-field="target"]').fill("deploy-bot")
    form.locator('[data-field="reason"]').fill("browser drill")
    form.locator("button").click()
    result = form.locator("[data-result]")
    result.filter(has_text="applied").wait_for()
    reader = OutcomeReader(stack.settings)
    try:
        intent_id = publish(stack, "deploy-bot", "deploy.staging", "service:checkout")
        got = wait_for(reader, lambda r: (r.record or {}).get("intent_id") == intent_id)
    finally:
        reader.close()
    assert got.topic == "denied"
    reasons = " ".join(got.record["reasons"]) if got.record else ""
    assert "kill switch" in reasons and "browser drill" in reasons
    # released from the browser too: the next one is approved again
    page.reload()
    page.locator("tr.engaged", has_text="deploy-bot").locator("form button").click()
    page.locator("#last-command", has_text="killswitch.release").wait_for()
    assert "applied" in page.locator("#last-command").inner_text()
    page.locator("tr.engaged", has_text="deploy-bot").wait_for(state="detached")


def test_a_review_approved_in_the_browser_produces_a_signed_approval(
    stack: Stack, page: Any
) -> None:
    reader = OutcomeReader(stack.settings)
    try:
        held_id = publish(
            stack,
            "billing-assistant",
            "refunds.issue",
            "invoice:INV-7",
            amount=40.0,
            currency="EUR",
        )
        wait_for(reader, lambda r: (r.record or {}).get("intent_id") == held_id)
        row = page.locator(f"#review-queue tr[data-intent='{held_id}']")
        deadline = time.monotonic() + 30
        # the sink writes the decision, then (maybe a batch later) the intent's parameters
        while time.monotonic() < deadline and (row.count() == 0 or "40" not in row.inner_text()):
            page.wait_for_timeout(500)
            page.reload()
        assert "refunds.issue" in row.inner_text() and "40" in row.inner_text()
        approve = row.locator("form[data-command='review.approve']")
        approve.locator('[data-field="reason"]').fill("customer confirmed by phone")
        approve.locator("button").click()
        approve.locator("[data-result]").filter(has_text="applied").wait_for()
        got = wait_for(
            reader,
            lambda r: r.topic == "approved" and (r.record or {}).get("intent_id") == held_id,
        )
    finally:
        reader.close()
    assert got.record is not None
    keys = Keyset.from_file(gate_jwks_path(stack.settings))
    verified = verify_approval(got.record["envelope"], keys, _now_ms(), got.record["intent"])
    assert verified.intent_id == held_id


def test_a_command_signed_by_an_unenrolled_browser_key_is_refused_by_the_workers(
    stack: Stack, context: Any
) -> None:
    page = stack.login(context)
    page.goto(f"{stack.url}/enroll")
    page.fill("#label", "mallory")
    page.click("#enroll-form button")
    page.wait_for_selector("#manual:not([hidden])")  # a key, but no invitation
    refused_before = control_metric(stack, "killswitch.engage:refused")
    page.goto(f"{stack.url}/governance")
    form = page.locator("#engage-form")
    form.locator("select").select_option("global")
    form.locator('[data-field="target"]').fill("*")
    form.locator('[data-field="reason"]').fill("stop everything")
    form.locator("button").click()
    result = form.locator("[data-result]")
    result.filter(has_text="refused").wait_for()
    assert "not an operator key" in result.inner_text()
    deadline = time.monotonic() + 20
    while control_metric(stack, "killswitch.engage:refused") <= refused_before:
        assert time.monotonic() < deadline, "the worker did not refuse the command"
        time.sleep(0.5)
    reader = OutcomeReader(stack.settings)
    try:
        intent_id = publish(stack, "support-bot", "tickets.reply", "ticket:after-mallory")
        got = wait_for(reader, lambda r: (r.record or {}).get("intent_id") == intent_id)
    finally:
        reader.close()
    assert got.topic == "approved"


def test_agent_text_is_shown_as_text_never_run(stack: Stack, page: Any) -> None:
    payload = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned=2'>"
    intent_id = publish(stack, "support-bot", "tickets.reply", "ticket:xss", note=payload)
    url = f"{stack.url}/lineage/intent/{intent_id}"
    deadline = time.monotonic() + 30
    page.goto(url)
    while page.locator("#intent-parameters").count() == 0 and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        page.goto(url)
    assert payload in page.locator("#intent-parameters").inner_text()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src='x']").count() == 0


def test_a_write_without_the_csrf_token_is_refused(stack: Stack, page: Any) -> None:
    body = {"kind": "killswitch.engage", "payload": {"scope": "global", "reason": "x"}}
    bare = page.request.post(
        f"{stack.url}/api/commands/prepare",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert bare.status == 403
    csrf = page.locator('meta[name="csrf"]').get_attribute("content")
    with_token = page.request.post(
        f"{stack.url}/api/commands/prepare",
        data=json.dumps({**body, "key_id": "k"}),
        headers={"Content-Type": "application/json", "X-CSRF-Token": csrf or ""},
    )
    assert with_token.status == 200


def test_the_lineage_explorer_searches_and_shows_a_timeline(stack: Stack, page: Any) -> None:
    page.goto(f"{stack.url}/lineage?agent=billing-agent&action=payments.*&outcome=denied")
    rows = page.locator("#results tbody tr")
    assert rows.count() >= 1
    text = page.locator("#results").inner_text()
    assert "payments.transfer" in text and "support-bot" not in text
    screenshot(page, "lineage-search")
    page.locator("#results tbody tr a").first.click()
    page.wait_for_selector(".timeline")
    timeline = page.locator(".timeline").inner_text()
    assert "enforcement" in timeline and "policy" in timeline
    screenshot(page, "lineage-timeline")
    with page.expect_download() as download:
        page.click("#evidence-link")
    bundle = json.loads(Path(download.value.path()).read_text())
    assert bundle["format"] == "https://trustplane.dev/evidence/v1"
    assert bundle["events"] and not bundle["unproven_events"]
    verifier = load_verifier(None, stack.settings)  # pinned: never the bundle's own key
    proven = [verify_inclusion_answer(answer, verifier) for answer in bundle["events"]]
    assert {p.event["intent_id"] for p in proven} == {bundle["intent_id"]}
    exact = base64.b64decode(bundle["intent"]["record_b64"])
    assert bundle["intent"]["intent_digest"] == "sha256:" + hashlib.sha256(exact).hexdigest()
    page.goto(f"{stack.url}/lineage/gaps")
    assert "every execution reported had an approval" in page.locator("#unauthorized").inner_text()
    assert page.locator("#quarantines tbody tr").count() >= 1
    screenshot(page, "lineage-gaps")


def test_what_if_replays_recorded_intents_against_a_draft(stack: Stack, page: Any) -> None:
    draft = json.loads(page.locator("#draft").input_value())
    draft["policies"] = draft["policies"].replace('decimal("10000.00")', 'decimal("1000.00")')
    page.locator("#draft").fill(json.dumps(draft))
    page.click("#whatif-form button[type='submit']")
    page.locator("#whatif-result").filter(has_text="recorded intents").wait_for()
    changed = page.locator("#whatif-rows").inner_text()
    assert "would deny" in changed and "payments.limit" in changed
    screenshot(page, "governance-whatif")


def test_the_health_dashboard_shows_the_running_pipeline(stack: Stack, page: Any) -> None:
    if stack.prometheus is None:
        pytest.fail("prometheus is not installed: apt-get install prometheus (.ci/run does)")
    page.goto(f"{stack.url}/health")
    workers = page.locator("[data-panel='workers']")
    deadline = time.monotonic() + 60
    up = workers.locator(".num")
    while up.count() != 1 or up.inner_text().strip() != "1":  # refreshed every 5 s
        assert time.monotonic() < deadline, workers.inner_text()
        page.wait_for_timeout(1000)
    assert "ok" in (workers.get_attribute("class") or "")
    page.locator("[data-panel='rate'] .value", has_text="approved").wait_for(timeout=60_000)
    page.locator("[data-panel='agents'] .value", has_text="quarantined").wait_for()
    unauthorized = page.locator("[data-panel='unauthorized'] .value").inner_text()
    assert unauthorized.strip() == "0"
    screenshot(page, "health")
