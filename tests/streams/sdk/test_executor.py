"""The executor SDK glue and example executor, without Kafka (fake consumer/producer)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

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
    GroupClaimError,
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


def group_metadata(generation: int, member: str = "m-1") -> bytes:
    """What librdkafka's ``consumer_group_metadata()`` returns (CGMDv2 serialization)."""
    return (
        b"CGMDv2:"
        + generation.to_bytes(4, sys.byteorder, signed=True)
        + b"executors\0"
        + member.encode()
        + b"\0\x01"
    )


class FakeConsumer:
    """A consumer of one group member in generation 1. ``events`` logs commits and
    seeks in order; ``fail_commits`` maps an offset to the KafkaError its commit raises
    (once); ``on_commit`` runs before each commit (a rebalance "between poll and commit")."""

    def __init__(self, messages: list[FakeMessage], events: list[str] | None = None) -> None:
        self.log = list(messages)
        self.pending = list(messages)
        self.committed: list[int] = []
        self.events = events if events is not None else []
        self.subscribed: list[str] = []
        self.closed = False
        self.member: str | None = "m-1"
        self.generation = 1
        self.fail_commits: dict[int, KafkaError] = {}
        self.on_commit: Callable[[], None] = lambda: None
        self.seeks: list[tuple[int, int]] = []

    def subscribe(self, topics: list[str]) -> None:
        self.subscribed = topics

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        batch, self.pending = self.pending[:num_messages], self.pending[num_messages:]
        return batch

    def commit(self, message: Any = None, *, asynchronous: bool = True) -> Any:
        assert not asynchronous, "commits must be synchronous"
        self.on_commit()
        self.events.append(f"commit {message.offset()}")
        error = self.fail_commits.pop(message.offset(), None)
        if error is not None:
            raise KafkaException(error)
        self.committed.append(message.offset())
        return [TopicPartition("t.approved", message.partition(), message.offset() + 1)]

    def seek(self, partition: TopicPartition) -> None:
        self.seeks.append((partition.partition, partition.offset))
        self.events.append(f"seek {partition.partition}@{partition.offset}")
        # the fetcher starts over at the sought offset: later records come again
        again = [
            m
            for m in self.log
            if m.partition() == partition.partition and m.offset() >= partition.offset
        ]
        self.pending = again + [m for m in self.pending if m.partition() != partition.partition]

    def memberid(self) -> str | None:
        return self.member

    def consumer_group_metadata(self) -> bytes:
        return group_metadata(self.generation, self.member or "")

    def assignment(self) -> list[TopicPartition]:
        return []

    def unsubscribe(self) -> None:
        self.subscribed = []

    def poll(self, timeout: float = -1) -> Any:
        return None

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
    assert fake.committed == [0, 1, 2]  # invalid records are consumed by the group too


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
    assert fake.committed == [0, 1, 2, 3]
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
    assert fake.committed == [0, 1]  # the third record was not claimed for the group


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


# --- single use across an executor group: commit before execute ------------------------


class RecordingSeen(InMemorySeenStore):
    def __init__(self, events: list[str]) -> None:
        super().__init__(clock=lambda: NOW)
        self.events = events

    def claim(self, approval_id: str, expires_at_ms: int) -> bool:
        self.events.append("claim")
        return super().claim(approval_id, expires_at_ms)


def stream(ring: SigningKeyring, count: int, partition: int = 0) -> list[FakeMessage]:
    return [
        FakeMessage(
            b"billing-agent", approval_value(ring, intent_id=f"i-{partition}-{n}"), n, partition
        )
        for n in range(count)
    ]


def run(fake: FakeConsumer, keyset: Keyset, **kwargs: Any) -> tuple[list[str], Any]:
    """Run the example executor over ``fake``, logging to ``fake.events``; return the
    intents it executed, in order, and its summary."""
    executed: list[str] = []

    def execute(approval: VerifiedApproval) -> str:
        fake.events.append(f"execute {approval.intent_id}")
        executed.append(approval.intent_id)
        return "done"

    seen = RecordingSeen(fake.events)
    summary = run_example_executor(
        SETTINGS,
        keyset,
        idle_s=0,
        seen=seen,
        execute=execute,
        consumer=ApprovalConsumer(SETTINGS, keyset, seen, clock=lambda: NOW, consumer=fake),
        reporter=OutcomeReporter(SETTINGS, producer=FakeProducer()),
        **kwargs,
    )
    return executed, summary


