"""A test layer: a per-agent allow-list of actions (default deny).

The first release authorized with this; identity, eligibility and Cedar policy replaced
it. It stays as a small, predictable layer for tests of the gate and the pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from processors.exceptions import ConfigError
from processors.intent import Intent
from processors.verdict import GateState, Verdict

__all__ = ["AllowList", "AllowListAuthorization"]

LAYER = "authorization"


@dataclass(frozen=True)
class AllowList:
    """Agent id -> action patterns it may take (``fnmatch`` style: ``tickets.*``)."""

    agents: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_file(cls, path: Path) -> AllowList:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(
                f"allow-list {path} does not exist",
                hint="check the path of the allow-list file",
            ) from exc
        except ValueError as exc:
            raise ConfigError(f"allow-list {path} is not valid JSON: {exc}") from exc
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: object, *, source: str = "allow-list") -> AllowList:
        if not isinstance(data, dict) or set(data) - {"agents", "description"}:
            raise ConfigError(f'{source}: expected {{"agents": {{agent_id: [action, ...]}}}}')
        agents = data.get("agents", {})
        if not isinstance(agents, dict):
            raise ConfigError(f"{source}: 'agents' must be an object")
        parsed: dict[str, tuple[str, ...]] = {}
        for agent, actions in agents.items():
            if not isinstance(actions, Sequence) or isinstance(actions, str):
                raise ConfigError(f"{source}: agents.{agent} must be a list of action patterns")
            if not all(isinstance(a, str) and a for a in actions):
                raise ConfigError(f"{source}: agents.{agent} has an empty or non-string action")
            parsed[agent] = tuple(actions)
        return cls(parsed)


class AllowListAuthorization:
    """Allow exactly the (agent, action) pairs the allow-list names; deny all else."""

    name = LAYER

    def __init__(self, allowlist: AllowList) -> None:
        self._allowlist = allowlist

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        patterns = self._allowlist.agents.get(intent.agent_id)
        if patterns is None:
            return Verdict.deny(LAYER, f"agent {intent.agent_id!r} is not registered")
        for pattern in patterns:
            if fnmatchcase(intent.action, pattern):
                return Verdict.allow(
                    LAYER, f"action {intent.action!r} allowed by {pattern!r}", rule=pattern
                )
        return Verdict.deny(
            LAYER, f"agent {intent.agent_id!r} may not take action {intent.action!r}"
        )
