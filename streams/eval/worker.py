"""One real ``trustplane worker`` process for an evaluation run, configured only through
``TRUSTPLANE_*`` variables as an operator would, ready when its /healthz says so.

(``bench/e2e/procs.py`` and ``tests/conftest.py`` each start workers the same way; neither
is importable from an installed ``trustplane`` command.)
"""

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
from pathlib import Path
from typing import Any

from streams.config import Settings
from streams.eval.errors import EvalError

__all__ = ["GateWorker"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GateWorker:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = dataclasses.replace(settings, web_port=_free_port())
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTPLANE_")}
        for f in dataclasses.fields(self.settings):
            value = getattr(self.settings, f.name)
            if f.name != "extra" and value is not None:
                env[f"TRUSTPLANE_{f.name.upper()}"] = str(value)
        for name, value in self.settings.extra.items():
            env[f"TRUSTPLANE_KAFKA_{name.upper().replace('.', '_')}"] = value
        return env

    def start(self, timeout: float = 120.0) -> None:
        command = [str(Path(sys.executable).parent / "trustplane"), "worker"]
        home = self.log_path.parent / f"{self.settings.group_id}-home"  # Faust's data folder
        home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own console script
                command, env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=home
            )
        deadline = time.monotonic() + timeout
        while not (self._health() or {}).get("ready"):
            if self.proc.poll() is not None:
                raise EvalError(
                    f"the gate worker exited at start ({self.proc.returncode}):\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EvalError(f"the gate worker was not ready in {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.2)

    def _health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.settings.web_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                body = json.loads(response.read())
        except (OSError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
