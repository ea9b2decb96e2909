"""Control commands: how they are signed, their kinds and subjects, their payloads.

Command signing payload
=======================

A ControlCommand record (``schemas/control_command.avsc``) is signed by an operator key
(Ed25519) like an intent, with its own payload type:

* body = RFC 8785 canonical JSON of ``{"command_id", "kind", "subject", "payload",
  "issued_by", "issued_at_ms", "key_id", "sequence", "previous"}``, where ``payload`` is
  the command's arguments as a JSON **object** (the record carries it as canonical JSON
  text), and ``sequence`` / ``previous`` chain the command to its signer's previous one
  (:class:`ChainLink`: ``sequence`` 0, 1, 2, ... per signer; ``previous`` the
  ``"sha256:<64 hex>"`` digest of the signer's command ``sequence - 1``, ``null`` for
  sequence 0; see :mod:`processors.control.history`);
* message = DSSE ``PAE("application/vnd.trustplane.control+json", body)``;
* ``signature`` = the raw 64-byte Ed25519 signature of message, by the operator key
  ``key_id`` (a key of the operator keyset, valid when the broker appended the record);
* the command's **digest** (what the next command of the signer names as ``previous``)
  = ``"sha256:" + hex(SHA-256(message))``: the exact signed bytes.

Commands signed before chaining (no ``sequence``/``previous`` members in the body, null
in the record) still verify with the 7-member body, but the control log refuses them as
unchained; :func:`sign_command` without ``link`` makes such a command (for tests and
in-process use only).

Kinds and subjects
==================

The ``control`` topic is one partition, kept for ever and never compacted; each record's
Kafka key is its command's subject (a record under another key is refused). The state
keeps what different subjects say apart (a registration, a suspension, a quarantine, a
revocation and each key revocation are independent facts), and refuses a command older
than the last one applied for its subject:

==================  ====================================  ==============================
kind                subject                               payload
==================  ====================================  ==============================
agent.register      ``<agent>``                           agent_id, keys [{kid, x,
                                                          not_before_ms?, not_after_ms?}],
                                                          roles?, runtimes?, environments?
agent.revoke        ``<agent>/status/revocation``         agent_id, reason (permanent)
key.revoke          ``<agent>/<kid>``                     agent_id, kid, reason?
agent.suspend       ``<agent>/status/suspension``         agent_id, reason
agent.reinstate     ``<agent>/status/suspension``         agent_id, reason?
agent.quarantine    ``<agent>/status/quarantine``         agent_id, reason
agent.release       ``<agent>/status/quarantine``         agent_id, reason?
policy.publish      chosen by the policy store            the policy bundle document
operator.enroll     ``control/operators/<kid>``           kid, x, label, not_after_ms?
operator.retire     ``control/operators/<kid>``           kid, reason (permanent)
==================  ====================================  ==============================

``x`` is the raw 32-byte public key, base64url without padding (JWK ``x``). Agent and
key ids are 1-256 characters of ``A-Z a-z 0-9 . _ : @ + = -``; the agent ids
``runtime``, ``killswitch``, ``review``, ``policy``, ``control`` and ``agent`` are
reserved (they start other layers' subjects, e.g. ``runtime/<id>``). Revocations (of agents
and keys) are permanent and survive a re-registration; a re-registration replaces keys,
roles, runtimes and environments and keeps a suspension or quarantine. Later layers add
kinds with :meth:`~processors.control.state.ControlState.register_handler`.

``operator.*`` commands enrol and retire operator keys (the keys a browser holds in the
console); only a root key (one of the operator keyset the state was built with) may
sign them. See :mod:`processors.control.operators`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from processors.control.registry import RESERVED_AGENT_IDS, AgentKey, is_identifier
from processors.crypto.dsse import pae
from processors.crypto.jcs import CanonicalizationError, canonical_json
from processors.crypto.keys import SigningKey, b64url_decode
from processors.exceptions import TrustplaneError

__all__ = [
    "CONTROL_PAYLOAD_TYPE",
    "BUILTIN_KINDS",
    "ChainLink",
    "ControlCommandError",
    "ControlContext",
    "ControlHandler",
    "ControlResult",
    "SubjectRule",
    "command_digest",
    "command_signing_message",
    "sign_command",
    "subject_for",
]

CONTROL_PAYLOAD_TYPE = "application/vnd.trustplane.control+json"
DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
MAX_SEQUENCE = 2**53 - 1
"""The largest sequence number (RFC 8785 numbers are exact up to here)."""


class ControlCommandError(TrustplaneError):
    """A control command cannot be built (e.g. its payload has no canonical form)."""


@dataclass(frozen=True, slots=True)
class ChainLink:
    """Where a command sits in its signer's history: its ``sequence`` number (0 for the
    signer's first command) and the digest of the signer's command ``sequence - 1``
    (``None`` for the first)."""

    sequence: int
    previous: str | None

    @classmethod
    def first(cls) -> ChainLink:
        return cls(0, None)

    def after(self, digest: str) -> ChainLink:
        """The link of the command that follows the one with this link and ``digest``."""
        return ChainLink(self.sequence + 1, digest)

    def problem(self) -> str | None:
        """Why this link is malformed, or None."""
        if isinstance(self.sequence, bool) or not isinstance(self.sequence, int):
            return "sequence must be an integer"
        if not 0 <= self.sequence <= MAX_SEQUENCE:
            return f"sequence must be 0 to 2^53-1, got {self.sequence}"
        if self.sequence == 0:
            return None if self.previous is None else "sequence 0 has no previous command"
        if not isinstance(self.previous, str) or not DIGEST_PATTERN.fullmatch(self.previous):
            return (
                f"sequence {self.sequence} must name its previous command as sha256:<64 hex>, "
                f"got {str(self.previous)[:80]!r}"
            )
        return None


@dataclass(frozen=True, slots=True)
class ControlContext:
    """What a handler knows about the (verified) command besides its payload."""

    command_id: str
    kind: str
    subject: str
    issued_by: str
    issued_at_ms: int
    key_id: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class ControlResult:
    """Whether a command changed the state, and why (or why not)."""

    applied: bool
    kind: str
    subject: str
    reason: str
    command_id: str = ""
    confirmed: bool = False
    """Read back from the log: this state applied it already when it issued it."""


ControlHandler = Callable[[Mapping[str, Any], ControlContext], str | None]
"""Applies a verified command: returns None when applied, or the reason it refuses.
It must change nothing when it refuses (or raises)."""
SubjectRule = Callable[[Mapping[str, Any]], str]
"""The subject a command of some kind must carry, computed from its payload."""


class Refused(Exception):
    """Why a command is refused (internal: the control state turns it into a result)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- the signing payload ------------------------------------------------------------


