"""The shared transactional loop and the client factory, without a broker: what commits,
what is read again, and what an authorization error tells the operator."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processors.exceptions import TrustplaneError
from streams import kafka
from streams.kafka import Record, RetryBatch, TransactionalLoop, UpToDeadline, explain_denied
from streams.sdk.config import ClientConfig, Secret
from streams.watchdog import StallWatchdog


class LoopError(TrustplaneError):
    """The loop under test cannot go on."""


class FakeMessage:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def offset(self) -> int:
        return self._offset


class FakeConsumer:
    """One partition ``in``; ``consume`` hands out what was queued, ``committed`` is what
    the last committed transaction recorded."""

    def __init__(self, offsets: list[int]) -> None:
        self.queue = [FakeMessage(o) for o in offsets]
        self.position_ = 0
        self.committed_ = 0
        self.seeks: list[int] = []

    def consume(self, num: int, timeout: float) -> list[FakeMessage]:
        taken = [m for m in self.queue if m.offset() >= self.position_][:num]
        if taken:
            self.position_ = taken[-1].offset() + 1
        return taken

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("in", 0)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition("in", 0, self.position_)]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition("in", 0, self.committed_)]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append(tp.offset)
        self.position_ = tp.offset

    def consumer_group_metadata(self) -> object:
        return object()


class FakeProducer:
    def __init__(self, consumer: FakeConsumer, fail_commits: list[KafkaException]) -> None:
        self.consumer = consumer
        self.fail_commits = fail_commits
        self.open: list[tuple[str, Any]] = []
        self.committed: list[tuple[str, Any]] = []
        self.aborts = 0
        self.offsets: list[int] = []

    def begin_transaction(self) -> None:
        self.open = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.open.append((topic, kwargs["value"]))

    def poll(self, timeout: float) -> int:
        return 0

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], metadata: object, timeout: float = -1
    ) -> None:
        self.offsets = [tp.offset for tp in offsets]

    def commit_transaction(self, timeout: float = -1) -> None:
        if self.fail_commits:
            raise self.fail_commits.pop(0)
        self.committed.extend(self.open)
        self.consumer.committed_ = self.offsets[-1]

    def abort_transaction(self, timeout: float) -> None:
        self.aborts += 1
        self.open = []


def make_loop(
    fail_commits: list[KafkaException] | None = None, **hooks: Any
) -> tuple[TransactionalLoop, FakeConsumer, FakeProducer]:
    consumer = FakeConsumer(list(range(5)))
    producer = FakeProducer(consumer, fail_commits or [])
    hooks.setdefault(
        "on_batch",
        lambda batch: [Record("out", None, str(m.offset()).encode()) for m in batch] or None,
    )
    loop = TransactionalLoop(
        consumer,  # type: ignore[arg-type]  # a fake with the methods the loop calls
        producer,  # type: ignore[arg-type]
        name="test",
        error=LoopError,
        fenced_hint="another one took over",
        batches=UpToDeadline(max_records=3, max_ms=50),
        **hooks,
    )
    return loop, consumer, producer


def test_records_and_offsets_commit_together():
    committed: list[int] = []
    loop, consumer, producer = make_loop(on_commit=lambda batch: committed.append(len(batch)))
    assert loop.run_once() and loop.run_once()
    assert [v for _, v in producer.committed] == [b"0", b"1", b"2", b"3", b"4"]
    assert consumer.committed_ == 5 and committed == [3, 2]
    assert not loop.run_once(), "nothing to commit"


def test_a_failed_commit_aborts_rewinds_and_the_batch_commits_once_on_retry():
    aborted: list[Exception] = []
    failure = KafkaException(KafkaError(KafkaError._TIMED_OUT, "slow broker"))
    loop, consumer, producer = make_loop([failure], on_abort=aborted.append)
    assert not loop.run_once()
    assert producer.aborts == 1 and consumer.seeks == [0] and aborted == [failure]
    assert loop.run_once() and loop.run_once() and not loop.run_once()
    assert [v for _, v in producer.committed] == [b"0", b"1", b"2", b"3", b"4"]


def test_before_commit_can_ask_for_the_batch_again():
    calls: list[int] = []

    def before_commit(batch: list[Any]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RetryBatch(0.0)

    loop, consumer, producer = make_loop(before_commit=before_commit)
    assert not loop.run_once()
    assert producer.aborts == 1 and producer.committed == []
    assert loop.run_once()
    assert [v for _, v in producer.committed] == [b"0", b"1", b"2"]


def test_a_fenced_loop_stops_with_its_own_error():
    fenced = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    loop, _, producer = make_loop([KafkaException(fenced)])
    with pytest.raises(LoopError, match="fenced or fatal") as raised:
        loop.run_once()
    assert raised.value.hint == "another one took over"
    assert producer.aborts == 0


# -- authorization errors say which ACL is missing -----------------------------------


@pytest.mark.parametrize(
    ("code", "names", "expected"),
    [
        (29, {"topic": "t.approved"}, "lacks a TOPIC ACL on topic t.approved"),
        (30, {"group": "r.gate"}, "lacks GROUP READ on consumer group r.gate"),
        (53, {"transactional_id": "r.notary"}, "lacks TRANSACTIONAL_ID WRITE on transactional"),
        (31, {}, "An idempotent producer needs WRITE on some topic"),
    ],
)
def test_an_authorization_error_names_the_missing_acl(
    code: int, names: dict[str, str], expected: str
) -> None:
    text = explain_denied(KafkaError(code, "Broker: denied"), principal="agent", **names)
    assert text is not None
    assert "principal User:agent" in text and expected in text
    assert "trustplane kafka provision" in text or code == 31


def test_other_errors_are_not_authorization_errors() -> None:
    assert explain_denied(KafkaError(KafkaError._TIMED_OUT, "slow")) is None
    assert explain_denied(KafkaException(KafkaError(KafkaError._FENCED, "x"))) is None
    assert explain_denied(None) is None


class DeniedStart(FakeProducer):
    principal = "gate"
    transactional_id = "root.notary"

    def init_transactions(self, timeout: float) -> None:
        raise KafkaException(KafkaError(53, "Transactional Id authorization failed", fatal=True))


def test_a_loop_that_may_not_use_its_transactional_id_says_so_at_start() -> None:
    consumer = FakeConsumer([])
    loop = TransactionalLoop(
        consumer,  # type: ignore[arg-type]
        DeniedStart(consumer, []),  # type: ignore[arg-type]
        name="notary",
        error=LoopError,
        fenced_hint="",
        batches=UpToDeadline(max_records=1, max_ms=1),
        on_batch=lambda batch: None,
    )
    with pytest.raises(LoopError, match="User:gate lacks TRANSACTIONAL_ID WRITE on "
                       "transactional id root.notary"):  # fmt: skip
        loop.start()


class TopicMessage(FakeMessage):
    def topic(self) -> str:
        return "t.approved"


class DeniedTopic(FakeProducer):
    """The broker refuses every record (no WRITE on the topic): the delivery report has
    29, and the commit fails with an abortable error."""

    principal = "agent"

    def produce(self, topic: str, **kwargs: Any) -> None:
        super().produce(topic, **kwargs)
        self.delivery = kwargs["on_delivery"]

    def commit_transaction(self, timeout: float = -1) -> None:
        self.delivery(KafkaError(29, "Broker: Topic authorization failed"), TopicMessage(0))
        raise KafkaException(KafkaError(KafkaError._INCONSISTENT, "1 message(s) failed"))


def test_a_refused_write_stops_the_loop_and_names_the_topic() -> None:
    consumer = FakeConsumer([0])
    producer = DeniedTopic(consumer, [])
    loop = TransactionalLoop(
        consumer,  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        name="worker",
        error=LoopError,
        fenced_hint="",
        batches=UpToDeadline(max_records=1, max_ms=50),
        on_batch=lambda batch: [Record("t.approved", None, b"x")],
    )
    with pytest.raises(LoopError, match="User:agent lacks a TOPIC ACL on topic t.approved"):
        loop.run_once()
    assert producer.aborts == 1 and producer.committed == []


class DeniedGroupMessage(FakeMessage):
    def error(self) -> KafkaError:  # type: ignore[override]
        return KafkaError(30, "FindCoordinator response error: Group authorization failed.")


def test_a_consumer_refused_its_group_stops_the_loop_and_names_the_group() -> None:
    consumer = FakeConsumer([])
    consumer.queue = [DeniedGroupMessage(0)]
    consumer.principal = "sink"  # type: ignore[attr-defined]
    consumer.group_id = "root.gate"  # type: ignore[attr-defined]
    loop = TransactionalLoop(
        consumer,  # type: ignore[arg-type]
        FakeProducer(consumer, []),  # type: ignore[arg-type]
        name="sink",
        error=LoopError,
        fenced_hint="",
        batches=UpToDeadline(max_records=1, max_ms=50),
        on_batch=lambda batch: None,
    )
    with pytest.raises(LoopError, match="User:sink lacks GROUP READ on consumer group root.gate"):
        loop.run_once()


def test_faust_gets_the_same_credentials() -> None:
    assert kafka.faust_credentials(ClientConfig("127.0.0.1:9")) is None
    gate = ClientConfig("127.0.0.1:9", username="gate", password=Secret("gate-pw"))
    credentials = kafka.faust_credentials(gate)
    assert (credentials.username, credentials.password) == ("gate", "gate-pw")
    assert credentials.mechanism.name == "SCRAM_SHA_512"
    assert credentials.protocol.name == "SASL_PLAINTEXT"


def test_the_factorys_clients_know_who_they_are() -> None:
    endpoint = ClientConfig("127.0.0.1:9", username="gate", password=Secret("p"))
    consumer = kafka.consumer(endpoint, "root.gate.state-restore")
    producer = kafka.transactional_producer(endpoint, "root.gate.w1")
    try:
        group = kafka.explain_client_error(consumer, KafkaError(30, "Group authorization failed"))
        txn = kafka.explain_client_error(producer, KafkaError(53, "denied"))
    finally:
        consumer.close()
    assert (
        group is not None
        and "User:gate lacks GROUP READ on consumer group root.gate.state-restore" in group
    )
    assert txn is not None and "TRANSACTIONAL_ID WRITE on transactional id root.gate.w1" in txn


class DeniedOffsets(FakeProducer):
    principal = "sink"

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], metadata: object, timeout: float = -1
    ) -> None:
        raise KafkaException(KafkaError(30, "Group authorization failed"))


def test_offsets_refused_in_a_transaction_name_the_consumers_group() -> None:
    consumer = FakeConsumer([0])
    consumer.group_id = "root.gate"  # type: ignore[attr-defined]
    producer = DeniedOffsets(consumer, [])
    loop = TransactionalLoop(
        consumer,  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        name="sink",
        error=LoopError,
        fenced_hint="",
        batches=UpToDeadline(max_records=1, max_ms=50),
        on_batch=lambda batch: [Record("out", None, b"x")],
    )
    with pytest.raises(LoopError, match="User:sink lacks GROUP READ on consumer group root.gate"):
        loop.run_once()
    assert producer.aborts == 1


class RevokingConsumer:
    """A group member whose revocation runs on a later poll, as librdkafka's does."""

    def __init__(self, partitions: int) -> None:
        self.assigned = [TopicPartition("t.lineage", p) for p in range(partitions)]
        self.calls: list[str] = []
        self.revoke_pending = False

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def unsubscribe(self) -> None:
        self.calls.append("unsubscribe")
        self.revoke_pending = True

    def poll(self, timeout: float = -1) -> None:
        self.calls.append("poll")
        if self.revoke_pending:
            self.assigned, self.revoke_pending = [], False

    def close(self) -> None:
        self.calls.append(f"close with {len(self.assigned)} assigned")


