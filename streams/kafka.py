"""The one place Kafka clients are built, and the one transactional loop.

Every producer, consumer and admin client of the project comes from :func:`producer`,
:func:`transactional_producer`, :func:`consumer` or :func:`admin`, given anything with a
``kafka_config()`` (the SDK's :class:`~streams.sdk.config.ClientConfig` or the server
:class:`~streams.config.Settings`): bootstrap servers, credentials (the SASL/SCRAM user
the process runs as) and pass-through librdkafka settings reach every client the same
way. The Faust app gets the same credentials from :func:`faust_credentials`.

An operation the principal's ACLs do not allow fails with one of four broker errors; the
factory's clients remember their principal and names, so :func:`explain_denied` can say
which ACL is missing: TOPIC_AUTHORIZATION_FAILED (29), GROUP_AUTHORIZATION_FAILED (30),
CLUSTER_AUTHORIZATION_FAILED (31: an idempotent producer whose principal may write no
topic) and TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53).

The gate worker, the notary and the lineage sink each run a :class:`TransactionalLoop`:
cut a batch, transform it into records, produce them, and commit them together with the
consumed offsets in one Kafka transaction (KIP-98, KIP-447), or abort, rewind to the
committed offsets and read the batch again. What differs between them are hooks:
``on_batch`` (the transform), ``before_commit`` (the sink writes ClickHouse there),
``on_commit`` and ``on_abort`` (the notary rebuilds its tree there, the worker its
per-agent state).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from processors.exceptions import ConfigError, TrustplaneError
from streams.watchdog import StallWatchdog, exit_stalled

__all__ = [
    "KafkaEndpoint",
    "PlainEndpoint",
    "AUTHORIZATION_ERRORS",
    "explain_denied",
    "explain_client_error",
    "faust_credentials",
    "producer",
    "transactional_producer",
    "consumer",
    "admin",
    "start_transactions",
    "rewind_to_committed",
    "watermark_offsets",
    "GroupMember",
    "close_consumer",
    "close_loop",
    "Record",
    "RetryBatch",
    "BatchPolicy",
    "FirstThenReady",
    "FillWithin",
    "UpToDeadline",
    "TransactionalLoop",
]

log = logging.getLogger(__name__)

Overrides = Mapping[str, str | int | float | bool]


# -- clients ------------------------------------------------------------------------


class KafkaEndpoint(Protocol):
    """Where a client connects and how it authenticates."""

    def kafka_config(self) -> dict[str, str | int | float | bool]: ...


@dataclass(frozen=True)
class PlainEndpoint:
    """A broker reached without authentication (the local development broker)."""

    bootstrap_servers: str

    def kafka_config(self) -> dict[str, str | int | float | bool]:
        return {"bootstrap.servers": self.bootstrap_servers}


AUTHORIZATION_ERRORS = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "TOPIC",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "GROUP",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "CLUSTER",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "TRANSACTIONAL_ID",
}
"""The broker's answers to an operation no ACL allows, by the resource type it lacks."""


class _Producer(Producer):
    """A producer that remembers who it is, for error messages."""

    principal = ""
    transactional_id = ""


class _Consumer(Consumer):
    """A consumer that remembers who it is, for error messages."""

    principal = ""
    group_id = ""


def _principal(config: Mapping[str, Any]) -> str:
    return str(config.get("sasl.username") or "")


def _who(principal: str) -> str:
    return f"principal User:{principal}" if principal else "this unauthenticated client"


