"""Hash-linking of lineage events into a tamper-evident chain.

Definitions (a third party can recompute every value from the events alone):

- An event is a JSON object: the LineageEvent record (``schemas/lineage_event.avsc``)
  with Avro values as JSON values (strings, ``null``, integers, arrays; maps as objects).
- ``JCS(x)`` is the RFC 8785 canonical JSON serialization of ``x`` (UTF-8 bytes).
- ``event_hash = "sha256:" + lowercase_hex(SHA-256(P || 0x00 || JCS(E)))``, where
  ``P`` is the event's ``prev_hash`` as UTF-8 (the empty string when it is ``null``),
  and ``E`` is the event with its ``event_hash`` member removed and its ``prev_hash``
  member present (``null`` for the first event of a chain).
- ``prev_hash`` of an event is the ``event_hash`` of the event before it in the chain
  (``null`` for the first event).
- The Merkle leaf of a linked event (see ``processors.log.merkle``) is ``JCS(event)`` with
  both ``prev_hash`` and ``event_hash`` present; its leaf hash is
  ``SHA-256(0x00 || JCS(event))``.

Changing any member of an event changes its ``event_hash``; dropping, inserting or
reordering events breaks the ``prev_hash`` link of the event that follows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from processors.crypto.jcs import CanonicalizationError, canonical_json
from processors.exceptions import VerificationError

__all__ = [
    "HASH_PREFIX",
    "ChainError",
    "check_hash_text",
    "compute_event_hash",
    "link",
    "link_with_leaf",
    "leaf_bytes",
    "verify_event_hash",
    "verify_chain",
]

HASH_PREFIX = "sha256:"
_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")


class ChainError(VerificationError):
    """A lineage event or chain of events has been altered, dropped, inserted or reordered.

    ``position`` is the index (in the sequence given) of the first event found wrong.
    """

    def __init__(
        self, reason: str, *, position: int | None = None, hint: str | None = None
    ) -> None:
        super().__init__(reason, hint=hint)
        self.position = position


def check_hash_text(value: object, what: str, position: int | None = None) -> str:
    """``value`` if it is an event hash as text (``sha256:`` and 64 lowercase hex digits),
    else raise ChainError."""
    if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
        raise ChainError(
            f"{what} is {value!r}, not 'sha256:' followed by 64 lowercase hex digits",
            position=position,
        )
    return value


_EVENT_HASH_ORDER = "event_hash".encode("utf-16-be")


def _canonical(value: Any) -> bytes:
    try:
        return canonical_json(value)
    except CanonicalizationError as exc:
        raise ChainError(f"the event has no canonical JSON form: {exc.reason}") from exc


def _halves(body: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """RFC 8785 members of ``body`` (which has no ``event_hash``) in two runs: those whose
    names sort before ``"event_hash"`` (UTF-16 code units, §3.2.3) and those after. The
    canonical body is ``{before,after}`` and the canonical linked event is
    ``{before,"event_hash":"…",after}``: one canonicalization serves both."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key, value in body.items():
        if not isinstance(key, str):
            raise ChainError(f"event member names must be strings, not {type(key).__name__}")
        order = key.encode("utf-16-be", errors="surrogatepass")
        (before if order < _EVENT_HASH_ORDER else after)[key] = value
    return _canonical(before)[1:-1], _canonical(after)[1:-1]


def _object(*runs: bytes) -> bytes:
    return b"{" + b",".join(run for run in runs if run) + b"}"


def _hash(prev_hash: str | None, canonical_body: bytes) -> str:
    prefix = (prev_hash or "").encode("utf-8")
    return HASH_PREFIX + hashlib.sha256(prefix + b"\x00" + canonical_body).hexdigest()


def compute_event_hash(event: Mapping[str, Any], prev_hash: str | None) -> str:
    """The ``event_hash`` the event must have when it follows ``prev_hash`` (see module)."""
    body = {k: v for k, v in event.items() if k != "event_hash"}
    body["prev_hash"] = prev_hash
    return _hash(prev_hash, _canonical(body))


