"""Forged lineage and forged approvals, produced straight to the real broker, are refused:
the notary logs only events a gate key signed, the sink stores only what verifies, and a
denied intent never reads APPROVED in SQL (security issue, findings 2 and 3).

The records are produced with the test's own (privileged) client, as an attacker who got
past the ACLs would: tests/integration/test_acls.py shows the ACLs refusing them first."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from processors.approval.keyring import SigningKeyring
from processors.crypto.dsse import sign_envelope
from processors.crypto.keys import generate_signing_key
from processors.lineage import LineageRecorder
from processors.log.attest import sign_event
from processors.records import digest
from streams import kafka
from streams.codec import default_codec
from streams.dev.estate import setup_estate
from streams.sdk.client import IntentPublisher
from tests.integration import test_sink
from tests.integration.test_sink import running_notary, wait_for

pytestmark = pytest.mark.broker

sink_factory = test_sink.sink_factory

CODEC = default_codec()


def _event(event_id: str, intent_id: str, status: str) -> dict:
    event = LineageRecorder("w-forger").event(
        subject=event_id,
        stage="enforcement",
        event_type=f"intent.{status}",
        status=status,
        now_ms=time.time_ns() // 1_000_000,
        intent_id=intent_id,
        agent_id="support-bot",
        reasons=("looks fine",),
    )
    event["event_id"] = event_id
    return event


def test_forged_lineage_and_approvals_are_refused_and_never_stored(
    settings_factory, worker_factory, sink_factory
):
    settings = settings_factory()
    estate = setup_estate(settings)
    denied = estate.intent("support-bot", "payments.transfer", "acct:attacker")
    with IntentPublisher(settings) as publisher:
        publisher.publish(estate.intent("billing-agent", "invoices.read", "invoice:1"))
        publisher.publish(denied)

    gate_key = SigningKeyring.from_directory(settings.resolved_signing_keys_dir).signing_key(
        time.time_ns() // 1_000_000
    )
    stranger = generate_signing_key(gate_key.kid)  # claims the gate's key id
    unsigned = _event("forged-unsigned", denied["intent_id"], "approved")
    by_stranger = sign_event(_event("forged-stranger", denied["intent_id"], "approved"), stranger)
    altered = sign_event(_event("forged-altered", denied["intent_id"], "denied"), gate_key)
    altered["status"] = "approved"  # changed after the gate signed it
    approval_id = f"approval-forged-{uuid.uuid4().hex[:8]}"
    statement = {"_type": "https://in-toto.io/Statement/v1", "predicate": {}}
    forged_approval = {
        "approval_id": approval_id,
        "intent_id": denied["intent_id"],
        "agent_id": "support-bot",
        "action": "payments.transfer",
        "resource": "acct:attacker",
        "intent_digest": digest(b"x"),
        "verdicts": [{"layer": "policy", "status": "ALLOW", "reasons": [], "duration_us": 1}],
        "envelope": json.dumps(
            sign_envelope(json.dumps(statement).encode(), "application/vnd.in-toto+json", stranger)
        ).encode(),
        "issued_at_ms": time.time_ns() // 1_000_000,
        "expires_at_ms": time.time_ns() // 1_000_000 + 60_000,
        "worker": "w-forger",
        "intent": b"x",
    }
    producer = kafka.producer(settings)
    for event in (unsigned, by_stranger, altered):
        producer.produce(settings.topic("lineage"), CODEC.encode("LineageEvent", event))
    producer.produce(settings.topic("lineage"), b"\xc3\x01 junk that is no event")
    producer.produce(
        settings.topic("approved"), CODEC.encode("Approval", forged_approval), key=b"support-bot"
    )
    producer.flush(10)

    with running_notary(settings) as notary:
        worker_factory(settings).start()
        sink = sink_factory(settings).start("--batch-ms", "200")
        wait_for(
            lambda: (
                sink.query("SELECT count() FROM intent_decisions").rows[0][0] == 2
                and sink.query("SELECT count() FROM rejections").rows[0][0] >= 5
            ),
            90,
            "the two decisions and the five refusals",
            sink,
        )
        codes = dict(
            sink.query("SELECT reason_code, count() FROM rejections GROUP BY reason_code").rows
        )
        assert codes.get("unsigned_lineage") == 3, codes
        assert codes.get("bad_approval") == 1, codes
        assert sum(codes.values()) == 5, codes  # the junk record: the decoder's own code
        # nothing forged was logged or stored; every stored event is signed
        forged = ("forged-unsigned", "forged-stranger", "forged-altered")
        ids = sink.query("SELECT event_id FROM lineage_events").column("event_id")
        assert not set(forged) & set(ids)
        assert sink.query("SELECT count() FROM lineage_events WHERE signer IS NULL").scalar() == 0
        assert notary.log is not None
        assert all(notary.log.index_of(event_id) is None for event_id in forged)
        assert notary.log.status()["unsigned"] == 3
        # the denied intent never reads APPROVED
        outcome = sink.query(
            f"SELECT final_outcome FROM intent_outcomes WHERE intent_id = '{denied['intent_id']}'"  # noqa: S608 - the test's own id
        ).scalar()
        assert outcome == "DENIED"
        assert (
            sink.query(
                f"SELECT count() FROM approvals WHERE approval_id = '{approval_id}'"  # noqa: S608 - the test's own id
            ).scalar()
            == 0
        )
