"""Runtime integrity: the runtime that sent an intent is the one that was registered, and
the intent is not a replay and continues its agent's sequence.

The checks run in this order; the first that fails decides, with a DENY whose reason
says what was expected and what was seen:

0. **already decided** -- the intent is an exact copy (same id, same nonce, same
   signature: see :func:`fingerprint`) of an intent this agent sent within
   ``replay_retention_ms``: refused as a replay (``check="duplicate"``), but *not* a
   violation -- the bytes of every intent are on ``intents`` and inside its approval, so
   anyone can replay one, and that must not let anyone quarantine the agent. The intent
   was decided once; it is not decided again.
1. **window** -- an intent issued longer ago than ``replay_retention_ms``
   (``check="window"``), or before an operator reset the agent's state
   (``check="reset"``), can no longer be checked for replay: refused, not a violation.
2. **attestation** -- ``intent.runtime.runtime_id`` is registered (``runtime.register``
   control command), its ``code_digest`` and ``config_digest`` are among the registered
   measurements, its ``environment`` is the registered one and its ``host`` is allowed
   (a registration without hosts allows any host).
3. **replay** -- a *different* intent reuses an ``intent_id`` or a ``nonce`` seen from
   this agent within ``replay_retention_ms``: only the agent's key could have signed it.
4. **sequence** -- with *last* the agent's highest accepted sequence: ``sequence <= last``
   is a regression (a replay or a rolled-back runtime); ``sequence > last + 1 +
   sequence_gap_tolerance`` is a gap (intents were suppressed, or a second runtime is
   using the identity). The first intent of an agent may start at any sequence >= 0.

Every violation of 2-4 is evidence that the runtime or the agent's key is compromised.
The DENY carries ``response="quarantine"``, ``quarantine_scope`` (``agent`` |
``runtime``), ``quarantine_subject`` (the agent id or the runtime id) and ``violation``
(``attestation`` | ``replay`` | ``sequence``); the gate turns that into a quarantine
control event. This module only says so; it quarantines nothing itself.

The other DENYs are *not* new violations and carry ``response="deny"``: 0 and 1 above,
an intent from a runtime that is already quarantined (``check="runtime_quarantined"``),
and every intent of an agent whose stored state the worker could not trust
(``check="state_untrusted"``, below). The gate quarantines exactly when
``response == "quarantine"``. (An exact copy whose id was already forgotten -- more than
``max_remembered`` intents of the agent within the retention -- is caught by the
sequence check, as a violation.)

State (:class:`IntegrityState`, per agent, in ``GateState.agent["integrity"]``) is what
:meth:`IntegrityCheck.observe` learns from every intent whose identity verified: the ids,
nonces and fingerprints seen (with the gate's clock, not the agent's ``issued_at_ms``,
which the agent controls) and the highest sequence that passed these checks. It is
bounded by ``max_remembered`` entries and round-trips through JSON, so a replay after a
worker restart is still caught. If an id is forgotten early (more than ``max_remembered``
intents within the retention), the sequence check still catches a replay of an intent
that was accepted: its sequence is no longer above the agent's highest.

When the worker restores an agent's state from ``gate-state`` and cannot trust it (a
record that fails authentication, is unreadable, a tombstone, an older write replayed),
it puts an :class:`UntrustedState` in that slot: every intent of the agent is denied with
a reason naming the record, until an operator sends ``agent.state.reset`` for that record
(:mod:`.resets`); the agent then starts a fresh state that refuses intents issued before
the reset.

Runtime registrations (and runtime quarantines, and state resets) come from signed
operator commands, applied by :class:`processors.control.ControlState` through the
handlers that :meth:`RuntimeRegistry.install` registers. An intent from a quarantined
runtime is denied (``check="runtime_quarantined"``, ``response="deny"``: it is already
quarantined).

The package, one responsibility a module:

- :mod:`.check` -- :class:`IntegrityCheck`, the layer (duplicate, window, attestation,
  replay, sequence), and :func:`fingerprint`;
- :mod:`.registry` -- :class:`RuntimeRegistry`, :class:`RuntimeRegistration` and the
  ``runtime.*`` control commands;
- :mod:`.resets` -- :class:`StateResets` and the ``agent.state.reset`` control command;
- :mod:`.state` -- :class:`IntegrityState`, the ids, nonces and sequence per agent, and
  :class:`UntrustedState`;
- :mod:`.config` -- :class:`IntegrityConfig`;
- :mod:`.values` -- describing and checking untrusted values in error messages.
"""

from __future__ import annotations

from processors.layers.integrity.check import IntegrityCheck, fingerprint
from processors.layers.integrity.config import IntegrityConfig, QuarantineScope
from processors.layers.integrity.registry import (
    DEREGISTER_KIND,
    QUARANTINE_KIND,
    REGISTER_KIND,
    RELEASE_KIND,
    RegistrationError,
    RuntimeQuarantine,
    RuntimeRegistration,
    RuntimeRegistry,
    runtime_quarantine_subject,
    runtime_subject,
)
from processors.layers.integrity.resets import (
    RESET_KIND,
    StateReset,
    StateResets,
    state_reset_subject,
)
from processors.layers.integrity.state import (
    MAX_SEQUENCE,
    IntegrityState,
    IntegrityStateError,
    UntrustedState,
)

__all__ = [
    "DEREGISTER_KIND",
    "QUARANTINE_KIND",
    "REGISTER_KIND",
    "RELEASE_KIND",
    "RESET_KIND",
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
    "StateReset",
    "StateResets",
    "UntrustedState",
    "fingerprint",
    "runtime_quarantine_subject",
    "runtime_subject",
    "state_reset_subject",
]
