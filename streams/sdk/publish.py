"""Producing records and knowing they arrived: the one delivery bookkeeping of the SDK.

Intents (:class:`~streams.sdk.client.IntentPublisher`), outcomes
(:class:`~streams.sdk.executor.OutcomeReporter`) and operator commands
(:class:`~streams.operator.OperatorClient`) all go through :class:`Publisher`: ``send``
never blocks on a full local queue for long, delivery failures are collected by the
delivery callback, and ``flush`` waits for every record and raises :class:`PublishError`
if any was not delivered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from processors.exceptions import TrustplaneError

__all__ = ["PublishError", "Publisher", "ProducerLike"]


class PublishError(TrustplaneError):
    """Records could not be delivered to Kafka."""


class ProducerLike(Protocol):
    """What :class:`Publisher` uses of a ``confluent_kafka.Producer``."""

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None,
        key: bytes | None,
        on_delivery: Callable[[Any, Any], None],
    ) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...


class Publisher:
    """A producer with its delivery failures.

    ``what`` names the records in errors (``intents``, ``outcomes``...), ``error`` is the
    :class:`PublishError` subclass raised, ``hint`` tells the reader what to check.
    """

    def __init__(
        self,
        producer: ProducerLike,
        *,
        what: str = "records",
        error: type[PublishError] = PublishError,
        hint: str = "check the broker (`trustplane kafka status`) and that the topic exists",
    ) -> None:
        self.producer = producer
        self.what = what
        self.error = error
        self.hint = hint
        self._failures: list[str] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Queue one record; wait for room while the local queue is full."""
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=self._delivered)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._failures.append(str(err))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued record is delivered, or raise ``error`` saying how many
        were not (the failures are reported once)."""
        remaining = self.producer.flush(timeout)
        if remaining or self._failures:
            failures, self._failures = self._failures, []
            raise self.error(
                f"{remaining} {self.what} undelivered, {len(failures)} failed"
                + (f": {'; '.join(failures[:3])}" if failures else ""),
                hint=self.hint,
            )
