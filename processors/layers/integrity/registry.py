"""The runtime registry: what each runtime may look like (:class:`RuntimeRegistration`),
which runtimes are quarantined, and the control commands that change both
(``runtime.register``, ``runtime.deregister``, ``runtime.quarantine``, ``runtime.release``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from processors.control import ControlContext, ControlHandler, ControlState, SubjectRule
from processors.control.registry import is_identifier
from processors.exceptions import TrustplaneError
from processors.layers.integrity.resets import StateResets
from processors.layers.integrity.values import MAX_TEXT, is_text, kind_of

__all__ = [
    "DEREGISTER_KIND",
    "QUARANTINE_KIND",
    "REGISTER_KIND",
    "RELEASE_KIND",
    "RegistrationError",
    "RuntimeQuarantine",
    "RuntimeRegistration",
    "RuntimeRegistry",
    "runtime_quarantine_subject",
    "runtime_subject",
]

REGISTER_KIND: Final = "runtime.register"
DEREGISTER_KIND: Final = "runtime.deregister"
QUARANTINE_KIND: Final = "runtime.quarantine"
RELEASE_KIND: Final = "runtime.release"

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_REASON = 1024
_MAX_MEASUREMENTS = 1024
"""At most this many code digests, config digests or hosts per runtime."""


class RegistrationError(TrustplaneError):
    """A runtime registration (from a control command or from code) is not acceptable."""


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
        if not is_text(self.environment):
            raise RegistrationError(
                f"runtime {self.runtime_id!r}: environment must be a non-empty string of at "
                f"most {MAX_TEXT} characters"
            )
        for host in sorted(self.hosts, key=str):
            if not is_text(host):
                raise RegistrationError(
                    f"runtime {self.runtime_id!r}: host {str(host)[:80]!r} must be a non-empty "
                    f"string of at most {MAX_TEXT} characters",
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
            raise RegistrationError(f"runtime_id must be a string, got {kind_of(runtime_id)}")
        if not isinstance(environment, str):
            raise RegistrationError(f"environment must be a string, got {kind_of(environment)}")
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

    ``resets`` holds the integrity layer's other operator fact, the ``agent.state.reset``
    acknowledgements (:mod:`processors.layers.integrity.resets`); :meth:`install`
    registers its handler too, so the layer's control commands arrive in one place.
    """

    def __init__(self, registrations: Iterable[RuntimeRegistration] = ()) -> None:
        self._runtimes: dict[str, RuntimeRegistration] = {}
        self._quarantined: dict[str, RuntimeQuarantine] = {}
        self.resets = StateResets()
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
        if not is_text(reason, limit=_MAX_REASON):
            return (
                f"{QUARANTINE_KIND}: payload.reason must be a non-empty string of at most "
                f"{_MAX_REASON} characters (say why, for the operator who releases it)"
            )
        refusal = _subject_refusal(context, runtime_quarantine_subject(runtime_id))
        if refusal:
            return refusal
        assert isinstance(reason, str)  # noqa: S101 - is_text checked it
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
        """Register the four handlers (with their subject rules) with the control state,
        and the ``agent.state.reset`` handler of :attr:`resets`. Raises ConfigError if a
        kind already has a handler and not ``replace``."""
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
        self.resets.install(control, replace=replace)


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


def _string_set(payload: Mapping[str, Any], name: str) -> frozenset[str]:
    value = payload[name]
    if not isinstance(value, list | tuple):
        raise RegistrationError(f"{name} must be a list of strings, got {kind_of(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise RegistrationError(f"{name}[{index}] must be a string, got {kind_of(item)}")
    return frozenset(value)


def _with_hint(exc: TrustplaneError) -> str:
    return exc.reason + (f" (hint: {exc.hint})" if exc.hint else "")
