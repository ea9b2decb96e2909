"""Relays commands that operators' browsers signed to ``control``; signs nothing itself.

A browser asks :meth:`CommandRelay.prepare` for the subject of what it wants to do and
the next place in its key's history, signs the command with its own key, and posts the
record. The relay checks only what would make the record harmful to others rather than
merely refused: its shape (the Avro types), a canonical payload, the subject the kind
requires, and the chain link. A second command at the same place in a key's history
would be a fork, which stops every worker, so the relay is the single writer per key:
one lock, a transactional producer that fences an older console, the log read to its
end, and the link compared before anything is produced. Whether the signature is good
and the key trusted is for the workers to say; the relay reports what the replica, which
runs their code, decided.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaException, Producer

from processors.control.commands import Refused, subject_for
from processors.crypto.jcs import CanonicalizationError, canonical_json
from processors.exceptions import TrustplaneError
from processors.layers.integrity.registry import runtime_quarantine_subject
from processors.layers.killswitch import subject_of as killswitch_subject
from processors.layers.policy import CONTROL_SUBJECT
from streams import kafka, names
from streams.codec import default_codec
from streams.config import Settings
from streams.console.replica import AppliedCommand, ControlReplica

__all__ = ["CONSOLE_KINDS", "CommandRelay", "LinkConflict", "RelayError"]

log = logging.getLogger(__name__)


class RelayError(TrustplaneError):
    """A command the relay will not send (the reason says what to fix)."""


class LinkConflict(RelayError):
    """The record is not the next in its key's history (another tab signed first)."""

    def __init__(self, reason: str, expected: dict[str, Any]) -> None:
        super().__init__(reason, hint="sign it again at the place given")
        self.expected = expected


def _review_subject(payload: Mapping[str, Any]) -> str:
    intent_id = payload.get("intent_id")
    if not isinstance(intent_id, str) or not intent_id.strip():
        raise ValueError("a review answer names the intent_id it answers")
    return f"review/{intent_id}"


def _runtime_subject(payload: Mapping[str, Any]) -> str:
    runtime_id = payload.get("runtime_id")
    if not isinstance(runtime_id, str) or not runtime_id:
        raise ValueError("a runtime release names the runtime_id")
    return runtime_quarantine_subject(runtime_id)


def _builtin(kind: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda payload: subject_for(kind, payload)


CONSOLE_KINDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "killswitch.engage": killswitch_subject,
    "killswitch.release": killswitch_subject,
    "review.approve": _review_subject,
    "review.deny": _review_subject,
    "agent.release": _builtin("agent.release"),
    "agent.quarantine": _builtin("agent.quarantine"),
    "agent.suspend": _builtin("agent.suspend"),
    "agent.reinstate": _builtin("agent.reinstate"),
    "runtime.release": _runtime_subject,
    "policy.publish": lambda payload: CONTROL_SUBJECT,
}
"""What an operator can do from the console, and the subject each kind must carry."""

_TEXT_FIELDS = ("command_id", "kind", "subject", "payload", "issued_by", "key_id")
_MAX_PAYLOAD = 512 * 1024


