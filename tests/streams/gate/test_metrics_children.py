"""Counting through cached label children exposes what labels().inc() would."""

from __future__ import annotations

from prometheus_client import generate_latest

from streams.gate.metrics import GateMetrics


def test_cached_children_count_like_labels() -> None:
    cached, direct = GateMetrics(), GateMetrics()
    events = [("identity", "ALLOW"), ("policy", "DENY"), ("identity", "ALLOW")]
    for layer, status in events:
        cached.count_verdict(layer, status)
        direct.verdicts.labels(layer, status).inc()
    for outcome in ("approved", "denied", "approved", "rejected"):
        cached.count_intent(outcome)
        direct.intents.labels(outcome).inc()
    assert _samples(cached) == _samples(direct)
    text = generate_latest(cached.registry).decode()
    assert 'trustplane_layer_verdicts_total{layer="identity",status="ALLOW"} 2.0' in text
    assert 'trustplane_intents_total{outcome="approved"} 2.0' in text


def _samples(metrics: GateMetrics) -> list[str]:
    """The exposition without the ``_created`` timestamps (they differ by construction)."""
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]
