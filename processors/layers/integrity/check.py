"""The runtime integrity layer: :class:`IntegrityCheck` (attestation, replay, sequence;
see :mod:`processors.layers.integrity`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from processors.crypto.jcs import CanonicalizationError
from processors.intent import Intent
from processors.layers.identity import signing_message_for
from processors.layers.integrity.config import IntegrityConfig
from processors.layers.integrity.registry import REGISTER_KIND, RELEASE_KIND, RuntimeRegistry
from processors.layers.integrity.resets import RESET_KIND, StateReset
from processors.layers.integrity.state import (
    MAX_SEQUENCE,
    IntegrityState,
    IntegrityStateError,
    UntrustedState,
)
from processors.timefmt import iso_ms
from processors.verdict import ALREADY_DECIDED, GateState, Verdict

__all__ = ["IntegrityCheck", "LAYER", "fingerprint"]

LAYER: Final = "integrity"
_SHOWN = 4
"""How many allowed values a reason or evidence lists before ``(+N more)``."""


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
        if isinstance(agent_state, UntrustedState):
            reset = self._reset_of(agent_state)
            if reset is None:
                return Verdict.deny(
                    LAYER,
                    agent_state.reason,
                    check="state_untrusted",
                    agent_id=intent.agent_id,
                    gate_state_partition=str(agent_state.partition),
                    gate_state_offset=str(agent_state.offset),
                    response="deny",
                )
            agent_state = _after(reset)  # decided as the state the reset starts
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
        """Remember the intent's id, nonce and fingerprint; advance the agent's highest
        sequence if the intent passed the integrity checks (whatever later layers
        decided: its sequence number is used up); forget what is older than the retention
        or over the limit.

        ``outcome`` is not needed: a denied intent's id and nonce are consumed too, and an
        intent that failed these checks never moves the sequence (so a forged huge
        sequence cannot lock the agent out after its release).

        An agent whose stored state was not trusted learns nothing -- until an operator
        reset it: then its state starts afresh here (and the worker stores it).
        """
        agent_state = state.agent.get(self.state_key)
        if isinstance(agent_state, UntrustedState):
            reset = self._reset_of(agent_state)
            if reset is None:
                return
            agent_state = _after(reset)
            state.agent[self.state_key] = agent_state
        elif agent_state is None:
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
        agent_state.remember(intent.intent_id, intent.nonce, now, fingerprint(intent))
        if passed:
            last = agent_state.highest_sequence
            if last is None or intent.sequence > last:
                agent_state.highest_sequence = intent.sequence
        config = self.config
        agent_state.prune(now, config.replay_retention_ms, config.max_remembered)

    def _reset_of(self, untrusted: UntrustedState) -> StateReset | None:
        """The operator reset that acknowledges this untrusted record, if one arrived."""
        reset = self.registry.resets.get(untrusted.agent_id)
        if reset is None or not reset.covers(untrusted.partition, untrusted.offset):
            return None
        return reset

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
        if isinstance(layer_state, UntrustedState):
            raise IntegrityStateError(
                f"the integrity state of agent {layer_state.agent_id!r} is not trusted and "
                "must not be stored",
                hint=f"an operator resets it with a {RESET_KIND} command",
            )
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
        # what is refused without quarantine comes first: an exact copy of an intent
        # already decided (anyone can replay one: it is on `intents` and in its approval)
        # must not quarantine its agent through attestation or sequence either
        return (
            self._duplicate(intent, agent_state, now_ms)
            or self._window(intent, agent_state, now_ms)
            or self._attestation(intent)
            or self._replay(intent, agent_state, now_ms)
            or self._sequence(intent, agent_state)
        )

    def _duplicate(
        self, intent: Intent, agent_state: IntegrityState | None, now_ms: int
    ) -> _Violation | None:
        if agent_state is None:
            return None
        if (
            agent_state.id_seen_at(intent.intent_id) is None
            and agent_state.nonce_used(intent.nonce) is None
        ):
            return None
        seen_at = agent_state.duplicate_seen_at(intent.intent_id, intent.nonce, fingerprint(intent))
        if seen_at is None or seen_at < now_ms - self.config.replay_retention_ms:
            return None
        return _Violation(
            "replay",
            "duplicate",
            f"replay: intent {intent.intent_id[:80]!r} was already decided (first seen at "
            f"{iso_ms(seen_at)}, {now_ms - seen_at} ms ago); an exact copy is refused, not "
            "decided again, and does not quarantine its agent (anyone who saw the intent "
            "can replay it)",
            {
                "intent_id": intent.intent_id,
                "expected": "an intent not decided before",
                "seen": intent.intent_id,
                "first_seen_at_ms": str(seen_at),
                ALREADY_DECIDED: "true",
            },
            quarantine=False,
        )

    def _window(
        self, intent: Intent, agent_state: IntegrityState | None, now_ms: int
    ) -> _Violation | None:
        not_before = agent_state.not_before_ms if agent_state is not None else None
        if not_before is not None and intent.issued_at_ms < not_before:
            return _Violation(
                "replay",
                "reset",
                f"replay window: issued at {iso_ms(intent.issued_at_ms)}, before an operator "
                f"reset the agent's gate state at {iso_ms(not_before)}; what the agent did "
                "before then is forgotten, so such an intent cannot be checked for replay "
                "(the agent sends a new one)",
                {"expected": f"issued_at_ms >= {not_before}", "seen": str(intent.issued_at_ms)},
                quarantine=False,
            )
        retention = self.config.replay_retention_ms
        cutoff = now_ms - retention
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
        """A *different* intent reusing a remembered id or nonce (an exact copy was
        refused before): the agent's key signed two intents with one id or nonce."""
        cutoff = now_ms - self.config.replay_retention_ms
        if agent_state is not None:
            seen_at = agent_state.id_seen_at(intent.intent_id)
            if seen_at is not None and seen_at >= cutoff:
                return _Violation(
                    "replay",
                    "intent_id",
                    f"replay: intent id {intent.intent_id[:80]!r} already seen at "
                    f"{iso_ms(seen_at)} ({now_ms - seen_at} ms ago) on a different intent",
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
                    f"at {iso_ms(at)} (a different intent)",
                    {
                        "intent_id": intent.intent_id,
                        "nonce": intent.nonce,
                        "expected": "a nonce not used before",
                        "seen": intent.nonce,
                        "used_by_intent_id": by,
                        "used_at_ms": str(at),
                    },
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


def fingerprint(intent: Intent) -> str | None:
    """What tells an exact copy of an intent from a different intent with the same id and
    nonce: 64 bits of SHA-256 over the agent's signature.

    The signature, not the record's bytes: Avro lets anyone re-encode the same record
    (map blocks, their order) into other bytes that still verify, and Ed25519 signatures
    are deterministic and not malleable (the verifier requires S < L), so one signed
    intent has exactly one signature per key and a different one needs the agent's key.
    An unsigned intent (a pipeline without the identity layer) is fingerprinted by its
    signing payload; None when it has none. A collision would only turn a quarantine into
    a plain deny.
    """
    signature = intent.signature
    if signature:
        return hashlib.sha256(b"signature\x00" + bytes(signature)).hexdigest()[:16]
    try:
        message = signing_message_for(intent)
    except CanonicalizationError:
        return None
    return hashlib.sha256(b"payload\x00" + message).hexdigest()[:16]


def _after(reset: StateReset) -> IntegrityState:
    """The state an operator reset starts: nothing remembered, nothing from before it."""
    return IntegrityState(not_before_ms=reset.issued_at_ms)


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
