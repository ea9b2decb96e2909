"""A reviewer's approval is not a bypass: the gate asks freshness, identity, eligibility,
the kill switch and policy again before it signs (security issue, finding 8)."""

from __future__ import annotations

import pytest

from streams.dev.estate import setup_estate
from streams.operator import OperatorClient
from streams.sdk.client import OutcomeReader
from tests.integration.test_responses import DATA, decide, reasons, wait_for

pytestmark = pytest.mark.broker


def test_a_key_revoked_while_an_intent_is_held_wins_over_the_reviewer(
    settings_factory, worker_factory
):
    settings = settings_factory(
        anomaly_config_path=DATA / "anomaly-review.toml", review_timeout_ms=60_000
    )
    estate = setup_estate(settings)
    worker_factory(settings).start()
    for n in range(2):
        assert decide(settings, estate.intent("support-bot", "tickets.reply", f"t:{n}")).topic == (
            "approved"
        )
    held = estate.intent("support-bot", "tickets.reply", "t:held")
    assert decide(settings, held).topic == "review"

    kid = estate.key("support-bot").kid
    with OutcomeReader(settings, from_beginning=False) as reader:
        with OperatorClient(settings) as operator:
            operator.send(
                "key.revoke",
                {"agent_id": "support-bot", "kid": kid, "reason": "laptop stolen"},
                subject=f"support-bot/{kid}",
            )
            operator.send(
                "review.approve",
                {"intent_id": held["intent_id"], "reason": "looks fine to me"},
                subject=f"review/{held['intent_id']}",
            )
        final = wait_for(reader, held["intent_id"], timeout=30, topics=("approved", "denied"))
    assert final.topic == "denied", "a revoked key is not rescued by a reviewer"
    why = reasons(final)
    assert "review approved by" in why and "identity" in why, why