def test_each_record_is_committed_before_it_is_verified_claimed_and_executed(
    ring: SigningKeyring, keyset: Keyset
) -> None:
    fake = FakeConsumer(stream(ring, 2))
    executed, _ = run(fake, keyset)
    assert executed == ["i-0-0", "i-0-1"]
    assert fake.events == [
        "commit 0",
        "claim",
        "execute i-0-0",
        "commit 1",
        "claim",
        "execute i-0-1",
    ]


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
        KafkaError._TIMED_OUT,  # the commit may have been applied: still not executed
    ],
)
def test_a_failed_commit_is_not_executed_and_the_rest_of_the_batch_is_read_again(
    ring: SigningKeyring, keyset: Keyset, code: int
) -> None:
    fake = FakeConsumer(stream(ring, 4) + stream(ring, 2, partition=1))
    fake.fail_commits = {1: KafkaError(code)}  # partition 0, offset 1; once
    executed, summary = run(fake, keyset)
    # the failed record was not executed when its commit failed; this executor still owns
    # the partition, reads it again, commits and executes it then: each exactly once
    assert fake.events[:4] == ["commit 0", "claim", "execute i-0-0", "commit 1"]
    assert fake.events[4:6] == ["seek 0@1", "seek 1@0"]  # the batch's unhanded records
    assert sorted(executed) == sorted(["i-0-0", "i-0-1", "i-0-2", "i-0-3", "i-1-0", "i-1-1"])
    assert len(executed) == len(set(executed))
    assert summary.refused == 1
    assert summary.refusals[0].startswith("GroupClaimError: offset commit of t.approved [0] @ 1")
    assert KafkaError(code).name() in summary.refusals[0]


def test_a_partition_lost_between_poll_and_commit_is_not_executed(
    ring: SigningKeyring, keyset: Keyset
) -> None:
    """A rebalance gives the partition to another executor after this one polled the
    batch: its commit fails, it executes none of the rest; the new owner starts at the
    group's committed offset and executes exactly those records."""
    messages = stream(ring, 4)
    first = FakeConsumer(messages)

    def lose_partition() -> None:
        if first.committed == [0]:  # after the first record, before the second commit
            first.fail_commits[1] = KafkaError(KafkaError.UNKNOWN_MEMBER_ID)
            first.member = None  # librdkafka forgets the member id on UNKNOWN_MEMBER_ID
            first.log, first.pending = [], []  # revoked: nothing more to fetch

    first.on_commit = lose_partition
    executed_first, summary = run(first, keyset)
    assert executed_first == ["i-0-0"]
    assert first.committed == [0]
    assert summary.refused == 1 and "UNKNOWN_MEMBER_ID" in summary.refusals[0]

    committed_offset = first.committed[-1] + 1
    second = FakeConsumer([m for m in messages if m.offset() >= committed_offset])
    executed_second, _ = run(second, keyset)
    assert executed_second == ["i-0-1", "i-0-2", "i-0-3"]


@pytest.mark.parametrize(("member", "generation"), [(None, 1), ("m-1", -1), ("", 3)])
def test_a_consumer_that_is_not_a_group_member_does_not_commit(
    ring: SigningKeyring, keyset: Keyset, member: str | None, generation: int
) -> None:
    """Generation -1 or no member id: the coordinator would take the commit for a
    group-less one and accept it in a memberless group, rewinding its offsets."""
    fake = FakeConsumer(stream(ring, 2))
    fake.member, fake.generation = member, generation
    consumer = ApprovalConsumer(
        SETTINGS, keyset, InMemorySeenStore(clock=lambda: NOW), clock=lambda: NOW, consumer=fake
    )
    result = next(consumer.read(idle_s=0))
    assert isinstance(result, VerificationFailure)
    assert isinstance(result.error, GroupClaimError)
    assert "is not a member of group 'trustplane.executor'" in result.reason
    assert (result.partition, result.offset) == (0, 0)
    assert (
        result.claimed_approval_id == CODEC.decode(fake.log[0].value(), "Approval")["approval_id"]
    )
    assert fake.committed == [] and fake.events == ["seek 0@0"]


