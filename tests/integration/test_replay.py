"""Replays are idempotent on the real broker: an exact copy of an approved intent (its
bytes are inside the approval) is denied as a replay and quarantines nobody; a different
intent reusing a nonce still quarantines its agent."""

from __future__ import annotations

import time

import pytest

from processors.layers.identity import sign_intent
from streams.codec import default_codec
from streams.config import Settings
from streams.dev.estate import setup_estate
from streams.sdk.client import OutcomeReader
from tests.integration.test_gate_state_auth import approved, decide, reasons, replay

pytestmark = pytest.mark.broker


def quarantines(settings: Settings, agent_id: str) -> list[dict]:
    """The agent.quarantine commands on ``control`` for this agent."""
    codec, found = default_codec(), []
    with OutcomeReader(settings, ["control"], codec=codec) as reader:
        for received in reader.read(timeout=2.0):
            record = received.record or {}
            if record.get("kind") == "agent.quarantine" and agent_id in str(record.get("payload")):
                found.append(record)
    return found


def test_an_exact_replay_is_denied_without_quarantine_a_reused_nonce_quarantines(
    settings, worker_factory
):
    estate = setup_estate(settings)
    worker_factory(settings).start()
    approval = approved(settings, estate, "billing-agent", "invoices.read", "invoice:1")

    for _ in range(2):
        again = replay(settings, approval)
        assert again.topic == "denied"
        assert "integrity: replay:" in reasons(again)
        assert "already decided" in reasons(again)
    approved(settings, estate, "billing-agent", "invoices.read", "invoice:2")
    assert quarantines(settings, "billing-agent") == [], "nobody quarantined billing-agent"

    # the agent's own key signs a different intent with an old nonce: a violation
    reused = estate.intent("billing-agent", "invoices.read", "invoice:3")
    reused["nonce"] = default_codec().decode(approval.record["intent"], "Intent")["nonce"]
    reused = sign_intent(reused, estate.key("billing-agent"))
    violation = decide(settings, reused)
    assert violation.topic == "denied"
    assert "integrity: replay: nonce" in reasons(violation)
    deadline = time.monotonic() + 10
    while not quarantines(settings, "billing-agent") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert quarantines(settings, "billing-agent")
    after = decide(settings, estate.intent("billing-agent", "invoices.read", "invoice:4"))
    assert after.topic == "denied" and "quarantined since" in reasons(after)