def command_signing_message(
    *,
    command_id: str,
    kind: str,
    subject: str,
    payload: Mapping[str, Any],
    issued_by: str,
    issued_at_ms: int,
    key_id: str,
    link: ChainLink | None = None,
) -> bytes:
    """PAE(control payload type, canonical body). Raises CanonicalizationError.

    ``link=None`` is the body of an unchained command (before chaining: 7 members)."""
    body: dict[str, Any] = {
        "command_id": command_id,
        "kind": kind,
        "subject": subject,
        "payload": dict(payload),
        "issued_by": issued_by,
        "issued_at_ms": issued_at_ms,
        "key_id": key_id,
    }
    if link is not None:
        body["sequence"] = link.sequence
        body["previous"] = link.previous
    return pae(CONTROL_PAYLOAD_TYPE, canonical_json(body))


def command_digest(message: bytes) -> str:
    """The digest a command is named by: ``sha256:<hex>`` of its signed message."""
    return "sha256:" + hashlib.sha256(message).hexdigest()


def sign_command(
    kind: str,
    subject: str | None,
    payload: Mapping[str, Any],
    key: SigningKey,
    issued_by: str,
    now_ms: int | None = None,
    command_id: str | None = None,
    *,
    link: ChainLink | None = None,
) -> dict[str, Any]:
    """A signed ControlCommand record. ``subject=None`` uses the kind's subject rule
    (:func:`subject_for`). ``link`` places it in its signer's history; without it the
    command is unchained, and the control log refuses it (publish through
    :class:`~streams.operator.OperatorClient` or
    :meth:`~processors.control.state.ControlState.issue`, which chain).
    Raises :class:`ControlCommandError`."""
    if not isinstance(payload, Mapping):
        raise ControlCommandError(f"a {kind} payload must be a JSON object (a mapping)")
    if link is not None and link.problem() is not None:
        raise ControlCommandError(f"bad chain link: {link.problem()}")
    try:
        text = canonical_json(dict(payload)).decode()
    except CanonicalizationError as exc:
        raise ControlCommandError(
            f"the {kind} payload has no canonical JSON form: {exc.reason}",
            hint="send integers beyond 2^53 and non-finite numbers as strings",
        ) from exc
    fields: dict[str, Any] = {
        "command_id": command_id or str(uuid.uuid4()),
        "kind": kind,
        "subject": subject if subject is not None else subject_for(kind, payload),
        "issued_by": issued_by,
        "issued_at_ms": now_ms if now_ms is not None else time.time_ns() // 1_000_000,
        "key_id": key.kid,
    }
    # sign what the verifier will see: the payload as parsed back from its JSON text
    message = command_signing_message(payload=json.loads(text), link=link, **fields)
    return {
        **fields,
        "payload": text,
        "sequence": link.sequence if link is not None else None,
        "previous": link.previous if link is not None else None,
        "signature": key.sign(message),
    }