def test_a_consumer_gives_up_its_partitions_before_it_closes() -> None:
    consumer = RevokingConsumer(partitions=2)
    kafka.close_consumer(consumer)
    assert consumer.calls[0] == "unsubscribe"
    assert consumer.calls[-1] == "close with 0 assigned"
    assert set(consumer.calls[1:-1]) == {"poll"}


def test_an_assignment_still_queued_runs_before_the_consumer_closes() -> None:
    """Joining when told to stop: the assignment comes on a later poll, its revocation on
    the one after; close() waits for both."""
    consumer = RevokingConsumer(partitions=0)
    queued = [TopicPartition("t.lineage", 0)]
    polls = 0

    def poll(timeout: float = -1) -> None:
        nonlocal polls
        polls += 1
        consumer.calls.append("poll")
        if polls == 2:
            consumer.assigned = queued  # the queued assignment runs
            consumer.calls.append("assigned")
        elif polls == 4:
            consumer.assigned = []  # and the unsubscribe's revocation after it
            consumer.calls.append("revoked")

    consumer.poll = poll  # type: ignore[method-assign]
    kafka.close_consumer(consumer)
    assert consumer.calls.index("revoked") > consumer.calls.index("assigned")
    assert consumer.calls[-1] == "close with 0 assigned"


