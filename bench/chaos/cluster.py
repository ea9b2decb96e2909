"""The broker(s) a chaos run uses: its own local cluster (which it may kill), or a broker
someone else runs (which it never touches).

:class:`LocalCluster` starts ``LocalKafka(state_dir, brokers=N)``
(:mod:`streams.dev.localkafka`) and kills and restarts single nodes with its
``kill_node`` / ``start_node``. A ``LocalKafka`` without those (one broker only) still
works: the one node is killed by its pid and restarted with ``up()``.
"""

from __future__ import annotations

import inspect
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.e2e.procs import BenchError
from streams.dev.localkafka import LocalKafka

__all__ = ["Cluster", "LocalCluster", "ExternalCluster", "ChaosError"]


class ChaosError(BenchError):
    """The chaos run could not go on (a process did not start, the broker is missing, ...)."""


@dataclass
class Cluster:
    """Where Kafka is and which of its nodes the run may signal."""

    bootstrap: str
    credentials_dir: Path
    nodes: list[int] = field(default_factory=list)
    """Node ids the run may kill; empty: none."""

    def kill(self, node: int, sig: int = signal.SIGKILL) -> None:
        raise ChaosError(f"broker node {node} is not this run's to signal")

    def start(self, node: int) -> None:
        raise ChaosError(f"broker node {node} is not this run's to start")

    def running(self) -> dict[int, int]:
        """Node id -> pid of the nodes that run now (of those the run may signal)."""
        return {}

    def close(self) -> None:
        """Stop what this run started."""


class ExternalCluster(Cluster):
    """A broker the run did not start (e.g. the test session's): never signalled."""


class LocalCluster(Cluster):
    """The run's own local broker or cluster (``state_dir``), started by :meth:`up`."""

    def __init__(
        self,
        state_dir: Path,
        brokers: int,
        *,
        keep: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.log = log
        self.keep = keep
        self.multi = {"brokers"} <= set(inspect.signature(LocalKafka).parameters) and all(
            hasattr(LocalKafka, name) for name in ("node_pids", "kill_node", "start_node")
        )
        if brokers > 1 and not self.multi:
            log(
                f"[kafka] this LocalKafka runs one broker only: {brokers} asked, 1 started "
                "(broker kills stop the whole broker)"
            )
            brokers = 1
        progress = lambda message: log(f"[kafka] {message}")  # noqa: E731 - one-liner
        self.kafka = (
            LocalKafka(state_dir, brokers=brokers, progress=progress)
            if self.multi
            else LocalKafka(state_dir, progress=progress)
        )
        self.brokers = brokers
        self._started = False
        super().__init__("", self.kafka.credentials.directory)

    def up(self, timeout: float = 180.0) -> LocalCluster:
        if self.kafka.is_legacy():
            raise ChaosError(
                f"{self.kafka.state_dir} holds a broker from before authentication",
                hint="use another --kafka-dir, or `trustplane kafka reset` that one",
            )
        self._started = self.kafka.status() is None
        info = self.kafka.up(timeout=timeout)
        self.bootstrap = info.bootstrap
        self.nodes = sorted(self.running()) or [1]
        self.log(
            f"[kafka] {len(self.nodes)} node(s) at {self.bootstrap}"
            f"{'' if self._started else ' (already running)'}"
        )
        return self

    def running(self) -> dict[int, int]:
        if self.multi:
            return dict(self.kafka.node_pids())
        info = self.kafka.status()
        return {1: info.pid} if info is not None else {}

    def kill(self, node: int, sig: int = signal.SIGKILL) -> None:
        if self.multi:
            self.kafka.kill_node(node, sig)
            return
        pid = self.running().get(node)
        if pid is None:
            raise ChaosError(f"broker node {node} is not running")
        os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while sig == signal.SIGKILL and node in self.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def start(self, node: int) -> None:
        if self.multi:
            self.kafka.start_node(node, timeout=120)
        else:
            self.kafka.up(timeout=120)

    def close(self) -> None:
        if self._started and not self.keep:
            self.kafka.down()
            self.log("[kafka] stopped (started for this run; --keep-broker keeps it)")
