"""Runtime integrity: the runtime that sent an intent is the one that was registered, and
the intent is not a replay and continues its agent's sequence.

Three checks run in this order; the first that fails decides, with a DENY whose reason
says what was expected and what was seen:

1. **attestation** -- ``intent.runtime.runtime_id`` is registered (``runtime.register``
   control command), its ``code_digest`` and ``config_digest`` are among the registered
   measurements, its ``environment`` is the registered one and its ``host`` is allowed
   (a registration without hosts allows any host).
2. **replay** -- neither the ``intent_id`` nor the ``nonce`` was seen from this agent
   within ``replay_retention_ms``.
3. **sequence** -- with *last* the agent's highest accepted sequence: ``sequence <= last``
   is a regression (a replay or a rolled-back runtime); ``sequence > last + 1 +
   sequence_gap_tolerance`` is a gap (intents were suppressed, or a second runtime is
   using the identity). The first intent of an agent may start at any sequence >= 0.

Every such violation is evidence that the runtime or the agent's key is compromised. The
DENY carries ``response="quarantine"``, ``quarantine_scope`` (``agent`` | ``runtime``),
``quarantine_subject`` (the agent id or the runtime id) and ``violation``
(``attestation`` | ``replay`` | ``sequence``); the gate turns that into a quarantine
control event. This module only says so; it quarantines nothing itself.

Two further DENYs are *not* new violations and carry ``response="deny"``: an intent from a
runtime that is already quarantined (``check="runtime_quarantined"``), and an intent
issued longer ago than ``replay_retention_ms`` (``check="window"``), which can no longer
be checked for replay (its id may have been forgotten), so it is refused, but nobody is
quarantined for it. The gate quarantines exactly when ``response == "quarantine"``.

State (:class:`IntegrityState`, per agent, in ``GateState.agent["integrity"]``) is what
:meth:`IntegrityCheck.observe` learns from every intent whose identity verified: the ids
and nonces seen (with the gate's clock, not the agent's ``issued_at_ms``, which the agent
controls) and the highest sequence that passed these checks. It is bounded by
``max_remembered`` entries and round-trips through JSON, so a replay after a worker
restart is still caught. If an id is forgotten early (more than ``max_remembered`` intents
within the retention), the sequence check still catches a replay of an intent that was
accepted: its sequence is no longer above the agent's highest.

Runtime registrations (and runtime quarantines) come from signed operator commands,
applied by :class:`processors.control.ControlState` through the handlers that
:meth:`RuntimeRegistry.install` registers. An intent from a quarantined runtime is denied
(``check="runtime_quarantined"``, ``response="deny"``: it is already quarantined).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from processors.control import ControlContext, ControlHandler, ControlState, SubjectRule
from processors.control.registry import is_identifier, iso_ms
from processors.exceptions import ConfigError, TrustplaneError
from processors.intent import Intent
from processors.verdict import GateState, Verdict

__all__ = [
    "DEREGISTER_KIND",
    "QUARANTINE_KIND",
    "REGISTER_KIND",
    "RELEASE_KIND",
    "IntegrityCheck",
    "IntegrityConfig",
    "IntegrityState",
    "IntegrityStateError",
    "MAX_SEQUENCE",
    "QuarantineScope",
    "RegistrationError",
    "RuntimeQuarantine",
    "RuntimeRegistration",
    "RuntimeRegistry",
    "runtime_quarantine_subject",
    "runtime_subject",
]

LAYER: Final = "integrity"
REGISTER_KIND: Final = "runtime.register"
DEREGISTER_KIND: Final = "runtime.deregister"
QUARANTINE_KIND: Final = "runtime.quarantine"
RELEASE_KIND: Final = "runtime.release"
MAX_SEQUENCE: Final = 2**63 - 1
"""The largest sequence an Avro ``long`` can carry."""

QuarantineScope = Literal["agent", "runtime"]
_SCOPES: tuple[QuarantineScope, ...] = ("agent", "runtime")

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_TEXT = 256
_MAX_REASON = 1024
_MAX_MEASUREMENTS = 1024
"""At most this many code digests, config digests or hosts per runtime."""
_MAX_REMEMBERED_LIMIT = 1_000_000
_STATE_VERSION = 1
_SHOWN = 4
"""How many allowed values a reason or evidence lists before ``(+N more)``."""


class RegistrationError(TrustplaneError):
    """A runtime registration (from a control command or from code) is not acceptable."""


class IntegrityStateError(TrustplaneError):
    """Stored or in-memory integrity state is malformed; the worker must fail closed."""


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class RuntimeRegistration:
    """What a runtime is allowed to look like: its measurements and where it runs.

    ``code_digests`` / ``config_digests`` are ``sha256:<64 lowercase hex>`` (as the
    intent carries them); several are allowed so a rollout can overlap two builds.
    ``hosts`` empty means any host.
    """

    runtime_id: str
    code_digests: frozenset[str]
    config_digests: frozenset[str]
    environment: str
    hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not is_identifier(self.runtime_id):
            raise RegistrationError(
                f"runtime_id {str(self.runtime_id)[:80]!r} is not an identifier",
                hint="use 1-256 characters of A-Z a-z 0-9 . _ : @ + = -",
            )
        for name in ("code_digests", "config_digests", "hosts"):
            value = getattr(self, name)
            if not isinstance(value, frozenset):
                raise RegistrationError(f"{name} must be a frozenset, got {type(value).__name__}")
            if len(value) > _MAX_MEASUREMENTS:
                raise RegistrationError(
                    f"{name} has {len(value)} entries; at most {_MAX_MEASUREMENTS} are allowed"
                )
        for name in ("code_digests", "config_digests"):
            digests: frozenset[str] = getattr(self, name)
            if not digests:
                raise RegistrationError(
                    f"runtime {self.runtime_id!r}: {name} is empty, so no runtime could ever "
                    "attest",
                    hint="list the sha256 digest(s) of the build / configuration it may run",
                )
            for digest in sorted(digests, key=str):
                if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                    raise RegistrationError(
                        f"runtime {self.runtime_id!r}: {name} entry {str(digest)[:80]!r} is "
                        "not sha256:<64 lowercase hex>",
                        hint="digests are compared as text with the intent's; write them "
                        "exactly as agents send them",
                    )
        if not _is_text(self.environment):
            raise RegistrationError(
                f"runtime {self.runtime_id!r}: environment must be a non-empty string of at "
                f"most {_MAX_TEXT} characters"
            )
        for host in sorted(self.hosts, key=str):
            if not _is_text(host):
                raise RegistrationError(
                    f"runtime {self.runtime_id!r}: host {str(host)[:80]!r} must be a non-empty "
                    f"string of at most {_MAX_TEXT} characters",
                    hint="leave hosts empty to allow any host",
                )

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> RuntimeRegistration:
        """Parse a ``runtime.register`` payload (see :class:`RuntimeRegistry`)."""
        if not isinstance(payload, Mapping):
            raise RegistrationError(
                f"the payload must be a JSON object, got {type(payload).__name__}"
            )
        allowed = {"runtime_id", "code_digests", "config_digests", "environment", "hosts"}
        unknown = sorted(str(k) for k in set(payload) - allowed)
        if unknown:
            raise RegistrationError(
                f"unknown payload field(s) {', '.join(unknown)}",
                hint=f"a runtime.register payload has {', '.join(sorted(allowed))}",
            )
        missing = sorted(
            {"runtime_id", "code_digests", "config_digests", "environment"} - set(payload)
        )
        if missing:
            raise RegistrationError(f"missing payload field(s) {', '.join(missing)}")
        runtime_id = payload["runtime_id"]
        environment = payload["environment"]
        if not isinstance(runtime_id, str):
            raise RegistrationError(f"runtime_id must be a string, got {_kind(runtime_id)}")
        if not isinstance(environment, str):
            raise RegistrationError(f"environment must be a string, got {_kind(environment)}")
        return cls(
            runtime_id=runtime_id,
            code_digests=_string_set(payload, "code_digests"),
            config_digests=_string_set(payload, "config_digests"),
            environment=environment,
            hosts=_string_set(payload, "hosts") if "hosts" in payload else frozenset(),
        )

    def to_payload(self) -> dict[str, Any]:
        """The ``runtime.register`` payload that registers exactly this runtime."""
        return {
            "runtime_id": self.runtime_id,
            "code_digests": sorted(self.code_digests),
            "config_digests": sorted(self.config_digests),
            "environment": self.environment,
            "hosts": sorted(self.hosts),
        }


def runtime_subject(runtime_id: str) -> str:
    """The control-topic subject of ``runtime.register`` / ``runtime.deregister``."""
    return f"runtime/{runtime_id}"


def runtime_quarantine_subject(runtime_id: str) -> str:
    """The subject of ``runtime.quarantine`` / ``runtime.release``."""
    return f"runtime/{runtime_id}/quarantine"


@dataclass(frozen=True, slots=True)
class RuntimeQuarantine:
    """A runtime an operator (or the gate, after a violation) quarantined."""

    runtime_id: str
    reason: str
    since_ms: int


class RuntimeRegistry:
    """The registered runtimes, by runtime id, kept up to date by control commands.

    ==================  ==============================  ================================
    kind                subject                         payload
    ==================  ==============================  ================================
    runtime.register    ``runtime/<runtime_id>``        runtime_id, code_digests [...],
                                                        config_digests [...],
                                                        environment, hosts [...]?
    runtime.deregister  ``runtime/<runtime_id>``        runtime_id
    runtime.quarantine  ``runtime/<id>/quarantine``     runtime_id, reason
    runtime.release     ``runtime/<id>/quarantine``     runtime_id, reason?
    ==================  ==============================  ================================

    ``hosts`` empty or absent allows any host. Registering again replaces the whole
    registration (a rollout adds the new digest, then removes the old one); a deregistered
    runtime fails attestation. A quarantine is a separate fact (its own subject, so the
    compacted topic keeps both): it survives re-registration and deregistration, and
    every intent from a quarantined runtime is denied until ``runtime.release``.

    Subjects start with ``runtime/`` so they cannot be mistaken for an agent's subjects
    (``<agent>``, ``<agent>/<kid>``, ``<agent>/status/<what>``) on the compacted topic --
    unless an agent is named ``runtime``: the agent registry should reserve that id.

    Registrations are immutable and replaced whole, so a reader never sees half of one.
    One writer (the control state's ``apply``), any number of readers.
    """

    def __init__(self, registrations: Iterable[RuntimeRegistration] = ()) -> None:
        self._runtimes: dict[str, RuntimeRegistration] = {}
        self._quarantined: dict[str, RuntimeQuarantine] = {}
        for registration in registrations:
            self.register(registration)

    # reading ---------------------------------------------------------------------------

    def get(self, runtime_id: str) -> RuntimeRegistration | None:
        return self._runtimes.get(runtime_id)

    def quarantine_of(self, runtime_id: str) -> RuntimeQuarantine | None:
        return self._quarantined.get(runtime_id)

    def __contains__(self, runtime_id: object) -> bool:
        return runtime_id in self._runtimes

    def __len__(self) -> int:
        return len(self._runtimes)

    def __iter__(self) -> Iterator[RuntimeRegistration]:
        return iter(list(self._runtimes.values()))

    # changing (the handlers call these; tests and tools may too) ------------------------

    def register(self, registration: RuntimeRegistration) -> None:
        self._runtimes[registration.runtime_id] = registration

    def deregister(self, runtime_id: str) -> bool:
        """Remove a runtime; False if it was not registered."""
        return self._runtimes.pop(runtime_id, None) is not None

    def quarantine(self, runtime_id: str, reason: str, since_ms: int) -> None:
        self._quarantined[runtime_id] = RuntimeQuarantine(runtime_id, reason, since_ms)

    def release(self, runtime_id: str) -> bool:
        """Lift a runtime's quarantine; False if it was not quarantined."""
        return self._quarantined.pop(runtime_id, None) is not None

    # control-command handlers ----------------------------------------------------------

    def handle_register(self, payload: Mapping[str, Any], context: ControlContext) -> str | None:
        """``runtime.register``: None when applied, else the refusal reason."""
        try:
            registration = RuntimeRegistration.from_payload(payload)
        except RegistrationError as exc:
            return f"{REGISTER_KIND}: {_with_hint(exc)}"
        refusal = _subject_refusal(context, runtime_subject(registration.runtime_id))
        if refusal:
            return refusal
        self.register(registration)
        return None

    def handle_deregister(self, payload: Mapping[str, Any], context: ControlContext) -> str | None:
        """``runtime.deregister``: None when applied, else the refusal reason."""
        try:
            runtime_id = _runtime_id_only(payload, DEREGISTER_KIND, optional=())
        except RegistrationError as exc:
            return exc.reason
        refusal = _subject_refusal(context, runtime_subject(runtime_id))
        if refusal:
            return refusal
        if runtime_id not in self._runtimes:
            return f"{DEREGISTER_KIND}: runtime {runtime_id!r} is not registered"
        self.deregister(runtime_id)
        return None

    def handle_quarantine(self, payload: Mapping[str, Any], context: ControlContext) -> str | None:
        """``runtime.quarantine``: None when applied, else the refusal reason. A runtime
        that is not registered may be quarantined too (an attacker may claim its id)."""
        try:
            runtime_id = _runtime_id_only(payload, QUARANTINE_KIND, optional=("reason",))
        except RegistrationError as exc:
            return exc.reason
        reason = payload.get("reason")
        if not _is_text(reason, limit=_MAX_REASON):
            return (
                f"{QUARANTINE_KIND}: payload.reason must be a non-empty string of at most "
                f"{_MAX_REASON} characters (say why, for the operator who releases it)"
            )
        refusal = _subject_refusal(context, runtime_quarantine_subject(runtime_id))
        if refusal:
            return refusal
        assert isinstance(reason, str)  # noqa: S101 - _is_text checked it
        self.quarantine(runtime_id, reason, context.issued_at_ms)
        return None

    def handle_release(self, payload: Mapping[str, Any], context: ControlContext) -> str | None:
        """``runtime.release``: None when applied, else the refusal reason."""
        try:
            runtime_id = _runtime_id_only(payload, RELEASE_KIND, optional=("reason",))
        except RegistrationError as exc:
            return exc.reason
        refusal = _subject_refusal(context, runtime_quarantine_subject(runtime_id))
        if refusal:
            return refusal
        if runtime_id not in self._quarantined:
            return f"{RELEASE_KIND}: runtime {runtime_id!r} is not quarantined"
        self.release(runtime_id)
        return None

    def install(self, control: ControlState, *, replace: bool = False) -> None:
        """Register the four handlers (with their subject rules) with the control state.
        Raises ConfigError if a kind already has a handler and not ``replace``."""
        kinds: tuple[tuple[str, ControlHandler, SubjectRule], ...] = (
            (REGISTER_KIND, self.handle_register, _rule(runtime_subject, REGISTER_KIND)),
            (DEREGISTER_KIND, self.handle_deregister, _rule(runtime_subject, DEREGISTER_KIND)),
            (
                QUARANTINE_KIND,
                self.handle_quarantine,
                _rule(runtime_quarantine_subject, QUARANTINE_KIND),
            ),
            (RELEASE_KIND, self.handle_release, _rule(runtime_quarantine_subject, RELEASE_KIND)),
        )
        for kind, handler, subject in kinds:
            control.register_handler(kind, handler, subject=subject, replace=replace)


def _runtime_id_of(payload: Mapping[str, Any], kind: str) -> str:
    if not isinstance(payload, Mapping):
        raise RegistrationError(f"{kind}: the payload must be a JSON object")
    value = payload.get("runtime_id")
    if not is_identifier(value):
        raise RegistrationError(
            f"{kind}: payload.runtime_id must be 1-256 characters of "
            f"A-Z a-z 0-9 . _ : @ + = -, got {str(value)[:80]!r}"
        )
    assert isinstance(value, str)  # noqa: S101 - is_identifier checked it
    return value


def _runtime_id_only(payload: Mapping[str, Any], kind: str, *, optional: tuple[str, ...]) -> str:
    runtime_id = _runtime_id_of(payload, kind)
    allowed = {"runtime_id", *optional}
    unknown = sorted(str(k) for k in set(payload) - allowed)
    if unknown:
        raise RegistrationError(
            f"{kind}: unknown payload field(s) {', '.join(unknown)}; expected "
            f"{', '.join(sorted(allowed))}"
        )
    return runtime_id


def _rule(subject: Callable[[str], str], kind: str) -> SubjectRule:
    def rule(payload: Mapping[str, Any]) -> str:
        return subject(_runtime_id_of(payload, kind))

    return rule


def _subject_refusal(context: ControlContext, expected: str) -> str | None:
    if context.subject != expected:
        return (
            f"{context.kind}: the command subject {context.subject[:80]!r} should be "
            f"{expected!r}; the control topic is compacted by subject, so each runtime fact "
            "has a fixed one"
        )
    return None


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class IntegrityConfig:
    """Settings of the integrity layer.

    ``replay_retention_ms`` (default 24 h): how long an intent id / nonce is remembered.
    Keep it longer than the longest intent lifetime (``expires_at_ms - issued_at_ms``)
    agents use; intents issued longer ago than this are denied (they can no longer be
    checked for replay).

    ``max_remembered`` (default 10,000): ids/nonces remembered per agent; the oldest are
    forgotten first. It bounds the state kept per agent: about 90 bytes of JSON per entry
    with UUID ids and nonces, so 10,000 entries are about 0.9 MB -- close to Kafka's
    default 1 MB record limit if the worker stores the whole state as one record.

    ``sequence_gap_tolerance`` (default 100): how many sequence numbers may be skipped
    (intents an agent built but never published) before a gap is a violation.

    ``quarantine_scope`` (default ``"agent"``): what a violation quarantines. An agent's
    key may be stolen and used from elsewhere -- from a runtime that attests correctly or
    claims to be another one -- so quarantining the *agent* stops every use of the
    identity, wherever it comes from. ``"runtime"`` contains a compromised host but lets a
    stolen key keep acting from other runtimes; choose it only where runtimes are shared by
    many agents and the key is bound to its runtime by other means.
    """

    replay_retention_ms: int = 24 * 60 * 60 * 1000
    max_remembered: int = 10_000
    sequence_gap_tolerance: int = 100
    quarantine_scope: QuarantineScope = "agent"

    def __post_init__(self) -> None:
        _check_int("replay_retention_ms", self.replay_retention_ms, minimum=1)
        _check_int("max_remembered", self.max_remembered, minimum=1, maximum=_MAX_REMEMBERED_LIMIT)
        _check_int("sequence_gap_tolerance", self.sequence_gap_tolerance, minimum=0)
        if self.quarantine_scope not in _SCOPES:
            raise ConfigError(
                f"integrity.quarantine_scope must be 'agent' or 'runtime', got "
                f"{self.quarantine_scope!r}",
                hint="'agent' (the default) stops every use of a stolen key",
            )

    @classmethod
    def from_mapping(cls, data: object, *, source: str = "integrity") -> IntegrityConfig:
        """Build from a settings table; unknown keys and wrong types are a ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a table of settings, got {_kind(data)}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(unknown)}",
                hint=f"known settings: {', '.join(sorted(known))}",
            )
        for name in ("replay_retention_ms", "max_remembered", "sequence_gap_tolerance"):
            if name in data and (type(data[name]) is not int):
                raise ConfigError(
                    f"{source}.{name} must be an integer, got {_kind(data[name])}",
                )
        if "quarantine_scope" in data and not isinstance(data["quarantine_scope"], str):
            raise ConfigError(
                f"{source}.quarantine_scope must be 'agent' or 'runtime', got "
                f"{_kind(data['quarantine_scope'])}"
            )
        try:
            return cls(**{str(k): v for k, v in data.items()})
        except ConfigError as exc:
            raise ConfigError(
                exc.reason.replace("integrity.", f"{source}.", 1), hint=exc.hint
            ) from None


# --------------------------------------------------------------------------- state


class _Seen:
    """One remembered intent: its id, its nonce, and when the gate saw it."""

    __slots__ = ("intent_id", "nonce", "seen_at_ms")

    def __init__(self, intent_id: str, nonce: str, seen_at_ms: int) -> None:
        self.intent_id = intent_id
        self.nonce = nonce
        self.seen_at_ms = seen_at_ms


class IntegrityState:
    """One agent's integrity state: the ids/nonces seen and the highest sequence.

    Entries are kept in the order they were seen; each id and nonce points at the latest
    entry that holds it, so a lookup is one dict access and forgetting the oldest entry
    is O(1). ``to_dict``/``from_dict`` use only JSON types::

        {"version": 1, "highest_sequence": 41 | null,
         "entries": [[intent_id, nonce, seen_at_ms], ...]}   # oldest first
    """

    __slots__ = ("highest_sequence", "_entries", "_by_id", "_by_nonce")

    def __init__(self, highest_sequence: int | None = None) -> None:
        self.highest_sequence = highest_sequence
        self._entries: deque[_Seen] = deque()
        self._by_id: dict[str, _Seen] = {}
        self._by_nonce: dict[str, _Seen] = {}

    def __len__(self) -> int:
        """How many intents are remembered."""
        return len(self._entries)

    def id_seen_at(self, intent_id: str) -> int | None:
        """When the gate last saw this intent id (if it still remembers it)."""
        entry = self._by_id.get(intent_id)
        return None if entry is None else entry.seen_at_ms

    def nonce_used(self, nonce: str) -> tuple[str, int] | None:
        """(intent id, seen at) of the latest intent that used this nonce, if remembered."""
        entry = self._by_nonce.get(nonce)
        return None if entry is None else (entry.intent_id, entry.seen_at_ms)

    def remember(self, intent_id: str, nonce: str, seen_at_ms: int) -> None:
        """Remember an intent. An exact repeat (id and nonce both known) adds nothing, so
        a flood of replays cannot push real entries out."""
        if intent_id in self._by_id and nonce in self._by_nonce:
            return
        entry = _Seen(intent_id, nonce, seen_at_ms)
        self._entries.append(entry)
        self._by_id[intent_id] = entry
        self._by_nonce[nonce] = entry

    def prune(self, now_ms: int, retention_ms: int, max_remembered: int) -> int:
        """Forget entries seen more than ``retention_ms`` before ``now_ms`` and the oldest
        beyond ``max_remembered``; return how many were forgotten. Amortized O(1) per
        remembered entry: each is forgotten once. (If the gate's clock went backwards, an
        expired entry behind a newer one waits its turn; lookups ignore it meanwhile.)"""
        cutoff = now_ms - retention_ms
        entries = self._entries
        dropped = 0
        while entries and (len(entries) > max_remembered or entries[0].seen_at_ms < cutoff):
            self._forget(entries.popleft())
            dropped += 1
        return dropped

    def trim(self, max_remembered: int) -> int:
        """Forget the oldest entries beyond ``max_remembered``; return how many."""
        dropped = 0
        while len(self._entries) > max_remembered:
            self._forget(self._entries.popleft())
            dropped += 1
        return dropped

    def _forget(self, entry: _Seen) -> None:
        if self._by_id.get(entry.intent_id) is entry:
            del self._by_id[entry.intent_id]
        if self._by_nonce.get(entry.nonce) is entry:
            del self._by_nonce[entry.nonce]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "highest_sequence": self.highest_sequence,
            "entries": [[e.intent_id, e.nonce, e.seen_at_ms] for e in self._entries],
        }

    @classmethod
    def from_dict(cls, data: object) -> IntegrityState:
        """Rebuild from :meth:`to_dict` output; anything else is an IntegrityStateError."""
        if not isinstance(data, Mapping):
            raise _state_error(f"expected an object, got {_kind(data)}")
        if set(data) != {"version", "highest_sequence", "entries"}:
            raise _state_error(
                f"expected the fields entries, highest_sequence, version; got "
                f"{', '.join(sorted(str(k) for k in data)) or 'none'}"
            )
        if data["version"] != _STATE_VERSION or type(data["version"]) is not int:
            raise _state_error(
                f"version {data['version']!r} is not supported (this worker reads "
                f"version {_STATE_VERSION})"
            )
        highest = data["highest_sequence"]
        if highest is not None and (type(highest) is not int or not 0 <= highest <= MAX_SEQUENCE):
            raise _state_error(f"highest_sequence {highest!r} is not null or 0..2^63-1")
        raw = data["entries"]
        if not isinstance(raw, list):
            raise _state_error(f"entries must be a list, got {_kind(raw)}")
        state = cls(highest)
        for index, item in enumerate(raw):
            if (
                not isinstance(item, list | tuple)
                or len(item) != 3
                or not isinstance(item[0], str)
                or not isinstance(item[1], str)
                or type(item[2]) is not int
            ):
                raise _state_error(
                    f"entries[{index}] is {str(item)[:80]}, not [intent_id, nonce, seen_at_ms]"
                )
            entry = _Seen(item[0], item[1], item[2])
            state._entries.append(entry)
            state._by_id[entry.intent_id] = entry
            state._by_nonce[entry.nonce] = entry
        return state


# --------------------------------------------------------------------------- layer


@dataclass(frozen=True, slots=True)
class _Violation:
    violation: str  # attestation | replay | sequence
    check: str
    reason: str
    evidence: dict[str, str] = field(default_factory=dict)
    quarantine: bool = True


class IntegrityCheck:
    """The runtime integrity layer (a :class:`~processors.verdict.StatefulLayer`).

    ``evaluate`` is O(1): a registry lookup, two set lookups, two dict lookups and
    integer comparisons. ``observe`` is amortized O(1).
    """

    name = LAYER
    state_key = LAYER

    def __init__(self, registry: RuntimeRegistry, config: IntegrityConfig | None = None) -> None:
        self.registry = registry
        self.config = config or IntegrityConfig()

    # StatefulLayer -----------------------------------------------------------------------

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        agent_state = state.agent.get(self.state_key)
        if agent_state is not None and not isinstance(agent_state, IntegrityState):
            return Verdict.error(
                LAYER,
                f"the integrity state of agent {intent.agent_id!r} is a "
                f"{type(agent_state).__name__}, not an IntegrityState (load it with "
                "IntegrityCheck.load_state)",
            )
        violation = self._check(intent, agent_state, state.now_ms)
        if violation is not None:
            return self._deny(intent, violation)
        runtime = intent.runtime.runtime_id
        last = agent_state.highest_sequence if agent_state is not None else None
        follows = (
            f"first intent of agent {intent.agent_id!r}"
            if last is None
            else f"sequence {intent.sequence} follows {last}"
        )
        return Verdict.allow(
            LAYER,
            f"runtime {runtime!r} attested; not a replay; {follows}",
            runtime_id=runtime,
            sequence=str(intent.sequence),
        )

    def observe(self, intent: Intent, state: GateState, outcome: str) -> None:
        """Remember the intent's id and nonce; advance the agent's highest sequence if the
        intent passed the integrity checks (whatever later layers decided: its sequence
        number is used up); forget what is older than the retention or over the limit.

        ``outcome`` is not needed: a denied intent's id and nonce are consumed too, and an
        intent that failed these checks never moves the sequence (so a forged huge
        sequence cannot lock the agent out after its release).
        """
        agent_state = state.agent.get(self.state_key)
        if agent_state is None:
            agent_state = self.new_state()
            state.agent[self.state_key] = agent_state
        elif not isinstance(agent_state, IntegrityState):
            raise IntegrityStateError(
                f"the integrity state of agent {intent.agent_id!r} is a "
                f"{type(agent_state).__name__}, not an IntegrityState",
                hint="the worker must load stored state with IntegrityCheck.load_state",
            )
        now = state.now_ms
        passed = self._check(intent, agent_state, now) is None
        agent_state.remember(intent.intent_id, intent.nonce, now)
        if passed:
            last = agent_state.highest_sequence
            if last is None or intent.sequence > last:
                agent_state.highest_sequence = intent.sequence
        config = self.config
        agent_state.prune(now, config.replay_retention_ms, config.max_remembered)

    def new_state(self) -> IntegrityState:
        return IntegrityState()

    def load_state(self, data: Mapping[str, Any]) -> IntegrityState:
        """Rebuild an agent's state from its JSON form. Malformed data raises
        IntegrityStateError (the worker fails closed for that agent). More entries than
        ``max_remembered`` (the limit was lowered) keeps the newest."""
        agent_state = IntegrityState.from_dict(data)
        agent_state.trim(self.config.max_remembered)
        return agent_state

    def dump_state(self, layer_state: Any) -> dict[str, Any]:
        if not isinstance(layer_state, IntegrityState):
            raise IntegrityStateError(
                f"cannot store a {type(layer_state).__name__} as integrity state",
                hint="store what IntegrityCheck.new_state/load_state returned",
            )
        return layer_state.to_dict()

    # checks ----------------------------------------------------------------------------

    def _check(
        self, intent: Intent, agent_state: IntegrityState | None, now_ms: int
    ) -> _Violation | None:
        return (
            self._attestation(intent)
            or self._replay(intent, agent_state, now_ms)
            or self._sequence(intent, agent_state)
        )

    def _attestation(self, intent: Intent) -> _Violation | None:
        claimed = intent.runtime
        runtime = claimed.runtime_id
        quarantine = self.registry.quarantine_of(runtime)
        if quarantine is not None:
            return _Violation(
                "attestation",
                "runtime_quarantined",
                f"attestation: runtime {runtime!r} is quarantined since "
                f"{iso_ms(quarantine.since_ms)}: {quarantine.reason} (an operator lifts it "
                f"with a {RELEASE_KIND} control command)",
                {"runtime_id": runtime, "expected": "a runtime not quarantined", "seen": runtime},
                quarantine=False,
            )
        registration = self.registry.get(runtime)
        if registration is None:
            return _Violation(
                "attestation",
                "runtime_registered",
                f"attestation: runtime {runtime[:80]!r} is not registered (an operator "
                f"registers it with a {REGISTER_KIND} control command)",
                {"runtime_id": runtime, "expected": "a registered runtime", "seen": runtime},
            )
        if claimed.code_digest not in registration.code_digests:
            return _measurement("code", runtime, registration.code_digests, claimed.code_digest)
        if claimed.config_digest not in registration.config_digests:
            return _measurement(
                "config", runtime, registration.config_digests, claimed.config_digest
            )
        if claimed.environment != registration.environment:
            return _Violation(
                "attestation",
                "environment",
                f"attestation: runtime {runtime!r} claims environment "
                f"{claimed.environment[:80]!r} but is registered for "
                f"{registration.environment!r}",
                {
                    "runtime_id": runtime,
                    "expected": registration.environment,
                    "seen": claimed.environment,
                },
            )
        if registration.hosts and claimed.host not in registration.hosts:
            expected = _listing(registration.hosts)
            return _Violation(
                "attestation",
                "host",
                f"attestation: host {claimed.host[:80]!r} is not a registered host of runtime "
                f"{runtime!r} (expected one of {expected})",
                {"runtime_id": runtime, "expected": expected, "seen": claimed.host},
            )
        return None

    def _replay(
        self, intent: Intent, agent_state: IntegrityState | None, now_ms: int
    ) -> _Violation | None:
        retention = self.config.replay_retention_ms
        cutoff = now_ms - retention
        if agent_state is not None:
            seen_at = agent_state.id_seen_at(intent.intent_id)
            if seen_at is not None and seen_at >= cutoff:
                return _Violation(
                    "replay",
                    "intent_id",
                    f"replay: intent id {intent.intent_id[:80]!r} already seen at "
                    f"{iso_ms(seen_at)} ({now_ms - seen_at} ms ago)",
                    {
                        "intent_id": intent.intent_id,
                        "expected": "an intent id not seen before",
                        "seen": intent.intent_id,
                        "first_seen_at_ms": str(seen_at),
                    },
                )
            used = agent_state.nonce_used(intent.nonce)
            if used is not None and used[1] >= cutoff:
                by, at = used
                return _Violation(
                    "replay",
                    "nonce",
                    f"replay: nonce {intent.nonce[:80]!r} already used by intent {by[:80]!r} "
                    f"at {iso_ms(at)}",
                    {
                        "intent_id": intent.intent_id,
                        "nonce": intent.nonce,
                        "expected": "a nonce not used before",
                        "seen": intent.nonce,
                        "used_by_intent_id": by,
                        "used_at_ms": str(at),
                    },
                )
        if intent.issued_at_ms < cutoff:
            return _Violation(
                "replay",
                "window",
                f"replay window: issued at {iso_ms(intent.issued_at_ms)}, "
                f"{now_ms - intent.issued_at_ms} ms ago, longer ago than the replay retention "
                f"of {retention} ms, so it can no longer be checked for replay (agents must "
                "keep expires_at_ms - issued_at_ms below the retention)",
                {
                    "expected": f"issued_at_ms >= {cutoff}",
                    "seen": str(intent.issued_at_ms),
                },
                quarantine=False,
            )
        return None

    def _sequence(self, intent: Intent, agent_state: IntegrityState | None) -> _Violation | None:
        seq = intent.sequence
        if not 0 <= seq <= MAX_SEQUENCE:
            return _Violation(
                "sequence",
                "range",
                f"sequence out of range: expected 0..{MAX_SEQUENCE}, seen {seq}",
                {"expected": f"0..{MAX_SEQUENCE}", "seen": str(seq)},
            )
        last = agent_state.highest_sequence if agent_state is not None else None
        if last is None:
            return None
        tolerance = self.config.sequence_gap_tolerance
        if seq <= last:
            return _Violation(
                "sequence",
                "regression",
                f"sequence regression: expected > {last}, seen {seq} (replay or rollback)",
                {"expected": f"> {last}", "seen": str(seq), "last_sequence": str(last)},
            )
        if seq > last + 1 + tolerance:
            return _Violation(
                "sequence",
                "gap",
                f"sequence gap: expected {last + 1}, seen {seq}, tolerance {tolerance}",
                {
                    "expected": f"{last + 1}..{last + 1 + tolerance}",
                    "seen": str(seq),
                    "last_sequence": str(last),
                    "tolerance": str(tolerance),
                },
            )
        return None

    def _deny(self, intent: Intent, violation: _Violation) -> Verdict:
        evidence = {
            "violation": violation.violation,
            "check": violation.check,
            "agent_id": intent.agent_id,
            "runtime_id": intent.runtime.runtime_id,
            "sequence": str(intent.sequence),
            **violation.evidence,
        }
        if violation.quarantine:
            scope = self.config.quarantine_scope
            evidence["response"] = "quarantine"
            evidence["quarantine_scope"] = scope
            evidence["quarantine_subject"] = (
                intent.agent_id if scope == "agent" else intent.runtime.runtime_id
            )
        else:
            evidence["response"] = "deny"
        return Verdict.deny(LAYER, violation.reason, **evidence)


# --------------------------------------------------------------------------- helpers


def _measurement(what: str, runtime: str, allowed: frozenset[str], seen: str) -> _Violation:
    expected = _listing(allowed)
    return _Violation(
        "attestation",
        f"{what}_digest",
        f"attestation: {what} digest {seen} of runtime {runtime!r} is not registered "
        f"(expected one of {expected})",
        {"runtime_id": runtime, "expected": expected, "seen": seen},
    )


def _listing(values: frozenset[str]) -> str:
    shown = sorted(values)[:_SHOWN]
    more = len(values) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more else "")


def _is_text(value: object, *, limit: int = _MAX_TEXT) -> bool:
    return isinstance(value, str) and bool(value.strip()) and len(value) <= limit


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _string_set(payload: Mapping[str, Any], name: str) -> frozenset[str]:
    value = payload[name]
    if not isinstance(value, list | tuple):
        raise RegistrationError(f"{name} must be a list of strings, got {_kind(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise RegistrationError(f"{name}[{index}] must be a string, got {_kind(item)}")
    return frozenset(value)


def _check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> None:
    if type(value) is not int:
        raise ConfigError(f"integrity.{name} must be an integer, got {_kind(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"integrity.{name} must be {bound}, got {value}")


def _with_hint(exc: TrustplaneError) -> str:
    return exc.reason + (f" (hint: {exc.hint})" if exc.hint else "")


def _state_error(problem: str) -> IntegrityStateError:
    return IntegrityStateError(
        f"stored integrity state is malformed: {problem}",
        hint="the worker denies this agent's intents until the state is repaired or reset "
        "(a reset forgets remembered ids and the sequence)",
    )
