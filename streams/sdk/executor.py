"""The executor's SDK: consume ``approved``, verify, mark used, act, report the outcome.

One import::

    from streams.sdk.executor import (ApprovalConsumer, ClientConfig, Keyset,
                                      OutcomeReporter, SqliteSeenStore, VerifiedApproval)

    config = ClientConfig.load()                       # TRUSTPLANE_BOOTSTRAP_SERVERS, ...
    keyset = Keyset.from_file(Path("approvals.jwks.json"))  # the gate's published JWKS
    with ApprovalConsumer(config, keyset, SqliteSeenStore("seen.db")) as approvals, \
            OutcomeReporter(config) as outcomes:
        for result in approvals:
            if isinstance(result, VerifiedApproval):   # anything else: do not act
                outcomes.report(result, "EXECUTED", run(result), "my-executor")

This module holds public keys only: it imports neither the gate's signer nor its keyring.

An executor trusts nothing in an Approval record but its signed DSSE envelope. For each
record on ``approved`` (read with ``isolation.level=read_committed``) it

1. claims the record for its executor group: commits the record's offset, synchronously
   (see "Single use" below);
2. decodes the Avro Approval record;
3. verifies the envelope with :func:`processors.approval.verify.verify_approval` against the
   gate's published keyset (signature, statement, expiry, and, if the record carries
   the intent bytes, the intent digest);
4. checks that the record's plain fields (ids, action, resource, digest, expiry, Kafka
   key) say what the signed statement says;
5. claims the approval in its single-use store (last, so only a valid approval is used up);

and only then acts, and reports an Outcome (``schemas/outcome.avsc``) to ``outcomes``,
keyed by agent id. Invalid approvals are logged and skipped; nothing is reported for
them (an execution reported without a valid approval raises an alert downstream).

Single use
----------
The executors of one deployment share one consumer group (``group_id``, by default
``trustplane.executor``; on a secured cluster the broker lets the executor principal use
that group only). For each record, :class:`ApprovalConsumer`

* commits the record's offset to the group, synchronously, *before* it verifies the
  record and hands it out; a record whose commit failed is handed out as a
  :class:`VerificationFailure` (:class:`GroupClaimError`), never as an approval;
* commits nothing unless it is a member of the group in a generation (a member id, a
  generation >= 0): a commit without them is a group-less one, which the coordinator
  accepts whenever the group has no members, and which could move the offsets back;
* after a failed commit, seeks the records it has not handed out back and returns to
  ``consume()``: if it still owns their partition it reads them again, if not the
  partition's next owner does.

Why that suffices (the classic group protocol, which the consumer is pinned to): the group
coordinator accepts a commit only from a current member in the current generation
(otherwise ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS or
FENCED_INSTANCE_ID). A partition reaches another member only after its owner gave it up,
on its next ``consume()`` (librdkafka serves revocations there), or was removed from or
replaced in the group, which refuses its commits from then on; the new owner starts at the
committed offset (a ``read_committed`` consumer fetches stable offsets: it waits for a
commit still being written). The local single-use store (durable:
:class:`~processors.approval.seen.SqliteSeenStore`) also refuses what this host claimed
before.

Guaranteed: within one executor group, an approval record is handed out as a
:class:`VerifiedApproval` by at most one executor, at most once, also across rebalances,
restarts and crashes (``tests/integration/test_single_use.py``). At most once, not exactly
once: an executor that stops after the commit and before it acts loses that action (it
must be requested again), and so does one that cannot learn whether its commit succeeded
(a timeout counts as a failure).

The remaining window:

* Different groups. Each group is its own single-use domain: two deployments under two
  group ids each execute every approval. The broker's ACLs let the executor principal
  join one group only, but Kafka authorizes a Fetch by the topic alone, so a process
  holding the executor's credentials can still read ``approved`` without any group (with
  ``assign()``). An executor is trusted with its credentials; where that is not enough,
  the system that carries out the action must refuse a second use of the approval id.
* Offsets moved back. Whoever may READ the group (the executor principal, an operator's
  ``kafka-consumer-groups --reset-offsets``) can rewind the offsets of a group without
  members; a record read again is refused by a host's durable store if that host claimed
  it, and by every executor once the approval expired (``approval_ttl_ms``, 5 minutes by
  default). The same holds when the committed offsets of a memberless group expire
  (``offsets.retention.minutes``, 7 days): reading restarts at ``earliest``, where only
  expired approvals are left.
* The membership check and the commit are two consecutive operations on librdkafka's group
  thread; a membership lost between them is noticed after the commit and the record is
  not handed out, but the commit has then gone out as a group-less one and is accepted
  if, at that moment, the group has no members at all.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processors.approval.exceptions import ApprovalVerificationError
from processors.approval.seen import InMemorySeenStore, SeenStore, SqliteSeenStore
from processors.approval.verify import (
    DEFAULT_MAX_SKEW_MS,
    VerifiedApproval,
    claim_once,
    verify_approval,
)
from processors.crypto.keys import KeyEntry, Keyset
from processors.records import derived_id
from streams import kafka, names
from streams.codec import Codec, DecodeError, EncodeError, default_codec
from streams.sdk.config import ClientConfig, Endpoint
from streams.sdk.publish import ProducerLike, Publisher, PublishError
from streams.topics import MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from streams.config import Settings

__all__ = [
    # configuration and keys
    "ClientConfig",
    "Keyset",
    # consuming and verifying
    "ApprovalConsumer",
    "ApprovalResult",
    "VerificationFailure",
    "VerifiedApproval",
    "verify_approval_record",
    "verify_approval",
    "claim_once",
    "SeenStore",
    "InMemorySeenStore",
    "SqliteSeenStore",
    "ApprovalVerificationError",
    "ApprovalRecordError",
    "GroupClaimError",
    "DEFAULT_EXECUTOR_GROUP",
    # reporting
    "OutcomeReporter",
    "OutcomeReportError",
    "outcome_record",
    "report_outcome",
    # the example executor
    "ExecutorSummary",
    "run_example_executor",
]

log = logging.getLogger(__name__)

OutcomeStatus = Literal["EXECUTED", "FAILED"]
DEFAULT_EXECUTOR_GROUP = names.DEFAULT_EXECUTOR_GROUP  # stands for <root>.executor


class ApprovalRecordError(ApprovalVerificationError):
    """The record on ``approved`` is not an Approval, or its plain fields disagree with
    its signed statement."""


class GroupClaimError(ApprovalVerificationError):
    """The record could not be claimed for the executor group (its offset commit failed,
    or this consumer is not a member of the group): it must not be acted on here. If the
    partition moved to another executor of the group, that one receives the record."""


class OutcomeReportError(PublishError):
    """An outcome could not be built or delivered to Kafka."""


@dataclass(frozen=True)
class VerificationFailure:
    """A record on ``approved`` that must not be acted on, and why."""

    error: ApprovalVerificationError
    key: bytes | None = None
    partition: int = -1
    offset: int = -1
    claimed_approval_id: str | None = None
    """The approval id the (unverified) record claims, for logs only."""

    @property
    def reason(self) -> str:
        return f"{type(self.error).__name__}: {self.error.reason}"


ApprovalResult = VerifiedApproval | VerificationFailure


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- one record ---------------------------------------------------------------------------


def verify_approval_record(
    key: bytes | None,
    value: bytes | None,
    keyset: Mapping[str, KeyEntry],
    now_ms: int,
    seen: SeenStore | None = None,
    *,
    codec: Codec | None = None,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
) -> VerifiedApproval:
    """Verify one record value read from ``approved``; return the approval or raise an
    :class:`ApprovalVerificationError`. Kafka-free: the consumer calls this per record."""
    codec = codec or default_codec()
    try:
        record = codec.decode(value or b"", "Approval", max_bytes=MAX_MESSAGE_BYTES)
    except DecodeError as exc:
        raise ApprovalRecordError(
            f"not an Approval record ({exc.code}): {exc.reason}",
            hint="only gate workers may write the approved topic (Kafka ACLs)",
        ) from exc
    # A record written with a later schema may carry the intent bytes: then step 6 runs.
    intent = record.get("intent")
    approval = verify_approval(
        record["envelope"],
        keyset,
        now_ms,
        intent if isinstance(intent, bytes) else None,
        None,
        max_skew_ms=max_skew_ms,
    )
    signed = {
        "approval_id": approval.approval_id,
        "intent_id": approval.intent_id,
        "agent_id": approval.agent_id,
        "action": approval.action,
        "resource": approval.resource,
        "intent_digest": approval.intent_digest,
        "expires_at_ms": approval.expires_at_ms,
    }
    differing = [name for name, signed_value in signed.items() if record.get(name) != signed_value]
    if differing:
        raise ApprovalRecordError(
            f"the record's {', '.join(differing)} {'differs' if len(differing) == 1 else 'differ'} "
            "from its signed statement",
            hint="act only on the signed statement; the record was altered or is forged",
        )
    if key != approval.agent_id.encode():
        raise ApprovalRecordError(
            f"the record key {key[:64] if key else key!r} is not the approved agent id "
            f"{approval.agent_id!r}"
        )
    if seen is not None:
        claim_once(seen, approval)
    return approval


# --- consuming ----------------------------------------------------------------------------


class _Message(Protocol):
    def error(self) -> Any: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


class _Consumer(Protocol):
    def subscribe(self, topics: list[str]) -> None: ...
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]: ...
    def commit(self, *, message: Any, asynchronous: Literal[False]) -> list[TopicPartition]: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def memberid(self) -> str | None: ...
    def consumer_group_metadata(self) -> Any: ...
    def assignment(self) -> list[TopicPartition]: ...
    def unsubscribe(self) -> None: ...
    def poll(self, timeout: float = -1) -> Any: ...
    def close(self) -> None: ...


# Commit errors that no retry cures: the executor cannot work, stop it (raise). A fenced
# static member (another process took its group.instance.id) is fatal in librdkafka.
_FATAL_COMMIT_ERRORS = frozenset(
    {
        KafkaError._FATAL,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    }
)
_MAX_COMMIT_BACKOFF_S = 2.0

# librdkafka's serialized consumer group metadata: b"CGMDv2:", the generation id (int32,
# host byte order), then the group id, member id and group instance id.
_CGMD_MAGIC = b"CGMDv2:"


def _generation(metadata: Any) -> int | None:
    """The group generation in ``consumer_group_metadata()``, None if it cannot be read."""
    if isinstance(metadata, bytes) and metadata.startswith(_CGMD_MAGIC):
        raw = metadata[len(_CGMD_MAGIC) : len(_CGMD_MAGIC) + 4]
        if len(raw) == 4:
            return int.from_bytes(raw, sys.byteorder, signed=True)
    return None


def _membership(consumer: _Consumer) -> tuple[str, int | None] | None:
    """(member id, generation) of the consumer in its group, or None when it is not a
    member in a generation: then a commit would go out as a group-less one."""
    try:
        member = consumer.memberid()
        generation = _generation(consumer.consumer_group_metadata())
    except (KafkaException, RuntimeError):
        return None
    if not member or (generation is not None and generation < 0):
        return None
    return member, generation


class ApprovalConsumer:
    """Read ``approved`` (read_committed) and yield a :class:`VerifiedApproval` for each
    valid approval, a :class:`VerificationFailure` for anything else.

    Each record's offset is committed to ``group_id`` synchronously before the record is
    verified and yielded; a record whose commit failed is yielded as a failure
    (:class:`GroupClaimError`), never as an approval (see "Single use" in the module
    docstring). ``keyset`` may be replaced at any time (``consumer.keyset = refreshed``).
    """

    def __init__(
        self,
        config: Endpoint,
        keyset: Mapping[str, KeyEntry],
        seen: SeenStore | None,
        *,
        group_id: str = DEFAULT_EXECUTOR_GROUP,
        codec: Codec | None = None,
        clock: Callable[[], int] = _now_ms,
        max_skew_ms: int | None = None,
        consumer: _Consumer | None = None,
    ) -> None:
        self.keyset = keyset
        self.seen = seen
        self.codec = codec or default_codec()
        self.clock = clock
        # the server Settings carry the estate's skew; a ClientConfig has the default
        self.max_skew_ms = (
            max_skew_ms
            if max_skew_ms is not None
            else int(getattr(config, "max_clock_skew_ms", DEFAULT_MAX_SKEW_MS))
        )
        self.topic = config.topic("approved")
        self.group_id = names.executor_group(config, group_id)
        self._stop = threading.Event()
        self.consumer: _Consumer = consumer or kafka.consumer(
            config,
            self.group_id,
            {
                # each record is committed by hand, synchronously, before it is handed out;
                # "Single use" above holds for the classic group protocol
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "group.protocol": "classic",
                "auto.offset.reset": "earliest",
                "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024,
                "fetch.max.bytes": MAX_MESSAGE_BYTES * 2,
            },
        )
        self.consumer.subscribe([self.topic])

    def stop(self) -> None:
        self._stop.set()

    def check(self, message: _Message) -> ApprovalResult:
        """Verify one consumed message and claim it in the single-use store (never raises
        for bad input). It commits nothing: :meth:`read` claims the record for the group
        first."""
        key = message.key()
        value = message.value()
        try:
            return verify_approval_record(
                key,
                value,
                self.keyset,
                self.clock(),
                self.seen,
                codec=self.codec,
                max_skew_ms=self.max_skew_ms,
            )
        except ApprovalVerificationError as exc:
            return self._failure(exc, message)

    def read(self, idle_s: float | None = None, *, batch: int = 100) -> Iterator[ApprovalResult]:
        """Yield results until :meth:`stop`, or ``idle_s`` seconds pass without records
        (None: no idle limit). Each record's offset is committed (synchronously) before
        its result is yielded; after a failed commit the rest of the batch is read again
        from the broker (by this executor if it still owns the partition)."""
        idle_since = time.monotonic()
        failed_commits = 0
        while not self._stop.is_set():
            if failed_commits:  # commits keep failing: give the group time to settle
                self._stop.wait(min(0.05 * 2**failed_commits, _MAX_COMMIT_BACKOFF_S))
            poll = 0.5 if idle_s is None else max(0.0, min(0.5, idle_s))
            messages = self.consumer.consume(batch, timeout=poll)
            if not messages:
                if idle_s is not None and time.monotonic() - idle_since >= idle_s:
                    return
                continue
            idle_since = time.monotonic()
            for index, message in enumerate(messages):
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer: %s", error.str())
                    continue
                refused = self._claim_for_group(message)
                if refused is not None:
                    # not handed out: back to consume(), where a rebalance is served
                    failed_commits += 1
                    self._rewind(messages[index:])
                    yield self._failure(refused, message)
                    break
                failed_commits = 0
                yield self.check(message)
                if self._stop.is_set():
                    return

    def _claim_for_group(self, message: _Message) -> GroupClaimError | None:
        """Commit ``message``'s offset to the executor group, synchronously; None if the
        group accepted it, else why the record must not be acted on here.

        Raises KafkaException when no retry can succeed (fatal, fenced, not authorized)."""
        where = f"{self.topic} [{message.partition()}] @ {message.offset()}"
        before = _membership(self.consumer)
        if before is None:
            return GroupClaimError(
                f"not committing {where}: this executor is not a member of group "
                f"{self.group_id!r} now (it left or was removed, e.g. after "
                "max.poll.interval.ms); the partition's owner in the group receives the record",
                hint="keep each action shorter than max.poll.interval.ms",
            )
        try:
            committed = self.consumer.commit(message=message, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is not None and (error.fatal() or error.code() in _FATAL_COMMIT_ERRORS):
                raise
            return _commit_refused(where, self.group_id, error.name() if error else str(exc))
        except RuntimeError as exc:  # closed
            return _commit_refused(where, self.group_id, str(exc))
        if committed is None:
            return _commit_refused(where, self.group_id, "the commit returned no result")
        for partition in committed:
            if partition.error is not None:
                return _commit_refused(where, self.group_id, partition.error.name())
        if _membership(self.consumer) != before:
            # lost between the check and the commit: it may have gone out group-less
            return _commit_refused(where, self.group_id, "the group membership changed")
        return None

    def _rewind(self, pending: Sequence[_Message]) -> None:
        """Seek each partition of ``pending`` (records not handed out) back to its first
        record. If this executor still owns the partition it reads them again; if not,
        the seek fails or the revocation drops it, and the next owner starts at the
        committed offset."""
        first: dict[int, int] = {}
        for message in pending:
            partition, offset = message.partition(), message.offset()
            if message.error() is None and partition is not None and offset is not None:
                first.setdefault(partition, offset)
        for partition, offset in first.items():
            try:
                self.consumer.seek(TopicPartition(self.topic, partition, offset))
            except (KafkaException, RuntimeError) as exc:  # revoked, or closed
                log.debug("not rewinding %s [%s] to %s: %s", self.topic, partition, offset, exc)

    def _failure(self, error: ApprovalVerificationError, message: _Message) -> VerificationFailure:
        return VerificationFailure(
            error,
            message.key(),
            message.partition() or 0,
            message.offset() or 0,
            _claimed_id(self.codec, message.value()),
        )

    def __iter__(self) -> Iterator[ApprovalResult]:
        return self.read()

    def close(self) -> None:
        kafka.close_consumer(self.consumer)

    def __enter__(self) -> ApprovalConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _commit_refused(where: str, group_id: str, why: str) -> GroupClaimError:
    return GroupClaimError(
        f"offset commit of {where} to group {group_id!r} failed ({why}): this executor may "
        "no longer own the partition; the record is not acted on here",
        hint="a rebalance moves partitions between executors; the owner receives the record",
    )


def _claimed_id(codec: Codec, value: bytes | None) -> str | None:
    try:
        return str(codec.decode(value or b"", "Approval")["approval_id"])
    except (DecodeError, KeyError):
        return None


# --- reporting ----------------------------------------------------------------------------


def outcome_record(
    approval: VerifiedApproval,
    status: OutcomeStatus,
    detail: str,
    executor_id: str,
    *,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """The Outcome record (``schemas/outcome.avsc``); its id derives from the approval
    and the executor, so reporting the same execution twice yields the same id."""
    if status not in ("EXECUTED", "FAILED"):
        raise OutcomeReportError(f"status must be EXECUTED or FAILED, got {status!r}")
    if not executor_id:
        raise OutcomeReportError("executor_id must be a non-empty string")
    return {
        "outcome_id": derived_id("outcome", approval.approval_id, executor_id),
        "approval_id": approval.approval_id,
        "intent_id": approval.intent_id,
        "agent_id": approval.agent_id,
        "executor_id": executor_id,
        "status": status,
        "detail": detail,
        "reported_at_ms": now_ms if now_ms is not None else _now_ms(),
    }


class OutcomeReporter:
    """Produce Outcome records to ``outcomes``, keyed by agent id (idempotent producer).

    ``flush()`` (also on leaving a ``with`` block) waits for delivery and raises
    :class:`OutcomeReportError` if an outcome did not reach the broker.
    """

    def __init__(
        self,
        config: Endpoint,
        *,
        codec: Codec | None = None,
        producer: ProducerLike | None = None,
    ) -> None:
        self.codec = codec or default_codec()
        self.topic = config.topic("outcomes")
        self.producer: ProducerLike = producer or kafka.producer(config, {"linger.ms": 5})
        self._publisher = Publisher(
            self.producer,
            what="outcomes",
            error=OutcomeReportError,
            hint="check the broker (`trustplane kafka status`) and that the outcomes "
            "topic exists and this executor may write it",
        )

    def report(
        self,
        approval: VerifiedApproval,
        status: OutcomeStatus,
        detail: str,
        executor_id: str,
        *,
        now_ms: int | None = None,
    ) -> dict[str, Any]:
        """Queue the Outcome of ``approval``; return the record (delivered by ``flush``)."""
        record = outcome_record(approval, status, detail, executor_id, now_ms=now_ms)
        try:
            value = self.codec.encode("Outcome", record)
        except EncodeError as exc:
            raise OutcomeReportError(f"cannot encode the outcome: {exc.reason}") from exc
        self._publisher.send(self.topic, approval.agent_id.encode(), value)
        return record

    def flush(self, timeout: float = 30.0) -> None:
        self._publisher.flush(timeout)

    def __enter__(self) -> OutcomeReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def report_outcome(
    config: Endpoint,
    approval: VerifiedApproval,
    status: OutcomeStatus,
    detail: str,
    executor_id: str,
    *,
    reporter: OutcomeReporter | None = None,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Report what became of ``approval``; return the Outcome record sent.

    Without ``reporter`` a producer is made, flushed (delivery confirmed or
    OutcomeReportError) and dropped: fine for one report, use an OutcomeReporter for many.
    """
    if reporter is not None:
        return reporter.report(approval, status, detail, executor_id, now_ms=now_ms)
    with OutcomeReporter(config) as own:
        return own.report(approval, status, detail, executor_id, now_ms=now_ms)


