"""The one delivery bookkeeping: a full queue waits, failures are raised at flush."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from streams.sdk.executor import OutcomeReportError
from streams.sdk.publish import Publisher, PublishError


class Producer:
    """A producer whose queue is full ``full`` times, and whose deliveries fail with
    ``failures`` (one error text per record, None: delivered)."""

    def __init__(self, *, full: int = 0, failures: list[str | None] | None = None) -> None:
        self.full = full
        self.failures = list(failures or [])
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.polls = 0
        self.pending: list[Callable[[], None]] = []
        self.undelivered = 0

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None,
        key: bytes | None,
        on_delivery: Callable[[Any, Any], None],
    ) -> None:
        if self.full:
            self.full -= 1
            raise BufferError("Local: Queue full")
        self.sent.append((topic, key, value))
        error = self.failures.pop(0) if self.failures else None
        self.pending.append(lambda: on_delivery(error, None))

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        return 0

    def flush(self, timeout: float = 0) -> int:
        for deliver in self.pending:
            deliver()
        self.pending.clear()
        return self.undelivered


def test_a_full_queue_is_waited_out_and_the_record_sent() -> None:
    producer = Producer(full=3)
    publisher = Publisher(producer)
    publisher.send("t.intents", b"agent", b"value")
    publisher.flush()
    assert producer.sent == [("t.intents", b"agent", b"value")]
    assert producer.polls >= 3


def test_failed_deliveries_are_raised_at_flush_once() -> None:
    producer = Producer(failures=[None, "Broker: Topic authorization failed"])
    publisher = Publisher(producer, what="intents", hint="check the ACLs")
    publisher.send("t.intents", b"a", b"1")
    publisher.send("t.intents", b"a", b"2")
    with pytest.raises(PublishError, match="0 intents undelivered, 1 failed: Broker: Topic") as e:
        publisher.flush()
    assert e.value.hint == "check the ACLs"
    publisher.flush()  # reported once


def test_records_left_in_the_queue_are_an_error() -> None:
    producer = Producer()
    producer.undelivered = 2
    with pytest.raises(PublishError, match="2 records undelivered, 0 failed"):
        Publisher(producer).flush()


def test_the_error_class_is_the_callers() -> None:
    producer = Producer(failures=["timed out"])
    publisher = Publisher(producer, what="outcomes", error=OutcomeReportError)
    publisher.send("t.outcomes", b"a", b"1")
    with pytest.raises(OutcomeReportError, match="1 failed: timed out"):
        publisher.flush()
    assert issubclass(OutcomeReportError, PublishError)
