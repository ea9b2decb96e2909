"""The notary service: the one writer of the provable lineage log.

Log order
=========
There is one notary per log *origin* (default ``trustplane.local/lineage``, setting
``notary_origin``). It consumes every partition of ``lineage`` (consumer group
``<group_id>-notary``, one static member, ``read_committed``) and is the only writer of
``lineage-log``: **the order in which it appends events is the log**. Event ``i`` of
``lineage-log`` (key ``i`` as decimal text, ``log_index == i``) is leaf ``i`` of the RFC
9162 Merkle tree and link ``i`` of the hash chain (``processors/chain.py``); Kafka
partitions, offsets and event times play no part in it. A second notary with the same
origin would fork the log, so both ids it uses (``transactional.id`` and
``group.instance.id``, ``<group_id>-notary``) fence any predecessor: the newest
notary wins and the older one stops with a fatal error.

Records it writes
=================
``lineage-log`` (1 partition, unlimited retention)
    key: the log index (decimal text); value: the LineageEvent as received, with
    ``log_index``, ``prev_hash`` and ``event_hash`` set. ``log_index`` is set *before*
    linking, so ``event_hash`` and the Merkle leaf (RFC 8785 JSON of the whole record)
    cover it: a record read back verifies as it is.
``checkpoints`` (1 partition, unlimited retention)
    key: the origin; value: a C2SP checkpoint as a signed note (UTF-8 text), signed
    by ``<keys_dir>/notary.pem``; the verifier key is written to
    ``<keys_dir>/notary.vkey``. A checkpoint is signed when the log grew and either
    ``checkpoint_every_events`` events (default 1000, setting
    ``notary_checkpoint_events``) or ``checkpoint_every_ms`` ms (default 500, setting
    ``notary_checkpoint_ms``) have passed (``Notary.maybe_checkpoint``), including while
    no event arrives. An event is covered by a checkpoint about that interval plus one
    transaction after it was produced: p99 ~0.6 s at 2,000 events/s on a loaded
    2-core machine (``bench/bench_checkpoint_lag.py``).

Exactly once
============
Each batch is one Kafka transaction, as in ``streams/worker.py``: the linked events,
the checkpoint (if one is due) and the consumed ``lineage`` offsets commit together
or not at all. A notary killed mid-batch leaves an open transaction that its
successor aborts (``init_transactions``), so the successor rebuilds the log from
``lineage-log`` and resumes ``lineage`` where the last committed batch ended: no gap,
no duplicate, and every checkpoint it signs extends the ones before it. On start the
rebuilt log is checked against the last checkpoints on ``checkpoints`` (their roots
must be the roots of the rebuilt log at their sizes); a mismatch stops the notary.
An aborted transaction is handled the same way, in-process: abort, rewind, rebuild.

Duplicates
==========
Gate workers produce lineage only in committed transactions and the notary reads
``read_committed``, so a redelivered event is not expected. Should one arrive anyway
(a retry by a non-transactional writer), an event whose ``event_id`` *and* content
equal one of the last ``dedupe_window`` events is dropped. An event that reuses an
``event_id`` with other content is logged (and counted in ``reused_ids``): it is a
different event, and dropping it would hide it from the audit trail. The gate derives
event ids from the intent's digest, so a replayed intent re-uses its ids.

A record on ``lineage`` that is not a LineageEvent is not dropped either: the notary
logs a ``lineage.undecodable`` event in its place (stage ``notary``, the source
position and the SHA-256 of the value).

Serving proofs
==============
A read-only HTTP endpoint on 127.0.0.1 (port ``notary_port``, default 6067) answers
from committed state only: ``GET /checkpoint`` (latest signed note), ``GET /vkey``,
``GET /proof/inclusion?event_id=…`` or ``?index=…``, ``GET /proof/consistency?old=N&new=M``
and ``GET /healthz``. Clients must verify what it returns (``streams/proof_cli.py``).

Memory and restart time
=======================
In memory: the Merkle tree (64 bytes per event), the ``lineage-log`` offset of each
event (8 bytes), an ``event_id`` -> log index dict (about 160 bytes per event: some
170 MB per million events; beyond a few million, look events up in the lineage store
instead), the last ``dedupe_window`` event ids and the last ``max_checkpoints``
checkpoints. Events themselves are read back from ``lineage-log`` when a proof asks
for one. A restart replays ``lineage-log`` from its first record, at roughly 10,000
events/s (the RFC 8785 canonicalization of each event dominates).
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # documented path, stub lacks __all__

from processors.crypto.keys import (
    KeyFileError,
    generate_signing_key,
    load_private_key,
    save_private_key,
)
from processors.exceptions import ConfigError, TrustplaneError
from processors.log.chain import ChainError
from processors.log.checkpoint import CheckpointError, NoteError, NoteSigner, verify_checkpoint
from processors.log.merkle import MerkleError
from processors.log.notary import Notary
from processors.records import derived_id, digest
from streams.codec import Codec, DecodeError, EncodeError, default_codec
from streams.config import Settings
from streams.kafka import close_loop, rewind_to_committed, start_transactions
from streams.topics import MAX_MESSAGE_BYTES, ensure_topics

__all__ = [
    "DEFAULT_ORIGIN",
    "DEFAULT_PORT",
    "LOG_TOPIC",
    "CHECKPOINT_TOPIC",
    "NotaryServiceError",
    "LogIntegrityError",
    "ProofRequestError",
    "LogRecord",
    "NotaryLog",
    "NotaryHTTPServer",
    "handle_request",
    "NotaryService",
    "notary_origin",
    "notary_port",
    "notary_key_path",
    "notary_vkey_path",
    "load_notary_signer",
    "ensure_notary_topics",
    "require_log_index",
    "event_json",
]

log = logging.getLogger(__name__)

DEFAULT_ORIGIN = "trustplane.local/lineage"
DEFAULT_PORT = 6067
LOG_TOPIC = "lineage-log"
CHECKPOINT_TOPIC = "checkpoints"
NOTARY_WORKER = "notary"
"""The ``worker`` of the events the notary writes itself (``lineage.undecodable``)."""

_NOT_CONTENT = ("prev_hash", "event_hash", "log_index")
_SCHEMA_HINT = (
    "install the LineageEvent schema with log_index: move schemas/lineage_event.avsc to "
    "schemas/history/lineage_event.v0.avsc and schemas/lineage_event.avsc.next to "
    "schemas/lineage_event.avsc"
)


class NotaryServiceError(TrustplaneError):
    """The notary cannot go on (broker, key, fenced by a newer notary, ...)."""


class LogIntegrityError(NotaryServiceError):
    """``lineage-log`` or ``checkpoints`` contradict themselves or this notary's key."""


