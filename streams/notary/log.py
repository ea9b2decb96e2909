"""The notary's log without Kafka: linking, Merkle logging, checkpoints, proofs, and what
has committed."""

from __future__ import annotations

import array
import hashlib
import json
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message

from processors.exceptions import ConfigError
from processors.log.attest import LineageSignatureError
from processors.log.chain import ChainError
from processors.log.checkpoint import CheckpointError, NoteError, NoteSigner, verify_checkpoint
from processors.log.merkle import MerkleError
from processors.log.notary import Notary
from streams.codec import Codec, DecodeError, EncodeError
from streams.gatekeys import GateKeys
from streams.notary.exceptions import LogIntegrityError, NotaryServiceError, ProofRequestError
from streams.notary.snapshot import DIGEST_SIZE, Snapshot, StateDelta
from streams.topics import MAX_MESSAGE_BYTES

__all__ = [
    "CONFLICTING_EVENT_ID",
    "LogRecord",
    "NotaryLog",
    "Refusal",
    "content_digest",
    "require_log_index",
    "event_json",
]

log = logging.getLogger(__name__)

_NOT_CONTENT = ("prev_hash", "event_hash", "log_index", "signer", "signature")
"""What an event's content leaves out: what the notary sets, and the gate worker's
signature (two workers may sign the same event with different gate keys)."""
CONFLICTING_EVENT_ID = "conflicting_event_id"
_SCHEMA_HINT = (
    "install the LineageEvent schema with log_index: move schemas/lineage_event.avsc to "
    "schemas/history/lineage_event.v0.avsc and schemas/lineage_event.avsc.next to "
    "schemas/lineage_event.avsc"
)


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


