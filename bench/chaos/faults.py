"""Executing the fault plan on time against the services and the cluster, and keeping
what was done when (and which partitions each killed worker owned)."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.chaos.cluster import Cluster
from bench.chaos.plan import Fault
from bench.chaos.services import Services, health_status

__all__ = ["FaultRunner"]

Log = Callable[[str], None]

SERVED_POLL_S = 0.05


class FaultRunner(threading.Thread):
    """Executes the plan against the services and the cluster, on time, and logs it."""

    def __init__(
        self, plan: Sequence[Fault], services: Services, cluster: Cluster, log: Log
    ) -> None:
        super().__init__(name="chaos-faults", daemon=True)
        self.plan = plan
        self.services = services
        self.cluster = cluster
        self.log = log
        self.started_ns = 0
        self.executed: list[dict[str, Any]] = []
        self.worker_kills: list[tuple[str, int, list[int] | None]] = []
        """(target, when, the intents partitions it owned) of each worker SIGKILL."""
        self.notary_outages: list[list[int | None]] = []
        """[when it was killed, when /healthz answered 200 again (None: never)] of each
        notary SIGKILL, whichever process then answered (the standby, or the restart)."""
        self.stopping = threading.Event()
        self._restarts: list[threading.Thread] = []

    def run(self) -> None:
        for fault in self.plan:
            due = self.started_ns + int(fault.at_s * 1e9)
            if self.stopping.wait(max(0.0, (due - time.monotonic_ns()) / 1e9)):
                return
            self.execute(fault)
        for thread in self._restarts:
            thread.join()

    def execute(self, fault: Fault) -> None:
        at_ns = time.monotonic_ns()
        entry: dict[str, Any] = {**dataclasses.asdict(fault), "ok": True, "note": ""}
        entry["actual_s"] = round((at_ns - self.started_ns) / 1e9, 3)
        try:
            if fault.target.startswith("broker-"):
                entry["note"] = self._broker(fault, int(fault.target.split("-", 1)[1]), entry)
            else:
                with self.services.lock:
                    entry["note"] = self._service(fault, at_ns)
        except Exception as exc:  # noqa: BLE001 - a failed fault is logged, the run goes on
            entry["ok"], entry["note"] = False, f"{type(exc).__name__}: {exc}"
        self.executed.append(entry)
        self.log(
            f"  fault t={entry['actual_s']:7.2f}s {fault.action:<7} {fault.target:<9} "
            f"{'' if entry['ok'] else 'FAILED '}{entry['note']}"
        )

    def _service(self, fault: Fault, at_ns: int) -> str:
        service = self.services.resolve(fault.target, fault.action)
        if fault.action == "restart":
            if service.running:
                return "already running"
            service.start()
            service.held_down = False
            return f"pid {service.pid}"
        if not service.running:
            return "not running: skipped"
        pid = service.pid
        if fault.action == "kill" and fault.target.startswith("worker-"):
            service.held_down = True
            at_ns = time.monotonic_ns()
            service.signal(signal.SIGKILL)
            # a SIGKILLed static member keeps its assignment until its session times out
            # or it rejoins, so asking right after the kill (not before) keeps the plan on time
            owned = self.services.owned_partitions(fault.target)
            self.worker_kills.append((fault.target, at_ns, owned))
            return f"pid {pid}, owned partitions {owned}"
        if fault.action == "kill":
            service.held_down = True
            service.signal(signal.SIGKILL)
            if service.role == "notary":
                outage: list[int | None] = [at_ns, None]
                self.notary_outages.append(outage)
                threading.Thread(
                    target=self._until_served, args=(service.health_url, outage), daemon=True
                ).start()
        elif fault.action == "stop":
            service.signal(signal.SIGSTOP)
        elif fault.action == "cont":
            service.signal(signal.SIGCONT)
        return f"pid {pid}"

    def _until_served(self, url: str, outage: list[int | None], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if health_status(url) == 200:
                outage[1] = time.monotonic_ns()
                return
            time.sleep(SERVED_POLL_S)

    def _broker(self, fault: Fault, node: int, entry: dict[str, Any]) -> str:
        if node not in self.cluster.nodes:
            return "not this run's broker: skipped"
        if fault.action == "restart":
            thread = threading.Thread(target=self._start_node, args=(node, entry), daemon=True)
            thread.start()
            self._restarts.append(thread)
            return "starting"
        sig = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "cont": signal.SIGCONT}
        pid = self.cluster.running().get(node)
        if pid is None:
            return "not running: skipped"
        self.cluster.kill(node, sig[fault.action])
        return f"pid {pid}"

    def _start_node(self, node: int, entry: dict[str, Any]) -> None:
        started = time.monotonic()
        try:
            self.cluster.start(node)
            entry["note"] = f"serving again in {time.monotonic() - started:.1f} s"
        except Exception as exc:  # noqa: BLE001 - reported in the fault log
            entry["ok"], entry["note"] = False, f"{type(exc).__name__}: {exc}"
        self.log(f"  fault broker-{node} restart: {entry['note']}")
