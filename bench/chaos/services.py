"""The processes under test: ``trustplane worker`` (N of them), ``trustplane sink`` and
``trustplane notary``, each started as an operator would (``TRUSTPLANE_*`` variables, its
own Kafka principal as ``make run`` gives it: worker ``gate``, sink ``sink``, notary
``notary``), each with its health endpoint, and each signalled by the fault plan.

Every start is remembered with the time it became ready (polled in a thread of its own
every 50 ms): that is where the notary's recovery time comes from.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupState, KafkaException

from bench.chaos.cluster import ChaosError
from bench.e2e.procs import WorkerProcesses, free_port
from streams import kafka, names
from streams.config import PROJECT_ROOT, Settings

__all__ = ["Start", "Exit", "Service", "Services", "health_status"]

READY_POLL_S = 0.05
STANDBY_POLL_S = 0.25


def _get(url: str, timeout: float = 1.0) -> tuple[int, Any]:
    """(HTTP status, JSON body or None); (0, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, raw = exc.code, exc.read()
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def health_status(url: str) -> int:
    """The HTTP status of ``url`` (0 when nothing answers)."""
    return _get(url, timeout=0.5)[0]


@dataclass
class Start:
    """One start of a service: monotonic ns when it was spawned, and when it was ready."""

    started_ns: int
    ready_ns: int | None = None
    exit_code: int | None = None
    startup: dict[str, Any] | None = None
    """The service's own start-up timeline (``/healthz`` ``startup`` when it was ready;
    for a standby, when it took over)."""
    took_over_ns: int | None = None
    """A standby: when it was seen deciding (polled every :data:`STANDBY_POLL_S`)."""

    @property
    def ready_s(self) -> float | None:
        return None if self.ready_ns is None else (self.ready_ns - self.started_ns) / 1e9


@dataclass(frozen=True)
class Exit:
    """A process that ended without the plan killing it (a crash)."""

    name: str
    code: int | None
    at_ns: int
    last_line: str


@dataclass
class Service:
    """One process the plan may kill, stop, continue and restart."""

    name: str
    args: list[str]
    env: dict[str, str] = field(repr=False)
    log_path: Path
    health_url: str
    ready: Callable[[int, Any], bool]
    """(status, /healthz JSON) -> whether the service serves."""
    cwd: Path = PROJECT_ROOT
    proc: subprocess.Popen[bytes] | None = None
    starts: list[Start] = field(default_factory=list)
    role: str = ""
    """The plan's name for what this process is (``worker-1`` for both processes of a
    worker id and its standby); its own name when empty."""
    second: bool = False
    """Started once the first process of its role is up (it stands by)."""
    standby_line: str = ""
    """What its log says when it stands by (a standby notary serves no HTTP)..."""
    takeover_line: str = ""
    """... and when it takes over."""
    log_offset: int = 0
    """The size of its log when it was last started: what follows is this start's."""
    paused: bool = False
    held_down: bool = False
    """Killed by the plan, waiting for the plan's restart (the supervisor leaves it)."""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    def start(self) -> Start:
        if self.running:
            raise ChaosError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.cwd.mkdir(parents=True, exist_ok=True)
        command = [str(Path(sys.executable).parent / "trustplane"), *self.args]
        started = Start(time.monotonic_ns())
        self.log_offset = self._log_size()
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(  # noqa: S603 - our own console script
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        self.paused = False
        self.starts.append(started)
        threading.Thread(
            target=self._watch, args=(self.proc, started), name=f"ready-{self.name}", daemon=True
        ).start()
        return started

    def _watch(self, proc: subprocess.Popen[bytes], start: Start, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if self.standing_by():  # a standby notary: it says so in its log only
                start.ready_ns = time.monotonic_ns()
                self._watch_standby(proc, start)
                return
            status, body = _get(self.health_url, timeout=0.5)
            if self.ready(status, body) and _answered_by(body, proc):
                start.ready_ns = time.monotonic_ns()
                start.startup = body.get("startup")
                if body.get("standby"):
                    self._watch_standby(proc, start)
                return
            time.sleep(READY_POLL_S)
        start.exit_code = proc.poll()

    def _watch_standby(self, proc: subprocess.Popen[bytes], start: Start) -> None:
        """Until the standby takes over: when it answers as the one at work."""
        while proc.poll() is None:
            status, body = _get(self.health_url, timeout=0.5)
            if (
                self.ready(status, body)
                and not body.get("standby")
                and _answered_by(body, proc)
                and not self.standing_by()
            ):
                start.took_over_ns = time.monotonic_ns()
                start.startup = body.get("startup")
                return
            time.sleep(STANDBY_POLL_S)

    def deciding(self) -> bool:
        """Whether this process is the one of its role at work, not its standby."""
        if self.standby_line:
            return not self.standing_by()
        status, body = _get(self.health_url)
        return _ready_flag(status, body) and not body.get("standby")

    def standing_by(self) -> bool:
        """Whether this start's log says it stands by and not (yet) that it took over."""
        if not self.standby_line:
            return False
        logged = self._log_since(self.log_offset)
        return self.standby_line in logged and self.takeover_line not in logged

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def is_ready(self) -> bool:
        return self.running and bool(self.starts) and self.starts[-1].ready_ns is not None

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if not self.running:
                code = self.proc.poll() if self.proc is not None else None
                raise ChaosError(f"{self.name} exited with status {code}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise ChaosError(f"{self.name} not ready in {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.1)

    def health(self) -> Any:
        return _get(self.health_url)[1]

    def signal(self, sig: int) -> None:
        if not self.running or self.proc is None:
            raise ChaosError(f"{self.name} is not running")
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(30)
            self.paused = False
        elif sig == signal.SIGSTOP:
            self.paused = True
        elif sig == signal.SIGCONT:
            self.paused = False

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (after SIGCONT if stopped), SIGKILL after ``timeout``."""
        if not self.running or self.proc is None:
            return
        if self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def last_line(self) -> str:
        lines = [line for line in self.tail(4000).splitlines() if line.strip()]
        return lines[-1][-300:] if lines else ""

    def tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"


def _answered_by(body: Any, proc: subprocess.Popen[bytes]) -> bool:
    """Whether a ``/healthz`` answer is this process's own: a standby notary shares the
    port of the notary it stands by for (the start-up timeline names its pid)."""
    pid = ((body or {}).get("startup") or {}).get("pid") if isinstance(body, dict) else None
    return pid is None or pid == proc.pid


def _ready_flag(status: int, body: Any) -> bool:
    return status == 200 and isinstance(body, dict) and bool(body.get("ready"))


def _deciding_or_standing_by(status: int, body: Any) -> bool:
    return _ready_flag(status, body) or (
        status == 200 and isinstance(body, dict) and bool(body.get("standby"))
    )


def _answers(status: int, body: Any) -> bool:
    return status == 200 and isinstance(body, dict)


class Services:
    """The run's workers, sink and notary, by plan target name (``worker-1``, ``sink``, ...)."""

    def __init__(
        self, settings: Settings, workers: int, run_dir: Path, *, standby: bool = False
    ) -> None:
        """``standby``: each worker id runs two processes, ``worker-Na`` and ``worker-Nb``:
        one decides, the other stands by (see :mod:`streams.gate.standby`); the plan's
        ``worker-N`` is the one deciding when it is killed or stopped."""
        self.settings = settings
        self.run_dir = run_dir
        self.by_name: dict[str, Service] = {}
        self._admin: Any = None
        self.lock = threading.RLock()
        """Held while a service is signalled or started (the plan's thread, the supervisor)."""
        self.exits: list[Exit] = []
        # the workers' variables as the benchmark sets them (every setting as TRUSTPLANE_*)
        environment = WorkerProcesses(settings, 0, run_dir)
        credentials = str(settings.resolved_kafka_credentials_dir)

        def env(worker_id: str, port: int, role: str) -> dict[str, str]:
            values = environment.env(worker_id, port)
            values.pop("TRUSTPLANE_KAFKA_PASSWORD_FILE", None)
            values["TRUSTPLANE_KAFKA_PRINCIPAL"] = role
            values["TRUSTPLANE_KAFKA_CREDENTIALS_DIR"] = credentials
            return values

        self.worker_ids: dict[str, str] = {}
        for n in range(1, workers + 1):
            worker_id = f"{settings.group_id}-w{n}"
            self.worker_ids[f"worker-{n}"] = worker_id
            for name in (f"worker-{n}a", f"worker-{n}b") if standby else (f"worker-{n}",):
                port = free_port()
                self._add(
                    Service(
                        name,
                        ["worker"],
                        env(worker_id, port, "gate"),
                        run_dir / "logs" / f"{name}.log",
                        f"http://127.0.0.1:{port}/healthz",
                        _deciding_or_standing_by if standby else _ready_flag,
                        cwd=run_dir / name,  # Faust writes its <app>-data folder here
                        role=f"worker-{n}",
                        second=name.endswith("b"),
                    )
                )
        sink_port = settings.sink_http_port
        self._add(
            Service(
                "sink",
                ["sink", "--batch-ms", "250"],
                env(f"{settings.group_id}-sink", 0, "sink"),
                run_dir / "logs" / "sink.log",
                f"http://127.0.0.1:{sink_port}/healthz",
                _ready_flag,
            )
        )
        for name in ("notary-a", "notary-b") if standby else ("notary",):
            self._add(
                Service(
                    name,
                    ["notary", "--create-key"],
                    env(f"{settings.group_id}-notary", 0, "notary"),
                    run_dir / "logs" / f"{name}.log",
                    f"http://127.0.0.1:{settings.notary_port}/healthz",
                    _answers,  # 503 while it restores its log
                    role="notary",
                    second=name == "notary-b",
                    # the one that stands by serves nothing: its log says it waits
                    standby_line="stands by" if standby else "",
                    takeover_line="taking over",
                )
            )

    def _add(self, service: Service) -> None:
        self.by_name[service.name] = service

    def __getitem__(self, name: str) -> Service:
        return self.by_name[name]

    @property
    def workers(self) -> list[Service]:
        return [s for s in self.by_name.values() if s.role.startswith("worker-")]

    def resolve(self, target: str, action: str) -> Service:
        """The process the plan's ``action`` on ``target`` applies to: of a worker id's
        two processes, a kill or a stop hits the deciding one, a restart the one that is
        down, a continue the stopped one."""
        members = self.members(target)
        if len(members) == 1:
            return members[0]
        if not members:
            raise ChaosError(f"no service {target!r}")
        if action == "restart":
            chosen = [s for s in members if not s.running]
        elif action == "cont":
            chosen = [s for s in members if s.paused]
        else:
            chosen = [s for s in members if s.running and not s.paused and s.deciding()]
        return (chosen or members)[0]

    def members(self, role: str) -> list[Service]:
        """Every process of ``role`` (a worker id's or the notary's two, or the one)."""
        return [s for s in self.by_name.values() if (s.role or s.name) == role]

    def start_all(self, log: Callable[[str], None], timeout: float = 180.0) -> None:
        """Start every service; a worker id's second process once its first decides."""
        first = [s for s in self.by_name.values() if not s.second]
        for batch in (first, [s for s in self.by_name.values() if s not in first]):
            for service in batch:
                service.start()
            for service in batch:
                service.wait_ready(timeout)
                ready = service.starts[-1].ready_s or 0.0
                log(
                    f"{service.name} ready in {ready:.1f} s (pid {service.pid}, {service.log_path})"
                )

    def owned_partitions(self, worker: str, timeout: float = 2.0) -> list[int] | None:
        """The ``intents`` partitions the gate group assigns to ``worker`` now (by its
        static member id), as the group coordinator says; None when it cannot be asked or
        the group is rebalancing (every member's assignment is empty then)."""
        group = names.gate_group(self.settings)
        member = names.gate_worker(self.settings, self.worker_ids[worker])
        topic = self.settings.topic("intents")
        if self._admin is None:
            self._admin = kafka.admin(self.settings)
        try:
            # the admin client must outlive its futures: they complete on its thread
            futures = self._admin.describe_consumer_groups([group], request_timeout=timeout)
            description = futures[group].result(timeout + 1)
        except (KafkaException, TimeoutError, KeyError):
            return None
        if description.state != ConsumerGroupState.STABLE:
            return None
        return sorted(
            tp.partition
            for m in description.members
            if m.group_instance_id == member
            for tp in (m.assignment.topic_partitions or [])
            if tp.topic == topic
        )

    def supervise(self) -> list[Exit]:
        """What a supervisor (systemd ``Restart=always``) does: start again every service
        that ended by itself; return those exits (also kept in ``exits``)."""
        found = []
        with self.lock:
            for service in self.by_name.values():
                if service.proc is None or service.running or service.held_down:
                    continue
                found.append(
                    Exit(
                        service.name, service.proc.poll(), time.monotonic_ns(), service.last_line()
                    )
                )
                service.start()
        self.exits += found
        return found

    def heal(self) -> list[str]:
        """Continue what is stopped, start what is down; return what was done."""
        done = []
        with self.lock:
            for service in self.by_name.values():
                service.held_down = False
                if service.running and service.paused:
                    service.signal(signal.SIGCONT)
                    done.append(f"cont {service.name}")
                elif not service.running:
                    service.start()
                    done.append(f"start {service.name}")
        return done

    def stop(self, names: list[str] | None = None) -> None:
        for name in names or list(self.by_name):
            self.by_name[name].stop()
