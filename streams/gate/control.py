"""Every gate worker follows the whole ``control`` topic.

The agent registry, the policy bundle, quarantines and kill switches are state that
*every* worker needs in full, whatever intent partitions it owns. So each worker reads
``control`` itself (no consumer group), from offset 0: the topic (one partition, never
compacted, kept for ever) is the durable, replicated history of that state, and a
restarted worker rebuilds it before it decides anything (fail closed: no decisions
before the worker has caught up). Between two intent batches the worker applies what
arrived, so a command takes effect from the next batch on every worker.

Each record is admitted by :meth:`processors.control.ControlState.apply_logged` (key =
subject, no tombstones, signed by a key trusted at the broker's append time, in place
in its signer's history; see :mod:`processors.control.history`) and judged at its
broker append time. A refused record is reported (``on_result``: metric and lineage;
and the log) and changes nothing. A broken history -- a signer's command missing or
forked, records deleted from the start of the log, records without broker append time,
more than one partition -- raises :class:`ControlHistoryError`: a worker refuses to
start on it, and a running worker stops.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, TopicPartition

from processors.control import ControlHistoryError, ControlResult, HistoryProblem, LogEntry
from processors.exceptions import TrustplaneError
from streams import kafka, names
from streams.codec import Codec, DecodeError, default_codec
from streams.config import Settings

__all__ = [
    "ControlFollower",
    "ControlApplier",
    "ControlCatchUpError",
    "ControlHistoryError",
    "applied_commands",
]

log = logging.getLogger(__name__)

FAILOVER_WAIT_S = 60.0
"""How long a worker waits for the control partition's leader to come back."""

_FOLLOWERS: weakref.WeakValueDictionary[str, ControlFollower] = weakref.WeakValueDictionary()


class ControlCatchUpError(TrustplaneError):
    """The worker could not read the control topic up to its end."""


class ControlApplier(Protocol):
    """What the follower feeds: :class:`processors.control.ControlState`."""

    def apply_logged(self, entry: LogEntry) -> ControlResult: ...

    @property
    def problems(self) -> Sequence[HistoryProblem]: ...

    def latest_applied(self) -> dict[str, dict[str, Any]]: ...


OnResult = Callable[[dict[str, Any] | None, ControlResult | None, str | None], None]


def applied_commands(topic: str) -> dict[str, dict[str, Any]]:
    """The last applied command per subject of the follower of ``topic`` in this process
    (the worker's ``/control`` view); empty when there is none."""
    follower = _FOLLOWERS.get(topic)
    return follower.state.latest_applied() if follower is not None else {}


