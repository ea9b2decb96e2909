"""Every gate worker follows the whole compacted ``control`` topic.

The agent registry, the policy bundle, quarantines and kill switches are state that
*every* worker needs in full, whatever intent partitions it owns. So each worker reads
all partitions of ``control`` itself (no consumer group), from the beginning: the
compacted topic is the durable, replicated store of that state, and a restarted
worker rebuilds it before it decides anything (fail closed: no decisions before the
worker has caught up). Between two intent batches the worker applies what arrived,
so a command takes effect from the next batch on every worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import KafkaError, TopicPartition

from processors.exceptions import TrustplaneError
from streams import kafka
from streams.codec import Codec, DecodeError, default_codec
from streams.config import Settings

__all__ = ["ControlFollower", "ControlApplier", "ControlCatchUpError"]

log = logging.getLogger(__name__)


class ControlCatchUpError(TrustplaneError):
    """The worker could not read the control topic up to its end."""


class ControlApplier(Protocol):
    def apply(self, record: dict[str, Any], now_ms: int) -> Any: ...


class ControlFollower:
    def __init__(
        self,
        settings: Settings,
        state: ControlApplier,
        *,
        on_result: Callable[[dict[str, Any] | None, Any, str | None], None] | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.on_result = on_result
        self.codec = codec or default_codec()
        self.topic = settings.topic("control")
        self.applied = 0
        self.refused = 0
        self.last_applied_ms: int | None = None
        worker = settings.resolved_worker_id()
        self.consumer = kafka.consumer(
            settings,
            f"{settings.group_id}-control-{worker}",
            {
                "enable.partition.eof": False,
                # sync() waits for the position to pass the end, which may be a commit
                # marker that only an (otherwise empty) fetch answer moves past: answer fast
                "fetch.wait.max.ms": 10,
            },
        )
        # watermarks come from a client with no fetch in flight: asking the fetching
        # consumer waits behind its long poll (measured: ~10 ms per batch, vs ~0.3 ms)
        self._watermarks = kafka.consumer(settings, f"{settings.group_id}-control-offsets-{worker}")
        # a topic just created (by this worker, or a sink starting beside it) takes a
        # moment to appear in the metadata
        deadline = time.monotonic() + 30
        while True:
            metadata = self.consumer.list_topics(self.topic, timeout=30)
            topic = metadata.topics.get(self.topic)
            if topic is not None and topic.error is None and topic.partitions:
                break
            if time.monotonic() > deadline:
                raise ControlCatchUpError(
                    f"control topic {self.topic} is missing",
                    hint="the worker creates it at start; check the broker's log",
                )
            time.sleep(0.2)
        self.partitions = [TopicPartition(self.topic, p, 0) for p in sorted(topic.partitions)]
        # OFFSET_BEGINNING: the compacted log from its first retained record
        self.consumer.assign([TopicPartition(self.topic, p.partition, -2) for p in self.partitions])

    def catch_up(self, timeout: float = 60.0) -> int:
        """Apply everything up to the current end of every partition; return the count."""
        ends = {}
        for tp in self.partitions:
            _, high = self.consumer.get_watermark_offsets(tp, timeout=timeout)
            ends[tp.partition] = high
        deadline = time.monotonic() + timeout
        count = 0
        while any(self._position(p) < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise ControlCatchUpError(
                    f"control topic not read to its end within {timeout:.0f} s",
                    hint="check the broker; the worker decides nothing before it has caught up",
                )
            count += self.poll(timeout=0.5)
        return count

    def sync(self, timeout: float = 5.0) -> int:
        """Apply every command published before now (one watermark query per partition).

        The worker calls this before each batch of intents, so a command whose publish
        was acknowledged before an intent was published is in force for that intent.
        """
        count = 0
        deadline = time.monotonic() + timeout
        for tp in self.partitions:
            _, high = self._watermarks.get_watermark_offsets(tp, timeout=timeout, cached=False)
            while self._position(tp.partition) < high:
                if time.monotonic() > deadline:
                    raise ControlCatchUpError(
                        f"control topic not caught up within {timeout:.0f} s",
                        hint="the worker decides nothing it cannot check against current state",
                    )
                # the position moves past commit markers too (checked with librdkafka 2.x)
                count += self.poll(timeout=0.1)
        return count

    def _position(self, partition: int) -> int:
        (tp,) = self.consumer.position([TopicPartition(self.topic, partition)])
        return int(tp.offset) if tp.offset >= 0 else 0

    def poll(self, timeout: float = 0.0, max_records: int = 500) -> int:
        """Apply the commands that have arrived; return how many records were read."""
        first = self.consumer.poll(timeout)  # returns at the first record; consume would not
        if first is None:
            return 0
        messages = [first, *self.consumer.consume(max_records - 1, timeout=0)]
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("control consumer: %s", error.str())
                continue
            self._apply(message.value())
        return len(messages)

    def _apply(self, value: bytes | None) -> None:
        now = time.time_ns() // 1_000_000
        if value is None:  # a tombstone: compaction removed the subject
            return
        try:
            record = self.codec.decode(value, "ControlCommand")
        except DecodeError as exc:
            self.refused += 1
            if self.on_result:
                self.on_result(None, None, f"{exc.code}: {exc.reason}")
            return
        try:
            result = self.state.apply(record, now)
        except Exception as exc:  # noqa: BLE001 - a bad command must not stop the worker
            log.exception("control command %s failed", record.get("command_id"))
            self.refused += 1
            if self.on_result:
                self.on_result(record, None, f"internal error: {type(exc).__name__}: {exc}")
            return
        if getattr(result, "applied", False):
            self.applied += 1
            self.last_applied_ms = now
        else:
            self.refused += 1
        if self.on_result:
            self.on_result(record, result, None)

    def close(self) -> None:
        self.consumer.close()
        self._watermarks.close()
