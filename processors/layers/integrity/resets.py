"""Operator resets of an agent's gate state (:class:`StateResets`, the
``agent.state.reset`` control command).

When the gate worker cannot trust the state it restored for an agent (a record on
``gate-state`` that fails authentication, is unreadable, a tombstone, or an older write
replayed; see ``streams/gate/state.py``), the agent fails closed: the integrity layer
denies each of its intents with a reason that names the record (partition and offset).
An operator lifts that, after finding out who wrote the record, with::

    kind     agent.state.reset
    subject  <agent_id>/status/gate-state
    payload  {"agent_id": ..., "partition": P, "offset": N, "reason": "..."}

The command acknowledges exactly that record: it resets the agent only while the
worker's failure is the one at ``(P, N)``, so an old command replayed from the compacted
``control`` topic on every start never resets a state that is trusted again, nor a later
failure (which the operator must look at anew). On the agent's next intent the integrity
layer starts a fresh state that refuses every intent issued before the command
(``issued_at_ms``: those could be replays the lost state would have caught), and the
worker writes it, authenticated, to ``gate-state``; from then on the agent is decided as
usual (its anomaly baselines and its ledger of issued approvals start empty too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from processors.control import ControlContext, ControlState
from processors.control.registry import is_identifier
from processors.layers.integrity.values import is_text, kind_of

__all__ = ["RESET_KIND", "StateReset", "StateResets", "state_reset_subject"]

RESET_KIND: Final = "agent.state.reset"
_FIELDS = frozenset({"agent_id", "partition", "offset", "reason"})
_MAX_REASON = 1024


def state_reset_subject(agent_id: str) -> str:
    """The control-topic subject of ``agent.state.reset`` (one per agent: the latest
    reset is the one that counts)."""
    return f"{agent_id}/status/gate-state"


@dataclass(frozen=True, slots=True)
class StateReset:
    """An operator's acknowledgement of one untrusted ``gate-state`` record."""

    agent_id: str
    partition: int
    offset: int
    reason: str
    issued_by: str
    issued_at_ms: int

    def covers(self, partition: int, offset: int) -> bool:
        return (self.partition, self.offset) == (partition, offset)


class StateResets:
    """The latest ``agent.state.reset`` per agent, kept up to date by control commands."""

    def __init__(self) -> None:
        self._resets: dict[str, StateReset] = {}

    def get(self, agent_id: str) -> StateReset | None:
        return self._resets.get(agent_id)

    def __len__(self) -> int:
        return len(self._resets)

    def handle(self, payload: Mapping[str, Any], context: ControlContext) -> str | None:
        """``agent.state.reset``: None when applied, else the refusal reason."""
        if not isinstance(payload, Mapping):
            return f"{RESET_KIND}: the payload must be a JSON object"
        unknown = sorted(str(k) for k in set(payload) - _FIELDS)
        missing = sorted(_FIELDS - set(payload))
        if unknown or missing:
            return (
                f"{RESET_KIND}: the payload has exactly {', '.join(sorted(_FIELDS))}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                + (f"; missing: {', '.join(missing)}" if missing else "")
            )
        agent_id = payload["agent_id"]
        if not is_identifier(agent_id):
            return f"{RESET_KIND}: payload.agent_id {str(agent_id)[:80]!r} is not an agent id"
        for name in ("partition", "offset"):
            value = payload[name]
            if type(value) is not int or value < 0:
                return (
                    f"{RESET_KIND}: payload.{name} must be an integer >= 0 (from the denial "
                    f"reason), got {kind_of(value)} {str(value)[:40]}"
                )
        reason = payload["reason"]
        if not is_text(reason, limit=_MAX_REASON):
            return (
                f"{RESET_KIND}: payload.reason must be a non-empty string of at most "
                f"{_MAX_REASON} characters (what was found, for the audit trail)"
            )
        expected = state_reset_subject(agent_id)
        if context.subject != expected:
            return f"{RESET_KIND}: the command subject should be {expected!r}"
        self._resets[agent_id] = StateReset(
            agent_id,
            payload["partition"],
            payload["offset"],
            reason,
            context.issued_by,
            context.issued_at_ms,
        )
        return None

    def install(self, control: ControlState, *, replace: bool = False) -> None:
        """Register the ``agent.state.reset`` handler (with its subject rule)."""

        def subject(payload: Mapping[str, Any]) -> str:
            agent_id = payload.get("agent_id")
            if not is_identifier(agent_id):
                raise ValueError(f"payload.agent_id {str(agent_id)[:80]!r} is not an agent id")
            return state_reset_subject(str(agent_id))

        control.register_handler(RESET_KIND, self.handle, subject=subject, replace=replace)