# -- subjects -----------------------------------------------------------------------


def agent_id_of(payload: Mapping[str, Any]) -> str:
    value = payload.get("agent_id")
    if not is_identifier(value):
        raise Refused(
            f"payload.agent_id must be 1-256 characters of A-Z a-z 0-9 . _ : @ + = -, "
            f"got {str(value)[:80]!r}"
        )
    assert isinstance(value, str)  # noqa: S101 - is_identifier checked it
    if value in RESERVED_AGENT_IDS:
        raise Refused(
            f"agent id {value!r} is reserved: it starts other control subjects "
            f"({', '.join(sorted(RESERVED_AGENT_IDS))}); choose another id"
        )
    return value


def _key_subject(payload: Mapping[str, Any]) -> str:
    kid = payload.get("kid")
    if not is_identifier(kid):
        raise Refused(
            f"payload.kid must be 1-256 characters of A-Z a-z 0-9 . _ : @ + = -, "
            f"got {str(kid)[:80]!r}"
        )
    return f"{agent_id_of(payload)}/{kid}"


OPERATOR_SUBJECT_PREFIX = "control/operators/"
"""Subjects of the ``operator.*`` kinds (``control`` is a reserved agent id: no agent's
subject starts so)."""


def operator_subject(payload: Mapping[str, Any]) -> str:
    """``control/operators/<kid>``: the subject of an ``operator.*`` command."""
    kid = payload.get("kid")
    if not is_identifier(kid):
        raise Refused(
            f"payload.kid must be 1-256 characters of A-Z a-z 0-9 . _ : @ + = -, "
            f"got {str(kid)[:80]!r}"
        )
    return f"{OPERATOR_SUBJECT_PREFIX}{kid}"


def _status_subject(what: str) -> SubjectRule:
    return lambda payload: f"{agent_id_of(payload)}/status/{what}"


SUBJECT_RULES: dict[str, SubjectRule] = {
    "agent.register": agent_id_of,
    "agent.revoke": _status_subject("revocation"),
    "key.revoke": _key_subject,
    "agent.suspend": _status_subject("suspension"),
    "agent.reinstate": _status_subject("suspension"),
    "agent.quarantine": _status_subject("quarantine"),
    "agent.release": _status_subject("quarantine"),
    "operator.enroll": operator_subject,
    "operator.retire": operator_subject,
}
BUILTIN_KINDS = (*SUBJECT_RULES, "policy.publish")