class ControlFollower:
    def __init__(
        self,
        settings: Settings,
        state: ControlApplier,
        *,
        on_result: OnResult | None = None,
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
            names.control_follower(settings, worker),
            {
                "enable.partition.eof": False,
                # sync() waits for the position to pass the end, which may be a commit
                # marker that only an (otherwise empty) fetch answer moves past: answer fast
                "fetch.wait.max.ms": 10,
            },
        )
        # watermarks come from a client with no fetch in flight: asking the fetching
        # consumer waits behind its long poll (measured: ~10 ms per batch, vs ~0.3 ms)
        self._watermarks = kafka.consumer(settings, names.control_offsets(settings, worker))
        # a topic just created (by this worker, or a sink starting beside it) takes a
        # moment to appear in the metadata
        deadline = time.monotonic() + 30
        while True:
            metadata = self.consumer.list_topics(self.topic, timeout=30)
            topic = metadata.topics.get(self.topic)
            if topic is not None and topic.error is None and topic.partitions:
                break
            if time.monotonic() > deadline:
                self.close()
                raise ControlCatchUpError(
                    f"control topic {self.topic} is missing",
                    hint="the worker creates it at start; check the broker's log",
                )
            time.sleep(0.2)
        self.partitions = [TopicPartition(self.topic, p, 0) for p in sorted(topic.partitions)]
        # from offset 0: a log that no longer starts there lost records (catch_up checks)
        self.consumer.assign([TopicPartition(self.topic, p.partition, 0) for p in self.partitions])
        _FOLLOWERS[self.topic] = self

    def catch_up(self, timeout: float = 60.0) -> int:
        """Apply everything up to the current end of the topic; return the record count.

        Raises :class:`ControlHistoryError` when the history is broken (the worker must
        not start), :class:`ControlCatchUpError` when the end is not reached in time.
        """
        ends = {}
        problems: list[HistoryProblem] = []
        if len(self.partitions) != 1:
            problems.append(
                HistoryProblem(
                    "partitions",
                    f"{self.topic} has {len(self.partitions)} partitions: commands in "
                    "different partitions have no order",
                )
            )
        for tp in self.partitions:
            low, high = kafka.watermark_offsets(self.consumer, tp, timeout=timeout)
            ends[tp.partition] = high
            if low > 0:
                problems.append(
                    HistoryProblem(
                        "truncated",
                        f"{self.topic} [{tp.partition}] starts at offset {low}: records "
                        f"0-{low - 1} were deleted",
                        offset=low,
                    )
                )
        if problems:
            self._fail(problems)
        deadline = time.monotonic() + timeout
        count = 0
        while any(self._position(p) < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise ControlCatchUpError(
                    f"control topic not read to its end within {timeout:.0f} s",
                    hint="check the broker; the worker decides nothing before it has caught up",
                )
            # short: the end may be a commit marker, past which no record returns the poll
            count += self.poll(timeout=0.05)
        self._check()
        return count

    def sync(self, timeout: float = 5.0) -> int:
        """Apply every command published before now (one watermark query per partition).

        The worker calls this before each batch of intents, so a command whose publish
        was acknowledged before an intent was published is in force for that intent.
        Raises :class:`ControlHistoryError` when the history breaks.
        """
        count = 0
        for tp in self.partitions:
            # while a broker fails over, the partition has no leader for some seconds: wait
            # for the new one (deciding nothing meanwhile) rather than stop the worker
            _, high = kafka.watermark_offsets(
                self._watermarks, tp, timeout=max(timeout, FAILOVER_WAIT_S)
            )
            deadline = time.monotonic() + timeout
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
        """Apply the commands that have arrived; return how many records were read.
        Raises :class:`ControlHistoryError` when the history breaks."""
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
            self._apply(message)
        self._check()
        return len(messages)

    def _entry(self, message: Message) -> LogEntry:
        value = message.value()
        timestamp_type, timestamp_ms = message.timestamp()
        fields: dict[str, Any] = {
            "offset": int(message.offset() or 0),
            "key": message.key(),
            "record": None,
            "timestamp_type": int(timestamp_type),
            "timestamp_ms": int(timestamp_ms),
        }
        if value is None:
            return LogEntry(**fields, tombstone=True)
        try:
            fields["record"] = self.codec.decode(value, "ControlCommand")
        except DecodeError as exc:
            return LogEntry(**fields, decode_error=f"{exc.code}: {exc.reason}")
        return LogEntry(**fields)

    def _apply(self, message: Message) -> None:
        entry = self._entry(message)
        try:
            result = self.state.apply_logged(entry)
        except Exception as exc:  # noqa: BLE001 - a bad command must not stop the worker
            log.exception("control record at offset %d failed", entry.offset)
            self.refused += 1
            if self.on_result:
                reason = f"internal error: {type(exc).__name__}: {exc}"
                self.on_result(_reported(entry), None, reason)
            return
        if result.applied:
            self.applied += 1
            self.last_applied_ms = entry.timestamp_ms
        else:
            self.refused += 1
            log.warning(
                "control record at offset %d (key %r) refused: %s",
                entry.offset,
                entry.key,
                result.reason,
            )
        if self.on_result:
            self.on_result(_reported(entry), result, None)

    def _check(self) -> None:
        if self.state.problems:
            self._fail(list(self.state.problems))

    def _fail(self, problems: list[HistoryProblem]) -> None:
        error = ControlHistoryError(problems, topic=self.topic)
        log.error("%s", error.diagnostics())
        raise error

    def close(self) -> None:
        self.consumer.close()
        self._watermarks.close()


def _reported(entry: LogEntry) -> dict[str, Any]:
    """The record as reported to ``on_result``: the command, or for a record that is not
    one, a stand-in naming it by its place (kind ``tombstone`` / ``undecodable``)."""
    if entry.record is not None:
        return dict(entry.record)
    key = entry.key.decode("utf-8", errors="replace") if entry.key is not None else ""
    return {
        "command_id": f"control@{entry.offset}",
        "kind": "tombstone" if entry.tombstone else "undecodable",
        "subject": key,
        "issued_by": "",
        "key_id": "",
        "issued_at_ms": entry.timestamp_ms,
    }
