"""The notary core: hash-links lineage events, logs them in an RFC 9162 Merkle tree,
signs C2SP checkpoints and serves inclusion and consistency proofs. Plain Python.

Log order. Gate workers write lineage to several Kafka partitions, and there is no
order across partitions. The notary therefore *defines* the order: one notary per
log (origin) consumes every partition of the lineage topic and appends events in the
order it receives them. That append order is the log: event ``i`` is Merkle leaf ``i``
and the ``i``-th link of the hash chain, and its index is recorded with it (returned
by ``append``; store it beside the event, e.g. as a ``log_index`` column). Every proof
and checkpoint is about that order, not about Kafka offsets or event times. A second
notary over the same topic would make a different, equally valid log under its own
origin; two notaries must never share an origin.

Restart: the notary's state is the list of leaf hashes and the last ``event_hash``.
Rebuild it from the linked events already stored (``restore``), in log order, before
appending new ones, and keep the signing key's checkpoints consistent: a log must never
sign a checkpoint that is not an extension of one it signed before.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from processors.exceptions import ConfigError
from processors.log.chain import (
    ChainError,
    check_hash_text,
    leaf_bytes,
    link_with_leaf,
    verify_event_hash,
)
from processors.log.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteSigner,
    NoteVerifier,
    sign_checkpoint,
    verify_checkpoint,
)
from processors.log.merkle import (
    HASH_SIZE,
    MerkleLog,
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "InclusionProof",
    "ConsistencyProof",
    "Notary",
    "verify_event_against_checkpoint",
    "verify_checkpoint_consistency",
]


def _encode_hashes(hashes: tuple[bytes, ...]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


def _load(data: str | bytes | Mapping[str, Any], what: str) -> Mapping[str, Any]:
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProofError(f"the {what} is not JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ProofError(f"the {what} is not a JSON object")
    return data


def _field_uint(data: Mapping[str, Any], name: str, what: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProofError(f"the {what}'s {name!r} is missing or not a non-negative integer")
    return value


def _field_hashes(data: Mapping[str, Any], name: str, what: str) -> tuple[bytes, ...]:
    values = data.get(name)
    if not isinstance(values, list):
        raise ProofError(f"the {what}'s {name!r} is missing or not a list")
    hashes = []
    for n, text in enumerate(values):
        try:
            value = base64.b64decode(str(text).encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise ProofError(f"the {what}'s {name}[{n}] is not base64") from exc
        if len(value) != HASH_SIZE:
            raise ProofError(f"the {what}'s {name}[{n}] is {len(value)} bytes, not {HASH_SIZE}")
        hashes.append(value)
    return tuple(hashes)


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 inclusion proof: leaf ``leaf_index`` is in the tree of ``tree_size``.

    JSON: ``{"leaf_index": int, "tree_size": int, "inclusion_path": [base64, ...]}``.
    """

    leaf_index: int
    tree_size: int
    hashes: tuple[bytes, ...]

    def verify(self, leaf_hash: bytes, root: bytes) -> None:
        """Raise ProofError unless the proof leads from ``leaf_hash`` to ``root``."""
        verify_inclusion(leaf_hash, self.leaf_index, self.tree_size, self.hashes, root)

    def to_dict(self) -> dict[str, Any]:
        return {
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "inclusion_path": _encode_hashes(self.hashes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> InclusionProof:
        obj = _load(data, "inclusion proof")
        return cls(
            _field_uint(obj, "leaf_index", "inclusion proof"),
            _field_uint(obj, "tree_size", "inclusion proof"),
            _field_hashes(obj, "inclusion_path", "inclusion proof"),
        )


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 consistency proof: the tree of ``new_size`` extends that of ``old_size``.

    JSON: ``{"old_size": int, "new_size": int, "consistency_path": [base64, ...]}``.
    """

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]

    def verify(self, old_root: bytes, new_root: bytes) -> None:
        """Raise ProofError unless the proof shows ``new_root`` extends ``old_root``."""
        verify_consistency(self.old_size, self.new_size, old_root, new_root, self.hashes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "consistency_path": _encode_hashes(self.hashes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> ConsistencyProof:
        obj = _load(data, "consistency proof")
        return cls(
            _field_uint(obj, "old_size", "consistency proof"),
            _field_uint(obj, "new_size", "consistency proof"),
            _field_hashes(obj, "consistency_path", "consistency proof"),
        )


class Notary:
    """Links, logs and checkpoints lineage events; see the module docstring for order.

    One instance per log, fed from one thread.
    """

    def __init__(
        self,
        origin: str,
        signer: NoteSigner,
        checkpoint_every_events: int = 1000,
        checkpoint_every_ms: int = 1000,
    ) -> None:
        try:
            Checkpoint(origin, 0, bytes(HASH_SIZE))
        except CheckpointError as exc:
            raise ConfigError(f"notary origin {origin!r}: {exc.reason}") from exc
        for name, value in (
            ("checkpoint_every_events", checkpoint_every_events),
            ("checkpoint_every_ms", checkpoint_every_ms),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, not {value!r}")
        self.origin = origin
        self.signer = signer
        self.checkpoint_every_events = checkpoint_every_events
        self.checkpoint_every_ms = checkpoint_every_ms
        self._log = MerkleLog()
        self._head: str | None = None
        self._checkpoint_size = 0
        self._checkpoint_ms: int | None = None
        self._latest: str | None = None

    @property
    def size(self) -> int:
        return self._log.size

    @property
    def head(self) -> str | None:
        """The ``event_hash`` of the last event (the next event's ``prev_hash``)."""
        return self._head

    @property
    def log(self) -> MerkleLog:
        return self._log

    @property
    def latest_checkpoint(self) -> str | None:
        """The last signed checkpoint note, or None before the first."""
        return self._latest

    def append(self, event: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """Link ``event`` after the last one, append it as the next leaf; return
        (its log index, the linked event to store and publish)."""
        linked, leaf = link_with_leaf(event, self._head)
        index = self._log.append(leaf)
        self._head = linked["event_hash"]
        return index, linked

    def restore(self, linked_events: Iterable[Mapping[str, Any]]) -> int:
        """Re-append events this log already linked (in log order), checking each is intact
        and follows the previous one; return the new size."""
        for event in linked_events:
            position = self._log.size
            verify_event_hash(event, position=position)
            if event.get("prev_hash") != self._head:
                raise ChainError(
                    f"the event restored at log index {position} does not follow the "
                    f"previous one (prev_hash {event.get('prev_hash')}, head {self._head})",
                    position=position,
                )
            self._log.append(leaf_bytes(event))
            self._head = event["event_hash"]
        return self._log.size

    def resume(self, tree: MerkleLog, head: str | None) -> None:
        """Continue a log from a saved state instead of re-appending its events: ``tree``
        holds its leaves and ``head`` is the ``event_hash`` of its last event. Only an
        empty notary resumes; the caller vouches that ``tree`` and ``head`` belong
        together (check them against a signed checkpoint and the stored last event)."""
        if self._log.size:
            raise ChainError(f"cannot resume a notary that already holds {self.size} events")
        if (head is None) != (tree.size == 0):
            raise ChainError(f"a log of {tree.size} events cannot have the head {head!r}")
        if head is not None:
            check_hash_text(head, "the head")
        self._log = tree
        self._head = head

    def maybe_checkpoint(self, now_ms: int) -> str | None:
        """A signed checkpoint note if the tree grew since the last checkpoint and either
        ``checkpoint_every_events`` events or ``checkpoint_every_ms`` ms have passed since
        it (or there was none yet); otherwise None."""
        grown = self._log.size - self._checkpoint_size
        if grown <= 0:
            return None
        if (
            self._checkpoint_ms is None
            or grown >= self.checkpoint_every_events
            or now_ms - self._checkpoint_ms >= self.checkpoint_every_ms
        ):
            return self.checkpoint(now_ms)
        return None

    def checkpoint(self, now_ms: int) -> str:
        """Sign a checkpoint of the whole log now, whatever the schedule."""
        size = self._log.size
        note = sign_checkpoint(Checkpoint(self.origin, size, self._log.root(size)), self.signer)
        self._checkpoint_size = size
        self._checkpoint_ms = now_ms
        self._latest = note
        return note

    def prove_inclusion(self, index: int, size: int | None = None) -> InclusionProof:
        size = self._log.size if size is None else size
        return InclusionProof(index, size, tuple(self._log.inclusion_proof(index, size)))

    def prove_consistency(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        new_size = self._log.size if new_size is None else new_size
        hashes = self._log.consistency_proof(old_size, new_size)
        return ConsistencyProof(old_size, new_size, tuple(hashes))


def verify_event_against_checkpoint(
    event: Mapping[str, Any],
    index: int,
    proof: InclusionProof,
    checkpoint_note: str | bytes,
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
) -> Checkpoint:
    """Return the checkpoint if ``event`` is leaf ``index`` of the log it signs; raise a
    VerificationError (NoteError, CheckpointError, ChainError or ProofError) otherwise.

    (1) the checkpoint note carries a valid signature by ``verifier`` and its text is a
    C2SP checkpoint (of log ``origin`` when given); (2) the event is linked and intact:
    its ``event_hash`` matches its content; (3) the proof is for leaf ``index`` of the
    checkpoint's tree size; (4) RFC 9162 §2.1.3.2: the inclusion proof leads from the
    leaf hash SHA-256(0x00 || JCS(event)) to the checkpoint's root hash.
    """
    # (1) Signed checkpoint.
    checkpoint = verify_checkpoint(checkpoint_note, verifier, origin=origin)
    # (2) Intact event.
    verify_event_hash(event)
    # (3) The proof is about this index and this checkpoint.
    if proof.leaf_index != index:
        raise ProofError(f"the proof is for leaf {proof.leaf_index}, not for index {index}")
    if proof.tree_size != checkpoint.size:
        raise ProofError(
            f"the proof is for tree size {proof.tree_size} but the checkpoint is of size "
            f"{checkpoint.size}",
            hint="ask the notary for a proof against this checkpoint's size",
        )
    # (4) Inclusion.
    verify_inclusion(
        leaf_hash(leaf_bytes(event)), index, checkpoint.size, proof.hashes, checkpoint.root_hash
    )
    return checkpoint


def verify_checkpoint_consistency(
    old_note: str | bytes,
    new_note: str | bytes,
    proof: ConsistencyProof,
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
) -> tuple[Checkpoint, Checkpoint]:
    """Return (old, new) checkpoints if the log of ``new_note`` extends that of
    ``old_note``; raise a VerificationError otherwise.

    (1) both notes are checkpoints signed by ``verifier``, of the same log (``origin``
    when given); (2) the proof is between their sizes; (3) RFC 9162 §2.1.4.2 holds for
    their root hashes (equal sizes need equal roots and an empty proof).
    """
    # (1) Two signed checkpoints of one log.
    old = verify_checkpoint(old_note, verifier, origin=origin)
    new = verify_checkpoint(new_note, verifier, origin=origin)
    if old.origin != new.origin:
        raise CheckpointError(f"the checkpoints are of two logs: {old.origin!r}, {new.origin!r}")
    # (2) The proof is about these sizes.
    if (proof.old_size, proof.new_size) != (old.size, new.size):
        raise ProofError(
            f"the proof is from size {proof.old_size} to {proof.new_size}, the checkpoints "
            f"are of sizes {old.size} and {new.size}"
        )
    # (3) Consistency.
    verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof.hashes)
    return old, new
