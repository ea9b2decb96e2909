"""The executor SDK glue and example executor, without Kafka (fake consumer/producer)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from processors.approval import (
    ApprovalReusedError,
    ApprovalSigner,
    InMemorySeenStore,
    KeyringEntry,
    SignatureInvalidError,
    SigningKeyring,
    SqliteSeenStore,
    VerifiedApproval,
)
from processors.crypto.keys import Keyset, generate_signing_key
from processors.enforcement import combine
from processors.records import approval_record, derived_id
from processors.verdict import Verdict
from streams.codec import default_codec
from streams.config import Settings
from streams.sdk.executor import (
    ApprovalConsumer,
    ApprovalRecordError,
    OutcomeReporter,
    OutcomeReportError,
    VerificationFailure,
    outcome_record,
    report_outcome,
    run_example_executor,
    verify_approval_record,
)
from tests.processors.factories import intent_record, make_intent

NOW = 1_700_000_000_000
SETTINGS = Settings(bootstrap_servers="unused:9092", topic_prefix="t.")
CODEC = default_codec()


@dataclass
class FakeMessage:
    _key: bytes | None
    _value: bytes | None
    _offset: int
    _partition: int = 0

    def error(self) -> None:
        return None

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class FakeConsumer:
    def __init__(self, messages: list[FakeMessage]) -> None:
        self.pending = list(messages)
        self.stored: list[int] = []
        self.subscribed: list[str] = []
        self.closed = False

    def subscribe(self, topics: list[str]) -> None:
        self.subscribed = topics

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        batch, self.pending = self.pending[:num_messages], self.pending[num_messages:]
        return batch

    def store_offsets(self, message: Any = None) -> None:
        self.stored.append(message.offset())

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def produce(
        self, topic: str, *, value: bytes, key: bytes, on_delivery: Callable[[Any, Any], None]
    ) -> None:
        self.sent.append((topic, key, value))
        on_delivery(None, None)

    def poll(self, timeout: float = -1) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        return 0


@pytest.fixture
def ring() -> SigningKeyring:
    return SigningKeyring([KeyringEntry(generate_signing_key(), 0, None)])


@pytest.fixture
def keyset(ring: SigningKeyring) -> Keyset:
    return ring.public_keyset()


def approval_value(
    ring: SigningKeyring, *, signed: bool = True, intent_id: str = "intent-1", **changes: Any
) -> bytes:
    """An Approval record as the gate writes it, with a signed envelope."""
    intent = make_intent(intent_id=intent_id)
    raw = CODEC.encode("Intent", intent_record(intent_id=intent_id))
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    enforcement = combine([Verdict.allow("schema"), Verdict.allow("freshness")], ["schema"])
    record = approval_record(
        intent,
        enforcement,
        intent_digest=digest,
        intent_bytes=raw,
        now_ms=NOW,
        worker="w1",
        signer=ApprovalSigner(ring),
        ttl_ms=300_000,
    )
    if not signed:
        envelope = json.loads(record["envelope"])
        envelope["signatures"] = []
        record["envelope"] = json.dumps(envelope).encode()
    record.update(changes)
    return CODEC.encode("Approval", record)


def test_a_gate_approval_record_verifies(ring: SigningKeyring, keyset: Keyset) -> None:
    approval = verify_approval_record(b"billing-agent", approval_value(ring), keyset, NOW + 5)
    assert isinstance(approval, VerifiedApproval)
    assert approval.approval_id == derived_id(
        "approval", "intent-1", approval.intent_digest
    )  # the gate's id
    assert (approval.agent_id, approval.action) == ("billing-agent", "payments.transfer")


def test_unsigned_approval_record_is_refused(ring: SigningKeyring, keyset: Keyset) -> None:
    with pytest.raises(SignatureInvalidError, match="no signatures"):
        verify_approval_record(b"billing-agent", approval_value(ring, signed=False), keyset, NOW)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"resource": "acct:666"}, "resource"),
        ({"action": "payments.transfer_all"}, "action"),
        ({"approval_id": "approval-other"}, "approval_id"),
        ({"expires_at_ms": NOW + 10**9}, "expires_at_ms"),
        ({"intent_digest": "sha256:" + "00" * 32}, "intent_digest"),
    ],
)
def test_record_fields_must_match_the_signed_statement(
    ring: SigningKeyring, keyset: Keyset, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApprovalRecordError, match=field):
        verify_approval_record(b"billing-agent", approval_value(ring, **changes), keyset, NOW)


def test_record_key_must_be_the_agent(ring: SigningKeyring, keyset: Keyset) -> None:
    with pytest.raises(ApprovalRecordError, match="key"):
        verify_approval_record(b"other-agent", approval_value(ring), keyset, NOW)


def test_non_approval_records_are_refused(keyset: Keyset) -> None:
    with pytest.raises(ApprovalRecordError, match="not_avro"):
        verify_approval_record(b"a", b"garbage", keyset, NOW)
    outcome = CODEC.encode("Outcome", _outcome_dict())
    with pytest.raises(ApprovalRecordError, match="wrong_record_type"):
        verify_approval_record(b"a", outcome, keyset, NOW)


def test_single_use_claim_comes_last(ring: SigningKeyring, keyset: Keyset) -> None:
    seen = InMemorySeenStore(clock=lambda: NOW)
    with pytest.raises(ApprovalRecordError):  # a bad record does not use up the approval
        verify_approval_record(b"x", approval_value(ring), keyset, NOW, seen)
    verify_approval_record(b"billing-agent", approval_value(ring), keyset, NOW, seen)
    with pytest.raises(ApprovalReusedError):
        verify_approval_record(b"billing-agent", approval_value(ring), keyset, NOW, seen)


def test_consumer_yields_verified_and_failures_and_stores_offsets(
    ring: SigningKeyring, keyset: Keyset
) -> None:
    fake = FakeConsumer(
        [
            FakeMessage(b"billing-agent", approval_value(ring), 0),
            FakeMessage(b"billing-agent", approval_value(ring, signed=False), 1),
            FakeMessage(b"billing-agent", approval_value(ring), 2),  # redelivered
        ]
    )
    consumer = ApprovalConsumer(
        SETTINGS, keyset, InMemorySeenStore(clock=lambda: NOW), clock=lambda: NOW, consumer=fake
    )
    assert fake.subscribed == ["t.approved"]
    results = list(consumer.read(idle_s=0))
    assert isinstance(results[0], VerifiedApproval)
    assert isinstance(results[1], VerificationFailure)
    assert isinstance(results[1].error, SignatureInvalidError)
    assert results[1].claimed_approval_id == results[0].approval_id
    assert isinstance(results[2], VerificationFailure)
    assert isinstance(results[2].error, ApprovalReusedError)
    assert fake.stored == [0, 1, 2]


def test_example_executor_executes_reports_and_skips_invalid(
    ring: SigningKeyring, keyset: Keyset, tmp_path: Any
) -> None:
    fake = FakeConsumer(
        [
            FakeMessage(b"billing-agent", approval_value(ring), 0),
            FakeMessage(b"billing-agent", approval_value(ring, resource="acct:666"), 1),
            FakeMessage(b"billing-agent", approval_value(ring, intent_id="intent-2"), 2),
            FakeMessage(b"billing-agent", approval_value(ring), 3),  # reuse
        ]
    )
    producer = FakeProducer()
    with SqliteSeenStore(tmp_path / "seen.db", clock=lambda: NOW) as seen:
        consumer = ApprovalConsumer(SETTINGS, keyset, seen, clock=lambda: NOW, consumer=fake)
        calls: list[str] = []

        def execute(approval: VerifiedApproval) -> str:
            calls.append(approval.intent_id)
            if approval.intent_id == "intent-2":
                raise RuntimeError("bank API down")
            return "transferred"

        summary = run_example_executor(
            SETTINGS,
            keyset,
            idle_s=0,
            executor_id="exec-1",
            seen=seen,
            execute=execute,
            consumer=consumer,
            reporter=OutcomeReporter(SETTINGS, producer=producer),
        )
    assert (summary.executed, summary.failed, summary.refused) == (1, 1, 2)
    assert calls == ["intent-1", "intent-2"]
    assert fake.stored == [0, 1, 2, 3]
    outcomes = [(topic, key, CODEC.decode(value, "Outcome")) for topic, key, value in producer.sent]
    assert [(t, k, o["intent_id"], o["status"]) for t, k, o in outcomes] == [
        ("t.outcomes", b"billing-agent", "intent-1", "EXECUTED"),
        ("t.outcomes", b"billing-agent", "intent-2", "FAILED"),
    ]
    assert outcomes[0][2]["detail"] == "transferred"
    assert outcomes[1][2]["detail"] == "RuntimeError: bank API down"
    assert outcomes[0][2]["executor_id"] == "exec-1"


def test_example_executor_stops_after_max_records(ring: SigningKeyring, keyset: Keyset) -> None:
    messages = [
        FakeMessage(b"billing-agent", approval_value(ring, intent_id=f"i-{n}"), n) for n in range(5)
    ]
    fake = FakeConsumer(messages)
    producer = FakeProducer()
    consumer = ApprovalConsumer(
        SETTINGS, keyset, InMemorySeenStore(clock=lambda: NOW), clock=lambda: NOW, consumer=fake
    )
    summary = run_example_executor(
        SETTINGS,
        keyset,
        max_records=2,
        idle_s=0,
        seen=InMemorySeenStore(clock=lambda: NOW),
        consumer=consumer,
        reporter=OutcomeReporter(SETTINGS, producer=producer),
    )
    assert summary.executed == 2 and len(producer.sent) == 2
    assert fake.stored[:2] == [0, 1] and 4 not in fake.stored


def test_report_outcome_and_outcome_record(ring: SigningKeyring, keyset: Keyset) -> None:
    approval = verify_approval_record(b"billing-agent", approval_value(ring), keyset, NOW)
    producer = FakeProducer()
    record = report_outcome(
        SETTINGS,
        approval,
        "EXECUTED",
        "done",
        "exec-9",
        reporter=OutcomeReporter(SETTINGS, producer=producer),
        now_ms=NOW + 7,
    )
    assert record == {
        "outcome_id": derived_id("outcome", approval.approval_id, "exec-9"),
        "approval_id": approval.approval_id,
        "intent_id": "intent-1",
        "agent_id": "billing-agent",
        "executor_id": "exec-9",
        "status": "EXECUTED",
        "detail": "done",
        "reported_at_ms": NOW + 7,
    }
    assert CODEC.decode(producer.sent[0][2], "Outcome") == record
    with pytest.raises(OutcomeReportError, match="EXECUTED or FAILED"):
        outcome_record(approval, "DONE", "", "exec-9")  # type: ignore[arg-type]
    with pytest.raises(OutcomeReportError, match="executor_id"):
        outcome_record(approval, "FAILED", "", "")


def _outcome_dict() -> dict[str, Any]:
    return {
        "outcome_id": "o",
        "approval_id": "a",
        "intent_id": "i",
        "agent_id": "a",
        "executor_id": "e",
        "status": "EXECUTED",
        "detail": "",
        "reported_at_ms": NOW,
    }
