"""The console in a real browser: Debian's Chromium driven by Playwright, on a real stack.

One stack per test module (the session's broker; a gate worker, the sink, the notary,
Prometheus and the console as the processes an operator runs, each as its Kafka role),
loaded with the demo estate. Playwright is never asked to download a browser: it drives
the system's ``chromium`` (``.ci/run`` installs it; set TRUSTPLANE_CHROMIUM elsewhere).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streams import provision
from streams.acls import ADMIN
from streams.config import PROJECT_ROOT, Settings
from streams.dev.demo import run_demo
from streams.dev.estate import Estate
from streams.operator import ensure_local_keys
from tests.conftest import ServiceProcess, TestBroker, free_port, http_json, role_env, settings_env

SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
TRUSTPLANE = str(Path(sys.executable).parent / "trustplane")


def chromium_path() -> str | None:
    given = os.environ.get("TRUSTPLANE_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one module. Not for the session: Playwright's sync API runs an asyncio
    loop while it is open, and every later test that calls asyncio.run() would fail."""
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no chromium on this machine: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=path,
            headless=True,
            args=["--disable-gpu", "--disable-quic", "--disable-sync"],
        )
        yield launched
        launched.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Stack:
    settings: Settings
    token: str
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    estate: Estate | None = None
    prometheus: Any = None
    material: Path | None = None
    """Served by the console at /api/test/material/<name> (tampered proofs for tests)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.console_port}"

    def service(self, name: str, role: str | None, args: list[str], ready: Any, tmp: Path) -> None:
        """Start ``trustplane ARGS`` as Kafka user ``role`` (None: the test's admin)."""
        env = {**settings_env(self.settings), **(role_env(self.settings, role) if role else {})}
        env["TRUSTPLANE_CONSOLE_TOKEN"] = self.token
        if self.material is not None:
            env["TRUSTPLANE_CONSOLE_TEST_MATERIAL"] = str(self.material)
        process = ServiceProcess(
            name=name, command=[TRUSTPLANE, *args], env=env, log_path=tmp / f"{name}.log"
        )
        process.ready = ready
        self.services[name] = process
        process.start(timeout=120)

    def stop(self) -> None:
        if self.prometheus is not None:
            self.prometheus.down()
        for process in reversed(list(self.services.values())):
            process.stop()
        console = self.services.get("console")
        if console is not None:  # shown by pytest when a test of the module failed
            print(f"--- console log ---\n{console.log(6000)}", file=sys.stderr)

    def login(self, context: Any) -> Any:
        page = context.new_page()
        page.goto(f"{self.url}/login?token={self.token}")
        page.wait_for_url(re.compile(r".*/governance$"))
        return page

    def invite(self, label: str) -> tuple[str, subprocess.Popen[str]]:
        """``trustplane operators invite``: the one-time link, and the waiting process."""
        env = {**settings_env(self.settings)}
        process = subprocess.Popen(
            [TRUSTPLANE, "operators", "invite", "--label", label, "--ttl", "300"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=PROJECT_ROOT,
        )
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            found = re.search(r"(https?://\S+/enroll#\S+)", line)
            if found:
                return found.group(1), process
            if not line and process.poll() is not None:
                break
        process.kill()
        raise AssertionError("`trustplane operators invite` printed no link")


def make_settings(broker: TestBroker, tmp: Path) -> Settings:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap_servers=broker.bootstrap,
        topic_prefix=f"t{tag}.",
        group_id=f"gate-{tag}",
        worker_id=f"w-{tag}",
        partitions=2,
        web_port=free_port(),
        sink_http_port=free_port(),
        notary_port=free_port(),
        console_port=free_port(),
        prometheus_port=free_port(),
        demo_runner_port=free_port(),
        state_dir=tmp / "state",
        kafka_principal=ADMIN,
        kafka_credentials_dir=broker.credentials_dir,
    )
    provision.provision(settings, users=False)
    link = settings.kafka_state_dir / "credentials"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(broker.credentials_dir, target_is_directory=True)
    ensure_local_keys(settings)
    return settings


@pytest.fixture(scope="package")
def stack(kafka_broker: TestBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("console-stack")
    settings = make_settings(kafka_broker, tmp)
    os.environ["TRUSTPLANE_KAFKA_CREDENTIALS_DIR"] = str(kafka_broker.credentials_dir)
    running = Stack(settings, token=secrets.token_urlsafe(32), material=tmp / "material")
    running.material.mkdir()  # type: ignore[union-attr]
    s = settings
    try:
        running.service(
            "worker",
            "gate",
            ["worker"],
            lambda: bool((http_json(f"http://127.0.0.1:{s.web_port}/healthz") or {}).get("ready")),
            tmp,
        )
        running.service(
            "sink",
            "sink",
            ["sink", "--batch-ms", "200"],
            lambda: bool(
                (http_json(f"http://127.0.0.1:{s.sink_http_port}/healthz") or {}).get("ready")
            ),
            tmp,
        )
        running.service(
            "notary",
            "notary",
            ["notary", "--create-key"],
            lambda: http_json(f"http://127.0.0.1:{s.notary_port}/healthz") is not None,
            tmp,
        )
        if shutil.which("prometheus"):  # .ci/run installs it; the Health test says if missing
            from streams.dev.prometheus import LocalPrometheus

            running.prometheus = LocalPrometheus.for_settings(settings, scrape_interval_s=1.0)
            running.prometheus.up(timeout=60)
        result = run_demo(settings, timeout_s=90)
        assert result.matched == len(result.items), [(i.label, i.got) for i in result.items]
        running.estate = Estate(settings)
        # the demo's scripted estate: it publishes as `agent` and signs as the operator,
        # two principals, so here it runs as the test's admin
        running.service(
            "demo-runner",
            None,
            ["demo-runner"],
            lambda: http_json(f"http://127.0.0.1:{s.demo_runner_port}/healthz") is not None,
            tmp,
        )
        running.service(
            "console",
            "console",
            ["console"],
            lambda: _ready(f"http://127.0.0.1:{s.console_port}/login"),
            tmp,
        )
        yield running
    finally:
        running.stop()
        provision.revoke(settings)


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser profile (its own cookies and IndexedDB: its own operator key)."""
    made = browser.new_context(viewport={"width": 1400, "height": 1000})
    made.set_default_timeout(30_000)
    yield made
    made.close()


def screenshot(page: Any, name: str) -> None:
    """Keep a screenshot for the README when TRUSTPLANE_SCREENSHOTS is set."""
    if os.environ.get("TRUSTPLANE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)
