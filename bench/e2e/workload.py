"""The benchmark's workload: an estate of many signed agents and their pre-signed intents.

Every bench agent has its own Ed25519 key, its own registered runtime and one role of
the example Cedar bundle (``policies/bundle``), and only takes actions that role is
permitted, on resources and with parameters the bundle's guardrails allow. So a
healthy gate approves (nearly) everything, and any other outcome is worth reading.

The per-agent anomaly thresholds (``policies/anomaly.toml``: rate per minute, burst per
second, fan-out per hour, per agent and action class) must not be tripped by the
benchmark itself. Intents are therefore spread evenly: agents take turns in a smooth
weighted round robin, each agent walks through its own evenly interleaved action cycle,
and each agent draws its resources from a small pool. :meth:`Workload.anomaly_safe_rate`
computes, from the loaded anomaly config, the highest *decided* rate (intents/s over all
workers) at which no agent reaches a threshold; the harness prints it and refuses runs
that would exceed it.

Intents are built and signed before any timed phase (signing is ~100-200 µs each), with
a long enough TTL to stay fresh for the whole run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.crypto.keys import SigningKey, generate_signing_key
from processors.layers.anomaly import AnomalyConfig
from processors.layers.integrity import runtime_subject
from processors.layers.policy import CONTROL_SUBJECT, PolicyBundle
from streams.codec import Codec, default_codec
from streams.config import Settings
from streams.dev.estate import BUNDLE_DIR, DemoAgent, registration
from streams.operator import OperatorClient, ensure_local_keys
from streams.sdk.client import new_intent

__all__ = [
    "ActionSpec",
    "BenchAgent",
    "BenchEstate",
    "ROLE_ACTIONS",
    "SignedIntents",
    "Workload",
]


@dataclass(frozen=True)
class ActionSpec:
    """One action a role takes, how often (relative ``weight``), on what and with what."""

    action: str
    weight: int
    resource: str
    """``{n}`` is replaced by a number from the agent's resource pool of ``pool`` items."""
    pool: int
    parameters: tuple[tuple[str, str], ...] = ()
    """Parameter name -> generator name (see :func:`_parameter`)."""


# Actions each role of the example bundle may take (policies/bundle/policies.cedar and the
# parameter types of schema.cedarschema), with realistic resources and parameters.
ROLE_ACTIONS: dict[str, tuple[ActionSpec, ...]] = {
    "readonly": (
        ActionSpec("invoices.read", 3, "invoice:INV-2026-{n:05d}", 40),
        ActionSpec("tickets.read", 3, "ticket:T-{n:06d}", 40, (("status", "status"),)),
        ActionSpec(
            "warehouse.query", 2, "table:sales_{n}", 8, (("sql", "sql"), ("max_rows", "rows"))
        ),
        ActionSpec("reports.read", 1, "report:weekly-{n}", 8, (("period", "period"),)),
        ActionSpec("db.query", 1, "db:analytics-replica-{n}", 4, (("sql", "sql"),)),
    ),
    "support": (
        ActionSpec("tickets.read", 4, "ticket:T-{n:06d}", 40, (("status", "status"),)),
        ActionSpec("tickets.reply", 3, "ticket:T-{n:06d}", 40, (("body", "reply"),)),
        ActionSpec("tickets.close", 2, "ticket:T-{n:06d}", 40, (("status", "closed"),)),
        ActionSpec(
            "email.send",
            1,
            "mailto:customer-{n}@example.com",
            30,
            (("subject", "subject"), ("template", "template")),
        ),
    ),
    "analyst": (
        ActionSpec(
            "warehouse.query", 5, "table:events_{n}", 12, (("sql", "sql"), ("max_rows", "rows"))
        ),
        ActionSpec("reports.read", 3, "report:kpi-{n}", 12, (("period", "period"),)),
        ActionSpec("reports.generate", 2, "report:kpi-{n}", 12, (("period", "period"),)),
    ),
    "payments-agent": (
        ActionSpec("invoices.read", 3, "invoice:INV-2026-{n:05d}", 40),
        ActionSpec(
            "payments.transfer",
            1,
            "acct:ACME-{n:04d}",
            20,
            (("amount", "amount"), ("currency", "eur"), ("invoice_id", "invoice")),
        ),
    ),
}

ROLE_SHARE: tuple[tuple[str, int], ...] = (
    ("readonly", 45),
    ("support", 25),
    ("analyst", 20),
    ("payments-agent", 10),
)
"""Percent of the bench agents in each role."""

ROLE_ACTIVITY: dict[str, int] = {"readonly": 2, "support": 2, "analyst": 2, "payments-agent": 1}
"""Relative intents per agent by role: payment agents act half as often (their classes
have the lowest rate limits)."""


