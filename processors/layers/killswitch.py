"""Kill switch: stop everything, one agent, or one kind of action, at once.

Engaged and released by signed operator commands on ``control``; every worker applies
them between two batches, so a switch holds from the next intent on. The check runs
first in the chain: a switched-off intent is denied before anything else is asked.

==================  ================================  ====================================
kind                subject                           payload
==================  ================================  ====================================
killswitch.engage   ``killswitch/<scope>/<target>``   scope (global|agent|action), target,
                                                      reason
killswitch.release  ``killswitch/<scope>/<target>``   scope, target, reason?
==================  ================================  ====================================

``target`` is ``*`` for the global switch, an agent id for ``agent``, and an action
pattern (``fnmatch``: ``payments.*``) for ``action``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from processors.control import ControlContext, ControlState
from processors.control.registry import iso_ms
from processors.intent import Intent
from processors.verdict import GateState, Verdict

__all__ = ["Engagement", "KillSwitches", "KillSwitchCheck", "SCOPES"]

LAYER = "killswitch"
SCOPES = ("global", "agent", "action")


@dataclass(frozen=True, slots=True)
class Engagement:
    scope: str
    target: str
    reason: str
    by: str
    since_ms: int

    def describe(self) -> str:
        what = "global" if self.scope == "global" else f"{self.scope} {self.target!r}"
        return (
            f"kill switch ({what}) engaged at {iso_ms(self.since_ms)} by {self.by}: {self.reason}"
        )


def subject_of(payload: Mapping[str, Any]) -> str:
    scope, target = _scope_target(payload)
    return f"killswitch/{scope}/{target}"


def _scope_target(payload: Mapping[str, Any]) -> tuple[str, str]:
    scope = payload.get("scope")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    target = payload.get("target", "*" if scope == "global" else None)
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"a {scope} kill switch needs a target")
    if scope == "global" and target != "*":
        raise ValueError("the global kill switch has target '*'")
    return str(scope), target


class KillSwitches:
    """The engaged switches; installs its two command kinds on a ControlState."""

    def __init__(self) -> None:
        self.global_: Engagement | None = None
        self.agents: dict[str, Engagement] = {}
        self.actions: dict[str, Engagement] = {}

    def install(self, control: ControlState) -> None:
        control.register_handler("killswitch.engage", self._engage, subject=subject_of)
        control.register_handler("killswitch.release", self._release, subject=subject_of)

    def _engage(self, payload: Mapping[str, Any], ctx: ControlContext) -> str | None:
        try:
            scope, target = _scope_target(payload)
        except ValueError as exc:
            return str(exc)
        reason = payload.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            return "engaging a kill switch needs a reason"
        engagement = Engagement(scope, target, reason, ctx.issued_by, ctx.issued_at_ms)
        if scope == "global":
            self.global_ = engagement
        elif scope == "agent":
            self.agents[target] = engagement
        else:
            self.actions[target] = engagement
        return None

    def _release(self, payload: Mapping[str, Any], ctx: ControlContext) -> str | None:
        try:
            scope, target = _scope_target(payload)
        except ValueError as exc:
            return str(exc)
        if scope == "global":
            self.global_ = None
        elif scope == "agent":
            self.agents.pop(target, None)
        else:
            self.actions.pop(target, None)
        return None

    def engaged_for(self, intent: Intent) -> Engagement | None:
        if self.global_ is not None:
            return self.global_
        engagement = self.agents.get(intent.agent_id)
        if engagement is not None:
            return engagement
        for pattern, engagement in self.actions.items():
            if fnmatchcase(intent.action, pattern):
                return engagement
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "global": self.global_ is not None,
            "agents": sorted(self.agents),
            "actions": sorted(self.actions),
        }


class KillSwitchCheck:
    name = LAYER

    def __init__(self, switches: KillSwitches) -> None:
        self.switches = switches

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        engagement = self.switches.engaged_for(intent)
        if engagement is None:
            return Verdict.allow(LAYER)
        return Verdict.deny(
            LAYER, engagement.describe(), scope=engagement.scope, target=engagement.target
        )
