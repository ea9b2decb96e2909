"""The gate end to end on the real broker: a real `trustplane worker` process."""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import pytest

from streams.codec import default_codec
from streams.config import Settings
from streams.dev.estate import Estate, setup_estate
from streams.sdk.client import IntentPublisher, OutcomeReader, Received, new_intent

pytestmark = pytest.mark.broker

BULK = Path(__file__).parent / "data" / "anomaly-bulk.toml"


@pytest.fixture
def settings(settings_factory):
    """Plumbing tests send thousands of intents a second from four agents."""
    return settings_factory(anomaly_config_path=BULK)


# signed intents from registered agents, under the example Cedar bundle
ALLOWED = [
    ("billing-agent", "invoices.read", "invoice:{n}"),
    ("support-bot", "tickets.reply", "ticket:{n}"),
]
DENIED = [
    ("support-bot", "payments.transfer", "acct:ACME-{n}"),  # no policy permits it
    ("analytics-agent", "warehouse.export", "s3://unknown/{n}"),  # forbidden destination
]


def publish_mix(settings: Settings, count: int, estate: Estate | None = None) -> dict[str, str]:
    """Publish `count` signed intents, half allowed, half denied; return id -> expected topic."""
    estate = estate or setup_estate(settings)
    expected: dict[str, str] = {}
    with IntentPublisher(settings) as publisher:
        for n in range(count):
            agent, action, resource = (ALLOWED + DENIED)[n % 4]
            intent = estate.intent(agent, action, resource.format(n=n))
            publisher.publish(intent)
            expected[intent["intent_id"]] = "approved" if n % 4 < 2 else "denied"
    return expected


def _why(received: list[Received]) -> list[str]:
    return [f"{r.topic}: {r.record.get('reasons')}" for r in received]


def collect(
    settings: Settings, want: int, timeout: float, topics: tuple[str, ...] | None = None
) -> list[Received]:
    """Read committed records from the outcome topics until `want` arrived or time is up."""
    received: list[Received] = []
    deadline = time.monotonic() + timeout
    kwargs = {} if topics is None else {"topics": topics}
    with OutcomeReader(settings, **kwargs) as reader:
        while len(received) < want and time.monotonic() < deadline:
            received.extend(reader.read(timeout=1.0))
        # keep reading a little: a duplicate would arrive now
        received.extend(reader.read(timeout=2.0))
    return received


def test_a_thousand_intents_each_end_exactly_once(settings, worker_factory):
    expected = publish_mix(settings, 1000)
    worker_factory(settings).start()

    received = collect(settings, 1000, timeout=90)

    seen = collections.Counter(r.record["intent_id"] for r in received if r.record)
    assert not [r for r in received if r.record is None], "every outcome record decodes"
    assert len(seen) == 1000
    assert set(seen) == set(expected)
    assert max(seen.values()) == 1, f"duplicates: {[i for i, c in seen.items() if c > 1][:5]}"
    wrong = [r for r in received if r.record and r.topic != expected[r.record["intent_id"]]]
    assert not wrong, f"{len(wrong)} unexpected outcomes, e.g. {_why(wrong[:3])}"


def test_malformed_input_is_rejected_with_reasons_and_the_worker_goes_on(settings, worker_factory):
    codec = default_codec()
    good = codec.encode("Intent", new_intent("billing-agent", "invoices.read", "inv:1", sequence=1))
    outcome = codec.encode(
        "Outcome",
        {
            "outcome_id": "o",
            "approval_id": "a",
            "intent_id": "i",
            "agent_id": "billing-agent",
            "executor_id": "e",
            "status": "EXECUTED",
            "detail": "",
            "reported_at_ms": 0,
        },
    )
    no_runtime = new_intent("billing-agent", "invoices.read", "inv:2", sequence=2)
    body = codec.encode("Intent", no_runtime)
    malformed = {
        "random bytes": (b"billing-agent", os.urandom(200), "not_avro"),
        "truncated": (b"billing-agent", good[:-7], "truncated"),
        "wrong schema": (b"billing-agent", outcome, "wrong_record_type"),
        "missing fields": (b"billing-agent", body[:12], "truncated"),
        "5 MiB": (b"billing-agent", b"\xc3\x01" + os.urandom(5 << 20), "too_large"),
        "empty key": (b"", good, "missing_key"),
        "no key": (None, good, "missing_key"),
        "empty value": (b"billing-agent", b"", "empty"),
    }
    estate = setup_estate(settings)
    worker = worker_factory(settings).start()
    with IntentPublisher(settings) as publisher:
        for key, value, _ in malformed.values():
            publisher.publish_raw(key, value)
        follow_up = estate.intent("billing-agent", "invoices.read", "inv:3")
        publisher.publish(follow_up)

    received = collect(settings, len(malformed) + 1, timeout=60)
    rejected = [r.record for r in received if r.topic == "rejected"]
    approved = [r.record for r in received if r.topic == "approved"]
    assert [a["intent_id"] for a in approved] == [follow_up["intent_id"]], "worker still decides"
    assert len(rejected) == len(malformed)
    assert sorted(r["reason_code"] for r in rejected) == sorted(c for *_, c in malformed.values())
    assert all(r["reason"] and r["value_sha256"].startswith("sha256:") for r in rejected)
    big = next(r for r in rejected if r["reason_code"] == "too_large")
    assert big["value_size"] == 2 + (5 << 20) and len(big["value_prefix"]) == 64

    lineage = collect(settings, len(malformed), timeout=30, topics=("lineage",))
    rejected_events = [e.record for e in lineage if e.record["event_type"] == "input.rejected"]
    assert len(rejected_events) == len(malformed)

    metrics = worker.metrics()
    assert 'trustplane_rejections_total{reason_code="too_large"} 1.0' in metrics
    assert 'trustplane_rejections_total{reason_code="missing_key"} 2.0' in metrics
    assert worker.proc.poll() is None, "the worker survived every bad record"


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(settings_factory, worker_factory):
    # small transactions, so the kill lands between and inside many of them
    settings = settings_factory(transaction_max_records=20, anomaly_config_path=BULK)
    total = 3000
    expected = publish_mix(settings, total)
    first = worker_factory(settings).start()

    seen_before_kill = 0
    with OutcomeReader(settings) as reader:
        deadline = time.monotonic() + 60
        while seen_before_kill < total // 10 and time.monotonic() < deadline:
            for _ in reader.read(timeout=0.2, batch=10):
                seen_before_kill += 1
                if seen_before_kill >= total // 10:
                    break
    first.kill()
    assert 0 < seen_before_kill < total, "the kill landed mid-stream"

    worker_factory(settings).start()
    received = collect(settings, total, timeout=120)

    seen = collections.Counter(r.record["intent_id"] for r in received)
    assert len(seen) == total, f"lost {total - len(seen)} intents"
    duplicates = [i for i, c in seen.items() if c > 1]
    assert not duplicates, f"{len(duplicates)} intents have two outcomes"
    assert {r.record["intent_id"]: r.topic for r in received} == expected
