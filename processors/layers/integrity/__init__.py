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

The package, one responsibility a module:

- :mod:`.check` -- :class:`IntegrityCheck`, the layer (attestation, replay, sequence);
- :mod:`.registry` -- :class:`RuntimeRegistry`, :class:`RuntimeRegistration` and the
  ``runtime.*`` control commands;
- :mod:`.state` -- :class:`IntegrityState`, the ids, nonces and sequence per agent;
- :mod:`.config` -- :class:`IntegrityConfig`;
- :mod:`.values` -- describing and checking untrusted values in error messages.
"""

from __future__ import annotations

from processors.layers.integrity.check import IntegrityCheck
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
from processors.layers.integrity.state import MAX_SEQUENCE, IntegrityState, IntegrityStateError

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