def _subject(kind: str, payload: Mapping[str, Any]) -> str:
    rule = CONSOLE_KINDS.get(kind)
    if rule is None:
        raise RelayError(
            f"the console does not send {kind!r} commands",
            hint=f"it sends {', '.join(sorted(CONSOLE_KINDS))}; use the CLI for the others",
        )
    try:
        return rule(payload)
    except (ValueError, Refused, TrustplaneError) as exc:
        raise RelayError(f"{kind}: {getattr(exc, 'reason', exc)}") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_record(record: object) -> dict[str, Any]:
    """The ControlCommand record a browser posted, with its signature as bytes; raises
    :class:`RelayError` for anything that is not one."""
    if not isinstance(record, dict):
        raise RelayError("the command must be a JSON object")
    expected = {*_TEXT_FIELDS, "issued_at_ms", "sequence", "previous", "signature"}
    if set(record) != expected:
        missing, extra = expected - set(record), set(record) - expected
        raise RelayError(
            f"a command record has exactly the ControlCommand fields (missing {sorted(missing)}, "
            f"unexpected {sorted(extra)})"
        )
    for name in _TEXT_FIELDS:
        if not isinstance(record[name], str) or not record[name]:
            raise RelayError(f"{name} must be a non-empty string")
    if not _is_int(record["issued_at_ms"]):
        raise RelayError("issued_at_ms must be an integer (milliseconds since the epoch)")
    if not _is_int(record["sequence"]) or record["sequence"] < 0:
        raise RelayError("sequence must be the key's next place in its history (an integer)")
    if record["previous"] is not None and not isinstance(record["previous"], str):
        raise RelayError("previous must be null or the digest of the key's previous command")
    try:
        uuid.UUID(record["command_id"])
    except ValueError:
        raise RelayError("command_id must be a UUID") from None
    if len(record["payload"]) > _MAX_PAYLOAD:
        raise RelayError(f"the payload is over {_MAX_PAYLOAD // 1024} KiB")
    try:
        payload = json.loads(record["payload"])
        canonical = canonical_json(payload).decode()
    except (ValueError, CanonicalizationError) as exc:
        raise RelayError(f"the payload is not JSON with a canonical form: {exc}") from None
    if not isinstance(payload, dict) or canonical != record["payload"]:
        raise RelayError("the payload must be a JSON object in its RFC 8785 canonical form")
    subject = _subject(record["kind"], payload)
    if subject != record["subject"]:
        raise RelayError(
            f"a {record['kind']} command with this payload has subject "
            f"{subject!r}, not {record['subject']!r}"
        )
    signature = record["signature"]
    try:
        raw = base64.b64decode(signature, validate=True) if isinstance(signature, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 64:
        raise RelayError("signature must be the 64-byte Ed25519 signature, in base64")
    return {**record, "signature": raw}


class CommandRelay:
    """One per console process; :meth:`relay` blocks (call it from a thread)."""

    def __init__(
        self, settings: Settings, replica: ControlReplica, *, wait_s: float = 15.0
    ) -> None:
        self.settings = settings
        self.replica = replica
        self.wait_s = wait_s
        self.topic = settings.topic("control")
        self.codec = default_codec()
        self.transactional_id = names.console_transactional_id(settings, "relay")
        self._lock = threading.Lock()
        self._producer: Producer | None = None

    def prepare(self, kind: str, payload: object, key_id: str) -> dict[str, Any]:
        """Where a command of ``kind`` by ``key_id`` goes: subject, link, the time to sign."""
        if not isinstance(payload, dict):
            raise RelayError("the payload must be a JSON object")
        try:
            canonical_json(payload)
        except CanonicalizationError as exc:
            raise RelayError(f"the payload has no canonical JSON form: {exc.reason}") from None
        subject = _subject(kind, payload)
        self.replica.sync()
        link = self.replica.next_link(key_id)
        return {
            "kind": kind,
            "subject": subject,
            "sequence": link.sequence,
            "previous": link.previous,
            "now_ms": time.time_ns() // 1_000_000,
        }

    def relay(self, posted: object) -> AppliedCommand:
        """Send one browser-signed record; return the verdict the workers' code gave it."""
        record = check_record(posted)
        with self._lock:
            producer = self._start()
            try:
                self.replica.sync()
            except Refused as exc:
                raise RelayError(exc.reason) from None
            link = self.replica.next_link(record["key_id"])
            if (record["sequence"], record["previous"]) != (link.sequence, link.previous):
                raise LinkConflict(
                    f"key {record['key_id']} has its next command at sequence {link.sequence}, "
                    f"not {record['sequence']}",
                    {"sequence": link.sequence, "previous": link.previous},
                )
            arrived = self.replica.expect(record["command_id"])
            value = self.codec.encode("ControlCommand", record)
            try:
                producer.begin_transaction()
                producer.produce(self.topic, key=record["subject"].encode(), value=value)
                producer.commit_transaction(30)
            except KafkaException as exc:
                self._producer = None  # fenced or broken: start over at the next command
                raise RelayError(
                    f"the command was not published: {exc}",
                    hint="is the broker up? another console with the same group_id fences this one",
                ) from None
            # hold the lock until the replica has read it: the next link depends on it
            if not arrived.wait(self.wait_s):
                raise RelayError(
                    "the command was published but not read back in time",
                    hint="it will still be applied; reload the page in a moment",
                )
        result = self.replica.result(record["command_id"])
        assert result is not None  # noqa: S101 - set before the event
        log.info(
            "relayed %s %s by key %s: %s",
            result.kind,
            result.subject,
            result.key_id,
            "applied" if result.applied else f"refused: {result.reason}",
        )
        return result

    def _start(self) -> Producer:
        if self._producer is None:
            producer = kafka.transactional_producer(
                self.settings, self.transactional_id, {"client.id": self.transactional_id}
            )
            kafka.start_transactions(producer, RelayError)
            self._producer = producer
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None
