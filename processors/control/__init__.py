"""Signed operator commands, and the state they build (agent registry and more).

Command signing payload
=======================

A ControlCommand record (``schemas/control_command.avsc``) is signed by an operator key
(Ed25519) like an intent, with its own payload type:

* body = RFC 8785 canonical JSON of ``{"command_id", "kind", "subject", "payload",
  "issued_by", "issued_at_ms", "key_id"}``, where ``payload`` is the command's arguments
  as a JSON **object** (the record carries it as canonical JSON text);
* message = DSSE ``PAE("application/vnd.trustplane.control+json", body)``;
* ``signature`` = the raw 64-byte Ed25519 signature of message, by the operator key
  ``key_id`` (a key of the operator keyset, valid at ``issued_at_ms``).

Kinds and subjects
==================

The ``control`` topic is compacted by subject and read across all its partitions, so
only the last command per subject survives and commands for different subjects may be
applied in any order. Each kind therefore has a fixed subject, and the state keeps what
different subjects say apart (a registration, a suspension, a quarantine, a revocation
and each key revocation are independent facts):

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
==================  ====================================  ==============================

``x`` is the raw 32-byte public key, base64url without padding (JWK ``x``). Agent and
key ids are 1-256 characters of ``A-Z a-z 0-9 . _ : @ + = -``; the agent ids
``runtime``, ``killswitch``, ``review``, ``policy``, ``control`` and ``agent`` are
reserved (they start other layers' subjects, e.g. ``runtime/<id>``). Revocations (of agents
and keys) are permanent and survive a re-registration; a re-registration replaces keys,
roles, runtimes and environments and keeps a suspension or quarantine. Later layers add
kinds with :meth:`ControlState.register_handler`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from processors.control.registry import (
    AGENT_STATUSES,
    RESERVED_AGENT_IDS,
    AgentKey,
    AgentRecord,
    AgentStatus,
    is_identifier,
    iso_ms,
)
from processors.crypto.dsse import CanonicalizationError, canonical_json, pae
from processors.crypto.keys import (
    KeyError_,
    Keyset,
    SigningKey,
    b64url_decode,
    verify_signature,
)
from processors.exceptions import ConfigError, TrustplaneError

__all__ = [
    "CONTROL_PAYLOAD_TYPE",
    "BUILTIN_KINDS",
    "ControlCommandError",
    "ControlContext",
    "ControlHandler",
    "ControlResult",
    "ControlState",
    "SubjectRule",
    "command_signing_message",
    "sign_command",
    "subject_for",
]

CONTROL_PAYLOAD_TYPE = "application/vnd.trustplane.control+json"
GATE_KINDS = frozenset({"agent.quarantine", "runtime.quarantine"})
"""Kinds a gate worker may sign with its own key: it quarantines, only operators release."""
MAX_KEYS_PER_AGENT = 16


class ControlCommandError(TrustplaneError):
    """A control command cannot be built (e.g. its payload has no canonical form)."""


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


ControlHandler = Callable[[Mapping[str, Any], ControlContext], str | None]
"""Applies a verified command: returns None when applied, or the reason it refuses.
It must change nothing when it refuses (or raises)."""
SubjectRule = Callable[[Mapping[str, Any]], str]
"""The subject a command of some kind must carry, computed from its payload."""


class _Refused(Exception):
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
) -> bytes:
    """PAE(control payload type, canonical body). Raises CanonicalizationError."""
    body = canonical_json(
        {
            "command_id": command_id,
            "kind": kind,
            "subject": subject,
            "payload": dict(payload),
            "issued_by": issued_by,
            "issued_at_ms": issued_at_ms,
            "key_id": key_id,
        }
    )
    return pae(CONTROL_PAYLOAD_TYPE, body)


def sign_command(
    kind: str,
    subject: str | None,
    payload: Mapping[str, Any],
    key: SigningKey,
    issued_by: str,
    now_ms: int | None = None,
    command_id: str | None = None,
) -> dict[str, Any]:
    """A signed ControlCommand record. ``subject=None`` uses the kind's subject rule
    (:func:`subject_for`). Raises :class:`ControlCommandError`."""
    if not isinstance(payload, Mapping):
        raise ControlCommandError(f"a {kind} payload must be a JSON object (a mapping)")
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
    message = command_signing_message(payload=json.loads(text), **fields)
    return {**fields, "payload": text, "signature": key.sign(message)}


# -- subjects -----------------------------------------------------------------------


def _agent_id(payload: Mapping[str, Any]) -> str:
    value = payload.get("agent_id")
    if not is_identifier(value):
        raise _Refused(
            f"payload.agent_id must be 1-256 characters of A-Z a-z 0-9 . _ : @ + = -, "
            f"got {str(value)[:80]!r}"
        )
    assert isinstance(value, str)  # noqa: S101 - is_identifier checked it
    if value in RESERVED_AGENT_IDS:
        raise _Refused(
            f"agent id {value!r} is reserved: it starts other control subjects "
            f"({', '.join(sorted(RESERVED_AGENT_IDS))}); choose another id"
        )
    return value


def _key_subject(payload: Mapping[str, Any]) -> str:
    kid = payload.get("kid")
    if not is_identifier(kid):
        raise _Refused(
            f"payload.kid must be 1-256 characters of A-Z a-z 0-9 . _ : @ + = -, "
            f"got {str(kid)[:80]!r}"
        )
    return f"{_agent_id(payload)}/{kid}"


def _status_subject(what: str) -> SubjectRule:
    return lambda payload: f"{_agent_id(payload)}/status/{what}"


_SUBJECT_RULES: dict[str, SubjectRule] = {
    "agent.register": _agent_id,
    "agent.revoke": _status_subject("revocation"),
    "key.revoke": _key_subject,
    "agent.suspend": _status_subject("suspension"),
    "agent.reinstate": _status_subject("suspension"),
    "agent.quarantine": _status_subject("quarantine"),
    "agent.release": _status_subject("quarantine"),
}
BUILTIN_KINDS = (*_SUBJECT_RULES, "policy.publish")


def subject_for(kind: str, payload: Mapping[str, Any]) -> str:
    """The subject a built-in command of ``kind`` with ``payload`` must carry."""
    rule = _SUBJECT_RULES.get(kind)
    if rule is None:
        raise ControlCommandError(
            f"kind {kind!r} has no fixed subject rule; pass the subject explicitly"
        )
    try:
        return rule(payload)
    except _Refused as exc:
        raise ControlCommandError(exc.reason) from None


# -- payload helpers ----------------------------------------------------------------


def _members(
    payload: Mapping[str, Any],
    kind: str,
    required: AbstractSet[str],
    optional: AbstractSet[str] = frozenset(),
) -> None:
    missing = sorted(required - set(payload))
    if missing:
        raise _Refused(f"the {kind} payload lacks {', '.join(missing)}")
    unknown = sorted(set(payload) - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise _Refused(f"the {kind} payload has unknown members {', '.join(unknown)} ({allowed})")


def _reason(payload: Mapping[str, Any], kind: str, *, required: bool) -> str:
    value = payload.get("reason", "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise _Refused(f"{kind} needs a non-empty reason (payload.reason, a string)")
    return value.strip()


def _names(payload: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = payload.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _Refused(f"payload.{name} must be a list of non-empty strings")
    return tuple(dict.fromkeys(value))


def _optional_ms(entry: Mapping[str, Any], name: str, where: str) -> int | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused(f"{where}.{name} must be an integer (milliseconds since the epoch)")
    return value


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_KEY_MEMBERS = {"kid", "x", "not_before_ms", "not_after_ms", "kty", "crv", "alg", "use"}


def _agent_key(entry: object, n: int) -> AgentKey:
    where = f"payload.keys[{n}]"
    if not isinstance(entry, Mapping):
        raise _Refused(f"{where} must be an object {{kid, x, not_before_ms?, not_after_ms?}}")
    unknown = sorted(set(entry) - _KEY_MEMBERS)
    if unknown:
        raise _Refused(f"{where} has unknown members {', '.join(unknown)}")
    kid = entry.get("kid")
    if not is_identifier(kid):
        raise _Refused(
            f"{where}.kid must be 1-256 characters of A-Z a-z 0-9 . _ : @ + = -, "
            f"got {str(kid)[:80]!r}"
        )
    assert isinstance(kid, str)  # noqa: S101 - is_identifier checked it
    for member, expected in (("kty", "OKP"), ("crv", "Ed25519"), ("alg", "EdDSA")):
        if member in entry and entry[member] != expected:
            raise _Refused(f"{where}.{member} is {entry[member]!r}; only {expected} is accepted")
    x = entry.get("x")
    if not isinstance(x, str) or not x or not set(x) <= _B64URL:
        raise _Refused(f"{where}.x must be the raw Ed25519 public key in base64url without padding")
    try:
        raw = b64url_decode(x)
    except ValueError:  # binascii.Error: a length no base64 text can have
        raise _Refused(
            f"{where}.x ({kid!r}) is not valid base64url ({len(x)} characters)"
        ) from None
    if len(raw) != 32:
        raise _Refused(
            f"{where}.x ({kid!r}) decodes to {len(raw)} bytes; an Ed25519 public key is "
            "32 raw bytes (43 base64url characters)"
        )
    try:
        public = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise _Refused(f"{where}.x ({kid!r}) is not a valid Ed25519 public key") from exc
    not_before = _optional_ms(entry, "not_before_ms", where)
    not_after = _optional_ms(entry, "not_after_ms", where)
    if not_before is not None and not_after is not None and not_after <= not_before:
        raise _Refused(f"{where} ({kid!r}): not_after_ms must be after not_before_ms")
    return AgentKey(kid, public, not_before, not_after)


def _parse_payload(text: str) -> dict[str, Any]:
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
        raise _Refused(f"the payload is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _Refused(f"the payload must be a JSON object, not {type(value).__name__}")
    return value


# -- the state ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mark:
    since_ms: int
    reason: str


@dataclass(slots=True)
class _Flags:
    revoked: _Mark | None = None
    quarantined: _Mark | None = None
    suspended: _Mark | None = None


@dataclass(frozen=True, slots=True)
class _Registration:
    agent_id: str
    keys: tuple[AgentKey, ...]
    roles: tuple[str, ...]
    runtimes: tuple[str, ...]
    environments: tuple[str, ...]
    registered_at_ms: int


@dataclass(frozen=True, slots=True)
class _Kind:
    handler: Callable[[dict[str, Any], ControlContext], str]
    subject: SubjectRule | None


@dataclass(slots=True)
class _Applied:
    issued_at_ms: int
    command_ids: set[str]


_RECORD_FIELDS: tuple[tuple[str, type], ...] = (
    ("command_id", str),
    ("kind", str),
    ("subject", str),
    ("payload", str),
    ("issued_by", str),
    ("issued_at_ms", int),
    ("key_id", str),
)


class ControlState:
    """The state operators control with signed commands: the agent registry, plus the
    kinds later layers add (kill switch, reviews, runtimes) with :meth:`register_handler`.

    One writer (:meth:`apply`, e.g. the control-topic follower); any number of readers.
    Readers see whole :class:`AgentRecord` objects, replaced on every change.
    """

    def __init__(
        self,
        operator_keys: Keyset,
        *,
        policy_sink: ControlHandler | None = None,
        max_future_skew_ms: int = 300_000,
        gate_keys: Keyset | None = None,
        gate_kinds: AbstractSet[str] = GATE_KINDS,
    ) -> None:
        if max_future_skew_ms < 0:
            raise ConfigError("max_future_skew_ms must be >= 0")
        self.operator_keys = operator_keys
        self.gate_keys = gate_keys
        self.gate_kinds = frozenset(gate_kinds)
        self.policy_sink = policy_sink
        self.max_future_skew_ms = max_future_skew_ms
        self._agents: dict[str, AgentRecord] = {}
        self._agents_view = MappingProxyType(self._agents)
        self._registrations: dict[str, _Registration] = {}
        self._flags: dict[str, _Flags] = {}
        self._revoked_keys: dict[tuple[str, str], int] = {}
        self._applied: dict[str, _Applied] = {}
        self._kinds: dict[str, _Kind] = {}
        self.commands_applied = 0
        self.commands_refused = 0
        self.last_command_at_ms: int | None = None
        self.last_command_kind: str | None = None
        self.last_applied_at_ms: int | None = None
        builtin: dict[str, Callable[[dict[str, Any], ControlContext], str]] = {
            "agent.register": self._register,
            "agent.revoke": self._revoke_agent,
            "key.revoke": self._revoke_key,
            "agent.suspend": self._suspend,
            "agent.reinstate": self._reinstate,
            "agent.quarantine": self._quarantine,
            "agent.release": self._release,
            "policy.publish": self._publish_policy,
        }
        for kind, handler in builtin.items():
            self._kinds[kind] = _Kind(handler, _SUBJECT_RULES.get(kind))

    # -- reading -------------------------------------------------------------------

    @property
    def agents(self) -> Mapping[str, AgentRecord]:
        """Registered agents by id (a live, read-only view)."""
        return self._agents_view

    def agent(self, agent_id: str) -> AgentRecord | None:
        return self._agents.get(agent_id)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self._kinds))

    def snapshot_summary(self) -> dict[str, Any]:
        """For /healthz: agents by status, command counts, the last command."""
        by_status: dict[str, int] = dict.fromkeys(AGENT_STATUSES, 0)
        for record in self._agents.values():
            by_status[record.status] += 1
        return {
            "agents": len(self._agents),
            "agents_by_status": by_status,
            "revoked_keys": len(self._revoked_keys),
            "operator_keys": len(self.operator_keys),
            "commands_applied": self.commands_applied,
            "commands_refused": self.commands_refused,
            "last_command_kind": self.last_command_kind,
            "last_command_at_ms": self.last_command_at_ms,
            "last_command_at": (
                iso_ms(self.last_command_at_ms) if self.last_command_at_ms is not None else None
            ),
            "last_applied_at_ms": self.last_applied_at_ms,
            "policy_store": self.policy_sink is not None,
            "kinds": list(self.kinds),
        }

    # -- extending -----------------------------------------------------------------

    def register_handler(
        self,
        kind: str,
        handler: ControlHandler,
        *,
        subject: SubjectRule | None = None,
        replace: bool = False,
    ) -> None:
        """Handle commands of ``kind`` (after signature, key and staleness checks).

        ``subject``, if given, computes the subject such a command must carry from its
        payload (raise ValueError/TrustplaneError for a bad payload); without it any
        subject is accepted. Raises ConfigError if the kind is taken and not ``replace``.
        """
        if not isinstance(kind, str) or not kind.strip():
            raise ConfigError("a control command kind must be a non-empty string")
        if kind in self._kinds and not replace:
            raise ConfigError(
                f"control command kind {kind!r} already has a handler",
                hint="pass replace=True to override it",
            )

        def run(payload: dict[str, Any], context: ControlContext) -> str:
            refusal = handler(payload, context)
            if refusal is not None:
                raise _Refused(str(refusal))
            return f"{context.kind} applied to {context.subject!r}"

        rule: SubjectRule | None = None
        if subject is not None:
            external = subject

            def rule(payload: Mapping[str, Any]) -> str:
                try:
                    return external(payload)
                except (ValueError, KeyError, TypeError, TrustplaneError) as exc:
                    raise _Refused(f"no subject for this payload: {exc}") from None

        self._kinds[kind] = _Kind(run, rule)

    # -- applying ------------------------------------------------------------------

    def apply(self, record: Mapping[str, Any], now_ms: int) -> ControlResult:
        """Verify a ControlCommand record and apply it, or refuse it with the reason.

        Never raises for a bad command; a refused command changes nothing.
        """
        kind = _text_or(record, "kind")
        subject = _text_or(record, "subject")
        command_id = _text_or(record, "command_id")
        try:
            message = self._apply(record, now_ms)
        except _Refused as exc:
            self.commands_refused += 1
            return ControlResult(False, kind, subject, exc.reason, command_id)
        self.commands_applied += 1
        return ControlResult(True, kind, subject, message, command_id)

    def _apply(self, record: Mapping[str, Any], now_ms: int) -> str:
        # (0) the record has the ControlCommand fields, with their types
        if not isinstance(record, Mapping):
            raise _Refused(f"a control command is a ControlCommand record, not {record!r:.80}")
        for name, field_type in _RECORD_FIELDS:
            value = record.get(name)
            if not isinstance(value, field_type) or isinstance(value, bool):
                raise _Refused(f"field {name} is missing or not a {field_type.__name__}")
        command_id: str = record["command_id"]
        kind: str = record["kind"]
        subject: str = record["subject"]
        issued_by: str = record["issued_by"]
        issued_at_ms: int = record["issued_at_ms"]
        key_id: str = record["key_id"]
        for name, value in (("command_id", command_id), ("kind", kind), ("issued_by", issued_by)):
            if not value.strip():
                raise _Refused(f"field {name} is empty")

        # (1) the record has a signature
        signature = record.get("signature")
        if not isinstance(signature, bytes | bytearray) or not signature:
            raise _Refused(
                "the command is not signed; operators sign commands with their key "
                f"(payload type {CONTROL_PAYLOAD_TYPE})"
            )

        # (2) key_id is an operator key valid when the command was issued -- or, for the
        #     few kinds the gate issues itself (quarantine on an integrity violation), a
        #     gate signing key
        try:
            public_key = self.operator_keys.key_for(key_id, issued_at_ms)
        except KeyError_ as exc:
            gate_key = None
            if self.gate_keys is not None and kind in self.gate_kinds:
                try:
                    gate_key = self.gate_keys.key_for(key_id, issued_at_ms)
                except KeyError_:
                    gate_key = None
            if gate_key is None:
                raise _Refused(
                    f"key_id {key_id!r} is not an operator key valid at {iso_ms(issued_at_ms)}: "
                    f"{exc.reason}"
                ) from None
            public_key = gate_key

        # (3) the payload parses as a JSON object (it is part of the signed body)
        payload = _parse_payload(record["payload"])

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
            )
        except CanonicalizationError as exc:
            raise _Refused(f"the payload has no canonical JSON form: {exc.reason}") from None
        try:
            verify_signature(public_key, bytes(signature), message)
        except KeyError_ as exc:
            raise _Refused(
                f"the signature does not verify with operator key {key_id!r}: {exc.reason} "
                "(the command was changed after signing, or another key signed it)"
            ) from None

        # (5) not from the future, and not older than what was applied for the subject
        if issued_at_ms > now_ms + self.max_future_skew_ms:
            raise _Refused(
                f"issued at {iso_ms(issued_at_ms)}, more than {self.max_future_skew_ms} ms "
                f"after now ({iso_ms(now_ms)}); check the operator's clock"
            )
        last = self._applied.get(subject)
        if last is not None:
            if issued_at_ms < last.issued_at_ms:
                raise _Refused(
                    f"stale: issued at {iso_ms(issued_at_ms)}, but a command for subject "
                    f"{subject!r} issued at {iso_ms(last.issued_at_ms)} was already applied "
                    "(a replay or an out-of-order command); issue a new command"
                )
            if issued_at_ms == last.issued_at_ms and command_id in last.command_ids:
                raise _Refused(f"stale: command {command_id!r} was already applied (a replay)")

        # (6) a known kind, with the subject its payload implies
        entry = self._kinds.get(kind)
        if entry is None:
            raise _Refused(f"unknown command kind {kind!r}; known kinds: {', '.join(self.kinds)}")
        if entry.subject is not None:
            expected = entry.subject(payload)
            if subject != expected:
                raise _Refused(f"a {kind} command for this payload has subject {expected!r}")

        # (7) apply: the handler changes the state, or refuses and changes nothing
        context = ControlContext(command_id, kind, subject, issued_by, issued_at_ms, key_id, now_ms)
        try:
            result = entry.handler(payload, context)
        except _Refused:
            raise
        except Exception as exc:  # noqa: BLE001 - a handler bug refuses the command
            raise _Refused(f"the {kind} handler failed: {type(exc).__name__}: {exc}") from None

        if last is None or issued_at_ms > last.issued_at_ms:
            self._applied[subject] = _Applied(issued_at_ms, {command_id})
        else:
            last.command_ids.add(command_id)
        self.last_command_at_ms = issued_at_ms
        self.last_command_kind = kind
        self.last_applied_at_ms = now_ms
        return result

    # -- built-in kinds ------------------------------------------------------------

    def _register(self, payload: dict[str, Any], ctx: ControlContext) -> str:
        _members(
            payload,
            ctx.kind,
            {"agent_id", "keys"},
            {"roles", "runtimes", "environments"},
        )
        agent_id = _agent_id(payload)
        flags = self._flags.get(agent_id)
        if flags is not None and flags.revoked is not None:
            # A registration issued before the revocation may arrive after it (another
            # partition of the control topic): keep it, the agent stays revoked.
            if ctx.issued_at_ms >= flags.revoked.since_ms:
                raise _Refused(
                    f"agent {agent_id!r} was revoked at {iso_ms(flags.revoked.since_ms)}; "
                    "revocation is permanent: register the agent under a new id"
                )
        entries = payload["keys"]
        if not isinstance(entries, list) or not entries:
            raise _Refused("payload.keys must be a non-empty list of keys {kid, x, ...}")
        if len(entries) > MAX_KEYS_PER_AGENT:
            raise _Refused(
                f"payload.keys has {len(entries)} keys; at most {MAX_KEYS_PER_AGENT} per agent"
            )
        keys = tuple(_agent_key(entry, n) for n, entry in enumerate(entries))
        kids = [key.kid for key in keys]
        duplicates = sorted({kid for kid in kids if kids.count(kid) > 1})
        if duplicates:
            raise _Refused(f"payload.keys lists key id(s) {', '.join(duplicates)} twice")
        registration = _Registration(
            agent_id,
            keys,
            _names(payload, "roles"),
            _names(payload, "runtimes"),
            _names(payload, "environments"),
            ctx.issued_at_ms,
        )
        replaced = agent_id in self._registrations
        self._registrations[agent_id] = registration
        record = self._rebuild(agent_id)
        assert record is not None  # noqa: S101 - just registered
        revoked = [kid for kid in kids if (agent_id, kid) in self._revoked_keys]
        text = f"{'re-registered' if replaced else 'registered'} agent {agent_id!r} with key(s) "
        text += ", ".join(kids)
        if revoked:
            text += f" ({', '.join(revoked)} revoked earlier and still revoked)"
        if record.status != "active":
            text += f"; it stays {record.status}: {record.status_reason}"
        return text

    def _revoke_agent(self, payload: dict[str, Any], ctx: ControlContext) -> str:
        _members(payload, ctx.kind, {"agent_id", "reason"})
        agent_id = _agent_id(payload)
        reason = _reason(payload, ctx.kind, required=True)
        flags = self._flags.setdefault(agent_id, _Flags())
        if flags.revoked is not None:
            return f"agent {agent_id!r} was already revoked at {iso_ms(flags.revoked.since_ms)}"
        flags.revoked = _Mark(ctx.issued_at_ms, reason)
        self._rebuild(agent_id)
        return f"revoked agent {agent_id!r}: {reason}"

    def _revoke_key(self, payload: dict[str, Any], ctx: ControlContext) -> str:
        _members(payload, ctx.kind, {"agent_id", "kid"}, {"reason"})
        agent_id = _agent_id(payload)
        kid = str(payload["kid"])
        _reason(payload, ctx.kind, required=False)
        if (agent_id, kid) in self._revoked_keys:
            since = iso_ms(self._revoked_keys[(agent_id, kid)])
            return f"key {kid!r} of agent {agent_id!r} was already revoked at {since}"
        self._revoked_keys[(agent_id, kid)] = ctx.issued_at_ms
        record = self._rebuild(agent_id)
        if record is None or kid not in record.keys:
            return (
                f"revoked key {kid!r} of agent {agent_id!r} (not a current key of the agent; "
                "it stays revoked if it is registered later)"
            )
        return f"revoked key {kid!r} of agent {agent_id!r}"

    def _set_mark(self, payload: dict[str, Any], ctx: ControlContext, what: str, on: bool) -> str:
        _members(payload, ctx.kind, {"agent_id", "reason"} if on else {"agent_id"}, {"reason"})
        agent_id = _agent_id(payload)
        reason = _reason(payload, ctx.kind, required=on)
        flags = self._flags.setdefault(agent_id, _Flags())
        current: _Mark | None = getattr(flags, what)
        if on:
            if current is not None:
                text = f"agent {agent_id!r} is already {what} since {iso_ms(current.since_ms)}"
                setattr(flags, what, _Mark(current.since_ms, reason))
                self._rebuild(agent_id)
                return f"{text}; reason now: {reason}"
            setattr(flags, what, _Mark(ctx.issued_at_ms, reason))
            self._rebuild(agent_id)
            return f"agent {agent_id!r} {what}: {reason}"
        if current is None:
            return f"agent {agent_id!r} was not {what}; nothing to do"
        setattr(flags, what, None)
        record = self._rebuild(agent_id)
        text = f"agent {agent_id!r} no longer {what}" + (f": {reason}" if reason else "")
        if record is not None and record.status != "active":
            text += f"; it is still {record.status}: {record.status_reason}"
        return text

    def _suspend(self, payload: dict[str, Any], ctx: ControlContext) -> str:
        return self._set_mark(payload, ctx, "suspended", True)

    def _reinstate(self, payload: dict[str, Any], ctx: ControlContext) -> str:
        return self._set_mark(payload, ctx, "suspended", False)

    def _quarantine(self, payload: dict[str, Any], ctx: ControlContext) -> str:
        return self._set_mark(payload, ctx, "quarantined", True)

    def _release(self, payload: dict[str, Any], ctx: ControlContext) -> str:
        return self._set_mark(payload, ctx, "quarantined", False)

    def _publish_policy(self, payload: dict[str, Any], ctx: ControlContext) -> str:
        sink = self.policy_sink
        if sink is None:
            raise _Refused("no policy store configured")
        refusal = sink(payload, ctx)
        if refusal is not None:
            raise _Refused(f"policy store refused the bundle: {refusal}")
        return f"policy bundle published ({ctx.subject!r})"

    def _rebuild(self, agent_id: str) -> AgentRecord | None:
        """Derive the agent's record from its registration, flags and key revocations."""
        registration = self._registrations.get(agent_id)
        if registration is None:
            self._agents.pop(agent_id, None)
            return None
        keys = {
            key.kid: AgentKey(
                key.kid,
                key.public_key,
                key.not_before_ms,
                key.not_after_ms,
                self._revoked_keys.get((agent_id, key.kid)),
            )
            for key in registration.keys
        }
        flags = self._flags.get(agent_id) or _Flags()
        status: AgentStatus = "active"
        mark: _Mark | None = None
        marks: tuple[tuple[AgentStatus, _Mark | None], ...] = (
            ("revoked", flags.revoked),
            ("quarantined", flags.quarantined),
            ("suspended", flags.suspended),
        )
        for name, value in marks:
            if value is not None:
                status, mark = name, value
                break
        record = AgentRecord(
            agent_id=agent_id,
            keys=keys,
            roles=registration.roles,
            runtimes=registration.runtimes,
            environments=registration.environments,
            status=status,
            status_reason=mark.reason if mark else "",
            status_since_ms=mark.since_ms if mark else None,
            registered_at_ms=registration.registered_at_ms,
        )
        self._agents[agent_id] = record
        return record


def _text_or(record: object, name: str) -> str:
    if isinstance(record, Mapping):
        value = record.get(name)
        if isinstance(value, str):
            return value
    return ""
