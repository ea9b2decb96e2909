"""The project's own Prometheus server, run natively (Debian's ``prometheus`` package).

``LocalPrometheus.for_settings(settings).up()`` writes ``prometheus.yml`` from the
template ``infra/prometheus/prometheus.local.yml.tmpl`` (scrape the gate worker, the
notary and the sink on 127.0.0.1; evaluate ``infra/prometheus/alerts.yml``), starts
``prometheus`` detached from the caller, listening on 127.0.0.1 only, and waits until it
says it is ready. Everything it knows lives in ``<state_dir>/prometheus``::

    prometheus.yml    the generated configuration (rewritten by every `up`)
    secrets/          the bearer tokens of the endpoints that need one (0700/0600)
    data/             the TSDB (short retention: a development server)
    prometheus.log    the server's stdout and stderr (the previous one is prometheus.log.1)
    prometheus.json   pid and port of the running server (read by `status` and `down`)

``up`` is idempotent: a server already running from this folder re-reads the new
configuration (SIGHUP) instead of starting twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import string
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.exceptions import TrustplaneError
from streams.config import PROJECT_ROOT, Settings
from streams.credentials import write_private
from streams.dev.localkafka import port_is_free
from streams.dev.process import (
    command_line,
    has_exited,
    read_text,
    spawn_detached,
    stop_process,
    tail,
)

__all__ = [
    "HOST",
    "INSTALL_HINT",
    "PrometheusConfig",
    "PrometheusError",
    "PrometheusInfo",
    "LocalPrometheus",
    "render_config",
]

HOST = "127.0.0.1"
INFRA = PROJECT_ROOT / "infra" / "prometheus"
TEMPLATE = INFRA / "prometheus.local.yml.tmpl"
RULES = INFRA / "alerts.yml"
INSTALL_HINT = (
    "the local Prometheus is Debian's package: `apt-get install prometheus` (it ships "
    "promtool too); or put a Prometheus 2.x `prometheus` binary on PATH"
)


class PrometheusError(TrustplaneError):
    """The local Prometheus could not be configured, started or stopped."""


@dataclass(frozen=True)
class PrometheusConfig:
    """What the local Prometheus scrapes and how (see :meth:`from_settings`)."""

    port: int = 6069
    """Port it listens on, on 127.0.0.1 (setting ``prometheus_port``)."""
    workers: Sequence[str] = ("127.0.0.1:6066",)
    """host:port of each gate worker's web server (``web_port``)."""
    notaries: Sequence[str] = ("127.0.0.1:6067",)
    """host:port of each notary's proof endpoint (``notary_port``)."""
    sinks: Sequence[str] = ("127.0.0.1:6068",)
    """host:port of each sink's SQL endpoint (``sink_http_port``)."""
    worker_token: str = field(default="", repr=False)
    """Bearer token of the workers' pages (``web_token``), if they need one."""
    notary_token: str = field(default="", repr=False)
    """Bearer token of the notary's pages (``notary_token``), if they need one."""
    scrape_interval_s: float = 2.0
    """How often each target is scraped and the rules evaluated."""
    retention: str = "6h"
    """How long samples are kept (``--storage.tsdb.retention.time``)."""
    rules_file: Path = RULES

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise PrometheusError(f"prometheus_port must be 1-65535, got {self.port}")
        if not 0.5 <= self.scrape_interval_s <= 300:
            raise PrometheusError("the scrape interval must be 0.5-300 s")
        for address in (*self.workers, *self.notaries, *self.sinks):
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise PrometheusError(f"scrape target {address!r} is not host:port")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> PrometheusConfig:
        """The services of ``settings`` on this machine; a disabled one (port 0, or -1
        for the notary) is not scraped. ``overrides`` (None: not given) win."""
        values: dict[str, Any] = {
            "port": settings.prometheus_port,
            "workers": (f"{HOST}:{settings.web_port}",) if settings.web_port > 0 else (),
            "notaries": (f"{HOST}:{settings.notary_port}",) if settings.notary_port > 0 else (),
            "sinks": (f"{HOST}:{settings.sink_http_port}",) if settings.sink_http_port > 0 else (),
            "worker_token": settings.web_token,
            "notary_token": settings.notary_token,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def _duration(seconds: float) -> str:
    """A Prometheus duration: ``2s``, ``1500ms``."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def render_config(
    config: PrometheusConfig, secrets_dir: Path, template: Path = TEMPLATE
) -> tuple[str, dict[Path, str]]:
    """The ``prometheus.yml`` text for ``config``, and the token files it names (path ->
    token) that the caller writes (0600) before Prometheus reads them."""
    try:
        text = template.read_text()
    except OSError as exc:
        raise PrometheusError(f"cannot read the template {template}: {exc}") from exc
    tokens: dict[Path, str] = {}

    def authorization(name: str, token: str) -> str:
        if not token:
            return f"# no bearer token: the {name} answers on loopback without one"
        path = secrets_dir / f"{name}.token"
        tokens[path] = token
        return "authorization: " + json.dumps({"type": "Bearer", "credentials_file": str(path)})

    values = {
        "scrape_interval": json.dumps(_duration(config.scrape_interval_s)),
        "scrape_timeout": json.dumps(_duration(config.scrape_interval_s)),
        "rules_file": json.dumps(str(config.rules_file)),
        "worker_targets": json.dumps(list(config.workers)),
        "notary_targets": json.dumps(list(config.notaries)),
        "sink_targets": json.dumps(list(config.sinks)),
        "worker_authorization": authorization("worker", config.worker_token),
        "notary_authorization": authorization("notary", config.notary_token),
    }
    try:
        rendered = string.Template(text).substitute(values)
    except (KeyError, ValueError) as exc:
        raise PrometheusError(f"the template {template} has an unknown placeholder: {exc}") from exc
    header = "# Written by `trustplane prometheus up` from {}; edits are overwritten.\n"
    return header.format(template) + rendered, tokens


@dataclass(frozen=True)
class PrometheusInfo:
    """A running local Prometheus."""

    url: str
    pid: int
    port: int
    config_path: Path
    data_dir: Path
    log_path: Path


class LocalPrometheus:
    """Configure, start, inspect and stop the Prometheus whose files live in ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        config: PrometheusConfig,
        *,
        template: Path = TEMPLATE,
        progress: Callable[[str], None] = lambda msg: None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.config = config
        self.template = template
        self.progress = progress
        self.config_path = self.state_dir / "prometheus.yml"
        self.secrets_dir = self.state_dir / "secrets"
        self.data_dir = self.state_dir / "data"
        self.log_path = self.state_dir / "prometheus.log"
        self.state_path = self.state_dir / "prometheus.json"

    @classmethod
    def for_settings(
        cls, settings: Settings, *, progress: Callable[[str], None] = lambda msg: None, **kw: Any
    ) -> LocalPrometheus:
        """The local Prometheus of ``settings`` (``<state_dir>/prometheus``); ``kw`` are
        :class:`PrometheusConfig` overrides."""
        return cls(
            settings.state_dir / "prometheus",
            PrometheusConfig.from_settings(settings, **kw),
            progress=progress,
        )

    # -- public API -----------------------------------------------------------

    def write_config(self) -> Path:
        """Write ``prometheus.yml`` and its token files; return the config's path."""
        if not self.config.rules_file.is_file():
            raise PrometheusError(
                f"the alert rules {self.config.rules_file} are missing",
                hint="they ship in the source tree (infra/prometheus/alerts.yml)",
            )
        text, tokens = render_config(self.config, self.secrets_dir, self.template)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        self.secrets_dir.chmod(0o700)
        for path, token in tokens.items():
            write_private(path, token + "\n")
        for stale in set(self.secrets_dir.glob("*.token")) - set(tokens):
            stale.unlink(missing_ok=True)
        partial = self.config_path.with_suffix(".yml.partial")
        partial.write_text(text)
        partial.replace(self.config_path)
        return self.config_path

    def up(self, timeout: float = 30.0) -> PrometheusInfo:
        """Start the server, or reconfigure the one already running from this folder."""
        binary = self.binary()
        with self._locked():
            self.write_config()
            running = self._running_pid()
            if running is not None:
                state = self._read_state()
                if state.get("port") == self.config.port:
                    self.progress(f"Prometheus already running (pid {running}): reloading")
                    os.kill(running, signal.SIGHUP)  # re-reads prometheus.yml and the rules
                    info = self._info(running, self.config.port)
                    return self._wait_ready(info, time.monotonic(), timeout)
                self.progress(f"Prometheus runs on port {state.get('port')}: restarting")
                self._stop(running, 10.0)
            if not port_is_free(self.config.port):
                raise PrometheusError(
                    f"port {self.config.port} on {HOST} is in use",
                    hint="another Prometheus may run there (Debian's service listens on "
                    "9090); set TRUSTPLANE_PROMETHEUS_PORT to a free port",
                )
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.progress(f"starting Prometheus on {self.config.url}…")
            started = time.monotonic()
            pid = self._spawn(binary)
            info = self._info(pid, self.config.port)
            self._write_state({"pid": pid, "port": self.config.port, "url": info.url})
            return self._wait_ready(info, started, timeout)

    def down(self, timeout: float = 15.0) -> bool:
        """Stop the server (SIGTERM, SIGKILL after ``timeout``); True if one was running."""
        with self._locked():
            pid = self._running_pid()
            if pid is not None:
                self._stop(pid, timeout)
            state = self._read_state()
            if "pid" in state:
                del state["pid"]
                self._write_state(state)
            return pid is not None

    def status(self) -> PrometheusInfo | None:
        """The running server's info if it says it is ready, else None."""
        pid = self._running_pid()
        if pid is None:
            return None
        info = self._info(pid, int(self._read_state().get("port", self.config.port)))
        return info if _ready(info.url) else None

    def targets(self) -> list[dict[str, Any]]:
        """The scrape targets of the running server: job, instance, health, last error."""
        info = self.status()
        if info is None:
            return []
        document = _get_json(f"{info.url}/api/v1/targets?state=active")
        active = (document.get("data") or {}).get("activeTargets") or []
        return [
            {
                "job": target.get("labels", {}).get("job", ""),
                "instance": target.get("labels", {}).get("instance", ""),
                "health": target.get("health", ""),
                "last_error": target.get("lastError", ""),
            }
            for target in active
        ]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant PromQL query on the running server."""
        info = self.status()
        if info is None:
            raise PrometheusError("the local Prometheus is not running")
        url = f"{info.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        document = _get_json(url)
        if document.get("status") != "success":
            raise PrometheusError(f"query {expr!r} failed: {document.get('error')}")
        return list((document.get("data") or {}).get("result") or [])

    @staticmethod
    def binary() -> str:
        found = shutil.which("prometheus")
        if found is None:
            raise PrometheusError("`prometheus` is not installed (not on PATH)", hint=INSTALL_HINT)
        return found

    # -- steps of `up` --------------------------------------------------------

    def _command(self, binary: str) -> list[str]:
        return [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--storage.tsdb.retention.time={self.config.retention}",
            f"--web.listen-address={HOST}:{self.config.port}",
            "--log.level=warn",
        ]

    def _spawn(self, binary: str) -> int:
        return spawn_detached(
            self._command(binary),
            self.log_path,
            cwd=self.state_dir,
            timeout=30,
            error=PrometheusError,
            what=binary,
            hint=INSTALL_HINT,
        )

    def _wait_ready(self, info: PrometheusInfo, started: float, timeout: float) -> PrometheusInfo:
        deadline = started + timeout
        while not _ready(info.url):
            if has_exited(info.pid, self._is_ours):
                raise PrometheusError(
                    f"Prometheus exited while starting; last lines of {self.log_path}:\n"
                    f"{tail(read_text(self.log_path))}",
                    hint=f"see {self.log_path}; check the configuration with "
                    f"`promtool check config {self.config_path}`",
                )
            if time.monotonic() > deadline:
                self._stop(info.pid, 10.0)
                raise PrometheusError(
                    f"Prometheus was not ready on {info.url} within {timeout:.0f} s "
                    f"(stopped it); last lines of {self.log_path}:\n"
                    f"{tail(read_text(self.log_path))}",
                    hint="a slow machine may need a longer timeout",
                )
            time.sleep(0.1)
        self.progress(f"Prometheus ready in {time.monotonic() - started:.1f} s")
        return info

    # -- the running process --------------------------------------------------

    def _info(self, pid: int, port: int) -> PrometheusInfo:
        return PrometheusInfo(
            url=f"http://{HOST}:{port}",
            pid=pid,
            port=port,
            config_path=self.config_path,
            data_dir=self.data_dir,
            log_path=self.log_path,
        )

    def _running_pid(self) -> int | None:
        pid = self._read_state().get("pid")
        return pid if isinstance(pid, int) and self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        """True only for a live ``prometheus`` started with this folder's configuration."""
        args = command_line(pid)
        return (
            bool(args)
            and Path(args[0]).name == "prometheus"
            and f"--config.file={self.config_path}" in args
        )

    def _stop(self, pid: int, timeout: float) -> None:
        self.progress(f"stopping Prometheus (pid {pid})…")
        stop_process(
            pid,
            self._is_ours,
            timeout=timeout,
            kill_wait=5.0,
            error=PrometheusError,
            what="Prometheus",
        )

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self, state: dict[str, Any]) -> None:
        partial = self.state_path.with_suffix(".json.partial")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.replace(self.state_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up`/`down` at a time per state dir, across processes."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _ready(url: str) -> bool:
    """Whether the Prometheus at ``url`` answers its readiness check."""
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1.0) as response:  # noqa: S310 - loopback
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def _get_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5.0) as response:  # noqa: S310 - loopback
            document = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            document = json.loads(exc.read())
        except ValueError:
            raise PrometheusError(f"{url}: HTTP {exc.code}") from exc
    except (OSError, ValueError) as exc:
        raise PrometheusError(f"{url}: {exc}") from exc
    return document if isinstance(document, dict) else {}