def test_a_membership_change_during_the_commit_is_not_executed(
    ring: SigningKeyring, keyset: Keyset
) -> None:
    fake = FakeConsumer(stream(ring, 1))

    def rebalance() -> None:
        fake.generation = -1  # ILLEGAL_GENERATION from a heartbeat, in the meantime

    fake.on_commit = rebalance
    executed, summary = run(fake, keyset, max_records=1)
    assert executed == []
    assert "the group membership changed" in summary.refusals[0]


def test_a_partition_error_in_the_commit_result_is_a_failed_commit(
    ring: SigningKeyring, keyset: Keyset
) -> None:
    fake = FakeConsumer(stream(ring, 1))

    class Failed:
        error = KafkaError(KafkaError.ILLEGAL_GENERATION)

    fake.commit = lambda message=None, *, asynchronous=True: [Failed()]  # type: ignore[method-assign]
    executed, summary = run(fake, keyset, max_records=1)
    assert executed == [] and "ILLEGAL_GENERATION" in summary.refusals[0]


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.FENCED_INSTANCE_ID,  # another process took this group.instance.id
        KafkaError._FATAL,
    ],
)
def test_a_commit_no_retry_can_cure_stops_the_executor(
    ring: SigningKeyring, keyset: Keyset, code: int
) -> None:
    fake = FakeConsumer(stream(ring, 2))
    fake.fail_commits = {0: KafkaError(code)}
    with pytest.raises(KafkaException, match=KafkaError(code).name()):
        run(fake, keyset)
    assert "execute" not in " ".join(fake.events)


def test_commits_that_keep_failing_back_off(ring: SigningKeyring, keyset: Keyset) -> None:
    fake = FakeConsumer(stream(ring, 1))
    failures = iter([KafkaError(KafkaError.REBALANCE_IN_PROGRESS)] * 3)

    def fail() -> None:  # three failures, then the commit goes through
        error = next(failures, None)
        if error is not None:
            fake.fail_commits[0] = error

    fake.on_commit = fail
    consumer = ApprovalConsumer(
        SETTINGS, keyset, InMemorySeenStore(clock=lambda: NOW), clock=lambda: NOW, consumer=fake
    )
    started = time.monotonic()
    results = list(consumer.read(idle_s=0))
    elapsed = time.monotonic() - started
    assert [type(r).__name__ for r in results] == ["VerificationFailure"] * 3 + ["VerifiedApproval"]
    assert elapsed >= 0.9 * (0.1 + 0.2 + 0.4)  # 50 ms doubling per failed commit


def test_the_group_metadata_format_of_the_installed_librdkafka() -> None:
    """A consumer that has not joined its group yet: generation -1, no member id."""
    from streams.sdk.executor import _generation, _membership

    consumer = Consumer(
        {"group.id": "executors", "bootstrap.servers": "127.0.0.1:1", "log_level": 0}
    )
    try:
        assert _generation(consumer.consumer_group_metadata()) == -1
        assert _membership(consumer) is None
    finally:
        consumer.close()
    assert _generation(group_metadata(7)) == 7
    assert _generation(b"something else") is None


def test_the_consumer_commits_by_hand_in_the_executor_group(
    keyset: Keyset, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[tuple[str, dict[str, Any]]] = []

    def consumer(endpoint: Any, group_id: str, overrides: dict[str, Any]) -> FakeConsumer:
        built.append((group_id, overrides))
        return FakeConsumer([])

    monkeypatch.setattr("streams.sdk.executor.kafka.consumer", consumer)
    run_example_executor(
        SETTINGS,
        keyset,
        idle_s=0,
        seen=InMemorySeenStore(),
        reporter=OutcomeReporter(SETTINGS, producer=FakeProducer()),
        group_id="payments-executors",
    )
    ApprovalConsumer(SETTINGS, keyset, None)
    assert [group for group, _ in built] == ["payments-executors", "trustplane.executor"]
    for _, overrides in built:
        assert overrides["enable.auto.commit"] is False
        assert overrides["enable.auto.offset.store"] is False
        assert overrides["group.protocol"] == "classic"  # what "Single use" was checked for
