"""A small, realistic agent estate for the demo, the tests and the benchmarks.

``DEMO_AGENTS`` are registered with signed operator commands (keys, roles, runtimes,
environments), their runtimes with their allowed measurements, and the example Cedar
bundle in ``policies/bundle`` is published. Agents keep their key in
``<keys_dir>/agents/<id>.pem`` and their next sequence number beside it, so a second
`make run` continues where the first stopped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processors.crypto.keys import SigningKey, b64url, raw_public_key
from processors.layers.integrity import runtime_subject
from processors.layers.policy import CONTROL_SUBJECT, PolicyBundle
from streams.config import PROJECT_ROOT, Settings
from streams.operator import OperatorClient, agent_key, ensure_local_keys
from streams.sdk.client import new_intent

__all__ = ["DemoAgent", "DEMO_AGENTS", "Estate", "setup_estate"]

BUNDLE_DIR = PROJECT_ROOT / "policies" / "bundle"


def measurement(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class DemoAgent:
    agent_id: str
    roles: tuple[str, ...]
    runtime_id: str
    environment: str = "prod"

    @property
    def code_digest(self) -> str:
        return measurement(f"{self.agent_id} code v1")

    @property
    def config_digest(self) -> str:
        return measurement(f"{self.agent_id} config v1")

    def runtime(self) -> dict[str, str]:
        return {
            "runtime_id": self.runtime_id,
            "code_digest": self.code_digest,
            "config_digest": self.config_digest,
            "environment": self.environment,
            "host": "localhost",
        }


DEMO_AGENTS = {
    a.agent_id: a
    for a in (
        DemoAgent("billing-agent", ("payments-agent",), "billing-rt-1"),
        DemoAgent("support-bot", ("support",), "support-rt-1"),
        DemoAgent("deploy-bot", ("deployer",), "deploy-rt-1"),
        DemoAgent("analytics-agent", ("analyst",), "analytics-rt-1"),
        DemoAgent("ops-agent", ("readonly",), "ops-rt-1"),
        # the MCP demo's agent (`trustplane demo --agents`): its tool calls go through
        # `trustplane mcp-proxy`, whose guard keeps its own sequence numbers
        DemoAgent("billing-assistant", ("payments-agent",), "assistant-rt-1"),
    )
}


class Estate:
    """Signs intents as the demo agents would (key, runtime, next sequence)."""

    def __init__(self, settings: Settings, agents: Mapping[str, DemoAgent] = DEMO_AGENTS) -> None:
        self.settings = settings
        self.agents = dict(agents)
        self._keys: dict[str, SigningKey] = {}
        self._sequences: dict[str, int] = {}

    def key(self, agent_id: str) -> SigningKey:
        if agent_id not in self._keys:
            self._keys[agent_id] = agent_key(self.settings, agent_id)
        return self._keys[agent_id]

    def next_sequence(self, agent_id: str) -> int:
        path = self._sequence_path(agent_id)
        if agent_id not in self._sequences:
            self._sequences[agent_id] = int(path.read_text()) if path.exists() else 0
        self._sequences[agent_id] += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(self._sequences[agent_id]))
        return self._sequences[agent_id]

    def _sequence_path(self, agent_id: str) -> Path:
        prefix = self.settings.topic_prefix or "default"
        return self.settings.resolved_keys_dir / "agents" / f"{agent_id}.{prefix}.seq"

    def intent(
        self,
        agent_id: str,
        action: str,
        resource: str,
        *,
        runtime: Mapping[str, str] | None = None,
        sign_with: SigningKey | None = None,
        **parameters: Any,
    ) -> dict[str, Any]:
        agent = self.agents.get(agent_id)
        return new_intent(
            agent_id,
            action,
            resource,
            sequence=self.next_sequence(agent_id),
            parameters=parameters,
            runtime=runtime or (agent.runtime() if agent else None),
            key_id=(sign_with or self.key(agent_id)).kid,
            sign_with=sign_with or self.key(agent_id),
        )


def registration(agent: DemoAgent, key: SigningKey) -> dict[str, Any]:
    return {
        "agent_id": agent.agent_id,
        "keys": [{"kid": key.kid, "x": b64url(raw_public_key(key.public_key))}],
        "roles": list(agent.roles),
        "runtimes": [agent.runtime_id],
        "environments": [agent.environment],
    }


def setup_estate(settings: Settings, *, bundle_dir: Path = BUNDLE_DIR) -> Estate:
    """Register the demo agents and runtimes and publish the example policy bundle."""
    ensure_local_keys(settings)
    estate = Estate(settings)
    with OperatorClient(settings) as operator:
        for agent in estate.agents.values():
            operator.send("agent.register", registration(agent, estate.key(agent.agent_id)))
            operator.send(
                "runtime.register",
                {
                    "runtime_id": agent.runtime_id,
                    "code_digests": [agent.code_digest],
                    "config_digests": [agent.config_digest],
                    "environment": agent.environment,
                    "hosts": [],
                },
                subject=runtime_subject(agent.runtime_id),
            )
        bundle = PolicyBundle.from_directory(bundle_dir)
        operator.send("policy.publish", bundle.to_document(), subject=CONTROL_SUBJECT)
    return estate
