"""What a chaos run does: sizes, fault counts, where things go. Two presets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.chaos.load import Mix
from streams.config import PROJECT_ROOT

__all__ = ["ChaosConfig"]


@dataclass(frozen=True)
class ChaosConfig:
    """A chaos run. :meth:`full` is the default; :meth:`quick` takes about two minutes."""

    mode: str = "full"
    intents: int = 50_000
    rate: float = 40.0
    """Offered intents per second; the run publishes for ``intents / rate`` seconds. The
    full run's 40/s is what a 2-core machine sustains with three brokers, six workers, two
    notaries and the sink on it; at 100/s it falls behind (README, "Chaos")."""
    agents: int = 200
    """Agents of the good class (the benchmark's estate)."""
    workers: int = 3
    standby: bool = True
    """Each worker id runs a second, warm process that takes over when the first ends
    (:mod:`streams.gate.standby`); without it, a killed worker is only restarted."""
    brokers: int = 3
    partitions: int = 6
    seed: int = 1
    worker_kills: int = 20
    worker_stops: int = 4
    sink_kills: int = 3
    sink_stops: int = 1
    notary_kills: int = 3
    notary_stops: int = 1
    broker_kills: int = 3
    mix: Mix = field(default_factory=Mix)
    out: Path = PROJECT_ROOT / ".state" / "chaos"
    """Each run writes ``<out>/<run id>/``: report.json, faults.json, the services' logs."""
    kafka_dir: Path = PROJECT_ROOT / ".state" / "chaos-kafka"
    """The run's own broker(s), started when no ``bootstrap`` is given."""
    bootstrap: str = ""
    """Use this broker (never signalled; broker kills are skipped) instead of its own."""
    credentials_dir: Path | None = None
    """Passwords of the Kafka users of ``bootstrap`` (the CLI's default:
    TRUSTPLANE_KAFKA_CREDENTIALS_DIR)."""
    keep_broker: bool = False
    anomaly_config: Path | None = None
    """The workers' anomaly thresholds (default: the shipped policies/anomaly.toml)."""
    review_timeout_ms: int = 6 * 3600 * 1000
    """Longer than any run: a held intent the suite does not answer stays held."""
    drain_s: float = 300.0
    """After the plan: how long to wait for every outcome, the notary and the sink."""
    ttl_s: float | None = None
    """Intent TTL (default: three times the publishing time plus 30 min)."""

    @property
    def duration_s(self) -> float:
        return self.intents / self.rate

    @property
    def intent_ttl_s(self) -> float:
        return self.ttl_s if self.ttl_s is not None else 3 * self.duration_s + 1800

    @classmethod
    def full(cls, **overrides: Any) -> ChaosConfig:
        return cls(**overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> ChaosConfig:
        values: dict[str, Any] = {
            "mode": "quick",
            "intents": 800,
            "rate": 20.0,
            "agents": 40,
            "workers": 2,
            "brokers": 1,
            "partitions": 4,
            "worker_kills": 2,
            "worker_stops": 1,
            "sink_kills": 1,
            "sink_stops": 0,
            "notary_kills": 1,
            "notary_stops": 0,
            "broker_kills": 0,
            "mix": Mix(quarantine_agents=2),
            "drain_s": 120.0,
        }
        values.update(overrides)
        return cls(**values)

    def but(self, **overrides: Any) -> ChaosConfig:
        return replace(self, **overrides)
