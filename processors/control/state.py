"""The state operators control with signed commands: :class:`ControlState`.

It verifies each ControlCommand record (fields, signature, key validity, freshness,
staleness per subject; see :mod:`processors.control.commands` for the signing payload,
kinds and subjects) and applies it: the agent registry (registrations, revocations,
suspensions, quarantines), the operator keys root keys enrol (``operator.enroll`` and
``operator.retire``, :mod:`processors.control.operators`: every state has them, so a
worker, a CLI reader and the console's replica trust the same keys), and whatever kinds
later layers add with :meth:`ControlState.register_handler`.

Three ways in:

* :meth:`ControlState.apply_logged` -- a record read from the ``control`` topic: first
  admitted by the log (:mod:`processors.control.history`: key = subject, no tombstones,
  signed, chained, in place in its signer's history), then judged at the **broker's
  append time** (key validity, not issued in the future, not held back), so every
  worker reaches the same verdict whenever it reads it;
* :meth:`ControlState.issue` -- a command this process signs itself (a gate worker's
  quarantine): chained as the next of its signer's history, applied at once, and
  returned for publishing; read back from the log, it is confirmed, not applied again;
* :meth:`ControlState.apply` -- a command from anywhere else (tests, in-process tools),
  judged at ``now_ms``, outside any history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from processors.control.commands import (
    SUBJECT_RULES,
    ControlContext,
    ControlHandler,
    ControlResult,
    Refused,
    SubjectRule,
    agent_id_of,
    agent_key_of,
    check_members,
    names_of,
    reason_of,
    sign_command,
)
from processors.control.history import (
    GATE_KINDS,
    Admitted,
    CommandVerifier,
    ControlLog,
    HistoryProblem,
    LogEntry,
    Verified,
)
from processors.control.operators import EnrolledOperators
from processors.control.registry import AGENT_STATUSES, AgentKey, AgentRecord, AgentStatus
from processors.crypto.keys import Keyset, SigningKey
from processors.exceptions import ConfigError, TrustplaneError
from processors.timefmt import iso_ms

__all__ = ["ControlState", "GATE_KINDS", "MAX_KEYS_PER_AGENT"]

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


class ControlState:
    """The state operators control with signed commands: the agent registry, plus the
    kinds later layers add (kill switch, reviews, runtimes) with :meth:`register_handler`.

    One writer (the control-topic follower, and the gate's own :meth:`issue` on the same
    thread); any number of readers. Readers see whole :class:`AgentRecord` objects,
    replaced on every change.

    ``max_future_skew_ms``: a command issued later than this after it was appended (or,
    for :meth:`apply`, after ``now_ms``) is refused; ``max_append_delay_ms``: so is one
    appended longer than this after it was issued (a command held back).
    """

    def __init__(
        self,
        operator_keys: Keyset,
        *,
        policy_sink: ControlHandler | None = None,
        max_future_skew_ms: int = 300_000,
        max_append_delay_ms: int = 3_600_000,
        gate_keys: Keyset | None = None,
        gate_kinds: AbstractSet[str] = GATE_KINDS,
    ) -> None:
        if max_future_skew_ms < 0:
            raise ConfigError("max_future_skew_ms must be >= 0")
        if max_append_delay_ms < 0:
            raise ConfigError("max_append_delay_ms must be >= 0")
        self.operators = EnrolledOperators(operator_keys)
        """The operator keys enrolled on ``control`` (root keys: :attr:`operator_keys`)."""
        self.verifier = CommandVerifier(
            operator_keys, gate_keys, gate_kinds, enrolled=self.operators
        )
        self.log = ControlLog(self.verifier)
        self.policy_sink = policy_sink
        self.max_future_skew_ms = max_future_skew_ms
        self.max_append_delay_ms = max_append_delay_ms
        self._agents: dict[str, AgentRecord] = {}
        self._agents_view = MappingProxyType(self._agents)
        self._registrations: dict[str, _Registration] = {}
        self._flags: dict[str, _Flags] = {}
        self._revoked_keys: dict[tuple[str, str], int] = {}
        self._applied: dict[str, _Applied] = {}
        self._kinds: dict[str, _Kind] = {}
        self.commands_applied = 0
        self._issued: dict[str, str] = {}
        self.commands_refused = 0
        self.last_command_at_ms: int | None = None
        self.last_command_kind: str | None = None
        self.last_applied_at_ms: int | None = None
        self._latest: dict[str, dict[str, Any]] = {}
        builtin: dict[str, Callable[[dict[str, Any], ControlContext], str]] = {
            "agent.register": self._register,
            "agent.revoke": self._revoke_agent,
            "key.revoke": self._revoke_key,
            "agent.suspend": self._suspend,
            "agent.reinstate": self._reinstate,
            "agent.quarantine": self._quarantine,
            "agent.release": self._release,
            "policy.publish": self._publish_policy,
            "operator.enroll": self.operators.enroll,
            "operator.retire": self.operators.retire,
        }
        for kind, handler in builtin.items():
            self._kinds[kind] = _Kind(handler, SUBJECT_RULES.get(kind))

    @property
    def operator_keys(self) -> Keyset:
        """The root operator keys (the keyset this state was built with)."""
        return self.verifier.operator_keys

    @property
    def gate_keys(self) -> Keyset | None:
        return self.verifier.gate_keys

    @property
    def gate_kinds(self) -> frozenset[str]:
        return self.verifier.gate_kinds

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
        # a copy: the web thread asks while the deciding (or standby) thread applies
        agents = list(self._agents.values())
        for record in agents:
            by_status[record.status] += 1
        return {
            "agents": len(agents),
            "agents_by_status": by_status,
            "revoked_keys": len(self._revoked_keys),
            "operator_keys": len(self.operator_keys),
            "enrolled_operator_keys": sum(
                1 for e in list(self.operators.values()) if e.retired_at_ms is None
            ),
            "retired_operator_keys": sum(
                1 for e in list(self.operators.values()) if e.retired_at_ms is not None
            ),
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
            "history": {
                "signers": {str(s): n for s, n in sorted(self.log.history.heads.items())},
                "problems": [p.reason for p in list(self.problems)],
            },
        }

    @property
    def problems(self) -> list[HistoryProblem]:
        """What breaks the control log's history (no decisions while there is any)."""
        return self.log.history.problems

    def latest_applied(self) -> dict[str, dict[str, Any]]:
        """The last command *applied* per subject (refused ones never show here). Safe to
        call from another thread than the writer's (entries are replaced, never changed)."""
        return {subject: dict(entry) for subject, entry in sorted(dict(self._latest).items())}

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
        """Verify a ControlCommand record at ``now_ms`` and apply it, or refuse it with the
        reason. Outside any history: for records that do not come from the control log.

        Never raises for a bad command; a refused command changes nothing.
        """
        try:
            command = self.verifier.verify(record, now_ms)
            message = self._decide(command, now_ms, clock="now")
        except Refused as exc:
            return self._refused(record, exc.reason)
        return self._applied_result(command, message)

    def apply_logged(self, entry: LogEntry) -> ControlResult:
        """Admit one record of the control log (in log order) and apply its command at the
        broker's append time, or refuse it with the reason. Never raises for a bad record;
        a refused record changes nothing but, if it breaks a signer's history,
        :attr:`problems`.
        """
        try:
            admitted = self.log.admit(entry)
        except Refused as exc:
            return self._refused(entry.record, exc.reason)
        return self.apply_admitted(admitted, entry)

    def apply_admitted(self, admitted: Admitted, entry: LogEntry) -> ControlResult:
        """The second half of :meth:`apply_logged`: apply a command :attr:`log` admitted
        from ``entry`` at its append time (for readers that admit every record but apply
        only some kinds). Never raises for a bad command."""
        command = admitted.command
        if admitted.echo:
            latest = self._latest.get(command.subject)
            if latest is not None and latest["id"] == command.command_id:
                self._latest[command.subject] = {**latest, "offset": entry.offset}
            return ControlResult(
                True,
                command.kind,
                command.subject,
                # in the words it was applied with here, which are those of every other
                # reader of the log: its lineage is the same whichever worker reports it
                self._issued.pop(command.command_id, f"{command.kind} applied"),
                command.command_id,
                confirmed=True,
            )
        try:
            message = self._decide(
                command, entry.timestamp_ms, clock="appended", offset=entry.offset
            )
        except Refused as exc:
            return self._refused(entry.record, exc.reason)
        return self._applied_result(command, message)

    def issue(
        self,
        kind: str,
        subject: str | None,
        payload: Mapping[str, Any],
        key: SigningKey,
        issued_by: str,
        now_ms: int,
        command_id: str | None = None,
    ) -> tuple[dict[str, Any] | None, ControlResult]:
        """Sign a command as the next of its signer's history, apply it here at once, and
        return the record to publish on ``control`` with the result; the record is None
        when the command is refused (then nothing changed, and nothing must be published).

        Raises :class:`~processors.control.commands.ControlCommandError` when the payload
        cannot be signed.
        """
        try:
            signer, _ = self.verifier.signer_of(key.kid, kind, issued_by, now_ms)
            link = self.log.history.next_link(signer)
        except Refused as exc:
            return None, self._refused({"kind": kind, "subject": subject or ""}, exc.reason)
        record = sign_command(kind, subject, payload, key, issued_by, now_ms, command_id, link=link)
        try:
            command = self.verifier.verify(record, now_ms)
            message = self._decide(command, now_ms, clock="now")
        except Refused as exc:
            return None, self._refused(record, exc.reason)
        self.log.history.place_local(command)
        self._issued[command.command_id] = message
        return record, self._applied_result(command, message)

    def _refused(self, record: object, reason: str) -> ControlResult:
        self.commands_refused += 1
        kind, subject = _text_or(record, "kind"), _text_or(record, "subject")
        return ControlResult(False, kind, subject, reason, _text_or(record, "command_id"))

    def _applied_result(self, command: Verified, message: str) -> ControlResult:
        self.commands_applied += 1
        return ControlResult(True, command.kind, command.subject, message, command.command_id)

    def _decide(
        self, command: Verified, at_ms: int, *, clock: str, offset: int | None = None
    ) -> str:
        """Steps (5)-(7): judged at ``at_ms`` (the append time, or now); raises Refused."""
        command_id, kind, subject = command.command_id, command.kind, command.subject
        issued_at_ms = command.issued_at_ms
        at = f"{'it was appended' if clock == 'appended' else 'now'} ({iso_ms(at_ms)})"

        # (5) not from the future, not held back, not older than what was applied for the
        #     subject
        if issued_at_ms > at_ms + self.max_future_skew_ms:
            raise Refused(
                f"issued at {iso_ms(issued_at_ms)}, more than {self.max_future_skew_ms} ms "
                f"after {at}: a command dated in the future is refused, for ever; "
                "check the operator's clock and issue it again"
            )
        if at_ms - issued_at_ms > self.max_append_delay_ms:
            raise Refused(
                f"issued at {iso_ms(issued_at_ms)}, more than {self.max_append_delay_ms} ms "
                f"before {at}: a command held back is refused; issue a new one"
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
            expected = entry.subject(command.payload)
            if subject != expected:
                raise Refused(f"a {kind} command for this payload has subject {expected!r}")

        # (7) apply: the handler changes the state, or refuses and changes nothing
        context = ControlContext(
            command_id, kind, subject, command.issued_by, issued_at_ms, command.key_id, at_ms
        )
        try:
            result = entry.handler(command.payload, context)
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
        self.last_applied_at_ms = at_ms
        self._latest[subject] = {
            "kind": kind,
            "id": command_id,
            "issued_by": command.issued_by,
            "issued_at_ms": issued_at_ms,
            "applied_at_ms": at_ms,
            "signer": str(command.signer),
            "sequence": command.link.sequence if command.link is not None else None,
            "offset": offset,
        }
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
