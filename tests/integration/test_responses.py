"""Responses on a running pipeline: kill switch, human review, quarantine, restarts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from processors.approval import verify_approval
from processors.crypto.keys import Keyset
from streams import kafka
from streams.config import Settings
from streams.dev.estate import Estate, measurement, setup_estate
from streams.operator import OperatorClient
from streams.sdk.client import IntentPublisher, OutcomeReader, Received

pytestmark = pytest.mark.broker

DATA = Path(__file__).parent / "data"


def decide(settings: Settings, intent: dict, *, timeout: float = 30.0) -> Received:
    """Publish one intent and wait for its (first) outcome."""
    with OutcomeReader(settings, from_beginning=False) as reader:
        with IntentPublisher(settings) as publisher:
            publisher.publish(intent)
        return wait_for(reader, intent["intent_id"], timeout=timeout)


def wait_for(reader: OutcomeReader, intent_id: str, *, timeout: float, topics=None) -> Received:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for received in reader.read(timeout=0.5):
            if received.record and received.record.get("intent_id") == intent_id:
                if topics is None or received.topic in topics:
                    return received
    raise AssertionError(f"no outcome for {intent_id} within {timeout} s")


def reasons(received: Received) -> str:
    return "; ".join(received.record.get("reasons", []))


@pytest.fixture
def estate(settings: Settings) -> Estate:
    return setup_estate(settings)


def test_kill_switch_applies_to_the_next_intent(settings, estate, worker_factory):
    worker_factory(settings).start()
    assert decide(settings, estate.intent("support-bot", "tickets.reply", "ticket:1")).topic == (
        "approved"
    )
    with OperatorClient(settings) as operator:
        operator.send(
            "killswitch.engage",
            {"scope": "action", "target": "tickets.*", "reason": "incident 42"},
            subject="killswitch/action/tickets.*",
        )
    stopped = decide(settings, estate.intent("support-bot", "tickets.reply", "ticket:2"))
    assert stopped.topic == "denied"
    assert "kill switch (action 'tickets.*')" in reasons(stopped)
    assert "incident 42" in reasons(stopped)
    other = decide(settings, estate.intent("support-bot", "email.send", "mailto:a@example.com"))
    assert other.topic == "approved", "an action switch stops only matching actions"
    with OperatorClient(settings) as operator:
        operator.send(
            "killswitch.release",
            {"scope": "action", "target": "tickets.*"},
            subject="killswitch/action/tickets.*",
        )
    assert decide(settings, estate.intent("support-bot", "tickets.reply", "ticket:3")).topic == (
        "approved"
    )


def test_review_answers_and_timeout(settings_factory, worker_factory):
    settings = settings_factory(
        anomaly_config_path=DATA / "anomaly-review.toml", review_timeout_ms=3000
    )
    estate = setup_estate(settings)
    worker_factory(settings).start()
    for n in range(2):
        assert decide(settings, estate.intent("support-bot", "tickets.reply", f"t:{n}")).topic == (
            "approved"
        )
    held = estate.intent("support-bot", "tickets.reply", "t:held")
    first = decide(settings, held)
    assert first.topic == "review"
    assert "rate" in reasons(first)

    with OutcomeReader(settings, from_beginning=False) as reader:
        with OperatorClient(settings) as operator:
            operator.send(
                "review.approve",
                {"intent_id": held["intent_id"], "reason": "customer escalation"},
                subject=f"review/{held['intent_id']}",
            )
        final = wait_for(reader, held["intent_id"], timeout=30, topics=("approved", "denied"))
    assert final.topic == "approved", reasons(final)
    keyset = Keyset.from_file(settings.resolved_keys_dir / "approvals.jwks.json")
    verified = verify_approval(
        final.record["envelope"], keyset, time.time_ns() // 1_000_000, intent=final.record["intent"]
    )
    assert verified.intent_id == held["intent_id"], "an approved review is signed like any other"

    ignored = estate.intent("support-bot", "tickets.reply", "t:ignored")
    with OutcomeReader(settings, from_beginning=False) as reader:
        with IntentPublisher(settings) as publisher:
            publisher.publish(ignored)
        assert wait_for(reader, ignored["intent_id"], timeout=30).topic == "review"
        timed_out = wait_for(
            reader, ignored["intent_id"], timeout=30, topics=("approved", "denied")
        )
    assert timed_out.topic == "denied"
    assert "denied by timeout" in reasons(timed_out)


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_quarantine_and_replay_protection_survive_a_crash(store, settings_factory, worker_factory):
    # rocksdb with one agent decoded at a time: every other agent's state is spilled
    settings = settings_factory(state_store=store, max_cached_agents=1)
    estate = setup_estate(settings)
    first = worker_factory(settings).start()
    replayed = estate.intent("billing-agent", "invoices.read", "invoice:7")
    assert decide(settings, replayed).topic == "approved"
    tampered = {**estate.agents["ops-agent"].runtime(), "code_digest": measurement("patched")}
    violation = decide(
        settings, estate.intent("ops-agent", "reports.read", "r:1", runtime=tampered)
    )
    assert violation.topic == "denied"
    assert "integrity: attestation" in reasons(violation)

    first.kill()
    worker_factory(settings).start()

    again = decide(settings, replayed)
    assert again.topic == "denied", "the same signed intent, replayed after a restart"
    assert "replay" in reasons(again)
    quarantined = decide(settings, estate.intent("ops-agent", "reports.read", "r:2"))
    assert quarantined.topic == "denied"
    assert "quarantined since" in reasons(quarantined)

    with OperatorClient(settings) as operator:
        operator.send("agent.release", {"agent_id": "ops-agent", "reason": "rebuilt the host"})
    assert decide(settings, estate.intent("ops-agent", "reports.read", "r:3")).topic == "approved"


def test_executions_are_checked_against_issued_approvals(settings, estate, worker_factory):
    from streams.codec import default_codec
    from streams.sdk.executor import run_example_executor

    worker_factory(settings).start()
    allowed = estate.intent("billing-agent", "invoices.read", "invoice:99")
    assert decide(settings, allowed).topic == "approved"
    keyset = Keyset.from_file(settings.resolved_keys_dir / "approvals.jwks.json")
    summary = run_example_executor(settings, keyset, max_records=1, idle_s=20)
    assert (summary.executed, summary.refused) == (1, 0)

    forged = {
        "outcome_id": "o-forged",
        "approval_id": "approval-never-issued",
        "intent_id": allowed["intent_id"],
        "agent_id": "billing-agent",
        "executor_id": "rogue-executor",
        "status": "EXECUTED",
        "detail": "ran it anyway",
        "reported_at_ms": time.time_ns() // 1_000_000,
    }
    producer = kafka.producer(settings)
    producer.produce(
        settings.topic("outcomes"),
        key=b"billing-agent",
        value=default_codec().encode("Outcome", forged),
    )
    producer.flush(10)

    events: dict[str, dict] = {}
    deadline = time.monotonic() + 30
    with OutcomeReader(settings, ["lineage"]) as reader:
        while len(events) < 2 and time.monotonic() < deadline:
            for received in reader.read(timeout=0.5):
                record = received.record or {}
                if record.get("stage") == "execution":
                    events[record["event_type"]] = record
    assert events["execution.reported"]["status"] == "ok"
    alert = events["execution.unauthorized"]
    assert alert["status"] == "alert"
    assert "no approval 'approval-never-issued' was issued" in alert["reasons"][0]
    assert alert["attributes"]["executor_id"] == "rogue-executor"


def test_a_policy_bundle_hot_reloads_mid_stream(settings, estate, worker_factory, tmp_path):
    import json
    import shutil

    from processors.layers.policy import CONTROL_SUBJECT, PolicyBundle
    from streams.dev.estate import BUNDLE_DIR

    worker_factory(settings).start()
    first = decide(settings, estate.intent("support-bot", "tickets.reply", "ticket:1"))
    assert first.topic == "approved"
    old = PolicyBundle.from_directory(BUNDLE_DIR)
    assert {v["layer"] for v in first.record["verdicts"]} >= {"policy"}

    stricter = tmp_path / "bundle"
    shutil.copytree(BUNDLE_DIR, stricter)
    manifest = json.loads((stricter / "manifest.json").read_text())
    manifest.update(version="2026.11.2", created_at_ms=manifest["created_at_ms"] + 1)
    (stricter / "manifest.json").write_text(json.dumps(manifest))
    with (stricter / "policies.cedar").open("a") as policies:
        policies.write(
            '\n@id("incident.tickets-frozen")\n@reason("ticket replies are frozen (incident 7)")\n'
            'forbid (principal, action == Action::"tickets.reply", resource);\n'
        )
    new = PolicyBundle.from_directory(stricter)
    with OperatorClient(settings) as operator:
        operator.send("policy.publish", new.to_document(), subject=CONTROL_SUBJECT)

    second = decide(settings, estate.intent("support-bot", "tickets.reply", "ticket:2"))
    assert second.topic == "denied"
    assert "forbidden by incident.tickets-frozen" in reasons(second)
    assert new.digest != old.digest
    digests = {}
    with OutcomeReader(settings, ["lineage"]) as reader:
        for received in reader.read(timeout=2.0):
            record = received.record or {}
            for verdict in record.get("verdicts") or ():  # one signed event per intent
                if verdict["layer"] == "policy":
                    digests[record["intent_id"]] = verdict["evidence"]["bundle_digest"]
    assert digests[first.record["intent_id"]] == old.digest, "each decision records its bundle"
    assert digests[second.record["intent_id"]] == new.digest

    with OperatorClient(settings) as operator:  # a broken bundle is refused; v2 stays
        broken = {**new.to_document(), "policies": "permit (principal,"}
        broken["manifest"] = {**broken["manifest"], "version": "2026.11.3"}
        operator.send("policy.publish", broken, subject=CONTROL_SUBJECT)
    third = decide(settings, estate.intent("support-bot", "tickets.reply", "ticket:3"))
    assert third.topic == "denied"
    assert "incident.tickets-frozen" in reasons(third)