class ProofRequestError(NotaryServiceError):
    """A proof cannot be served; ``status`` is the HTTP status that says why."""

    def __init__(self, reason: str, *, status: int, hint: str | None = None) -> None:
        super().__init__(reason, hint=hint)
        self.status = status


# -- settings, keys, topics -------------------------------------------------------


def notary_origin(settings: Settings) -> str:
    """The log origin: setting ``notary_origin``, default ``trustplane.local/lineage``."""
    return str(getattr(settings, "notary_origin", None) or DEFAULT_ORIGIN)


def notary_port(settings: Settings) -> int:
    """Port of the proof endpoint: setting ``notary_port``, default 6067."""
    value = getattr(settings, "notary_port", None)
    return DEFAULT_PORT if value is None else int(value)


def notary_key_path(settings: Settings) -> Path:
    return settings.resolved_keys_dir / "notary.pem"


def notary_vkey_path(settings: Settings) -> Path:
    return settings.resolved_keys_dir / "notary.vkey"


def load_notary_signer(
    settings: Settings, origin: str | None = None, *, create: bool | None = None
) -> NoteSigner:
    """The notary's note signer: key ``<keys_dir>/notary.pem``, name = the origin.

    A missing key is generated when ``create`` is true, or, when ``create`` is None, in
    local setups (no ``bootstrap_servers`` configured). The verifier key text is
    (re)written to ``<keys_dir>/notary.vkey`` for clients to copy.
    """
    origin = origin or notary_origin(settings)
    path = notary_key_path(settings)
    if not path.exists():
        if create is None:
            create = not settings.bootstrap_servers
        if not create:
            raise KeyFileError(
                f"the notary signing key {path} does not exist",
                hint="run `trustplane notary --create-key` once to generate it, or point "
                "TRUSTPLANE_KEYS_DIR at the folder that holds notary.pem",
            )
        save_private_key(path, generate_signing_key())
        log.warning("generated the notary signing key %s", path)
    try:
        signer = NoteSigner(origin, load_private_key(path))
    except NoteError as exc:
        raise ConfigError(
            f"notary origin {origin!r}: {exc.reason}",
            hint="use a schema-less URL such as example.com/lineage",
        ) from exc
    vkey_path = notary_vkey_path(settings)
    text = signer.vkey + "\n"
    try:
        if not vkey_path.exists() or vkey_path.read_text() != text:
            vkey_path.write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write the notary verifier key {vkey_path}: {exc}") from exc
    return signer


