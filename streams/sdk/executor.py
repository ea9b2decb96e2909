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

1. decodes the Avro Approval record;
2. verifies the envelope with :func:`processors.approval.verify.verify_approval` against the
   gate's published keyset (signature, statement, expiry, and, if the record carries
   the intent bytes, the intent digest);
3. checks that the record's plain fields (ids, action, resource, digest, expiry, Kafka
   key) say what the signed statement says;
4. claims the approval in a single-use store (last, so only a valid approval is used up);

and only then acts, and reports an Outcome (``schemas/outcome.avsc``) to ``outcomes``,
keyed by agent id. Invalid approvals are logged and skipped; nothing is reported for
them (an execution reported without a valid approval raises an alert downstream).

Offsets are stored after the caller has handled a yielded result, and committed by
the consumer; a crash redelivers the records in flight, and the single-use store
(durable: :class:`~processors.approval.seen.SqliteSeenStore`) refuses those already claimed.
So an approval is executed at most once; one claimed but not executed before a crash
is not retried (its reuse is refused), it must be re-requested.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from confluent_kafka import KafkaError, KafkaException

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
from streams import kafka
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
DEFAULT_EXECUTOR_GROUP = "trustplane-executor"


class ApprovalRecordError(ApprovalVerificationError):
    """The record on ``approved`` is not an Approval, or its plain fields disagree with
    its signed statement."""


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
    def store_offsets(self, message: Any = None) -> None: ...
    def close(self) -> None: ...


class ApprovalConsumer:
    """Read ``approved`` (read_committed) and yield a :class:`VerifiedApproval` for each
    valid approval, a :class:`VerificationFailure` for anything else.

    ``keyset`` may be replaced at any time (``consumer.keyset = refreshed``).
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
        self._stop = threading.Event()
        self.consumer: _Consumer = consumer or kafka.consumer(
            config,
            group_id,
            {
                # offsets are stored by hand once a result was handled, committed by librdkafka
                "enable.auto.commit": True,
                "auto.offset.reset": "earliest",
                "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024,
                "fetch.max.bytes": MAX_MESSAGE_BYTES * 2,
            },
        )
        self.consumer.subscribe([self.topic])

    def stop(self) -> None:
        self._stop.set()

    def check(self, message: _Message) -> ApprovalResult:
        """Verify one consumed message (never raises for bad input)."""
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
            return VerificationFailure(
                exc,
                key,
                message.partition() or 0,
                message.offset() or 0,
                _claimed_id(self.codec, value),
            )

    def read(self, idle_s: float | None = None, *, batch: int = 100) -> Iterator[ApprovalResult]:
        """Yield results until :meth:`stop`, or ``idle_s`` seconds pass without records
        (None: no idle limit). A record's offset is stored once the caller asks for the
        next result, i.e. after it handled this one."""
        idle_since = time.monotonic()
        while not self._stop.is_set():
            poll = 0.5 if idle_s is None else max(0.0, min(0.5, idle_s))
            messages = self.consumer.consume(batch, timeout=poll)
            if not messages:
                if idle_s is not None and time.monotonic() - idle_since >= idle_s:
                    return
                continue
            idle_since = time.monotonic()
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer: %s", error.str())
                    continue
                try:
                    yield self.check(message)
                finally:  # also when the caller stops iterating after handling it
                    self._store(message)
                if self._stop.is_set():
                    return

    def _store(self, message: Any) -> None:
        try:
            self.consumer.store_offsets(message=message)
        except (KafkaException, RuntimeError) as exc:  # closed, or partition revoked
            log.debug("offset of %s@%s not stored: %s", message.partition(), message.offset(), exc)

    def __iter__(self) -> Iterator[ApprovalResult]:
        return self.read()

    def close(self) -> None:
        try:
            self.consumer.close()
        except RuntimeError:
            pass  # already closed

    def __enter__(self) -> ApprovalConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
) -> ExecutorSummary:
    """Consume ``approved``, verify each approval, "execute" it (log it, or ``execute``),
    and report EXECUTED or FAILED; log and skip invalid ones, reporting nothing.

    Stops after ``max_records`` records (valid or not) or ``idle_s`` idle seconds (None:
    never). The single-use store defaults to ``<state_dir>/executor/<executor_id>.db``.
    """
    executor_id = executor_id or f"example-{settings.resolved_worker_id()}"
    own_seen = seen is None
    store: SeenStore = (
        seen
        if seen is not None
        else SqliteSeenStore(Path(settings.state_dir) / "executor" / f"{executor_id}.db")
    )
    own_consumer = consumer is None
    source = consumer or ApprovalConsumer(settings, keyset, store)
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