def subject_for(kind: str, payload: Mapping[str, Any]) -> str:
    """The subject a built-in command of ``kind`` with ``payload`` must carry."""
    rule = SUBJECT_RULES.get(kind)
    if rule is None:
        raise ControlCommandError(
            f"kind {kind!r} has no fixed subject rule; pass the subject explicitly"
        )
    try:
        return rule(payload)
    except Refused as exc:
        raise ControlCommandError(exc.reason) from None


# -- payload helpers ----------------------------------------------------------------


def check_members(
    payload: Mapping[str, Any],
    kind: str,
    required: AbstractSet[str],
    optional: AbstractSet[str] = frozenset(),
) -> None:
    missing = sorted(required - set(payload))
    if missing:
        raise Refused(f"the {kind} payload lacks {', '.join(missing)}")
    unknown = sorted(set(payload) - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise Refused(f"the {kind} payload has unknown members {', '.join(unknown)} ({allowed})")


def reason_of(payload: Mapping[str, Any], kind: str, *, required: bool) -> str:
    value = payload.get("reason", "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise Refused(f"{kind} needs a non-empty reason (payload.reason, a string)")
    return value.strip()


def names_of(payload: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = payload.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise Refused(f"payload.{name} must be a list of non-empty strings")
    return tuple(dict.fromkeys(value))


def _optional_ms(entry: Mapping[str, Any], name: str, where: str) -> int | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused(f"{where}.{name} must be an integer (milliseconds since the epoch)")
    return value


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_KEY_MEMBERS = {"kid", "x", "not_before_ms", "not_after_ms", "kty", "crv", "alg", "use"}


def agent_key_of(entry: object, n: int) -> AgentKey:
    where = f"payload.keys[{n}]"
    if not isinstance(entry, Mapping):
        raise Refused(f"{where} must be an object {{kid, x, not_before_ms?, not_after_ms?}}")
    unknown = sorted(set(entry) - _KEY_MEMBERS)
    if unknown:
        raise Refused(f"{where} has unknown members {', '.join(unknown)}")
    kid = entry.get("kid")
    if not is_identifier(kid):
        raise Refused(
            f"{where}.kid must be 1-256 characters of A-Z a-z 0-9 . _ : @ + = -, "
            f"got {str(kid)[:80]!r}"
        )
    assert isinstance(kid, str)  # noqa: S101 - is_identifier checked it
    for member, expected in (("kty", "OKP"), ("crv", "Ed25519"), ("alg", "EdDSA")):
        if member in entry and entry[member] != expected:
            raise Refused(f"{where}.{member} is {entry[member]!r}; only {expected} is accepted")
    x = entry.get("x")
    if not isinstance(x, str) or not x or not set(x) <= _B64URL:
        raise Refused(f"{where}.x must be the raw Ed25519 public key in base64url without padding")
    try:
        raw = b64url_decode(x)
    except ValueError:  # binascii.Error: a length no base64 text can have
        raise Refused(f"{where}.x ({kid!r}) is not valid base64url ({len(x)} characters)") from None
    if len(raw) != 32:
        raise Refused(
            f"{where}.x ({kid!r}) decodes to {len(raw)} bytes; an Ed25519 public key is "
            "32 raw bytes (43 base64url characters)"
        )
    try:
        public = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise Refused(f"{where}.x ({kid!r}) is not a valid Ed25519 public key") from exc
    not_before = _optional_ms(entry, "not_before_ms", where)
    not_after = _optional_ms(entry, "not_after_ms", where)
    if not_before is not None and not_after is not None and not_after <= not_before:
        raise Refused(f"{where} ({kid!r}): not_after_ms must be after not_before_ms")
    return AgentKey(kid, public, not_before, not_after)


def parse_payload(text: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, value in pairs:
            if name in result:
                raise ValueError(f"duplicate member {name!r}")
            result[name] = value
        return result

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise Refused(f"the payload is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Refused(f"the payload must be a JSON object, not {type(value).__name__}")
    return value
