"""A suite's estate: its tool mapping, Cedar bundle and anomaly settings (all in
``policies/agentdojo/<suite>/``), and the agents that replay its episodes.

Every episode is one conversation of a fresh agent identity (``dojo-<suite>-<n>``, role
``dojo-<suite>``), so no episode inherits another's anomaly state; they all run the
suite's one registered runtime, with its measurements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from processors.crypto.keys import SigningKey, generate_signing_key
from processors.layers.anomaly import AnomalyConfig
from processors.layers.integrity import runtime_subject
from processors.layers.policy import CONTROL_SUBJECT, PolicyBundle
from streams.config import PROJECT_ROOT, Settings
from streams.dev.estate import DemoAgent, measurement, registration
from streams.eval.errors import EvalError
from streams.eval.flatten import FlatMapping
from streams.operator import OperatorClient
from streams.sdk.guard import AgentIdentity, load_mapping

__all__ = ["POLICY_ROOT", "EvalAgent", "SuiteEstate"]

POLICY_ROOT = PROJECT_ROOT / "policies" / "agentdojo"


@dataclass(frozen=True)
class EvalAgent(DemoAgent):
    """An episode's agent: its code and configuration are the suite runtime's."""

    @property
    def code_digest(self) -> str:
        return measurement(f"{self.runtime_id} code v1")

    @property
    def config_digest(self) -> str:
        return measurement(f"{self.runtime_id} config v1")


@dataclass(frozen=True)
class SuiteEstate:
    suite: str
    directory: Path

    @classmethod
    def of(cls, suite: str, root: Path = POLICY_ROOT) -> SuiteEstate:
        directory = root / suite
        missing = [
            name
            for name in ("tools.toml", "anomaly.toml", "policies.cedar", "manifest.json")
            if not (directory / name).is_file()
        ]
        if missing:
            raise EvalError(
                f"the {suite} estate in {directory} lacks {', '.join(missing)}",
                hint="run from a checkout of the project (policies/agentdojo/)",
            )
        return cls(suite, directory)

    @property
    def role(self) -> str:
        return f"dojo-{self.suite}"

    @property
    def runtime_id(self) -> str:
        return f"dojo-{self.suite}-rt"

    @property
    def anomaly_path(self) -> Path:
        return self.directory / "anomaly.toml"

    @cached_property
    def mapping(self) -> FlatMapping:
        return FlatMapping.of(load_mapping(self.directory / "tools.toml"))

    @cached_property
    def anomaly(self) -> AnomalyConfig:
        return AnomalyConfig.from_file(self.anomaly_path)

    def bundle(self) -> PolicyBundle:
        return PolicyBundle.from_directory(self.directory)

    def agent(self, n: int) -> EvalAgent:
        return EvalAgent(f"dojo-{self.suite}-{n:04d}", (self.role,), self.runtime_id)

    def identities(self, count: int) -> list[AgentIdentity]:
        """``count`` fresh agents (keys made in memory)."""
        return [self._identity(self.agent(n), generate_signing_key()) for n in range(count)]

    @staticmethod
    def _identity(agent: EvalAgent, key: SigningKey) -> AgentIdentity:
        return AgentIdentity(agent.agent_id, key, agent.runtime())

    def register(self, settings: Settings, identities: Sequence[AgentIdentity]) -> None:
        """Register the runtime and the agents, and publish the suite's bundle (signed
        operator commands, as ``trustplane agents register`` and ``policy publish`` do)."""
        template = self.agent(0)
        with OperatorClient(settings) as operator:
            operator.send(
                "runtime.register",
                {
                    "runtime_id": self.runtime_id,
                    "code_digests": [template.code_digest],
                    "config_digests": [template.config_digest],
                    "environment": template.environment,
                    "hosts": [],
                },
                subject=runtime_subject(self.runtime_id),
            )
            for identity in identities:
                agent = EvalAgent(identity.agent_id, (self.role,), self.runtime_id)
                operator.send("agent.register", registration(agent, identity.key))
            operator.send("policy.publish", self.bundle().to_document(), subject=CONTROL_SUBJECT)