def test_an_offsets_call_that_outlives_its_timeout_ends_the_loop_soon_after() -> None:
    """librdkafka may never return from send_offsets_to_transaction when the group's
    coordinator died (confluentinc/librdkafka#5456): the watchdog ends the process a
    margin after the call's timeout, not at the loop's 180 s limit."""
    now = [1000.0]
    stalls: list[str] = []
    loop, _, producer = make_loop()
    loop.watchdog = StallWatchdog(
        "test", 180.0, lambda n, s: stalls.append(n), clock=lambda: now[0]
    )
    checks: list[bool] = []

    def hang(offsets: list[TopicPartition], metadata: object, timeout: float = -1) -> None:
        assert timeout == kafka.OFFSETS_CALL_S
        for _ in range(60):  # the watchdog's thread checks once a second meanwhile
            previous = now[0]
            now[0] += 1.0
            checks.append(loop.watchdog.check(previous))  # type: ignore[union-attr]
            if checks[-1]:
                break
        producer.offsets = [tp.offset for tp in offsets]  # (a real process has ended here)

    producer.send_offsets_to_transaction = hang  # type: ignore[method-assign]
    loop.run_once()
    assert len(checks) == kafka.OFFSETS_CALL_S + kafka.CALL_MARGIN_S + 1 and checks[-1]
    assert stalls == ["test"]


def test_closing_a_loop_whose_producer_failed_fatally_raises_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fatal transaction error ends the loop with its own error; closing afterwards must
    not replace it with the producer's (a chaos run's sink died on INVALID_TXN_STATE from
    ``flush`` in ``close``, its real error lost)."""

    class FatalProducer:
        def flush(self, timeout: float) -> int:
            fatal = KafkaError(KafkaError.INVALID_TXN_STATE, "invalid state", fatal=True)
            raise KafkaException(fatal)

    class ClosedConsumer:
        def unsubscribe(self) -> None:
            raise RuntimeError("Consumer closed")

    kafka.close_loop(ClosedConsumer(), FatalProducer())  # type: ignore[arg-type]
    assert "could not deliver what was queued" in caplog.text
    assert "INVALID_TXN_STATE" in caplog.text or "invalid state" in caplog.text