@dataclass(frozen=True)
class BenchAgent:
    agent_id: str
    role: str
    key: SigningKey = field(repr=False)
    amount_median: float
    """Payment agents pay log-normal amounts around their own median."""

    @property
    def demo(self) -> DemoAgent:
        return DemoAgent(self.agent_id, (self.role,), f"{self.agent_id}-rt")

    @property
    def activity(self) -> int:
        return ROLE_ACTIVITY[self.role]


class BenchEstate:
    """``count`` agents with their own keys, runtimes and roles (deterministic by seed)."""

    def __init__(self, count: int, *, seed: int = 7) -> None:
        if count < 1:
            raise ValueError("the estate needs at least one agent")
        rng = random.Random(seed)  # noqa: S311 - the workload's shape, not a secret
        roles: list[str] = []
        for role, share in ROLE_SHARE:
            roles += [role] * max(1, round(count * share / 100))
        roles = (roles * (count // len(roles) + 1))[:count]
        rng.shuffle(roles)
        self.agents = [
            BenchAgent(
                f"bench-{role}-{i:04d}",
                role,
                generate_signing_key(f"bench-{i:04d}-k1"),
                round(math.exp(rng.uniform(math.log(40), math.log(2500))), 2),
            )
            for i, role in enumerate(roles)
        ]

    def __len__(self) -> int:
        return len(self.agents)

    def register(self, settings: Settings) -> int:
        """Register every agent and its runtime, publish the example bundle; return the
        number of control commands sent (signed with the local operator key)."""
        ensure_local_keys(settings)
        sent = 0
        with OperatorClient(settings) as operator:
            for agent in self.agents:
                demo = agent.demo
                operator.send("agent.register", registration(demo, agent.key))
                operator.send(
                    "runtime.register",
                    {
                        "runtime_id": demo.runtime_id,
                        "code_digests": [demo.code_digest],
                        "config_digests": [demo.config_digest],
                        "environment": demo.environment,
                        "hosts": [],
                    },
                    subject=runtime_subject(demo.runtime_id),
                )
                sent += 2
            bundle = PolicyBundle.from_directory(BUNDLE_DIR)
            operator.send("policy.publish", bundle.to_document(), subject=CONTROL_SUBJECT)
        return sent + 1


@dataclass
class SignedIntents:
    """Pre-encoded intents: Kafka key, value and intent id of each, in publish order."""

    keys: list[bytes]
    values: list[bytes]
    ids: list[str]
    actions: list[str]

    def __len__(self) -> int:
        return len(self.values)

    def slice(self, start: int, stop: int) -> SignedIntents:
        return SignedIntents(
            self.keys[start:stop],
            self.values[start:stop],
            self.ids[start:stop],
            self.actions[start:stop],
        )


def _smooth_cycle(weights: Sequence[int]) -> list[int]:
    """Indices in smooth weighted round-robin order (nginx's algorithm): each index
    appears ``weights[i]`` times per cycle, as evenly spaced as the weights allow."""
    total = sum(weights)
    current = [0] * len(weights)
    order: list[int] = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return order


def _parameter(kind: str, agent: BenchAgent, rng: random.Random, n: int) -> Any:
    if kind == "status":
        return rng.choice(("open", "pending", "on-hold"))
    if kind == "closed":
        return "closed"
    if kind == "reply":
        return f"Hello, thanks for your patience: the fix for ticket {n} ships today."
    if kind == "sql":
        return f"select customer_id, sum(total) from orders_{n} group by 1"  # noqa: S608
    if kind == "rows":
        return rng.choice((100, 500, 1000, 5000))
    if kind == "period":
        return f"2026-W{rng.randint(1, 52):02d}"
    if kind == "subject":
        return "Your ticket was updated"
    if kind == "template":
        return rng.choice(("ticket-update", "ticket-closed", "survey"))
    if kind == "amount":
        # log-normal around the agent's median, well inside the 10,000.00 EUR limit
        value = agent.amount_median * math.exp(rng.gauss(0.0, 0.35))
        return round(min(max(value, 1.0), 9_500.0), 2)
    if kind == "eur":
        return "EUR"
    if kind == "invoice":
        return f"INV-2026-{n:05d}"
    raise ValueError(f"unknown parameter generator {kind!r}")


class Workload:
    """Builds the intents of a run: who acts when, on what, signed by its agent."""

    def __init__(self, estate: BenchEstate, *, seed: int = 11, ttl_s: float = 1800.0) -> None:
        self.estate = estate
        self.ttl_s = ttl_s
        self.rng = random.Random(seed)  # noqa: S311 - the workload's shape, not a secret
        self._specs = {role: ROLE_ACTIONS[role] for role in ROLE_ACTIONS}
        self._cycles: dict[str, list[int]] = {}
        self._offset: dict[str, int] = {}
        for agent in estate.agents:
            specs = self._specs[agent.role]
            self._cycles[agent.agent_id] = _smooth_cycle([s.weight for s in specs])
            self._offset[agent.agent_id] = self.rng.randrange(sum(s.weight for s in specs))
        self._turns = 0
        self._order = self._agent_order()

    def _agent_order(self) -> list[BenchAgent]:
        """One round: every agent ``activity`` times, smoothly interleaved."""
        slots: list[tuple[float, int, BenchAgent]] = []
        for i, agent in enumerate(self.estate.agents):
            phase = self.rng.random()
            for k in range(agent.activity):
                slots.append(((k + phase) / agent.activity, i, agent))
        slots.sort(key=lambda s: (s[0], s[1]))
        return [agent for _, _, agent in slots]

    def _schedule(self, count: int) -> Iterator[tuple[BenchAgent, ActionSpec]]:
        turns: dict[str, int] = {}
        for j in range(count):
            agent = self._order[j % len(self._order)]
            turn = turns.get(agent.agent_id, 0)
            turns[agent.agent_id] = turn + 1
            cycle = self._cycles[agent.agent_id]
            spec = self._specs[agent.role][
                cycle[(turn + self._offset[agent.agent_id]) % len(cycle)]
            ]
            yield agent, spec

    def build(
        self,
        count: int,
        *,
        codec: Codec | None = None,
        progress: Any = None,
    ) -> SignedIntents:
        """``count`` signed, encoded intents; agents' sequences start at 1."""
        codec = codec or default_codec()
        sequences: dict[str, int] = {}
        out = SignedIntents([], [], [], [])
        now_ms = time.time_ns() // 1_000_000
        for j, (agent, spec) in enumerate(self._schedule(count)):
            seq = sequences.get(agent.agent_id, 0) + 1
            sequences[agent.agent_id] = seq
            n = self.rng.randrange(spec.pool)
            parameters = {
                name: _parameter(kind, agent, self.rng, n) for name, kind in spec.parameters
            }
            record = new_intent(
                agent.agent_id,
                spec.action,
                spec.resource.format(n=n),
                sequence=seq,
                parameters=parameters,
                context={
                    "trace_id": f"{self.rng.getrandbits(64):016x}",
                    "risk": self.rng.randint(0, 40),
                },
                runtime=agent.demo.runtime(),
                ttl_s=self.ttl_s,
                now_ms=now_ms,
                key_id=agent.key.kid,
                sign_with=agent.key,
            )
            out.keys.append(agent.agent_id.encode())
            out.values.append(codec.encode("Intent", record))
            out.ids.append(str(record["intent_id"]))
            out.actions.append(spec.action)
            if progress is not None and (j + 1) % 2000 == 0:
                progress(j + 1, count)
        return out

    def anomaly_safe_rate(self, config: AnomalyConfig) -> tuple[float, str]:
        """The highest total decided rate (intents/s) at which no agent trips a rate or
        burst threshold, and which (role, action, feature) binds first.

        With even spacing an agent of activity ``w`` gets ``w / W`` of all intents
        (``W`` the sum of activities) and an action of weight ``a`` in a cycle of ``A``
        gets ``a / A`` of the agent's; a window of ``t`` seconds then holds about
        ``rate * t * (w / W) * (a / A)`` of them, plus one for the phase of the spacing.
        Fan-out is bounded by the resource pools (checked too: a pool larger than a
        class's fan-out limit gives 0).
        """
        total = sum(a.activity for a in self.estate.agents)
        best = math.inf
        binding = "nothing"
        for role, specs in self._specs.items():
            weight_sum = sum(s.weight for s in specs)
            activity = ROLE_ACTIVITY[role]
            for spec in specs:
                cls = config.class_for(spec.action)
                share = (activity / total) * (spec.weight / weight_sum)
                for feature, limit, window_ms in (
                    ("rate", cls.rate, config.rate_window_ms),
                    ("burst", cls.burst, config.burst_window_ms),
                ):
                    if limit is None:
                        continue
                    # at most `limit.max` in the window (this intent included) is fine
                    allowed = (limit.max - 1) / (share * window_ms / 1000)
                    if allowed < best:
                        best, binding = allowed, f"{role} {spec.action} {feature} {limit.max}"
                pools = sum(s.pool for s in specs if config.class_for(s.action).name == cls.name)
                if cls.fanout is not None and pools > cls.fanout.max:
                    return 0.0, f"{role} {cls.name} fan-out pool {pools} > {cls.fanout.max}"
        return best, binding