def link_with_leaf(event: Mapping[str, Any], prev_hash: str | None) -> tuple[dict[str, Any], bytes]:
    """``link(event, prev_hash)`` and the linked event's ``leaf_bytes``, canonicalizing the
    event once (the notary's hot path)."""
    if prev_hash is not None:
        check_hash_text(prev_hash, "prev_hash", None)
    linked = {k: v for k, v in event.items() if k != "event_hash"}
    linked["prev_hash"] = prev_hash
    before, after = _halves(linked)
    event_hash = _hash(prev_hash, _object(before, after))
    linked["event_hash"] = event_hash
    return linked, _object(before, b'"event_hash":"' + event_hash.encode() + b'"', after)


def link(event: Mapping[str, Any], prev_hash: str | None) -> dict[str, Any]:
    """A copy of ``event`` with ``prev_hash`` set and ``event_hash`` computed.

    Any ``prev_hash``/``event_hash`` already in the event are replaced.
    """
    return link_with_leaf(event, prev_hash)[0]


def leaf_bytes(event: Mapping[str, Any]) -> bytes:
    """The Merkle leaf of a linked event: RFC 8785 canonical JSON of the whole event."""
    check_hash_text(event.get("event_hash"), "event_hash", None)
    return _canonical(dict(event))


def verify_event_hash(event: Mapping[str, Any], *, position: int | None = None) -> None:
    """Return nothing if the event's ``event_hash`` matches its content, else raise."""
    where = "the event" if position is None else f"the event at position {position}"
    if not isinstance(event, Mapping):
        raise ChainError(f"{where} is a {type(event).__name__}, not an object", position=position)
    stated = check_hash_text(event.get("event_hash"), f"{where}'s event_hash", position)
    prev = event.get("prev_hash")
    if prev is not None:
        check_hash_text(prev, f"{where}'s prev_hash", position)
    try:
        expected = compute_event_hash(event, prev)
    except ChainError as exc:
        raise ChainError(f"{where}: {exc.reason}", position=position) from exc
    if expected != stated:
        event_id = event.get("event_id")
        raise ChainError(
            f"{where} (event_id {event_id!r}) has been altered: its content hashes to "
            f"{expected}, not to its event_hash {stated}",
            position=position,
        )


def verify_chain(events: Iterable[Mapping[str, Any]], *, anchor: str | None = None) -> None:
    """Return nothing if ``events`` form one unbroken chain, else raise ChainError naming
    the first broken position.

    ``anchor`` is the ``event_hash`` of the event just before the first one given (for a
    segment of a longer chain); ``None`` means the sequence starts the chain.

    For each event, at position i: (1) its ``event_hash`` matches its content (else it
    was altered); (2) its ``prev_hash`` is the ``event_hash`` of the event at i - 1, or
    ``anchor`` for i = 0 (else events were dropped, inserted or reordered before it).
    """
    sequence = list(events)
    if anchor is not None:
        check_hash_text(anchor, "anchor", None)
    position_of: dict[str, int] = {}
    for position, event in enumerate(sequence):
        if isinstance(event, Mapping) and isinstance(event.get("event_hash"), str):
            position_of.setdefault(event["event_hash"], position)
    expected_prev = anchor
    for position, event in enumerate(sequence):
        # (1) The event is intact.
        verify_event_hash(event, position=position)
        # (2) It follows the event before it.
        prev = event.get("prev_hash")
        if prev != expected_prev:
            raise ChainError(
                _describe_break(position, prev, expected_prev, position_of),
                position=position,
                hint="compare with the lineage log's signed checkpoints to find the "
                "missing or extra events",
            )
        expected_prev = event["event_hash"]


def _describe_break(
    position: int, prev: str | None, expected: str | None, position_of: Mapping[str, int]
) -> str:
    here = f"the event at position {position}"
    if prev is None:
        return (
            f"{here} starts a chain (prev_hash is null) but should follow {expected}: "
            "it was inserted, or the events before it belong to another chain"
        )
    linked_to = position_of.get(prev)
    if linked_to is None:
        if position == 0:
            return (
                f"{here} follows {prev}, which is not "
                + ("the anchor" if expected is not None else "the start of the chain")
                + ": events before it were dropped, or pass anchor= for a segment"
            )
        return (
            f"{here} follows an event that is not in the sequence ({prev}): events were "
            f"dropped between positions {position - 1} and {position}, or it was inserted"
        )
    if linked_to < position:
        return (
            f"{here} follows the event at position {linked_to}, but "
            f"{position - 1 - linked_to} event(s) stand between them: they were inserted, "
            "duplicated or reordered"
        )
    return (
        f"{here} follows the event at position {linked_to}, which comes after it: the "
        "events are out of order"
    )
