"""Shared fixtures: one real Kafka broker per test session, fresh topics per test.

The broker is the project's own, secured as ``trustplane kafka up`` secures it (SASL/SCRAM,
ACLs, super users ``broker`` and ``admin``); its role users are created once per session.
Each test gets a fresh topic prefix and name root with the roles' ACLs for them (revoked
afterwards). Test code in the pytest process is ``admin``; services started through
:func:`worker_factory` run as their role (``gate``), with only their ACLs.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

from streams import provision
from streams.acls import ADMIN
from streams.config import PROJECT_ROOT, Settings
from streams.dev.localkafka import LocalKafka
from streams.dev.ports import free_port
from streams.operator import ensure_local_keys

# TRUSTPLANE_TEST_KAFKA_DIR lets two test runs on one machine use two brokers. The secured
# broker has its own folder: one of an older checkout (PLAINTEXT) may still be running.
TEST_STATE_DIR = Path(
    os.environ.get("TRUSTPLANE_TEST_KAFKA_DIR", PROJECT_ROOT / ".state" / "test-kafka-sasl")
)


@dataclass(frozen=True)
class TestBroker:
    """The session's broker: where it is and where its users' passwords are."""

    __test__ = False  # not a test class, whatever its name

    bootstrap: str
    credentials_dir: Path

    def settings(self, principal: str = ADMIN, **values: Any) -> Settings:
        """Settings that reach this broker as ``principal``."""
        return Settings(
            bootstrap_servers=self.bootstrap,
            kafka_principal=principal,
            kafka_credentials_dir=self.credentials_dir,
            **values,
        )


HANG_LIMIT_S = 1200
"""A test still running after this long ends the session (see ``_hang_watchdog``)."""
HANG_REPORT = PROJECT_ROOT / ".state" / "test-hang.log"


@pytest.fixture(scope="session")
def _hang_report() -> Iterator[Any]:
    HANG_REPORT.parent.mkdir(parents=True, exist_ok=True)
    with HANG_REPORT.open("w") as report:
        yield report
    if HANG_REPORT.stat().st_size == 0:
        HANG_REPORT.unlink()


@pytest.fixture(autouse=True)
def _hang_watchdog(_hang_report: Any) -> Iterator[None]:
    """End the session, with every thread's stack in ``HANG_REPORT`` (``make test`` prints
    it), when a test hangs. A native call that blocks holding the GIL stops every Python
    thread, pytest-timeout's too; faulthandler's watchdog is native and still fires."""
    faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True, file=_hang_report)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TestBroker]:
    """The project's own broker, started natively (SASL, ACLs) once for the whole session,
    with its role users."""
    broker = LocalKafka(
        TEST_STATE_DIR, progress=lambda msg: print(f"[kafka] {msg}", file=sys.stderr)
    )
    if broker.is_legacy():  # a throwaway test broker formatted before authentication
        broker.reset()
    already_running = broker.status() is not None
    info = broker.up(timeout=120)
    found = TestBroker(info.bootstrap, broker.credentials.directory)
    provision.provision(found.settings(), topics=False, grant=False)  # the role users
    yield found
    if not already_running:  # another session's broker is left to that session
        broker.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: TestBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
def settings_factory(
    kafka_broker: TestBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Settings]]:
    """Settings with a fresh topic prefix, name root (``group_id``) and key folder: tests
    never share topics or state. Test code is ``admin``; the roles get their ACLs on the
    test's topics and names, and find their passwords where a local deployment keeps
    them (``<state_dir>/kafka/credentials``, and ``TRUSTPLANE_KAFKA_CREDENTIALS_DIR`` for
    processes started from the test)."""
    monkeypatch.setenv("TRUSTPLANE_KAFKA_CREDENTIALS_DIR", str(kafka_broker.credentials_dir))
    made: list[Settings] = []

    def make(**overrides: object) -> Settings:
        tag = uuid.uuid4().hex[:8]
        values: dict[str, object] = {
            "bootstrap_servers": kafka_broker.bootstrap,
            "topic_prefix": f"t{tag}.",
            "group_id": f"gate-{tag}",
            "worker_id": f"w-{tag}",
            "partitions": 4,
            "web_port": free_port(),
            "state_dir": tmp_path / f"state-{tag}",
            "kafka_principal": ADMIN,
            "kafka_credentials_dir": kafka_broker.credentials_dir,
        }
        values.update(overrides)
        settings = Settings(**values)  # type: ignore[arg-type]
        # what `trustplane kafka provision` does, but the users (once per session): the
        # topics (a role may create none) and the roles' ACLs for this prefix and root
        provision.provision(settings, users=False)
        link = settings.kafka_state_dir / "credentials"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(kafka_broker.credentials_dir, target_is_directory=True)
        ensure_local_keys(settings)
        made.append(settings)
        return settings

    yield make
    for settings in made:
        provision.revoke(settings)


def role_env(settings: Settings, role: str) -> dict[str, str]:
    """The TRUSTPLANE_* variables that make a process ``role`` on the test's broker."""
    return {
        "TRUSTPLANE_KAFKA_PRINCIPAL": role,
        "TRUSTPLANE_KAFKA_CREDENTIALS_DIR": str(settings.resolved_kafka_credentials_dir),
    }


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting of a test, as the TRUSTPLANE_* variables an operator would set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTPLANE_")}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name != "extra" and value is not None:
            env[f"TRUSTPLANE_{f.name.upper()}"] = str(value)
    return env