def explain_denied(
    error: KafkaError | KafkaException | None,
    *,
    principal: str = "",
    group: str = "",
    transactional_id: str = "",
    topic: str = "",
) -> str | None:
    """Which ACL an authorization error says is missing (None for any other error)."""
    if isinstance(error, KafkaException):
        error = error.args[0] if error.args and isinstance(error.args[0], KafkaError) else None
    if error is None or error.code() not in AUTHORIZATION_ERRORS:
        return None
    who = _who(principal)
    fix = "grant it (`trustplane kafka provision` grants each role its ACLs)"
    code = error.code()
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        what = f"topic {topic}" if topic else "a topic this client uses"
        return (
            f"{who} lacks a TOPIC ACL on {what} (READ to consume, WRITE to produce, "
            f"CREATE to create it): {error.str()}; {fix}"
        )
    if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        what = f"consumer group {group}" if group else "its consumer group"
        return f"{who} lacks GROUP READ on {what}: {error.str()}; {fix}"
    if code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
        what = f"transactional id {transactional_id}" if transactional_id else "its id"
        return f"{who} lacks TRANSACTIONAL_ID WRITE on {what}: {error.str()}; {fix}"
    return (
        f"{who} may not do this on the cluster (CLUSTER_AUTHORIZATION_FAILED): "
        f"{error.str()}. An idempotent producer needs WRITE on some topic; a principal "
        "that writes none (streams/acls.py) cannot produce"
    )


def producer(endpoint: KafkaEndpoint, overrides: Overrides | None = None) -> Producer:
    """An idempotent producer with ``acks=all``: the leader acknowledges a record once
    every in-sync replica has it (at least the topic's ``min.insync.replicas``), so losing
    a broker loses nothing acknowledged. ``overrides`` are librdkafka settings; a lower
    ``acks``, from them or from the endpoint, is refused."""
    config = {**endpoint.kafka_config(), "enable.idempotence": True, **(overrides or {})}
    acks = config.setdefault("acks", "all")
    if str(acks).lower() not in ("all", "-1"):
        raise ConfigError(
            f"a producer with acks={acks} may lose acknowledged records when a broker fails",
            hint="remove the acks setting (TRUSTPLANE_KAFKA_ACKS, [trustplane.kafka] acks): "
            "every producer of the project writes with acks=all",
        )
    principal = _principal(config)
    built = _Producer(config)
    built.principal = principal
    built.transactional_id = str(config.get("transactional.id") or "")
    return built


def transactional_producer(
    endpoint: KafkaEndpoint, transactional_id: str, overrides: Overrides | None = None
) -> Producer:
    """A producer for one consume→produce loop; the id fences a predecessor with the same id."""
    return producer(endpoint, {"transactional.id": transactional_id, **(overrides or {})})


def consumer(
    endpoint: KafkaEndpoint, group_id: str, overrides: Overrides | None = None
) -> Consumer:
    """A ``read_committed`` consumer that commits nothing by itself."""
    config = {
        **endpoint.kafka_config(),
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        **(overrides or {}),
    }
    built = _Consumer(config)
    built.principal = _principal(config)
    built.group_id = group_id
    return built