def content_digest(event: Mapping[str, Any]) -> bytes:
    """What makes a redelivery a redelivery: a digest of the event without what the
    notary sets and without the gate worker's signature."""
    body = {k: v for k, v in event.items() if k not in _NOT_CONTENT}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).digest()[:DIGEST_SIZE]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A ``lineage`` record the notary does not log: it goes to ``rejected`` instead."""

    code: str
    reason: str


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

    The log holds one event per ``event_id``: an event whose id it already holds
    (committed, or pending in this transaction) is not logged again. With the same
    content (see :func:`content_digest`) it is a redelivery, counted in ``duplicates``;
    with other content it is refused (code ``conflicting_event_id``), counted in
    ``reused_ids`` and logged as an ALERT.
    """

    def __init__(
        self,
        signer: NoteSigner,
        codec: Codec,
        *,
        gate_keys: GateKeys,
        checkpoint_every_events: int = 1000,
        checkpoint_every_ms: int = 1000,
        max_checkpoints: int = 100_000,
        fetch: Callable[[int], bytes] | None = None,
    ) -> None:
        require_log_index(codec)
        if max_checkpoints < 1:
            raise ConfigError("max_checkpoints must be >= 1")
        self.signer = signer
        self.origin = signer.name
        self.codec = codec
        self.notary = Notary(
            signer.name,
            signer,
            checkpoint_every_events=checkpoint_every_events,
            checkpoint_every_ms=checkpoint_every_ms,
        )
        self.max_checkpoints = max_checkpoints
        self.fetch = fetch
        self.gate_keys = gate_keys
        self.lock = threading.RLock()
        # committed state, one entry per log index (the index: first index of an id)
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._digests = bytearray()
        self._offsets = array.array("q")
        self._head: str | None = None
        self._checkpoints: OrderedDict[int, str] = OrderedDict()
        self._latest: tuple[int, str] | None = None
        self._checkpoints_end = 0
        # this transaction's
        self._pending: dict[str, tuple[int, bytes]] = {}
        self._pending_offsets: dict[int, int] = {}
        self._pending_notes: list[tuple[int, str]] = []
        self._pending_checkpoints_end: int | None = None
        self.duplicates = 0
        self.reused_ids = 0
        self.undecodable = 0
        self.unsigned = 0
        self.restored: dict[str, Any] | None = None
        """How the service restored this log (shown in ``status``)."""
        self.startup: Callable[[], dict[str, Any]] | None = None
        """The notary's start-up timeline (:class:`streams.startup.StartupTimeline`)."""
        self.repeated_ids = 0
        """Events restored from a lineage-log written before the notary logged one event
        per id, whose id an earlier event has (proofs by id give the first)."""

    # -- writing (one thread) ------------------------------------------------

    def append(
        self, value: bytes | None, *, source: str, appended_at_ms: int | None = None
    ) -> LogRecord | Refusal | None:
        """Link and log the LineageEvent in ``value``; return the record to produce, None
        for an event the log already holds, or a :class:`Refusal` for a record that is not
        a LineageEvent signed by a gate key valid at ``appended_at_ms`` (the broker's
        append time of the record) or that reuses a logged event id with other content
        (it is not logged)."""
        try:
            event = self.codec.decode(value or b"", "LineageEvent", max_bytes=MAX_MESSAGE_BYTES)
        except DecodeError as exc:
            self.undecodable += 1
            log.warning("lineage record %s is not a LineageEvent: %s", source, exc.reason)
            return Refusal(exc.code, f"not a LineageEvent: {exc.reason}")
        try:
            self.gate_keys.verify_event(event, at_ms=appended_at_ms)
        except LineageSignatureError as exc:
            self.unsigned += 1
            log.warning("lineage record %s refused: %s", source, exc.reason)
            return Refusal("unsigned_lineage", exc.reason)
        event_id = str(event["event_id"])
        content = content_digest(event)
        with self.lock:
            known = self._known(event_id)
            if known is not None:
                return self._again(event_id, content, known, source)
            event["log_index"] = self.notary.size
            try:
                index, linked = self.notary.append(event)
            except ChainError as exc:
                raise NotaryServiceError(
                    f"lineage record {source} (event {event_id}) cannot be linked: {exc.reason}"
                ) from exc
            self._pending[event_id] = (index, content)
        try:
            encoded = self.codec.encode("LineageEvent", linked)
        except EncodeError as exc:
            raise NotaryServiceError(
                f"the linked event {event_id} cannot be encoded: {exc.reason}", hint=_SCHEMA_HINT
            ) from exc
        return LogRecord(index, event_id, str(index).encode(), encoded)

    def _known(self, event_id: str) -> tuple[int, bytes] | None:
        """(log index, content digest) of the event with this id, if the log holds one."""
        index = self._index.get(event_id)
        if index is not None:
            return index, bytes(self._digests[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE])
        return self._pending.get(event_id)

    def _again(
        self, event_id: str, content: bytes, known: tuple[int, bytes], source: str
    ) -> Refusal | None:
        index, logged = known
        if logged == content:
            self.duplicates += 1
            return None
        self.reused_ids += 1
        log.warning(
            "ALERT: event id %s (%s) is already in the log at index %d with other content: "
            "refused, the first version stays the only one",
            event_id,
            source,
            index,
        )
        return Refusal(
            CONFLICTING_EVENT_ID,
            f"event id {event_id} is already in the log at index {index} with other "
            "content; an event id names one event",
        )

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

    def checkpoint_delivered(self, offset: int) -> None:
        """The ``checkpoints`` offset of this transaction's checkpoint."""
        self._pending_checkpoints_end = offset + 1

    def on_checkpoint_delivery(self) -> Callable[[KafkaError | None, Message], None]:
        """A producer delivery callback that records a checkpoint's ``checkpoints`` offset."""

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                self.checkpoint_delivered(msg.offset() or 0)

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
            for event_id, (index, content) in self._pending.items():
                self._index[event_id] = index
                self._ids.append(event_id)
                self._digests += content
            self._head = self.notary.head
            for size, note in self._pending_notes:
                self._keep_checkpoint(size, note)
            if self._pending_checkpoints_end is not None:
                self._checkpoints_end = self._pending_checkpoints_end
            self._pending.clear()
            self._pending_offsets.clear()
            self._pending_notes.clear()
            self._pending_checkpoints_end = None

    def _keep_checkpoint(self, size: int, note: str) -> None:
        self._checkpoints[size] = note
        while len(self._checkpoints) > self.max_checkpoints:
            self._checkpoints.popitem(last=False)
        if self._latest is None or size >= self._latest[0]:
            self._latest = (size, note)

    # -- restoring (before serving) ------------------------------------------

    def resume(self, snapshot: Snapshot) -> None:
        """Continue from a snapshot of the committed state (before restoring anything
        else): ``restore_record`` and ``restore_checkpoint`` then add what came after."""
        with self.lock:
            if self.notary.size or self._offsets:
                raise NotaryServiceError("a snapshot can only be resumed by an empty log")
            self.notary.resume(snapshot.tree, snapshot.head)
            self._offsets = snapshot.offsets
            self._digests = snapshot.digests
            self._ids = snapshot.ids
            # the first index of each id, should an old log hold an id twice
            ids, size = snapshot.ids, snapshot.size
            self._index = dict(zip(reversed(ids), range(size - 1, -1, -1), strict=True))
            self.repeated_ids = snapshot.size - len(self._index)
            self._head = snapshot.head
            for size, note in snapshot.checkpoints:
                self._keep_checkpoint(size, note)
            self._checkpoints_end = snapshot.checkpoints_end

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
            if self._index.setdefault(event_id, position) != position:
                self.repeated_ids += 1
            self._ids.append(event_id)
            self._digests += content_digest(event)
            self._offsets.append(offset)
            self._head = self.notary.head

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
            self._checkpoints_end = offset + 1

    # -- snapshots (the writer thread; committed state only) -----------------

    def state_since(self, size: int, checkpoint_size: int) -> StateDelta:
        """What committed after the first ``size`` events, with the checkpoints kept
        larger than ``checkpoint_size``: what a snapshot of ``size`` events lacks."""
        with self.lock:
            committed = len(self._offsets)
            if not 0 <= size <= committed:
                raise NotaryServiceError(
                    f"a snapshot of {size} events is not of this log of {committed}"
                )
            offsets = self._offsets[size:committed]
            if sys.byteorder != "little":
                offsets.byteswap()
            checkpoints: list[tuple[int, str]] = []
            for kept in reversed(self._checkpoints):
                if kept <= checkpoint_size:
                    break
                checkpoints.append((kept, self._checkpoints[kept]))
            checkpoints.reverse()
            return StateDelta(
                old_size=size,
                size=committed,
                head=self._head,
                subtrees=self.notary.log.subtrees(size, committed),
                offsets=offsets.tobytes(),
                digests=bytes(self._digests[size * DIGEST_SIZE : committed * DIGEST_SIZE]),
                ids=self._ids[size:committed],
                checkpoints=checkpoints,
                log_end=self._offsets[-1] + 1 if committed else 0,
                checkpoints_end=self._checkpoints_end,
            )

    def kept_checkpoints(self) -> list[tuple[int, str]]:
        """(size, note) of every committed checkpoint kept, oldest first."""
        with self.lock:
            return list(self._checkpoints.items())

    def offset_of(self, index: int) -> int:
        """The ``lineage-log`` offset of committed log index ``index``."""
        return self._offsets[index]

    @property
    def head(self) -> str | None:
        """The ``event_hash`` of the last committed event."""
        return self._head

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
            "unsigned": self.unsigned,
            "repeated_ids": self.repeated_ids,
            "restored": self.restored,
            "startup": self.startup() if self.startup is not None else None,
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
