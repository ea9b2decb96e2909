"""The chaos workload: signed intents whose right outcome does not depend on timing.

Classes (:class:`bench.chaos.model.Class`) and how each is made:

- **good**: the benchmark's estate (:class:`bench.e2e.workload.BenchEstate`, one role of
  the example bundle per agent, each with its own key and runtime) taking actions its role
  is permitted, spread so the shipped anomaly thresholds are not reached at the offered
  rate; plus the first intents of the quarantine agents (below).
- **must_deny**, each deterministic whatever the timing:
  ``policy`` (support agents asking for ``payments.transfer`` / ``warehouse.export``: no
  permit), ``unregistered`` (agents never registered), ``tampered`` (a registered agent's
  signed intent whose resource was changed after signing: the signature fails),
  ``attestation`` / ``sequence`` (a quarantine agent's trigger: a code digest its runtime
  does not have, or a sequence number it already used; the gate denies it and quarantines
  the agent) and ``quarantined`` (that agent's every later intent: denied by eligibility).
- **review**: payments agents' ``refunds.issue``, which ``payments.refunds`` holds for a
  person; the suite answers a seeded share ``approve`` and ``deny`` and leaves the rest.
- **garbage**: random bytes on ``intents``: rejected, once.

Each agent's intents are in one partition (keyed by agent id), in publish order, so a
quarantine trigger is always decided before the agent's later intents. Every intent is
built and signed before the run with a TTL longer than the run.
"""

from __future__ import annotations

import copy
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.model import Class, Planned
from bench.e2e.procs import Publisher
from bench.e2e.workload import BenchAgent, BenchEstate, Workload
from processors.crypto.keys import generate_signing_key
from processors.layers.anomaly import AnomalyConfig
from streams.codec import Codec, default_codec
from streams.config import Settings
from streams.dev.estate import measurement
from streams.sdk.client import new_intent

__all__ = ["Mix", "ChaosWorkload", "build_workload", "PublishLoop"]


@dataclass(frozen=True)
class Mix:
    """Shares of the intents by class (the rest is good)."""

    must_deny: float = 0.2
    review: float = 0.03
    garbage: float = 0.005
    quarantine_agents: int = 4
    answer_approve: float = 0.4
    answer_deny: float = 0.4
    """Of the held intents, the share the suite approves and denies (the rest waits)."""


# how the must-deny share is split among its kinds
_DENY_SPLIT = (("policy", 0.4), ("unregistered", 0.2), ("tampered", 0.2), ("quarantine", 0.2))
DENYING_LAYER = {
    "policy": "policy",
    "unregistered": "identity",
    "tampered": "identity",
    "attestation": "integrity",
    "sequence": "integrity",
    "quarantined": "eligibility",
}
"""The layer that denies each must-deny kind (its reasons start ``<layer>:``)."""
_PRE_TRIGGER = 3
"""Good intents of a quarantine agent before its trigger."""
_PER_AGENT_RATE = 0.25
"""Intents per second of one dedicated agent at most (refunds: payments limits)."""


@dataclass
class ChaosWorkload:
    """The planned records in publish order, and the agents to register first."""

    planned: list[Planned]
    registered: list[BenchAgent] = field(repr=False)
    estate: BenchEstate = field(repr=False)
    anomaly_safe_rate: float = math.inf
    binding: str = ""

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.planned:
            name = f"{item.cls.value}/{item.kind}"
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))

    def register(self, settings: Settings) -> int:
        """Register every agent that must be known and publish the example bundle (the
        benchmark estate's registration, over this workload's agents)."""
        registry = copy.copy(self.estate)
        registry.agents = list(self.registered)
        return registry.register(settings)


def _agents(prefix: str, role: str, count: int) -> list[BenchAgent]:
    return [
        BenchAgent(
            f"chaos-{prefix}-{n:03d}", role, generate_signing_key(f"chaos-{prefix}-{n}"), 100.0
        )
        for n in range(count)
    ]


def _dedicated(intents: int, rate: float, share: float) -> int:
    """Agents a dedicated class of ``intents`` needs so none acts more than
    ``_PER_AGENT_RATE``/s (none for no intents)."""
    return max(2, math.ceil(rate * share / _PER_AGENT_RATE)) if intents else 0