LOOP_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""The largest record a loop reads or writes (the topics' ``max.message.bytes``)."""


def loop_consumer(
    endpoint: KafkaEndpoint,
    group_id: str,
    member: str,
    client_id: str,
    overrides: Overrides | None = None,
) -> Consumer:
    """The consumer of a transactional loop: a static group member (a restart under the
    same ``member`` takes its partitions back at once), from the earliest offset."""
    return consumer(
        endpoint,
        group_id,
        {
            "group.instance.id": member,
            "client.id": client_id,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "max.partition.fetch.bytes": LOOP_MAX_MESSAGE_BYTES + 1024,
            "fetch.max.bytes": LOOP_MAX_MESSAGE_BYTES * 2,
            **(overrides or {}),
        },
    )


LOOP_PRODUCER_TUNING: dict[str, Any] = {
    "transaction.timeout.ms": 30000,
    "linger.ms": 2,
    "retry.backoff.ms": 2,
    "retry.backoff.max.ms": 1000,
    "message.max.bytes": LOOP_MAX_MESSAGE_BYTES + 1024,
    "compression.type": "lz4",
}
"""The transactional producer settings of every loop (the benchmark's raw loop too)."""


def loop_producer(
    endpoint: KafkaEndpoint,
    transactional_id: str,
    client_id: str,
    overrides: Overrides | None = None,
) -> Producer:
    """The transactional producer of a loop (lz4, 30 s transactions, 2 ms linger).

    ``retry.backoff.ms`` is 2 ms, not librdkafka's 100: right after a commit the
    coordinator is still writing the previous transaction's markers, and the next
    transaction's offset commit is answered CONCURRENT_TRANSACTIONS until it is done
    (a few ms). With the default backoff every transaction then waited 100 ms for its
    retry, which set the end-to-end latency of the whole gate (p50 107 ms in
    ``send_offsets_to_transaction`` alone at 1,000 intents/s). Retries still back off
    exponentially, up to ``retry.backoff.max.ms`` (1 s)."""
    return transactional_producer(
        endpoint,
        transactional_id,
        {"client.id": client_id, **LOOP_PRODUCER_TUNING, **(overrides or {})},
    )


def admin(endpoint: KafkaEndpoint, overrides: Overrides | None = None) -> AdminClient:
    return AdminClient({**endpoint.kafka_config(), **(overrides or {})})


def faust_credentials(endpoint: KafkaEndpoint) -> Any:
    """The endpoint's SASL login for a Faust app (``broker_credentials=``), or None."""
    config = endpoint.kafka_config()
    if not config.get("sasl.username"):
        return None
    import ssl

    import faust  # the gate's dependency, not the SDK's

    protocol = str(config.get("security.protocol", "SASL_PLAINTEXT")).upper()
    return faust.SASLCredentials(
        username=str(config["sasl.username"]),
        password=str(config.get("sasl.password", "")),
        mechanism=str(config.get("sasl.mechanism", "SCRAM-SHA-512")),
        ssl_context=ssl.create_default_context() if protocol == "SASL_SSL" else None,
    )


def explain_client_error(
    client: Producer | Consumer, error: KafkaError | KafkaException | None, topic: str = ""
) -> str | None:
    """:func:`explain_denied` for an error of a client this module built (it knows its
    principal, group and transactional id)."""
    return explain_denied(error, topic=topic, **_describe(client))


def _describe(client: Producer | Consumer) -> dict[str, str]:
    return {
        "principal": str(getattr(client, "principal", "")),
        "group": str(getattr(client, "group_id", "")),
        "transactional_id": str(getattr(client, "transactional_id", "")),
    }


# -- what every loop shares -----------------------------------------------------------


def start_transactions(producer: Producer, error: type[TrustplaneError]) -> None:
    """``init_transactions`` (which also fences and aborts a predecessor's open
    transaction), or ``error`` with what to check."""
    try:
        producer.init_transactions(30)
    except KafkaException as exc:
        denied = explain_client_error(producer, exc)
        if denied is not None:
            raise error(f"cannot start Kafka transactions: {denied}") from exc
        raise error(
            f"cannot start Kafka transactions: {exc}",
            hint="is the broker up and reachable, and are the credentials right? "
            "`trustplane kafka status`",
        ) from exc


CLOSE_REVOKE_WAIT_S = 10.0
"""How long :func:`close_consumer` polls for its partitions to be revoked."""
CLOSE_SETTLE_S = 0.3
"""How long :func:`close_consumer` polls with nothing assigned before it closes."""


class GroupMember(Protocol):
    """What :func:`close_consumer` uses of a group consumer."""

    def assignment(self) -> list[TopicPartition]: ...
    def unsubscribe(self) -> None: ...
    def poll(self, timeout: float = -1) -> Any: ...
    def close(self) -> None: ...


def close_consumer(consumer: GroupMember) -> None:
    """Close a group consumer whose offsets are stored explicitly (never on poll).

    ``close()`` must find no rebalance left to run. When it runs one itself (a revocation,
    or an assignment still queued because the group was joining) after the consumer group
    has terminated, the rebalance callback's request to librdkafka is dropped unanswered
    and the callback waits forever, holding the GIL: the whole process freezes
    (confluentinc/librdkafka#4041). So the consumer first leaves the group
    (``unsubscribe`` returns once the group has processed it: no join goes on), then polls
    until what was queued has run and nothing has been assigned for
    :data:`CLOSE_SETTLE_S`. Records polled meanwhile are dropped: their offsets are not
    stored, so the group reads them again."""
    try:
        consumer.unsubscribe()
        deadline = time.monotonic() + CLOSE_REVOKE_WAIT_S
        settled_at = time.monotonic() + CLOSE_SETTLE_S
        while time.monotonic() < deadline:
            consumer.poll(0.05)
            if consumer.assignment():
                settled_at = time.monotonic() + CLOSE_SETTLE_S
            elif time.monotonic() >= settled_at:
                break
        consumer.close()
    except RuntimeError:
        pass  # already closed


def close_loop(consumer: Consumer, producer: Producer) -> None:
    """Leave the group (if still in it) and deliver what is queued. A producer in a fatal
    state raises on ``flush``: closing says so and goes on, so that the error that ended
    the loop is the one the process reports."""
    close_consumer(consumer)
    try:
        producer.flush(5)
    except KafkaException as exc:
        log.warning("closing: the producer could not deliver what was queued: %s", exc)


def rewind_to_committed(consumer: Consumer) -> None:
    """After an aborted transaction: read again from the last committed offsets."""
    assignment = consumer.assignment()
    if not assignment:
        return
    for tp in consumer.committed(assignment, timeout=30):
        offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        try:
            consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        except KafkaException as exc:  # not fetched yet: it starts at the committed offset
            log.debug("seek %s[%d]: %s", tp.topic, tp.partition, exc)


_SETTLING = frozenset(
    {
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        # a broker failing over: the request's broker handle went away (seen in a chaos
        # run: a worker stopped with "Broker handle destroyed without termination"), or
        # the request timed out before the deadline
        KafkaError._DESTROY_BROKER,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
    }
)


def watermark_offsets(
    consumer: Consumer, tp: TopicPartition, *, timeout: float = 30.0, cached: bool = False
) -> tuple[int, int]:
    """(low, high) offsets of a partition, retrying while a new topic's metadata settles
    (a topic created a moment ago may answer "not leader" at first) or a broker fails
    over, until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                tp, timeout=max(0.5, min(10.0, deadline - time.monotonic())), cached=cached
            )
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            settling = isinstance(error, KafkaError) and error.code() in _SETTLING
            if not settling or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def await_stable_offsets(
    consumer: Consumer, partitions: list[TopicPartition], *, timeout: float = 45.0
) -> bool:
    """Wait until the group's committed offsets of ``partitions`` are stable: no
    transaction that added offsets for them (a previous owner's last batch) is still
    undecided. A ``read_committed`` consumer asks with ``require_stable`` and librdkafka
    asks again while the broker answers UNSTABLE_OFFSET_COMMIT. True when stable; False
    after ``timeout`` (the coordinator aborts a dead producer's transaction after
    ``transaction.timeout.ms``, 30 s, so this is a broker that does not answer)."""
    wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    if not wanted:
        return True
    try:
        consumer.committed(wanted, timeout=timeout)
    except KafkaException as exc:
        log.warning(
            "the committed offsets of %d partitions were not stable after %.0f s (%s): "
            "going on without waiting for the previous owner's last transaction",
            len(wanted),
            timeout,
            exc,
        )
        return False
    return True


def _fatal(exc: KafkaException) -> KafkaError | None:
    error = exc.args[0] if exc.args else None
    return error if isinstance(error, KafkaError) and error.fatal() else None


# -- cutting batches ------------------------------------------------------------------

Keep = Callable[[list[Message]], list[Message]]
"""Drops error events from what ``consume`` returned (raising on a fatal one)."""


class BatchPolicy(Protocol):
    """How a loop cuts its input into transactions."""

    def cut(self, consumer: Consumer, stopping: Callable[[], bool], keep: Keep) -> list[Message]:
        """The next batch (maybe empty); return early once ``stopping()``."""
        ...


@dataclass(frozen=True)
class FirstThenReady:
    """Wait up to ``max_wait_ms`` for a first record, then take only what has already
    arrived (up to ``max_records``): a lone record goes at once, a busy stream still
    fills its batch. (``consume(n, timeout)`` would wait for all n or the whole timeout.)
    The gate worker's policy: decisions want latency."""

    max_records: int
    max_wait_ms: int

    def cut(self, consumer: Consumer, stopping: Callable[[], bool], keep: Keep) -> list[Message]:
        first = consumer.poll(self.max_wait_ms / 1000)
        if first is None:
            return []
        batch: list[Message] = []
        messages = [first]
        while True:
            batch.extend(keep(messages))
            room = self.max_records - len(batch)
            if room <= 0 or stopping():
                return batch
            messages = consumer.consume(room, timeout=0)
            if not messages:
                return batch


@dataclass(frozen=True)
class FillWithin:
    """Wait up to ``first_wait_ms`` for records; once some arrived, keep taking for
    ``max_ms`` or until ``max_records``. The sink's policy: ClickHouse wants few, big
    inserts."""

    max_records: int
    max_ms: int
    first_wait_ms: int = 500
    max_take: int = 10_000

    def cut(self, consumer: Consumer, stopping: Callable[[], bool], keep: Keep) -> list[Message]:
        batch: list[Message] = []
        deadline: float | None = None
        while len(batch) < self.max_records and not stopping():
            timeout = self.first_wait_ms / 1000 if deadline is None else deadline - time.monotonic()
            if timeout <= 0:
                break
            messages = consumer.consume(min(self.max_records - len(batch), self.max_take), timeout)
            batch.extend(keep(messages))
            if batch and deadline is None:
                deadline = time.monotonic() + self.max_ms / 1000
            if not messages and not batch:
                break
        return batch


@dataclass(frozen=True)
class UpToDeadline:
    """Take what arrives within ``max_ms`` (up to ``max_records``), returning early when
    a wait after the first records brings nothing. The notary's policy: it also has a
    checkpoint timer to serve when no record comes."""

    max_records: int
    max_ms: int

    def cut(self, consumer: Consumer, stopping: Callable[[], bool], keep: Keep) -> list[Message]:
        deadline = time.monotonic() + self.max_ms / 1000
        batch: list[Message] = []
        while len(batch) < self.max_records and not stopping():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            messages = consumer.consume(self.max_records - len(batch), remaining)
            batch.extend(keep(messages))
            if not messages and batch:
                break
        return batch


# -- the loop -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One record to produce in a batch's transaction (``topic`` is the real name)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None


class RetryBatch(Exception):  # noqa: N818 - a signal to the loop, not an error
    """Raised by ``before_commit``: abort the transaction and read the batch again after
    ``backoff_s`` (e.g. the sink's store did not take the rows)."""

    def __init__(self, backoff_s: float = 0.0) -> None:
        super().__init__(backoff_s)
        self.backoff_s = backoff_s


Hook = Callable[[list[Message]], None]

TRANSACTION_CALL_S = 30.0
"""How long committing a transaction may take (a timeout aborts the transaction and
reads the batch again)."""

OFFSETS_CALL_S = 10.0
"""How long adding the consumed offsets to a transaction may take. Shorter: librdkafka
may not keep this call's timeout when the group's coordinator died
(confluentinc/librdkafka#5456), and then the watchdog ends the process this much (and
:data:`CALL_MARGIN_S`) after the call began; a timeout that is kept only means the batch
is read again."""

CALL_MARGIN_S = 5.0
"""How long past its timeout a transaction call may run before the watchdog ends the
process."""

LOOP_STALL_S = 180.0
"""A transactional loop that has not begun a cycle for this long ends its process."""


class TransactionalLoop:
    """Consume → transform → produce, one Kafka transaction per batch.

    Each cycle (:meth:`run_once`): the ``batches`` policy cuts a batch; ``on_batch(batch)``
    returns the records to produce, or None when there is nothing to commit (it is called
    with empty batches too, so timers can produce); the loop begins a transaction,
    produces the records, calls ``before_commit(batch)``, adds the consumed offsets
    (``send_offsets_to_transaction``) and commits, then calls ``on_commit(batch)``.

    When the transaction fails, or ``before_commit`` raises :class:`RetryBatch`, the loop
    aborts it, rewinds the consumer to the committed offsets and calls ``on_abort(exc)``:
    in-memory state derived from the batch must be dropped there, since the batch is read
    again. A fatal error (fenced by a newer instance with the same ``transactional.id``)
    raises ``error`` with ``fenced_hint``.

    ``rewind_on_rebalance``: drop (and re-read) a batch during whose polling partitions
    were assigned or revoked: some of it may belong to another member now.
    """

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        *,
        name: str,
        error: type[TrustplaneError],
        fenced_hint: str,
        batches: BatchPolicy,
        on_batch: Callable[[list[Message]], Sequence[Record] | None],
        before_commit: Hook | None = None,
        on_commit: Hook | None = None,
        on_abort: Callable[[Exception], None] | None = None,
        rewind_on_rebalance: bool = False,
        stall_limit_s: float | None = LOOP_STALL_S,
    ) -> None:
        """``stall_limit_s``: a loop that has not begun a cycle for this long ends its
        process (see :mod:`streams.watchdog`); None: no watchdog."""
        self.consumer = consumer
        self.producer = producer
        self.name = name
        self.watchdog = (
            None if stall_limit_s is None else StallWatchdog(name, stall_limit_s, exit_stalled)
        )
        self.error = error
        self.fenced_hint = fenced_hint
        self.batches = batches
        self.on_batch = on_batch
        self.before_commit = before_commit
        self.on_commit = on_commit
        self.on_abort = on_abort
        self.rewind_on_rebalance = rewind_on_rebalance
        self.generation = 0
        """Bumped by every assignment and revocation."""
        self._stop = threading.Event()
        self._denied: str | None = None
        """Why the broker refused a record of this transaction (a missing TOPIC ACL)."""
        self._watched: set[str] = set()
        """Topics written in this transaction (the first record of each is watched)."""

    # -- lifecycle

    def start(self) -> None:
        """Initialize transactions (fencing a predecessor); call before :meth:`run_once`."""
        start_transactions(self.producer, self.error)

    def subscribe(
        self,
        topics: list[str],
        *,
        on_assign: Callable[[Consumer, list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[Consumer, list[TopicPartition]], None] | None = None,
    ) -> None:
        def assigned(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self.generation += 1
            if on_assign is not None:
                on_assign(consumer, partitions)

        def revoked(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self.generation += 1
            if on_revoke is not None:
                on_revoke(consumer, partitions)

        self.consumer.subscribe(topics, on_assign=assigned, on_revoke=revoked)

    def run(self) -> None:
        """Cycle until :meth:`stop` (the batch in hand is committed first)."""
        if self.watchdog is not None:
            self.watchdog.start()
        try:
            while not self._stop.is_set():
                if self.watchdog is not None:
                    self.watchdog.beat()
                self.run_once()
        finally:
            if self.watchdog is not None:
                self.watchdog.stop()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep, waking early on :meth:`stop`; True when stopping."""
        return self._stop.wait(seconds)

    def close(self) -> None:
        close_loop(self.consumer, self.producer)

    # -- one transaction

    def run_once(self) -> bool:
        """One cycle; True when a transaction committed."""
        generation = self.generation
        batch = self.batches.cut(self.consumer, self._stop.is_set, self._keep)
        if batch and self.rewind_on_rebalance and generation != self.generation:
            # partitions moved while we read: what we hold may not be ours any more
            self.rewind()
            return False
        records = self.on_batch(batch)
        if records is None:
            return False
        self._denied = None
        self._watched.clear()
        try:
            self.producer.begin_transaction()
            for record in records:
                self._produce(record)
            if self.before_commit is not None:
                self.before_commit(batch)
            if batch:
                offsets = [
                    tp
                    for tp in self.consumer.position(self.consumer.assignment())
                    if tp.offset >= 0
                ]
                with self._bounded("send_offsets_to_transaction", OFFSETS_CALL_S):
                    self.producer.send_offsets_to_transaction(
                        offsets, self.consumer.consumer_group_metadata(), OFFSETS_CALL_S
                    )
            # bounded: while brokers fail over, an unbounded call may never return
            with self._bounded("commit_transaction", TRANSACTION_CALL_S):
                self.producer.commit_transaction(TRANSACTION_CALL_S)
        except KafkaException as exc:
            # a refused record (its report), the transactional id, or the offsets' group
            names = {**_describe(self.producer), "group": _describe(self.consumer)["group"]}
            denied = self._denied or explain_denied(exc, **names)
            if denied is not None:
                with contextlib.suppress(KafkaException):
                    self.producer.abort_transaction(10)
                raise self.error(f"{self.name}: {denied}") from exc
            if (fatal := _fatal(exc)) is not None:
                raise self.error(
                    f"fenced or fatal transaction error: {fatal.str()}", hint=self.fenced_hint
                ) from exc
            log.warning("%s: transaction failed, aborting, reading again: %s", self.name, exc)
            self._recover(exc)
            return False
        except RetryBatch as retry:
            self._recover(retry)
            self.wait(retry.backoff_s)
            return False
        if self.on_commit is not None:
            self.on_commit(batch)
        return True

    def _bounded(self, call: str, timeout_s: float) -> contextlib.AbstractContextManager[None]:
        """A call given ``timeout_s``: past it and a margin, the watchdog ends the process."""
        if self.watchdog is None:
            return contextlib.nullcontext()
        return self.watchdog.bounded(call, timeout_s + CALL_MARGIN_S)

    def rewind(self) -> None:
        rewind_to_committed(self.consumer)

    def _produce(self, record: Record) -> None:
        # -1: no partition chosen, the partitioner picks (librdkafka's RD_KAFKA_PARTITION_UA)
        partition = -1 if record.partition is None else record.partition
        delivered = record.on_delivery
        if record.topic not in self._watched:
            # a missing WRITE ACL refuses every record of the topic: the delivery report
            # of its first record in the transaction says so (one Python callback, not N)
            self._watched.add(record.topic)
            delivered = self._watch(delivered)
        while True:
            try:
                self.producer.produce(
                    record.topic,
                    key=record.key,
                    value=record.value,
                    partition=partition,
                    on_delivery=delivered,
                )
                break
            except BufferError:  # the local queue is full: deliver some, then retry
                self.producer.poll(0.05)
        self.producer.poll(0)

    def _watch(
        self, inner: Callable[[KafkaError | None, Message], None] | None
    ) -> Callable[[KafkaError | None, Message], None]:
        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                self._denied = explain_client_error(self.producer, error, message.topic() or "")
            if inner is not None:
                inner(error, message)

        return delivered

    def _recover(self, cause: Exception) -> None:
        try:
            self.producer.abort_transaction(30)
            self.rewind()
            if self.on_abort is not None:
                self.on_abort(cause)
        except KafkaException as exc:
            if (fatal := _fatal(exc)) is not None:
                raise self.error(
                    f"fenced or fatal transaction error: {fatal.str()}", hint=self.fenced_hint
                ) from exc
            raise self.error(
                f"{self.name} cannot recover from a failed transaction: {exc}",
                hint=f"restart the {self.name}: it aborts the open transaction and reads "
                "again from the last committed offsets",
            ) from exc

    def _keep(self, messages: list[Message]) -> list[Message]:
        kept: list[Message] = []
        for message in messages:
            error = message.error()
            if error is None:
                kept.append(message)
            elif (denied := explain_client_error(self.consumer, error)) is not None:
                raise self.error(f"{self.name} consumer: {denied}")
            elif error.fatal():
                raise self.error(f"consumer failed: {error.str()}", hint=self.fenced_hint)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("%s consumer: %s", self.name, error.str())
        return kept
