"""The state operators control with signed commands: :class:`ControlState`.

It verifies each ControlCommand record (fields, operator signature, key validity,
staleness per subject; see :mod:`processors.control.commands` for the signing payload,
kinds and subjects) and applies it: the agent registry (registrations, revocations,
suspensions, quarantines) and whatever kinds later layers add with
:meth:`ControlState.register_handler`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from processors.control.commands import (
    CONTROL_PAYLOAD_TYPE,
    SUBJECT_RULES,
    ControlContext,
    ControlHandler,
    ControlResult,
    Refused,
    SubjectRule,
    agent_id_of,
    agent_key_of,
    check_members,
    command_signing_message,
    names_of,
    parse_payload,
    reason_of,
)
from processors.control.registry import AGENT_STATUSES, AgentKey, AgentRecord, AgentStatus
from processors.crypto.jcs import CanonicalizationError
from processors.crypto.keys import KeyError_, Keyset, verify_signature
from processors.exceptions import ConfigError, TrustplaneError
from processors.timefmt import iso_ms

__all__ = ["ControlState", "GATE_KINDS", "MAX_KEYS_PER_AGENT"]

GATE_KINDS = frozenset({"agent.quarantine", "runtime.quarantine"})
"""Kinds a gate worker may sign with its own key: it quarantines, only operators release."""
MAX_KEYS_PER_AGENT = 16


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
            self._kinds[kind] = _Kind(handler, SUBJECT_RULES.get(kind))

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
                raise Refused(str(refusal))
            return f"{context.kind} applied to {context.subject!r}"

        rule: SubjectRule | None = None
        if subject is not None:
            external = subject

            def rule(payload: Mapping[str, Any]) -> str:
                try:
                    return external(payload)
                except (ValueError, KeyError, TypeError, TrustplaneError) as exc:
                    raise Refused(f"no subject for this payload: {exc}") from None

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
        except Refused as exc:
            self.commands_refused += 1
            return ControlResult(False, kind, subject, exc.reason, command_id)
        self.commands_applied += 1
        return ControlResult(True, kind, subject, message, command_id)

    def _apply(self, record: Mapping[str, Any], now_ms: int) -> str:
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

        # (1) the record has a signature
        signature = record.get("signature")
        if not isinstance(signature, bytes | bytearray) or not signature:
            raise Refused(
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
                raise Refused(
                    f"key_id {key_id!r} is not an operator key valid at {iso_ms(issued_at_ms)}: "
                    f"{exc.reason}"
                ) from None
            public_key = gate_key

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
            )
        except CanonicalizationError as exc:
            raise Refused(f"the payload has no canonical JSON form: {exc.reason}") from None
        try:
            verify_signature(public_key, bytes(signature), message)
        except KeyError_ as exc:
            raise Refused(
                f"the signature does not verify with operator key {key_id!r}: {exc.reason} "
                "(the command was changed after signing, or another key signed it)"
            ) from None

        # (5) not from the future, and not older than what was applied for the subject
        if issued_at_ms > now_ms + self.max_future_skew_ms:
            raise Refused(
                f"issued at {iso_ms(issued_at_ms)}, more than {self.max_future_skew_ms} ms "
                f"after now ({iso_ms(now_ms)}); check the operator's clock"
            )
        last = self._applied.get(subject)
        if last is not None:
            if issued_at_ms < last.issued_at_ms:
                raise Refused(
                    f"stale: issued at {iso_ms(issued_at_ms)}, but a command for subject "
                    f"{subject!r} issued at {iso_ms(last.issued_at_ms)} was already applied "
                    "(a replay or an out-of-order command); issue a new command"
                )
            if issued_at_ms == last.issued_at_ms and command_id in last.command_ids:
                raise Refused(f"stale: command {command_id!r} was already applied (a replay)")

        # (6) a known kind, with the subject its payload implies
        entry = self._kinds.get(kind)
        if entry is None:
            raise Refused(f"unknown command kind {kind!r}; known kinds: {', '.join(self.kinds)}")
        if entry.subject is not None:
            expected = entry.subject(payload)
            if subject != expected:
                raise Refused(f"a {kind} command for this payload has subject {expected!r}")

        # (7) apply: the handler changes the state, or refuses and changes nothing
        context = ControlContext(command_id, kind, subject, issued_by, issued_at_ms, key_id, now_ms)
        try:
            result = entry.handler(payload, context)
        except Refused:
            raise
        except Exception as exc:  # noqa: BLE001 - a handler bug refuses the command
            raise Refused(f"the {kind} handler failed: {type(exc).__name__}: {exc}") from None

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
        check_members(
            payload,
            ctx.kind,
            {"agent_id", "keys"},
            {"roles", "runtimes", "environments"},
        )
        agent_id = agent_id_of(payload)
        flags = self._flags.get(agent_id)
        if flags is not None and flags.revoked is not None:
            # A registration issued before the revocation may arrive after it (another
            # partition of the control topic): keep it, the agent stays revoked.
            if ctx.issued_at_ms >= flags.revoked.since_ms:
                raise Refused(
                    f"agent {agent_id!r} was revoked at {iso_ms(flags.revoked.since_ms)}; "
                    "revocation is permanent: register the agent under a new id"
                )
        entries = payload["keys"]
        if not isinstance(entries, list) or not entries:
            raise Refused("payload.keys must be a non-empty list of keys {kid, x, ...}")
        if len(entries) > MAX_KEYS_PER_AGENT:
            raise Refused(
                f"payload.keys has {len(entries)} keys; at most {MAX_KEYS_PER_AGENT} per agent"
            )
        keys = tuple(agent_key_of(entry, n) for n, entry in enumerate(entries))
        kids = [key.kid for key in keys]
        duplicates = sorted({kid for kid in kids if kids.count(kid) > 1})
        if duplicates:
            raise Refused(f"payload.keys lists key id(s) {', '.join(duplicates)} twice")
        registration = _Registration(
            agent_id,
            keys,
            names_of(payload, "roles"),
            names_of(payload, "runtimes"),
            names_of(payload, "environments"),
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
        check_members(payload, ctx.kind, {"agent_id", "reason"})
        agent_id = agent_id_of(payload)
        reason = reason_of(payload, ctx.kind, required=True)
        flags = self._flags.setdefault(agent_id, _Flags())
        if flags.revoked is not None:
            return f"agent {agent_id!r} was already revoked at {iso_ms(flags.revoked.since_ms)}"
        flags.revoked = _Mark(ctx.issued_at_ms, reason)
        self._rebuild(agent_id)
        return f"revoked agent {agent_id!r}: {reason}"

    def _revoke_key(self, payload: dict[str, Any], ctx: ControlContext) -> str:
        check_members(payload, ctx.kind, {"agent_id", "kid"}, {"reason"})
        agent_id = agent_id_of(payload)
        kid = str(payload["kid"])
        reason_of(payload, ctx.kind, required=False)
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
        check_members(payload, ctx.kind, {"agent_id", "reason"} if on else {"agent_id"}, {"reason"})
        agent_id = agent_id_of(payload)
        reason = reason_of(payload, ctx.kind, required=on)
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
            raise Refused("no policy store configured")
        refusal = sink(payload, ctx)
        if refusal is not None:
            raise Refused(f"policy store refused the bundle: {refusal}")
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