class _Signer:
    """Signs intents for the dedicated agents, each with its own next sequence."""

    def __init__(self, codec: Codec, ttl_s: float, rng: random.Random) -> None:
        self.codec = codec
        self.ttl_s = ttl_s
        self.rng = rng
        self.now_ms = time.time_ns() // 1_000_000
        self.sequences: dict[str, int] = {}

    def next_sequence(self, agent: BenchAgent) -> int:
        self.sequences[agent.agent_id] = self.sequences.get(agent.agent_id, 0) + 1
        return self.sequences[agent.agent_id]

    def intent(
        self,
        agent: BenchAgent,
        action: str,
        resource: str,
        parameters: dict[str, Any] | None = None,
        *,
        sequence: int | None = None,
        runtime: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        return new_intent(
            agent.agent_id,
            action,
            resource,
            sequence=self.next_sequence(agent) if sequence is None else sequence,
            parameters=parameters or {},
            context={"trace_id": f"{self.rng.getrandbits(64):016x}", "risk": 5},
            runtime=runtime or agent.demo.runtime(),
            ttl_s=self.ttl_s,
            now_ms=self.now_ms,
            key_id=agent.key.kid,
            sign_with=agent.key,
        )

    def planned(
        self, record: dict[str, Any], cls: Class, kind: str, answer: str | None = None
    ) -> Planned:
        agent_id = str(record["agent_id"])
        value = self.codec.encode("Intent", record)
        layer = DENYING_LAYER.get(kind) if cls is Class.MUST_DENY else None
        return Planned(
            str(record["intent_id"]), agent_id, cls, kind, agent_id.encode(), value, answer, layer
        )


def build_workload(
    total: int,
    *,
    agents: int,
    rate: float,
    seed: int,
    ttl_s: float,
    mix: Mix = Mix(),  # noqa: B008 - frozen
    anomaly: AnomalyConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ChaosWorkload:
    """``total`` planned records (about; the class shares are rounded) for a run at
    ``rate`` intents/s, deterministic by ``seed`` but for the intents' random ids."""
    rng = random.Random(seed)
    codec = default_codec()
    signer = _Signer(codec, ttl_s, rng)
    n_deny = {kind: round(total * mix.must_deny * share) for kind, share in _DENY_SPLIT}
    n_review = round(total * mix.review)
    n_garbage = round(total * mix.garbage)
    quarantine_agents = _agents(
        "quar", "readonly", mix.quarantine_agents if n_deny["quarantine"] else 0
    )
    n_good = total - sum(n_deny.values()) - n_review - n_garbage
    n_good = max(1, n_good - _PRE_TRIGGER * len(quarantine_agents))

    estate = BenchEstate(agents, seed=seed)
    good = Workload(estate, seed=seed + 1, ttl_s=ttl_s).build(
        n_good, codec=codec, progress=progress
    )
    safe, binding = (math.inf, "")
    if anomaly is not None:
        safe, binding = Workload(estate, seed=seed + 1).anomaly_safe_rate(anomaly)
    streams: list[list[Planned]] = [
        [
            Planned(
                good.ids[i], good.keys[i].decode(), Class.GOOD, "good", good.keys[i], good.values[i]
            )
            for i in range(len(good))
        ]
    ]
    keys: list[list[float]] = [[(i + 0.5) / len(good) for i in range(len(good))]]

    def spread(items: list[Planned], low: float = 0.0, high: float = 1.0) -> None:
        """Merge ``items`` in at random places, in their order."""
        streams.append(items)
        keys.append(sorted(rng.uniform(low, high) for _ in items))

    by_agent: dict[str, list[Planned]] = {}

    def add(item: Planned) -> None:
        """An intent of a dedicated agent: its agent's intents keep their order."""
        by_agent.setdefault(item.agent_id, []).append(item)

    deniers = _agents("deny", "support", _dedicated(n_deny["policy"], rate, mix.must_deny * 0.4))
    for n in range(n_deny["policy"]):
        agent = deniers[n % len(deniers)]
        if n % 2:
            record = signer.intent(agent, "warehouse.export", f"s3://exfil-{n}/dump.csv")
        else:
            record = signer.intent(
                agent,
                "payments.transfer",
                f"acct:ACME-{n % 50:04d}",
                {"amount": 120.0 + n % 300, "currency": "EUR", "invoice_id": f"INV-{n:05d}"},
            )
        add(signer.planned(record, Class.MUST_DENY, "policy"))

    ghosts = _agents("ghost", "readonly", min(16, n_deny["unregistered"]))  # never registered
    for n in range(n_deny["unregistered"]):
        record = signer.intent(ghosts[n % len(ghosts)], "invoices.read", f"invoice:INV-{n:05d}")
        add(signer.planned(record, Class.MUST_DENY, "unregistered"))

    tamperers = _agents("tamper", "readonly", 2 if n_deny["tampered"] else 0)
    for n in range(n_deny["tampered"]):
        record = signer.intent(tamperers[n % 2], "invoices.read", f"invoice:INV-2026-{n:05d}")
        record["resource"] = f"invoice:INV-2026-{n:05d}-and-every-other"  # after signing
        add(signer.planned(record, Class.MUST_DENY, "tampered"))

    after_each = max(1, n_deny["quarantine"] // max(1, len(quarantine_agents)) - 1)
    for n, agent in enumerate(quarantine_agents):
        before = [
            signer.planned(
                signer.intent(agent, "invoices.read", f"invoice:INV-2026-{k:05d}"),
                Class.GOOD,
                "good",
            )
            for k in range(_PRE_TRIGGER)
        ]
        if n % 2:
            trigger = signer.intent(agent, "invoices.read", "invoice:INV-2026-99999", sequence=1)
            kind = "sequence"
        else:
            runtime = {
                **agent.demo.runtime(),
                "code_digest": measurement(f"{agent.agent_id} tampered"),
            }
            trigger = signer.intent(
                agent, "invoices.read", "invoice:INV-2026-99999", runtime=runtime
            )
            kind = "attestation"
        after = [
            signer.planned(
                signer.intent(agent, "invoices.read", f"invoice:INV-2026-{k:05d}"),
                Class.MUST_DENY,
                "quarantined",
            )
            for k in range(after_each)
        ]
        at = rng.uniform(0.15, 0.7)
        spread([*before, signer.planned(trigger, Class.MUST_DENY, kind)], 0.0, at)
        keys[-1][-1] = at  # the trigger last, at its time
        spread(after, at, 1.0)

    refunders = _agents("refund", "payments-agent", _dedicated(n_review, rate, mix.review))
    for n in range(n_review):
        draw = rng.random()
        answer = (
            "approve" if draw < mix.answer_approve
            else "deny" if draw < mix.answer_approve + mix.answer_deny
            else None
        )  # fmt: skip
        record = signer.intent(
            refunders[n % len(refunders)],
            "refunds.issue",
            f"acct:ACME-{n % 50:04d}",
            {
                "amount": round(20 + rng.random() * 80, 2),
                "currency": "EUR",
                "invoice_id": f"INV-{n:05d}",
            },
        )
        add(signer.planned(record, Class.REVIEW, "refund", answer))

    for items in by_agent.values():
        spread(items)
    for n in range(n_garbage):
        value = b"\x00chaos " + rng.randbytes(48)
        spread([Planned(f"garbage-{n}", "", Class.GARBAGE, "garbage", b"chaos-garbage", value)])

    order = sorted(
        ((key, s, i) for s, stream in enumerate(streams) for i, key in enumerate(keys[s])),
    )
    planned = [streams[s][i] for _, s, i in order]
    registered = [*estate.agents, *deniers, *tamperers, *quarantine_agents, *refunders]
    return ChaosWorkload(planned, registered, estate, safe, binding)


class PublishLoop(threading.Thread):
    """Publishes the planned records at ``rate``/s in order, stamping each publish with
    CLOCK_MONOTONIC (``stamps[i]``, ns; the collector's arrival times use the same clock)."""

    def __init__(self, settings: Settings, planned: Sequence[Planned], rate: float) -> None:
        super().__init__(name="chaos-publisher", daemon=True)
        self.planned = planned
        self.rate = rate
        self.publisher = Publisher(settings, settings.topic("intents"))
        self.stamps = [0] * len(planned)
        self.published = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            interval_ns = int(1e9 / self.rate)
            started = time.monotonic_ns()
            for i, item in enumerate(self.planned):
                delay = (started + i * interval_ns - time.monotonic_ns()) / 1e9
                if delay > 0 and self.stopping.wait(delay):
                    return
                self.stamps[i] = time.monotonic_ns()
                self.publisher.produce(item.key, item.value)
                self.publisher.poll()
                self.published = i + 1
            self.publisher.flush(300)
        except BaseException as exc:  # noqa: BLE001 - handed to the run
            self.error = exc
