"""Await the gate's answer to one intent: a consumer thread that hands each record on the
decision topics to whoever waits for that intent.

Records are matched by the SHA-256 of the intent's bytes, which every answer carries
(``intent_digest`` of an approval or a decision, ``value_sha256`` of a rejection), so a
rejected intent (no readable id) is matched too. The consumer is assigned every partition
of ``approved``, ``denied``, ``review`` and ``rejected`` from their end when the waiter
starts (``read_committed``: only answers of committed gate transactions), with no consumer
group: nothing is committed, and the guard principal needs no group ACL. Only records
keyed by the waiter's agent are decoded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from processors.exceptions import TrustplaneError
from streams import kafka, names
from streams.codec import Codec, DecodeError, default_codec
from streams.sdk.config import Endpoint
from streams.topics import MAX_MESSAGE_BYTES

__all__ = ["Answer", "OutcomeWaiter", "WaiterError"]

log = logging.getLogger(__name__)

ANSWER_TOPICS = ("approved", "denied", "review", "rejected")


class WaiterError(TrustplaneError):
    """The decision topics cannot be read."""


@dataclass(frozen=True)
class Answer:
    """One record of a decision topic about a waited-for intent."""

    topic: str
    """``approved``, ``denied``, ``review`` or ``rejected``."""
    key: bytes | None
    value: bytes
    record: dict[str, Any] | None
    """The decoded record; None if it did not decode (then it is not trusted at all)."""
    error: str | None = None


@dataclass
class _Slot:
    answers: list[Answer] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)


class OutcomeWaiter:
    """One per guard: ``expect(digest)`` before publishing, ``wait(digest, ...)`` after."""

    def __init__(
        self,
        config: Endpoint,
        agent_id: str,
        *,
        codec: Codec | None = None,
        start_timeout_s: float = 15.0,
    ) -> None:
        self.codec = codec or default_codec()
        self.agent_key = agent_id.encode()
        self._logical = {config.topic(t): t for t in ANSWER_TOPICS}
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failure: str | None = None
        self.consumer = kafka.consumer(
            config,
            names.guard_group(config),
            {
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "fetch.max.bytes": MAX_MESSAGE_BYTES * 2,
            },
        )
        try:
            self.consumer.assign(self._ends(start_timeout_s))
        except KafkaException as exc:
            self.consumer.close()
            raise WaiterError(
                f"cannot read the decision topics: {exc}",
                hint="is the broker up (`trustplane kafka status`), and may this principal "
                "read approved, denied, review and rejected (role `guard`)?",
            ) from exc
        self._thread = threading.Thread(target=self._run, name="trustplane-guard", daemon=True)
        self._thread.start()

    def _ends(self, timeout: float) -> list[TopicPartition]:
        metadata = self.consumer.list_topics(timeout=timeout)
        positions = []
        for topic in self._logical:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None or not info.partitions:
                raise WaiterError(
                    f"topic {topic} does not exist or cannot be described",
                    hint="start the gate (`trustplane kafka up` creates the topics) and grant "
                    "this principal the guard role",
                )
            for partition in info.partitions:
                tp = TopicPartition(topic, partition)
                _, high = self.consumer.get_watermark_offsets(tp, timeout=timeout)
                positions.append(TopicPartition(topic, partition, high))
        return positions

    # -- waiting ---------------------------------------------------------------------

    def expect(self, digest: str) -> None:
        """Start collecting the answers about the intent whose bytes hash to ``digest``."""
        with self._lock:
            self._slots.setdefault(digest, _Slot())

    def forget(self, digest: str) -> None:
        with self._lock:
            self._slots.pop(digest, None)

    def wait(self, digest: str, timeout_s: float, *, after: int = 0) -> Answer | None:
        """The first answer about ``digest`` beyond the ``after`` already seen, or None
        at the deadline. Raises :class:`WaiterError` if the reader thread failed."""
        with self._lock:
            slot = self._slots.get(digest)
        if slot is None:
            raise WaiterError(f"no answer is expected for {digest}; call expect() first")
        deadline = time.monotonic() + timeout_s
        with slot.changed:
            while len(slot.answers) <= after:
                if self._failure is not None:
                    raise WaiterError(f"the decision reader stopped: {self._failure}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                slot.changed.wait(min(remaining, 0.5))
            return slot.answers[after]

    # -- the reader thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                first = self.consumer.poll(0.2)
                if first is None:
                    continue
                self._dispatch([first, *self.consumer.consume(500, timeout=0)])
        except Exception as exc:  # noqa: BLE001 - reported to every waiter, never swallowed
            log.exception("the guard's decision reader failed")
            self._failure = f"{type(exc).__name__}: {exc}"
            self._wake_all()

    def _dispatch(self, messages: Iterable[Any]) -> None:
        delivered: dict[str, list[Answer]] = defaultdict(list)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                continue
            if message.key() != self.agent_key:
                continue
            answer = self._answer(message)
            digest = _digest_of(answer)
            if digest is not None:
                delivered[digest].append(answer)
        for digest, answers in delivered.items():
            with self._lock:
                slot = self._slots.get(digest)
            if slot is None:
                continue
            with slot.changed:
                slot.answers.extend(answers)
                slot.changed.notify_all()

    def _answer(self, message: Any) -> Answer:
        topic = self._logical.get(message.topic(), message.topic())
        value = message.value() or b""
        try:
            record = self.codec.decode(value, max_bytes=MAX_MESSAGE_BYTES)
        except DecodeError as exc:
            return Answer(topic, message.key(), value, None, exc.reason)
        return Answer(topic, message.key(), value, record)

    def _wake_all(self) -> None:
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            with slot.changed:
                slot.changed.notify_all()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.consumer.close()


def _digest_of(answer: Answer) -> str | None:
    record = answer.record
    if record is None:
        return None
    value = (
        record.get("value_sha256") if answer.topic == "rejected" else record.get("intent_digest")
    )
    return value if isinstance(value, str) else None
