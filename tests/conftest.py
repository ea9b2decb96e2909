"""Shared fixtures: one real Kafka broker per test session, fresh topics per test."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streams.config import PROJECT_ROOT, Settings
from streams.dev.localkafka import LocalKafka
from streams.operator import ensure_local_keys
from streams.topics import ensure_topics

# TRUSTPLANE_TEST_KAFKA_DIR lets two test runs on one machine use two brokers
TEST_STATE_DIR = Path(
    os.environ.get("TRUSTPLANE_TEST_KAFKA_DIR", PROJECT_ROOT / ".state" / "test-kafka")
)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The project's own broker, started natively once for the whole session."""
    broker = LocalKafka(
        TEST_STATE_DIR, progress=lambda msg: print(f"[kafka] {msg}", file=sys.stderr)
    )
    already_running = broker.status() is not None
    info = broker.up(timeout=120)
    yield info.bootstrap
    if not already_running:  # another session's broker is left to that session
        broker.down()


@pytest.fixture
def settings_factory(kafka_bootstrap: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings with a fresh topic prefix, consumer group and key folder: tests never
    share topics or state."""

    def make(**overrides: object) -> Settings:
        tag = uuid.uuid4().hex[:8]
        values: dict[str, object] = {
            "bootstrap_servers": kafka_bootstrap,
            "topic_prefix": f"t{tag}.",
            "group_id": f"gate-{tag}",
            "worker_id": f"w-{tag}",
            "partitions": 4,
            "web_port": _free_port(),
            "state_dir": tmp_path / f"state-{tag}",
        }
        values.update(overrides)
        settings = Settings(**values)  # type: ignore[arg-type]
        ensure_topics(settings)
        ensure_local_keys(settings)
        return settings

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WorkerProcess:
    """A real `trustplane worker` process, as an operator would run it."""

    settings: Settings
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: object = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """Every setting of this test, as the TRUSTPLANE_* variables an operator would set."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTPLANE_")}
        for f in dataclasses.fields(self.settings):
            value = getattr(self.settings, f.name)
            if f.name != "extra" and value is not None:
                env[f"TRUSTPLANE_{f.name.upper()}"] = str(value)
        return env

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "trustplane"), "worker"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def health(self) -> dict[str, object] | None:
        url = f"http://127.0.0.1:{self.settings.web_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                return json.loads(response.read())  # type: ignore[no-any-return]
        except OSError:
            return None

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.settings.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.read().decode()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_path.read_text()[-3000:]}")
            health = self.health()
            if health and health.get("ready"):
                return
            time.sleep(0.2)
        raise AssertionError(
            f"worker not ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}"
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit — a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[[Settings], WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def make(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()
