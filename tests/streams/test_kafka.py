"""The shared transactional loop, without a broker: what commits, what is read again."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processors.exceptions import TrustplaneError
from streams.kafka import Record, RetryBatch, TransactionalLoop, UpToDeadline


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

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], metadata: object) -> None:
        self.offsets = [tp.offset for tp in offsets]

    def commit_transaction(self) -> None:
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
