"""The console's side of the Runtime Governance Demo: a client of `trustplane demo-runner`.

The runner is the scripted estate (its own process, holding the demo's operator and agent
keys); the console holds none, and only passes the operator's clicks on and the runner's
progress back.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from processors.exceptions import TrustplaneError
from streams.httpauth import bearer_header, read_token_file

__all__ = ["DemoRunnerClient", "DemoRunnerError"]


class DemoRunnerError(TrustplaneError):
    """The demo runner did not answer, or refused."""

    def __init__(self, reason: str, *, status: int = 503, hint: str | None = None) -> None:
        super().__init__(reason, hint=hint)
        self.status = status


class DemoRunnerClient:
    def __init__(self, url: str, token_file: Path, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.timeout_s = timeout_s

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 - the local runner
            f"{self.url}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                **bearer_header(read_token_file(self.token_file)),
            },
            method="GET" if body is None else "POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            try:
                reason = str(json.loads(raw).get("error", raw[:200]))
            except ValueError:
                reason = raw[:200].decode(errors="replace")
            raise DemoRunnerError(reason, status=exc.code) from None
        except (OSError, ValueError) as exc:
            raise DemoRunnerError(
                f"the demo runner at {self.url} does not answer ({exc})",
                hint="start it with `trustplane demo-runner` (`make run` does)",
            ) from exc

    def scenarios(self) -> list[dict[str, Any]]:
        found = self._call("/scenarios")
        return list(found.get("scenarios", found) if isinstance(found, dict) else found)

    def start(self, scenario: str) -> dict[str, Any]:
        return dict(self._call("/runs", {"scenario": scenario}))

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self._call(f"/runs/{run_id}"))

    def artifact(self, run_id: str, name: str) -> Any:
        return self._call(f"/runs/{run_id}/artifacts/{name}")