@dataclass
class ServiceProcess:
    """A real service process (worker, notary, sink), started as an operator would.

    ``ready()`` says whether it serves yet; :meth:`start` may be called again after
    :meth:`kill` (a restart), the log accumulates.
    """

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool] = lambda: True
    proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> Self:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT
            )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def log(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited early ({self.proc.returncode}):\n{self.log()}"
                )
            if self.ready():
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready in {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit — a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


ServiceFactory = Callable[..., ServiceProcess]


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[ServiceFactory]:
    """``make(name, command, env, ready=...)``: a :class:`ServiceProcess` (not started yet),
    logging to ``<tmp_path>/<name>-<n>.log`` and stopped after the test."""
    started: list[ServiceProcess] = []

    def make(
        name: str,
        command: list[str],
        env: dict[str, str],
        *,
        ready: Callable[[], bool] = lambda: True,
        cls: type[ServiceProcess] = ServiceProcess,
        **fields: Any,
    ) -> ServiceProcess:
        process = cls(
            name=name,
            command=command,
            env=env,
            log_path=tmp_path / f"{name}-{len(started)}.log",
            ready=ready,
            **fields,
        )
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


def http_json(url: str, timeout: float = 1.0) -> Any:
    """The JSON document at ``url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return json.loads(response.read())
    except OSError:
        return None


@dataclass
class WorkerProcess(ServiceProcess):
    """A real `trustplane worker` process, as an operator would run it."""

    settings: Settings | None = None

    @property
    def web(self) -> str:
        assert self.settings is not None
        return f"http://127.0.0.1:{self.settings.web_port}"

    def health(self) -> dict[str, object] | None:
        document = http_json(f"{self.web}/healthz")
        return document if isinstance(document, dict) else None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.web}/metrics", timeout=5) as response:  # noqa: S310
            return response.read().decode()


@pytest.fixture
def worker_factory(service_factory: ServiceFactory) -> Callable[[Settings], WorkerProcess]:
    """A real `trustplane worker` for these settings, running as the ``gate`` principal."""

    def make(settings: Settings) -> WorkerProcess:
        worker = service_factory(
            "worker",
            [str(Path(sys.executable).parent / "trustplane"), "worker"],
            {**settings_env(settings), **role_env(settings, "gate")},
            cls=WorkerProcess,
            settings=settings,
        )
        assert isinstance(worker, WorkerProcess)
        worker.ready = lambda: bool((worker.health() or {}).get("ready"))
        return worker

    return make