# --- the example executor -----------------------------------------------------------------


@dataclass
class ExecutorSummary:
    executed: int = 0
    failed: int = 0
    refused: int = 0
    refusals: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return self.executed + self.failed + self.refused


def _log_execution(approval: VerifiedApproval) -> str:
    log.info(
        "executing %s on %s for %s (approval %s, intent %s, key %s)",
        approval.action,
        approval.resource,
        approval.agent_id,
        approval.approval_id,
        approval.intent_id,
        approval.keyid,
    )
    return f"example executor: {approval.action} on {approval.resource} logged"


def run_example_executor(
    settings: Settings,
    keyset: Mapping[str, KeyEntry],
    *,
    max_records: int | None = None,
    idle_s: float | None = None,
    executor_id: str | None = None,
    seen: SeenStore | None = None,
    execute: Callable[[VerifiedApproval], str] = _log_execution,
    consumer: ApprovalConsumer | None = None,
    reporter: OutcomeReporter | None = None,
    group_id: str = DEFAULT_EXECUTOR_GROUP,
) -> ExecutorSummary:
    """Consume ``approved``, verify each approval, "execute" it (log it, or ``execute``),
    and report EXECUTED or FAILED; log and skip invalid ones, reporting nothing.

    Stops after ``max_records`` records (valid or not) or ``idle_s`` idle seconds (None:
    never). The single-use store defaults to ``<state_dir>/executor/<executor_id>.db``;
    the executors of one deployment share ``group_id`` (see "Single use" above).
    """
    executor_id = executor_id or f"example-{settings.resolved_worker_id()}"
    own_seen = seen is None
    store: SeenStore = (
        seen
        if seen is not None
        else SqliteSeenStore(Path(settings.state_dir) / "executor" / f"{executor_id}.db")
    )
    own_consumer = consumer is None
    source = consumer or ApprovalConsumer(settings, keyset, store, group_id=group_id)
    own_reporter = reporter is None
    sink = reporter or OutcomeReporter(settings)
    summary = ExecutorSummary()
    try:
        if max_records is not None and max_records <= 0:
            return summary
        for result in source.read(idle_s=idle_s):
            if isinstance(result, VerificationFailure):
                summary.refused += 1
                summary.refusals.append(result.reason)
                log.warning(
                    "refusing record %s@%s (claims approval %s): %s",
                    result.partition,
                    result.offset,
                    result.claimed_approval_id,
                    result.reason,
                )
            else:
                try:
                    detail = execute(result)
                except Exception as exc:  # noqa: BLE001 - an action failing is an outcome
                    log.warning("approval %s failed: %s", result.approval_id, exc)
                    sink.report(result, "FAILED", f"{type(exc).__name__}: {exc}", executor_id)
                    summary.failed += 1
                else:
                    sink.report(result, "EXECUTED", detail, executor_id)
                    summary.executed += 1
            if max_records is not None and summary.records >= max_records:
                break
        sink.flush()
    finally:
        if own_consumer:
            source.close()
        if own_reporter:
            sink.producer.flush(10)
        if own_seen and isinstance(store, SqliteSeenStore):
            store.close()
    log.info(
        "example executor %s: %d executed, %d failed, %d refused",
        executor_id,
        summary.executed,
        summary.failed,
        summary.refused,
    )
    return summary
