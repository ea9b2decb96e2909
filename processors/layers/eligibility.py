"""Eligibility: the agent may act now, from this runtime, in this environment.

Denies, each with its reason and evidence: an agent that is not registered, revoked,
suspended or quarantined (by a signed operator command, or by the runtime integrity
layer through the same state); a ``runtime.runtime_id`` that is not one of the agent's
registered runtimes; a ``runtime.environment`` that is not one of its environments
(an empty list in the registration means any).
"""

from __future__ import annotations

from processors.control.registry import AgentDirectory, iso_ms
from processors.intent import Intent
from processors.verdict import GateState, Verdict

__all__ = ["EligibilityCheck"]

LAYER = "eligibility"


class EligibilityCheck:
    name = LAYER

    def __init__(self, directory: AgentDirectory) -> None:
        self._directory = directory

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        agent_id = intent.agent_id
        agent = self._directory.agents.get(agent_id)
        if agent is None:
            return Verdict.deny(
                LAYER, f"agent {agent_id!r} is not registered", agent_id=agent_id, status="unknown"
            )
        if agent.status != "active":
            verb = {"revoked": "revoked at"}.get(agent.status, f"{agent.status} since")
            return Verdict.deny(
                LAYER,
                f"agent {agent_id!r} is {verb} {iso_ms(agent.status_since_ms)}, reason: "
                f"{agent.status_reason or 'none given'}",
                agent_id=agent_id,
                status=agent.status,
                since_ms=str(agent.status_since_ms),
            )
        runtime = intent.runtime
        if agent.runtimes and runtime.runtime_id not in agent.runtimes:
            return Verdict.deny(
                LAYER,
                f"runtime {runtime.runtime_id!r} is not registered for agent {agent_id!r} "
                f"(registered: {', '.join(agent.runtimes)})",
                agent_id=agent_id,
                runtime_id=runtime.runtime_id,
            )
        if agent.environments and runtime.environment not in agent.environments:
            return Verdict.deny(
                LAYER,
                f"environment {runtime.environment!r} is not allowed for agent {agent_id!r} "
                f"(allowed: {', '.join(agent.environments)})",
                agent_id=agent_id,
                environment=runtime.environment,
            )
        return Verdict.allow(
            LAYER,
            f"agent {agent_id!r} is active; runtime {runtime.runtime_id!r} in "
            f"{runtime.environment!r} is allowed",
            agent_id=agent_id,
            status="active",
            runtime_id=runtime.runtime_id,
            environment=runtime.environment,
        )