def ensure_notary_topics(settings: Settings, *, timeout: float = 30.0) -> list[str]:
    """Create ``lineage`` if missing, and ``lineage-log`` and ``checkpoints`` with one
    partition and unlimited retention (a restart replays the whole log). Return the
    names created; raise if a log topic exists with more than one partition."""
    created = ensure_topics(settings, ["lineage"], timeout=timeout)
    admin = AdminClient(dict(settings.kafka_config()))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise NotaryServiceError(
            f"cannot reach Kafka at {settings.resolved_bootstrap()}: {exc}",
            hint="is the broker up? `trustplane kafka status`",
        ) from exc
    new = []
    for name in (LOG_TOPIC, CHECKPOINT_TOPIC):
        topic = settings.topic(name)
        existing = metadata.topics.get(topic)
        if existing is None:
            new.append(
                NewTopic(
                    topic,
                    num_partitions=1,
                    replication_factor=-1,
                    config={
                        "cleanup.policy": "delete",
                        "retention.ms": "-1",
                        "retention.bytes": "-1",
                        "max.message.bytes": str(MAX_MESSAGE_BYTES),
                    },
                )
            )
        elif len(existing.partitions) != 1:
            raise NotaryServiceError(
                f"topic {topic} has {len(existing.partitions)} partitions; the notary needs "
                "exactly 1 (the log's order is its order)",
                hint=f"recreate {topic} with one partition",
            )
    for topic, future in admin.create_topics(new, operation_timeout=timeout).items() if new else []:
        try:
            future.result()
            created.append(topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise NotaryServiceError(f"cannot create topic {topic}: {exc}") from exc
    _wait_for_leaders(admin, [settings.topic(n) for n in (LOG_TOPIC, CHECKPOINT_TOPIC)], timeout)
    return created


def _wait_for_leaders(admin: AdminClient, topics: list[str], timeout: float) -> None:
    """Wait until every partition of ``topics`` has a leader (new topics take a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout)
        if all(
            name in metadata.topics
            and metadata.topics[name].partitions
            and all(p.leader >= 0 for p in metadata.topics[name].partitions.values())
            for name in topics
        ):
            return
        if time.monotonic() > deadline:
            raise NotaryServiceError(
                f"topics {', '.join(topics)} have no partition leader after {timeout:.0f} s",
                hint="is the broker healthy? `trustplane kafka status`",
            )
        time.sleep(0.1)


def require_log_index(codec: Codec) -> None:
    """Raise ConfigError unless the codec's LineageEvent schema has ``log_index``."""
    try:
        fields = {field["name"] for field in codec.registry.schema("LineageEvent")["fields"]}
    except KeyError as exc:
        raise ConfigError("the codec has no LineageEvent schema", hint=_SCHEMA_HINT) from exc
    if "log_index" not in fields:
        raise ConfigError(
            "the LineageEvent schema has no log_index field, so the notary cannot write "
            "lineage-log records",
            hint=_SCHEMA_HINT,
        )


def event_json(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as a JSON value (bytes as hex, the rest as Avro's JSON values)."""
    return dict(json.loads(json.dumps(event, default=_json_default)))


def _json_default(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _content_digest(event: Mapping[str, Any]) -> bytes:
    """What makes a redelivery a redelivery: the event without what the notary sets."""
    body = {k: v for k, v in event.items() if k not in _NOT_CONTENT}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).digest()[:16]


# -- the log, without Kafka ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogRecord:
    """A linked event to produce on ``lineage-log``."""

    index: int
    event_id: str
    key: bytes
    value: bytes


class NotaryLog:
    """The notary's state: the linked, Merkle-logged events, and what has committed.

    The writer thread calls ``append`` / ``checkpoint_due`` / ``delivered`` during a
    transaction and ``commit`` after it committed (after an abort, it builds a new
    NotaryLog and restores it). Readers (the HTTP threads) only see committed state:
    the last committed checkpoint, the ids and offsets of committed events.
    ``fetch(offset)`` returns the ``lineage-log`` value at an offset (the service reads
    Kafka; tests pass a dict's ``__getitem__``).
    """

    def __init__(
        self,
        signer: NoteSigner,
        codec: Codec,
        *,
        checkpoint_every_events: int = 1000,
        checkpoint_every_ms: int = 1000,
        dedupe_window: int = 100_000,
        max_checkpoints: int = 100_000,
        fetch: Callable[[int], bytes] | None = None,
    ) -> None:
        require_log_index(codec)
        if dedupe_window < 0 or max_checkpoints < 1:
            raise ConfigError("dedupe_window must be >= 0 and max_checkpoints >= 1")
        self.signer = signer
        self.origin = signer.name
        self.codec = codec
        self.notary = Notary(
            signer.name,
            signer,
            checkpoint_every_events=checkpoint_every_events,
            checkpoint_every_ms=checkpoint_every_ms,
        )
        self.dedupe_window = dedupe_window
        self.max_checkpoints = max_checkpoints
        self.fetch = fetch
        self.lock = threading.RLock()
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._index: dict[str, int] = {}
        self._offsets = array.array("q")
        self._checkpoints: OrderedDict[int, str] = OrderedDict()
        self._latest: tuple[int, str] | None = None
        self._pending_ids: list[tuple[str, int]] = []
        self._pending_offsets: dict[int, int] = {}
        self._pending_notes: list[tuple[int, str]] = []
        self.duplicates = 0
        self.reused_ids = 0
        self.undecodable = 0

    # -- writing (one thread) ------------------------------------------------

    def append(self, value: bytes | None, *, source: str, timestamp_ms: int) -> LogRecord | None:
        """Link and log the LineageEvent in ``value``; return the record to produce, or
        None for a redelivered event. An undecodable value is logged as a
        ``lineage.undecodable`` event."""
        try:
            event = self.codec.decode(value or b"", "LineageEvent", max_bytes=MAX_MESSAGE_BYTES)
        except DecodeError as exc:
            self.undecodable += 1
            log.warning("lineage record %s is not a LineageEvent: %s", source, exc.reason)
            event = self._undecodable(value or b"", source, timestamp_ms, exc)
        event_id = str(event["event_id"])
        content = _content_digest(event)
        with self.lock:
            seen = self._recent.get(event_id)
            if seen == content:
                self.duplicates += 1
                return None
            if seen is not None:
                self.reused_ids += 1
                log.warning("event id %s seen again with other content: logged again", event_id)
            event["log_index"] = self.notary.size
            try:
                index, linked = self.notary.append(event)
            except ChainError as exc:
                raise NotaryServiceError(
                    f"lineage record {source} (event {event_id}) cannot be linked: {exc.reason}"
                ) from exc
            self._remember(event_id, content)
            self._pending_ids.append((event_id, index))
        try:
            encoded = self.codec.encode("LineageEvent", linked)
        except EncodeError as exc:
            raise NotaryServiceError(
                f"the linked event {event_id} cannot be encoded: {exc.reason}", hint=_SCHEMA_HINT
            ) from exc
        return LogRecord(index, event_id, str(index).encode(), encoded)

    def _undecodable(
        self, value: bytes, source: str, timestamp_ms: int, exc: DecodeError
    ) -> dict[str, Any]:
        # deterministic for one source record, so a redelivery of it is a duplicate
        return {
            "event_id": derived_id("event", source, "notary", "lineage.undecodable"),
            "intent_id": None,
            "agent_id": None,
            "stage": "notary",
            "event_type": "lineage.undecodable",
            "status": exc.code,
            "reasons": [exc.reason],
            "attributes": {"source": source, "value_sha256": digest(value)},
            "occurred_at_ms": timestamp_ms,
            "worker": NOTARY_WORKER,
            "prev_hash": None,
            "event_hash": None,
            "log_index": None,
        }

    def _remember(self, event_id: str, content: bytes) -> None:
        if not self.dedupe_window:
            return
        self._recent[event_id] = content
        self._recent.move_to_end(event_id)
        while len(self._recent) > self.dedupe_window:
            self._recent.popitem(last=False)

    def checkpoint_due(self, now_ms: int) -> tuple[int, str] | None:
        """(size, signed note) if a checkpoint is due now, to produce in this transaction."""
        with self.lock:
            note = self.notary.maybe_checkpoint(now_ms)
            if note is None:
                return None
            size = self.notary.size
            if self._latest is not None and self._latest[0] == size:
                return None  # restored at a size already checkpointed
            self._pending_notes.append((size, note))
            return size, note

    def delivered(self, index: int, offset: int) -> None:
        """The ``lineage-log`` offset of log index ``index`` (from a delivery report)."""
        self._pending_offsets[index] = offset

    def on_delivery(self, record: LogRecord) -> Callable[[KafkaError | None, Message], None]:
        """A producer delivery callback that records ``record``'s offset."""

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                self.delivered(record.index, msg.offset() or 0)

        return delivered

    def commit(self) -> None:
        """The transaction holding everything since the last commit has committed."""
        with self.lock:
            first = len(self._offsets)
            missing = [i for i in range(first, self.notary.size) if i not in self._pending_offsets]
            if missing:
                raise NotaryServiceError(
                    f"no delivery report for log indexes {missing[:5]} after the commit"
                )
            self._offsets.extend(self._pending_offsets[i] for i in range(first, self.notary.size))
            for event_id, index in self._pending_ids:
                self._index[event_id] = index
            for size, note in self._pending_notes:
                self._keep_checkpoint(size, note)
            self._pending_ids.clear()
            self._pending_offsets.clear()
            self._pending_notes.clear()

    def _keep_checkpoint(self, size: int, note: str) -> None:
        self._checkpoints[size] = note
        while len(self._checkpoints) > self.max_checkpoints:
            self._checkpoints.popitem(last=False)
        if self._latest is None or size >= self._latest[0]:
            self._latest = (size, note)

    # -- restoring (before serving) ------------------------------------------

    def restore_record(self, offset: int, value: bytes | None) -> None:
        """Re-append the committed ``lineage-log`` record at ``offset`` (in log order)."""
        position = self.notary.size
        try:
            event = self.codec.decode(value or b"", "LineageEvent", max_bytes=MAX_MESSAGE_BYTES)
        except DecodeError as exc:
            raise LogIntegrityError(
                f"lineage-log offset {offset} is not a LineageEvent: {exc.reason}",
                hint="only the notary may write lineage-log (Kafka ACLs)",
            ) from exc
        if event.get("log_index") != position:
            raise LogIntegrityError(
                f"lineage-log offset {offset} holds log index {event.get('log_index')}, "
                f"expected {position}: the log has a gap or a duplicate",
                hint="only the notary may write lineage-log, and it must keep every record "
                "(retention.ms=-1)",
            )
        with self.lock:
            try:
                self.notary.restore([event])
            except ChainError as exc:
                raise LogIntegrityError(
                    f"lineage-log offset {offset} (log index {position}): {exc.reason}",
                    hint="the record was altered after the notary wrote it",
                ) from exc
            event_id = str(event["event_id"])
            self._index[event_id] = position
            self._offsets.append(offset)
            self._remember(event_id, _content_digest(event))

    def restore_checkpoint(self, offset: int, note: bytes | None) -> None:
        """Check a committed checkpoint against the restored log and keep it."""
        where = f"checkpoints offset {offset}"
        try:
            checkpoint = verify_checkpoint(note or b"", self.signer.verifier, origin=self.origin)
        except (NoteError, CheckpointError) as exc:
            raise LogIntegrityError(
                f"{where} is not a checkpoint of {self.origin} signed by this notary's key: "
                f"{exc.reason}",
                hint="the notary key (notary.pem) is not the one that signed this log: restore "
                "it, or start a new log under another origin with fresh topics",
            ) from exc
        with self.lock:
            if self._latest is not None and checkpoint.size < self._latest[0]:
                raise LogIntegrityError(
                    f"{where} is of size {checkpoint.size}, smaller than the checkpoint before "
                    f"it ({self._latest[0]})"
                )
            if checkpoint.size > self.notary.size:
                raise LogIntegrityError(
                    f"{where} is of size {checkpoint.size} but lineage-log holds only "
                    f"{self.notary.size} events: records of the log were deleted",
                    hint="lineage-log needs retention.ms=-1",
                )
            if self.notary.log.root(checkpoint.size) != checkpoint.root_hash:
                raise LogIntegrityError(
                    f"{where} (size {checkpoint.size}) does not match the log rebuilt from "
                    "lineage-log: the log was rewritten after it was checkpointed"
                )
            self._keep_checkpoint(checkpoint.size, (note or b"").decode())

    # -- reading (any thread; committed state only) --------------------------

    @property
    def size(self) -> int:
        """Committed events."""
        return len(self._offsets)

    def latest(self) -> tuple[int, str] | None:
        """(size, note) of the last committed checkpoint."""
        return self._latest

    def status(self) -> dict[str, Any]:
        latest = self._latest
        return {
            "origin": self.origin,
            "size": self.size,
            "checkpoint_size": latest[0] if latest else 0,
            "duplicates": self.duplicates,
            "reused_ids": self.reused_ids,
            "undecodable": self.undecodable,
        }

    def index_of(self, event_id: str) -> int | None:
        return self._index.get(event_id)

    def inclusion(self, *, event_id: str | None = None, index: int | None = None) -> dict[str, Any]:
        """``{event, index, proof, checkpoint}`` for one committed event, against the
        latest checkpoint."""
        if (event_id is None) == (index is None):
            raise ProofRequestError("give exactly one of event_id and index", status=400)
        with self.lock:
            if event_id is not None:
                found = self._index.get(event_id)
                if found is None:
                    raise ProofRequestError(
                        f"event {event_id} is not in the log {self.origin} (yet)",
                        status=404,
                        hint="events reach the log a moment after the gate decides; retry",
                    )
                index = found
            assert index is not None  # noqa: S101 - narrowed above
            if not 0 <= index < self.size:
                raise ProofRequestError(
                    f"log index {index} is not in the log (it holds {self.size} events)",
                    status=404,
                )
            latest = self._latest
            if latest is None or index >= latest[0]:
                raise ProofRequestError(
                    f"log index {index} is not covered by a checkpoint yet",
                    status=503,
                    hint="a checkpoint is signed at least every second; retry",
                )
            proof = self.notary.prove_inclusion(index, latest[0])
            offset = self._offsets[index]
        event = self._fetch_event(index, offset)
        return {
            "event": event_json(event),
            "index": index,
            "proof": proof.to_dict(),
            "checkpoint": latest[1],
        }

    def _fetch_event(self, index: int, offset: int) -> dict[str, Any]:
        if self.fetch is None:
            raise ProofRequestError("this notary cannot read events back", status=503)
        value = self.fetch(offset)
        try:
            event = self.codec.decode(value, "LineageEvent", max_bytes=MAX_MESSAGE_BYTES)
        except DecodeError as exc:
            raise LogIntegrityError(
                f"lineage-log offset {offset} is not a LineageEvent: {exc.reason}"
            ) from exc
        if event.get("log_index") != index:
            raise LogIntegrityError(
                f"lineage-log offset {offset} holds log index {event.get('log_index')}, not {index}"
            )
        return event

    def consistency(self, old: int, new: int | None = None) -> dict[str, Any]:
        """``{proof, old_checkpoint, new_checkpoint}`` between two sizes of the committed,
        checkpointed log (``new`` defaults to the latest checkpoint). A checkpoint note is
        null if this notary no longer holds one of that size."""
        with self.lock:
            latest = self._latest
            if latest is None:
                raise ProofRequestError(
                    "the log has no checkpoint yet", status=503, hint="retry in a second"
                )
            new = latest[0] if new is None else new
            if not 0 < old <= new:
                raise ProofRequestError(
                    f"a consistency proof needs 0 < old <= new, got old={old} new={new}",
                    status=400,
                )
            if new > latest[0]:
                raise ProofRequestError(
                    f"size {new} is beyond the latest checkpoint ({latest[0]})",
                    status=404,
                    hint="ask for sizes of checkpoints the notary has signed",
                )
            try:
                proof = self.notary.prove_consistency(old, new)
            except MerkleError as exc:
                raise ProofRequestError(exc.reason, status=400) from exc
            return {
                "proof": proof.to_dict(),
                "old_checkpoint": self._checkpoints.get(old),
                "new_checkpoint": self._checkpoints.get(new),
            }


# -- HTTP -------------------------------------------------------------------------


def _query_int(query: Mapping[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values:
        return None
    text = values[-1]
    if not text.isdigit() or len(text) > 20:
        raise ProofRequestError(f"{name}={text!r} is not a non-negative integer", status=400)
    return int(text)


def handle_request(source: NotaryLog | None, vkey: str, target: str) -> tuple[int, str, bytes]:
    """Answer one GET request: (status, content type, body). ``source`` is None while
    the notary is still restoring."""
    parts = urlsplit(target)
    query = parse_qs(parts.query)
    path = parts.path.rstrip("/") or "/"
    try:
        if path == "/vkey":
            return 200, "text/plain; charset=utf-8", (vkey + "\n").encode()
        if source is None:
            raise ProofRequestError(
                "the notary is restoring its log", status=503, hint="retry in a few seconds"
            )
        if path == "/healthz":
            return 200, "application/json", json.dumps(source.status()).encode()
        if path == "/checkpoint":
            latest = source.latest()
            if latest is None:
                raise ProofRequestError("no checkpoint yet", status=503, hint="retry in a second")
            return 200, "text/plain; charset=utf-8", latest[1].encode()
        if path == "/proof/inclusion":
            event_ids = query.get("event_id")
            answer = source.inclusion(
                event_id=event_ids[-1] if event_ids else None, index=_query_int(query, "index")
            )
            return 200, "application/json", json.dumps(answer).encode()
        if path == "/proof/consistency":
            old = _query_int(query, "old")
            if old is None:
                raise ProofRequestError("old=N is required", status=400)
            answer = source.consistency(old, _query_int(query, "new"))
            return 200, "application/json", json.dumps(answer).encode()
        raise ProofRequestError(
            f"no such resource {path}",
            status=404,
            hint="GET /checkpoint, /vkey, /healthz, /proof/inclusion?event_id=…|index=…, "
            "/proof/consistency?old=N&new=M",
        )
    except ProofRequestError as exc:
        body = json.dumps({"error": exc.reason, "hint": exc.hint}).encode()
        return exc.status, "application/json", body
    except TrustplaneError as exc:
        log.error("cannot answer %s: %s", target, exc.diagnostics())
        body = json.dumps({"error": exc.reason, "hint": exc.hint}).encode()
        return 500, "application/json", body
    except Exception as exc:  # noqa: BLE001 - e.g. Kafka unreachable: say so, keep serving
        log.exception("cannot answer %s", target)
        body = json.dumps({"error": f"{type(exc).__name__}: {exc}", "hint": None}).encode()
        return 500, "application/json", body


class NotaryHTTPServer:
    """The read-only proof endpoint, on a stdlib HTTP server in a daemon thread."""

    def __init__(
        self, source: Callable[[], NotaryLog | None], vkey: str, host: str, port: int
    ) -> None:
        self.source = source
        self.vkey = vkey

        server_self = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "trustplane-notary"

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                status, content_type, body = handle_request(
                    server_self.source(), server_self.vkey, self.path
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                if status == HTTPStatus.SERVICE_UNAVAILABLE:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    log.debug("http: the client of %s left before the answer", self.path)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
                log.debug("http: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise NotaryServiceError(
                f"cannot serve proofs on {host}:{port}: {exc.strerror or exc}",
                hint="another notary may be running; set TRUSTPLANE_NOTARY_PORT to a free port",
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="notary-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> NotaryHTTPServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


# -- Kafka ------------------------------------------------------------------------


class _EventFetcher:
    """Reads one committed ``lineage-log`` record by offset (for the HTTP threads)."""

    def __init__(self, settings: Settings, topic: str, timeout: float = 5.0) -> None:
        self.topic = topic
        self.timeout = timeout
        self._lock = threading.Lock()
        self._consumer = Consumer(
            {
                **settings.kafka_config(),
                "group.id": f"{settings.group_id}-notary-fetch",
                "client.id": "trustplane-notary-fetch",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
                "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024,
            }
        )

    def __call__(self, offset: int) -> bytes:
        with self._lock:
            self._consumer.assign([TopicPartition(self.topic, 0, offset)])
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                message = self._consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise NotaryServiceError(f"reading {self.topic}@{offset}: {error.str()}")
                if message.offset() != offset:
                    raise LogIntegrityError(
                        f"{self.topic} has no record at offset {offset} (next is "
                        f"{message.offset()})"
                    )
                return message.value() or b""
            raise ProofRequestError(
                f"cannot read the event back from {self.topic}@{offset} within "
                f"{self.timeout:.0f} s",
                status=503,
                hint="is Kafka up? `trustplane kafka status`; retry",
            )

    def close(self) -> None:
        with self._lock:
            self._consumer.close()


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class NotaryService:
    """The notary process: ``run()`` until ``stop()``; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        codec: Codec | None = None,
        signer: NoteSigner | None = None,
        origin: str | None = None,
        port: int | None = None,
        create_key: bool | None = None,
        checkpoint_every_events: int | None = None,
        checkpoint_every_ms: int | None = None,
        batch_max_records: int = 1000,
        batch_max_ms: int = 50,
        dedupe_window: int = 100_000,
        max_checkpoints: int = 100_000,
    ) -> None:
        self.settings = settings
        self.origin = origin or (signer.name if signer else notary_origin(settings))
        self.codec = codec or default_codec()
        require_log_index(self.codec)
        self.signer = signer or load_notary_signer(settings, self.origin, create=create_key)
        if self.signer.name != self.origin:
            raise ConfigError(
                f"the signer is named {self.signer.name!r} but the origin is {self.origin!r}",
                hint="a log's checkpoints are signed by a key named after its origin",
            )
        self.port = notary_port(settings) if port is None else port
        self.checkpoint_every_events = checkpoint_every_events or int(
            getattr(settings, "notary_checkpoint_events", None) or 1000
        )
        # 500 ms, not 1 s: an event's checkpoint lag is this interval plus one transaction,
        # and it should stay under a second (bench/bench_checkpoint_lag.py)
        self.checkpoint_every_ms = checkpoint_every_ms or int(
            getattr(settings, "notary_checkpoint_ms", None) or 500
        )
        self.batch_max_records = batch_max_records
        self.batch_max_ms = batch_max_ms
        self.dedupe_window = dedupe_window
        self.max_checkpoints = max_checkpoints
        self.topics = {
            name: settings.topic(name) for name in ("lineage", LOG_TOPIC, CHECKPOINT_TOPIC)
        }
        self.group_id = f"{settings.group_id}-notary"
        self.ready = threading.Event()
        self._stop = threading.Event()
        self.log: NotaryLog | None = None
        self.http: NotaryHTTPServer | None = None
        self.committed_transactions = 0
        base = settings.kafka_config()
        self.consumer = Consumer(
            {
                **base,
                "group.id": self.group_id,
                "group.instance.id": self.group_id,
                "client.id": "trustplane-notary",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024,
                "fetch.max.bytes": MAX_MESSAGE_BYTES * 2,
            }
        )
        self.producer = Producer(
            {
                **base,
                "transactional.id": self.group_id,
                "client.id": "trustplane-notary",
                "transaction.timeout.ms": 30000,
                "linger.ms": 2,
                "message.max.bytes": MAX_MESSAGE_BYTES + 1024,
                "compression.type": "lz4",
            }
        )
        self.fetcher = _EventFetcher(settings, self.topics[LOG_TOPIC])

    @property
    def url(self) -> str | None:
        """The proof endpoint's base URL once it serves (port 0 picks a free port)."""
        return self.http.url if self.http else None

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Restore the log, then link and log lineage until :meth:`stop`; raise
        NotaryServiceError when the notary cannot go on."""
        try:
            ensure_notary_topics(self.settings)
            start_transactions(self.producer, NotaryServiceError)
            if self.port >= 0:
                self.http = NotaryHTTPServer(
                    lambda: self.log, self.signer.vkey, "127.0.0.1", self.port
                ).start()
            self.log = self._restore()
            self.consumer.subscribe(
                [self.topics["lineage"]], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            while not self._stop.is_set():
                self._run_batch()
        finally:
            self.close()

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        close_loop(self.consumer, self.producer)
        try:
            self.fetcher.close()
        except RuntimeError:
            pass

    # -- restore ----------------------------------------------------------------

    def _new_log(self) -> NotaryLog:
        return NotaryLog(
            self.signer,
            self.codec,
            checkpoint_every_events=self.checkpoint_every_events,
            checkpoint_every_ms=self.checkpoint_every_ms,
            dedupe_window=self.dedupe_window,
            max_checkpoints=self.max_checkpoints,
            fetch=self.fetcher,
        )

    def _restore(self) -> NotaryLog:
        """A NotaryLog rebuilt from the committed ``lineage-log``, checked against the
        last committed checkpoints."""
        started = time.monotonic()
        notary_log = self._new_log()
        for message in self._read_all(self.topics[LOG_TOPIC]):
            notary_log.restore_record(message.offset() or 0, message.value())
        tail = 3 * self.max_checkpoints  # a checkpoint and a commit marker per transaction
        notes = 0
        for message in self._read_all(self.topics[CHECKPOINT_TOPIC], tail=tail):
            notary_log.restore_checkpoint(message.offset() or 0, message.value())
            notes += 1
        notary_log.commit()
        log.info(
            "notary %s restored %d events and %d checkpoints in %.1f s",
            self.origin,
            notary_log.size,
            notes,
            time.monotonic() - started,
        )
        return notary_log

    def _read_all(self, topic: str, *, tail: int | None = None) -> Iterator[Message]:
        """Every committed record of partition 0 of ``topic`` (or about its last ``tail``)."""
        consumer = Consumer(
            {
                **self.settings.kafka_config(),
                "group.id": f"{self.group_id}-restore",
                "client.id": "trustplane-notary-restore",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024,
            }
        )
        try:
            low, high = self._watermarks(consumer, TopicPartition(topic, 0))
            start = low if tail is None else max(low, high - tail)
            if high <= start:
                return
            consumer.assign([TopicPartition(topic, 0, start)])
            last_progress = time.monotonic()
            while True:
                messages = consumer.consume(1000, timeout=1.0)
                if not messages:
                    if time.monotonic() - last_progress > 60:
                        raise NotaryServiceError(
                            f"reading {topic} stalled for 60 s before its end (offset {high})"
                        )
                    continue
                last_progress = time.monotonic()
                for message in messages:
                    error = message.error()
                    if error is None:
                        yield message
                    elif error.code() == KafkaError._PARTITION_EOF:
                        return
                    else:
                        raise NotaryServiceError(f"reading {topic}: {error.str()}")
        except KafkaException as exc:
            raise NotaryServiceError(f"reading {topic}: {exc}") from exc
        finally:
            consumer.close()

    @staticmethod
    def _watermarks(consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
        """(low, high) offsets, retrying while a new topic's metadata settles."""
        deadline = time.monotonic() + 30
        while True:
            try:
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                return int(low), int(high)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                transient = isinstance(error, KafkaError) and error.code() in (
                    KafkaError._UNKNOWN_PARTITION,
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                    KafkaError.LEADER_NOT_AVAILABLE,
                    KafkaError.NOT_LEADER_FOR_PARTITION,
                )
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    # -- one transaction --------------------------------------------------------

    def _run_batch(self) -> None:
        messages = self._poll_batch()
        notary_log = self.log
        assert notary_log is not None  # noqa: S101 - set by run() before the loop
        records: list[LogRecord] = []
        for message in messages:
            timestamp = message.timestamp()[1]
            record = notary_log.append(
                message.value(),
                source=f"{message.topic()}/{message.partition()}@{message.offset()}",
                timestamp_ms=max(timestamp, 0),
            )
            if record is not None:
                records.append(record)
        due = notary_log.checkpoint_due(_monotonic_ms())
        if not messages and due is None:
            return
        log_topic = self.topics[LOG_TOPIC]
        try:
            self.producer.begin_transaction()
            for record in records:
                self._produce(
                    log_topic,
                    record.key,
                    record.value,
                    notary_log.on_delivery(record),
                )
            if due is not None:
                self._produce(
                    self.topics[CHECKPOINT_TOPIC], self.origin.encode(), due[1].encode(), None
                )
            if messages:
                self.producer.send_offsets_to_transaction(
                    self.consumer.position(self.consumer.assignment()),
                    self.consumer.consumer_group_metadata(),
                )
            self.producer.commit_transaction()
        except KafkaException as exc:
            self._recover(exc)
            return
        notary_log.commit()
        self.committed_transactions += 1

    def _produce(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        on_delivery: Callable[[KafkaError | None, Message], None] | None,
    ) -> None:
        while True:
            try:
                if on_delivery is None:
                    self.producer.produce(topic, key=key, value=value, partition=0)
                else:
                    self.producer.produce(
                        topic, key=key, value=value, partition=0, on_delivery=on_delivery
                    )
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def _poll_batch(self) -> list[Message]:
        deadline = time.monotonic() + self.batch_max_ms / 1000
        batch: list[Message] = []
        while len(batch) < self.batch_max_records and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            messages = self.consumer.consume(self.batch_max_records - len(batch), remaining)
            for message in messages:
                error = message.error()
                if error is None:
                    batch.append(message)
                elif error.fatal():
                    raise NotaryServiceError(
                        f"consumer failed: {error.str()}",
                        hint="another notary with the same group id took over",
                    )
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer: %s", error.str())
            if not messages and batch:
                break
        return batch

    def _recover(self, exc: KafkaException) -> None:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.fatal():
            raise NotaryServiceError(
                f"fenced or fatal transaction error: {error.str()}",
                hint="another notary with the same group id (and so the same log) took over; "
                "run one notary per log",
            ) from exc
        log.warning("transaction failed, aborting and rebuilding the log: %s", exc)
        try:
            self.producer.abort_transaction(30)
            self._rewind()
            self.log = self._restore()
        except KafkaException as again:
            raise NotaryServiceError(
                f"cannot recover from a failed transaction: {again}",
                hint="restart the notary: it rebuilds its log from lineage-log",
            ) from again

    def _rewind(self) -> None:
        rewind_to_committed(self.consumer)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("notary assigned lineage partitions %s", [p.partition for p in partitions])
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("notary revoked lineage partitions %s", [p.partition for p in partitions])
