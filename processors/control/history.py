"""The control log's integrity: no command erased, reordered, forged in or post-dated.

Every gate worker rebuilds its state by replaying the ``control`` topic, so whoever can
write (or delete) records there must not be able to change what the state says without
every worker noticing. :class:`ControlLog` admits the records of the topic one by one,
in log order, and refuses, with the reason, every record that is not an authentic
command in its place:

(1) a tombstone (a record without value): commands are never deleted;
(2) a value that is not a ControlCommand record;
(3) a record without the broker's append time (``message.timestamp.type`` must be
    ``LogAppendTime``): the append time is the clock every worker judges a command by,
    so each reaches the same verdict whenever it reads it;
(4) a record whose Kafka key is not its command's subject;
(5) a command that is unsigned, or not signed by a key trusted *when the broker
    appended it* (an operator key: a root key of the operator keyset, or a key enrolled
    by an ``operator.enroll`` command earlier in the log; or a gate key for the kinds a
    gate issues), or whose signature does not verify;
(6) a command without a chain link (signed before chaining);
(7) a command out of place in its signer's history (below).

Signer histories
================

Each signer chains its own commands (:class:`~processors.control.commands.ChainLink`,
inside the signed body): ``sequence`` counts the signer's commands from 0, and
``previous`` is the digest (SHA-256 of the exact signed message, ``sha256:<hex>``) of
the signer's command ``sequence - 1``. A signer is an operator key (its key id), or a
gate worker (its ``issued_by``, ``gate:<worker id>``: the gate's keys are shared and
rotate, the worker id is its single writer, fenced by its transactional id).

Reading the log in order, the next command of a signer must be sequence ``n + 1``
naming the digest of its sequence ``n``. Otherwise the history is broken
(:class:`HistoryProblem`):

* **gap**: a sequence number is missing (a record was deleted, or never appended);
* **fork**: two different commands claim the same place (the key signed two histories).

A re-appended copy of a command already read is a replay: refused, harmless. A worker
that finds a break, or a log that does not start at offset 0 (records deleted), refuses
to start (:class:`ControlHistoryError`, naming the signer, the missing sequence, the
offsets and what to do); a running worker that finds one stops, so no two workers ever
decide on different histories.

What chaining cannot see: the *last* commands of a signer deleted together with nothing
after them, or a signer's whole history deleted from the middle of the log (the log
start offset catches deletions from its start). The topic must be written and altered
only by the principals the cluster's ACLs allow (``DeleteRecords`` and ``AlterConfigs``
on ``control`` for no one).

Only commands signed by a key trusted at their append time take part in histories: a
forged record, or one signed by a retired key, is refused and cannot break a history
(a stolen retired key cannot stop workers from starting).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from processors.control.commands import (
    CONTROL_PAYLOAD_TYPE,
    ChainLink,
    Refused,
    command_digest,
    command_signing_message,
    parse_payload,
)
from processors.control.operators import EnrolledOperators, OperatorKeys
from processors.crypto.jcs import CanonicalizationError
from processors.crypto.keys import KeyError_, Keyset, verify_signature
from processors.exceptions import VerificationError
from processors.timefmt import iso_ms

__all__ = [
    "GATE_KINDS",
    "LOG_APPEND_TIME",
    "Admitted",
    "CommandVerifier",
    "ControlHistory",
    "ControlHistoryError",
    "ControlLog",
    "HistoryProblem",
    "LogEntry",
    "Signer",
    "Verified",
]

GATE_KINDS = frozenset({"agent.quarantine", "runtime.quarantine"})
"""Kinds a gate worker may sign with its own key: it quarantines, only operators release."""
LOG_APPEND_TIME = 2
"""Kafka's timestamp type for "set by the broker when it appended the record"
(``confluent_kafka.TIMESTAMP_LOG_APPEND_TIME``)."""

_RECORD_FIELDS: tuple[tuple[str, type], ...] = (
    ("command_id", str),
    ("kind", str),
    ("subject", str),
    ("payload", str),
    ("issued_by", str),
    ("issued_at_ms", int),
    ("key_id", str),
)


@dataclass(frozen=True, slots=True, order=True)
class Signer:
    """Whose history a command belongs to: an operator key, or a gate worker."""

    role: Literal["operator", "gate"]
    name: str
    """The operator key id, or the gate worker's ``issued_by``."""

    def __str__(self) -> str:
        return f"{'operator key' if self.role == 'operator' else 'gate worker'} {self.name!r}"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One record of the control topic as a reader got it from Kafka."""

    offset: int
    key: bytes | None
    record: Mapping[str, Any] | None
    """The decoded ControlCommand; None for a tombstone or an undecodable value."""
    timestamp_type: int
    timestamp_ms: int
    tombstone: bool = False
    decode_error: str | None = None


@dataclass(frozen=True, slots=True)
class Verified:
    """A command whose signature verified with a key trusted at the time it was judged."""

    record: Mapping[str, Any] = field(repr=False)
    command_id: str
    kind: str
    subject: str
    issued_by: str
    issued_at_ms: int
    key_id: str
    payload: dict[str, Any] = field(repr=False)
    signer: Signer
    link: ChainLink | None
    digest: str


@dataclass(frozen=True, slots=True)
class Admitted:
    """A record of the log that is an authentic command in its place."""

    command: Verified
    echo: bool
    """This state issued (and applied) the command itself; the log confirms it."""


@dataclass(frozen=True, slots=True)
class HistoryProblem:
    """Why the control log cannot be trusted as a whole (workers refuse to start)."""

    kind: Literal["gap", "fork", "truncated", "untimed", "partitions"]
    reason: str
    signer: Signer | None = None
    offset: int | None = None
    key_id: str | None = None
    append_ms: int | None = None

    @property
    def hint(self) -> str:
        if self.kind in ("gap", "fork"):
            when = f" (before {iso_ms(self.append_ms)})" if self.append_ms is not None else ""
            return (
                "restore the control topic from a replica or backup so the history is "
                "whole; if the missing commands are lost for good (or the key signed two "
                f"histories), retire key {self.key_id!r} in the trust root{when} so that "
                "its later records are refused as untrusted, and re-issue with another key "
                "what it should still say"
            )
        if self.kind == "truncated":
            return (
                "records were deleted from the control topic (DeleteRecords, or a retention "
                "limit): restore it from a replica or backup, and keep it for ever "
                "(cleanup.policy=delete, retention.ms=-1, retention.bytes=-1); deny "
                "DeleteRecords on it in the ACLs"
            )
        if self.kind == "untimed":
            return (
                "set message.timestamp.type=LogAppendTime on the control topic: every worker "
                "judges a command by the broker's append time, the same whenever it reads it"
            )
        return "the control topic must have exactly one partition: one order of commands"


class ControlHistoryError(VerificationError):
    """The control log is not a whole, unedited history: a worker must not decide on it."""

    def __init__(self, problems: list[HistoryProblem], *, topic: str = "control") -> None:
        self.problems = list(problems)
        lines = "\n  ".join(f"- {p.reason}" for p in self.problems)
        hints = list(dict.fromkeys(p.hint for p in self.problems))
        super().__init__(
            f"the history of {topic} is broken ({len(self.problems)} problem(s)); "
            f"no decisions on it:\n  {lines}",
            hint="\n    ".join(hints),
        )


class CommandVerifier:
    """Checks that a ControlCommand record is signed by a key trusted at a given time.

    ``operator_keys`` are the root keys (the operator keyset file); ``enrolled``, the keys
    ``operator.enroll`` commands enrolled (as the log has been read so far). A key of
    either is an operator signer of its own."""

    def __init__(
        self,
        operator_keys: Keyset,
        gate_keys: Keyset | None = None,
        gate_kinds: AbstractSet[str] = GATE_KINDS,
        *,
        enrolled: EnrolledOperators | None = None,
    ) -> None:
        self.operator_keys = operator_keys
        self.keys = OperatorKeys(operator_keys, enrolled)
        self.gate_keys = gate_keys
        self.gate_kinds = frozenset(gate_kinds)

    @property
    def enrolled(self) -> EnrolledOperators | None:
        return self.keys.enrolled

    def signer_of(
        self, key_id: str, kind: str, issued_by: str, at_ms: int, *, when: str = ""
    ) -> tuple[Signer, Ed25519PublicKey]:
        """The signer a command by ``key_id`` belongs to and its public key, or Refused
        when the key is not trusted at ``at_ms``: a root operator key, then an enrolled
        one, then (for the gate's kinds) a gate key."""
        try:
            return Signer("operator", key_id), self.keys.key_for(key_id, at_ms)
        except KeyError_ as exc:
            if self.gate_keys is not None and kind in self.gate_kinds:
                try:
                    return Signer("gate", issued_by), self.gate_keys.key_for(key_id, at_ms)
                except KeyError_:
                    pass
            raise Refused(
                f"key_id {key_id!r} is not an operator key valid at {iso_ms(at_ms)}{when}: "
                f"{exc.reason}"
            ) from None

    def verify(self, record: Mapping[str, Any], at_ms: int, *, when: str = "") -> Verified:
        """Steps (0)-(4) of a command's verification; raises Refused."""
        # (0) the record has the ControlCommand fields, with their types
        if not isinstance(record, Mapping):
            raise Refused(f"a control command is a ControlCommand record, not {record!r:.80}")
        for name, field_type in _RECORD_FIELDS:
            value = record.get(name)
            if not isinstance(value, field_type) or isinstance(value, bool):
                raise Refused(f"field {name} is missing or not a {field_type.__name__}")
        command_id: str = record["command_id"]
        kind: str = record["kind"]
        subject: str = record["subject"]
        issued_by: str = record["issued_by"]
        issued_at_ms: int = record["issued_at_ms"]
        key_id: str = record["key_id"]
        for name, value in (("command_id", command_id), ("kind", kind), ("issued_by", issued_by)):
            if not value.strip():
                raise Refused(f"field {name} is empty")
        sequence, previous = record.get("sequence"), record.get("previous")
        link = None
        if sequence is not None or previous is not None:
            link = ChainLink(sequence, previous)  # type: ignore[arg-type]  # checked next
            problem = link.problem()
            if problem is not None:
                raise Refused(f"bad chain link: {problem}")

        # (1) the record has a signature
        signature = record.get("signature")
        if not isinstance(signature, bytes | bytearray) or not signature:
            raise Refused(
                "the command is not signed; operators sign commands with their key "
                f"(payload type {CONTROL_PAYLOAD_TYPE})"
            )

        # (2) key_id is an operator key valid at ``at_ms`` -- or, for the few kinds the
        #     gate issues itself (quarantine on an integrity violation), a gate key
        signer, public_key = self.signer_of(key_id, kind, issued_by, at_ms, when=when)

        # (3) the payload parses as a JSON object (it is part of the signed body)
        payload = parse_payload(record["payload"])

        # (4) the signature verifies over PAE(control payload type, canonical body)
        try:
            message = command_signing_message(
                command_id=command_id,
                kind=kind,
                subject=subject,
                payload=payload,
                issued_by=issued_by,
                issued_at_ms=issued_at_ms,
                key_id=key_id,
                link=link,
            )
        except CanonicalizationError as exc:
            raise Refused(f"the payload has no canonical JSON form: {exc.reason}") from None
        try:
            verify_signature(public_key, bytes(signature), message)
        except KeyError_ as exc:
            raise Refused(
                f"the signature does not verify with {signer.role} key {key_id!r}: "
                f"{exc.reason} (the command was changed after signing, or another key "
                "signed it)"
            ) from None
        return Verified(
            record,
            command_id,
            kind,
            subject,
            issued_by,
            issued_at_ms,
            key_id,
            payload,
            signer,
            link,
            command_digest(message),
        )


@dataclass(slots=True)
class _Head:
    sequence: int
    digest: str
    offset: int | None
    """Where the log has it; None while it is only applied here (issued, not read back)."""


class ControlHistory:
    """Each signer's history as read from the log (and as issued here, not yet read
    back): where the next command of a signer must sit, and what breaks a history."""

    def __init__(self) -> None:
        self._heads: dict[Signer, _Head] = {}
        self._placed: dict[tuple[Signer, int], tuple[str, int | None]] = {}
        self._seen: dict[str, int] = {}
        self._local: set[str] = set()
        self._broken: dict[Signer, HistoryProblem] = {}
        self.problems: list[HistoryProblem] = []

    @property
    def heads(self) -> dict[Signer, int]:
        """The last sequence number of each signer (a copy: safe from another thread)."""
        return {signer: head.sequence for signer, head in dict(self._heads).items()}

    def next_link(self, signer: Signer) -> ChainLink:
        """Where the next command of ``signer`` sits; Refused if its history is broken."""
        broken = self._broken.get(signer)
        if broken is not None:
            raise Refused(f"the history of {signer} is broken: {broken.reason}")
        head = self._heads.get(signer)
        return ChainLink.first() if head is None else ChainLink(head.sequence + 1, head.digest)

    def place_local(self, command: Verified) -> None:
        """A command this state issued and applied: the next of its signer's history
        until the log confirms it."""
        assert command.link == self.next_link(command.signer)  # noqa: S101 - issue() signed it so
        self._advance(command, None)
        self._local.add(command.digest)

    def place(self, command: Verified, offset: int, append_ms: int) -> bool:
        """Place a command read from the log at ``offset``. True: it is this state's own
        command read back. Raises Refused for a replay, or for a command out of place
        (recorded in :attr:`problems`)."""
        link = command.link
        assert link is not None  # noqa: S101 - the log refuses unchained commands first
        if command.digest in self._local:
            self._local.discard(command.digest)
            self._seen[command.digest] = offset
            self._placed[(command.signer, link.sequence)] = (command.digest, offset)
            return True
        seen = self._seen.get(command.digest)
        if seen is not None:
            raise Refused(
                f"a replay: this exact command (sequence {link.sequence} of {command.signer}) "
                f"is already at offset {seen}"
            )
        broken = self._broken.get(command.signer)
        if broken is not None:
            raise Refused(
                f"not applied: the history of {command.signer} is broken before it "
                f"({broken.reason})"
            )
        head = self._heads.get(command.signer)
        expected = ChainLink.first() if head is None else ChainLink(head.sequence + 1, head.digest)
        if link == expected:
            self._advance(command, offset)
            return False
        problem = self._problem(command, head, offset, append_ms)
        self.problems.append(problem)
        self._broken[command.signer] = problem
        raise Refused(problem.reason)

    def add_problem(self, problem: HistoryProblem) -> None:
        """A problem of the whole log (log start, timestamps, partitions): the first of
        each kind is enough."""
        if all(p.kind != problem.kind for p in self.problems):  # the first of each kind
            self.problems.append(problem)

    def _advance(self, command: Verified, offset: int | None) -> None:
        assert command.link is not None  # noqa: S101 - only chained commands are placed
        self._heads[command.signer] = _Head(command.link.sequence, command.digest, offset)
        self._placed[(command.signer, command.link.sequence)] = (command.digest, offset)
        if offset is not None:
            self._seen[command.digest] = offset

    def _where(self, signer: Signer, sequence: int) -> str:
        placed = self._placed.get((signer, sequence))
        if placed is None or placed[1] is None:
            return f"sequence {sequence}"
        return f"sequence {sequence} (offset {placed[1]})"

    def _problem(
        self, command: Verified, head: _Head | None, offset: int, append_ms: int
    ) -> HistoryProblem:
        link = command.link
        assert link is not None  # noqa: S101 - placed commands are chained
        signer = command.signer
        at = f"sequence {link.sequence} at offset {offset} (command {command.command_id!r})"
        if head is None or link.sequence > head.sequence + 1:
            first, last = (0 if head is None else head.sequence + 1), link.sequence - 1
            missing = f"sequence {first}" if first == last else f"sequences {first}-{last}"
            before = (
                "its first command in the log is"
                if head is None
                else f"after {self._where(signer, head.sequence)} comes"
            )
            return HistoryProblem(
                "gap",
                f"gap in the history of {signer}: {missing} missing; {before} {at}",
                signer,
                offset,
                command.key_id,
                append_ms,
            )
        if link.sequence == head.sequence + 1:
            text = (
                f"fork in the history of {signer}: {at} names {link.previous} as its "
                f"previous command, but {self._where(signer, head.sequence)} is {head.digest}"
            )
        else:
            text = (
                f"fork in the history of {signer}: {at} claims a place already taken by "
                f"{self._where(signer, link.sequence)}"
            )
        return HistoryProblem("fork", text, signer, offset, command.key_id, append_ms)


class ControlLog:
    """Admits the records of the control topic in log order: steps (1)-(7) above."""

    def __init__(self, verifier: CommandVerifier, history: ControlHistory | None = None) -> None:
        self.verifier = verifier
        self.history = history if history is not None else ControlHistory()

    def admit(self, entry: LogEntry) -> Admitted:
        """The authentic command in its place at ``entry``, or Refused with the reason."""
        key = _text(entry.key)
        # (1) a value: control commands are never deleted
        if entry.tombstone:
            raise Refused(
                f"a tombstone (a record without value) under key {key}: control commands are "
                "never deleted; someone tried to erase what the subject's commands say"
            )
        # (2) a ControlCommand record
        record = entry.record
        if record is None:
            raise Refused(f"not a ControlCommand record under key {key}: {entry.decode_error}")
        # (3) stamped with the broker's append time, the one clock of every verdict
        if entry.timestamp_type != LOG_APPEND_TIME:
            self.history.add_problem(
                HistoryProblem(
                    "untimed",
                    "records of the control topic carry no broker append time "
                    f"(timestamp type {entry.timestamp_type}, first at offset {entry.offset})",
                    offset=entry.offset,
                )
            )
            raise Refused(
                "the record has no broker append time (the control topic's "
                "message.timestamp.type is not LogAppendTime): it cannot be judged the same "
                "way by every worker"
            )
        # (4) stored under its command's subject
        subject = record.get("subject") if isinstance(record, Mapping) else None
        if not isinstance(subject, str) or entry.key != subject.encode():
            raise Refused(
                f"stored under key {key}, but its subject is "
                f"{_text(subject.encode()) if isinstance(subject, str) else 'missing'}: "
                "a command is valid only under its own subject"
            )
        # (5) signed by a key trusted when the broker appended it
        command = self.verifier.verify(
            record, entry.timestamp_ms, when=" (when the broker appended it)"
        )
        # (6) chained
        if command.link is None:
            raise Refused(
                f"unchained: signed without sequence/previous (before control history "
                f"chaining), so its erasure could not be noticed; re-issue it with a "
                f"current `trustplane` (signer: {command.signer})"
            )
        # (7) in its place in the signer's history
        echo = self.history.place(command, entry.offset, entry.timestamp_ms)
        return Admitted(command, echo)


def _text(key: bytes | None) -> str:
    if key is None:
        return "(none)"
    text = key.decode("utf-8", errors="replace")
    return repr(text if len(text) <= 120 else text[:120] + "...")
