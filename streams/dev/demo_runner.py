"""``trustplane demo-runner``: the Runtime Governance Demo's scripted estate, as a small
local HTTP service the console talks to.

The console holds no private key, so the scenarios (:mod:`streams.dev.scenarios`) run
here, in a process that holds the demo's keys (the local operator key, and each run's
agent keys, made in memory). It listens on 127.0.0.1:6061 only, and every route but
``/healthz`` needs ``Authorization: Bearer <token>``, the token kept in
``<state_dir>/demo-runner/token`` (0600, generated at the first start).

API (JSON in and out; errors are ``{"error": ..., "hint": ...}``):

=========================================  =============================================
``GET /scenarios``                         ``{"scenarios": [{name, title, description,
                                           expected: [{intents, expected}], ...}]}``
``POST /runs`` ``{"scenario": name}``      201 ``{"run_id", "scenario", "status"}``; 404
                                           unknown scenario; 409 while another run goes
``GET /runs``                              the recent runs, newest first (summaries)
``GET /runs/{run_id}``                     the run: status (running, passed, failed,
                                           error), progress, intents (each with what it
                                           expected and got), findings, artifact names
``GET /runs/{run_id}/artifacts/{name}``    an artifact's JSON (evidence bundles)
``GET /healthz``                           ``{"ok": true, "active_run": ...}``, no token
=========================================  =============================================

Runs are kept in memory (the last :data:`KEEP_RUNS`); each run's artifacts are also
written to ``<state_dir>/demo-runner/runs/<run_id>/<name>.json`` and served from there
after a restart.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from processors.exceptions import TrustplaneError
from streams.cli.context import settings as settings_of
from streams.config import Settings

if TYPE_CHECKING:
    from aiohttp import web

    from streams.dev.scenarios import OperatorDesk, Scenario, ScenarioRun, Wire

__all__ = [
    "DEMO_RUNNER_PORT",
    "KEEP_RUNS",
    "DemoRunner",
    "RunnerError",
    "build_app",
    "demo_runner_command",
    "runner_dir",
    "token_path",
]

log = logging.getLogger(__name__)

DEMO_RUNNER_PORT = 6061
KEEP_RUNS = 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")


class RunnerError(TrustplaneError):
    """A request the runner refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, reason: str, *, status: int, hint: str | None = None) -> None:
        super().__init__(reason, hint=hint)
        self.status = status


def runner_dir(settings: Settings) -> Path:
    return Path(settings.state_dir) / "demo-runner"


def token_path(settings: Settings) -> Path:
    """Where the runner keeps its bearer token (the console reads it from there)."""
    return runner_dir(settings) / "token"


class DemoRunner:
    """Starts scenario runs, one at a time, each in its own thread, and keeps their state.

    ``connect`` makes a run's wire to the pipeline (default: a
    :class:`~streams.dev.scenarios.KafkaWire` sharing one operator client)."""

    def __init__(
        self,
        settings: Settings,
        *,
        scenarios: Mapping[str, Scenario] | None = None,
        connect: Callable[[], Wire] | None = None,
        keep: int = KEEP_RUNS,
    ) -> None:
        from streams.dev.scenarios import SCENARIOS

        self.settings = settings
        self.scenario_list: Mapping[str, Scenario] = scenarios or SCENARIOS
        self._connect = connect
        self._desk: OperatorDesk | None = None
        self.keep = keep
        self._runs: OrderedDict[str, ScenarioRun] = OrderedDict()
        self._active: ScenarioRun | None = None
        self._lock = threading.Lock()

    def _make_wire(self) -> Wire:
        if self._connect is not None:
            return self._connect()
        from streams.dev.scenarios import KafkaWire, OperatorDesk

        if self._desk is None:
            self._desk = OperatorDesk(self.settings)
        return KafkaWire(self.settings, self._desk)

    def scenarios(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.scenario_list.values()]

    @property
    def active(self) -> ScenarioRun | None:
        with self._lock:
            run = self._active
            return run if run is not None and not run.done else None

    def start(self, name: str) -> ScenarioRun:
        """Start a run of scenario ``name``; raise :class:`RunnerError` (404 unknown
        scenario, 409 another run is going)."""
        from streams.dev.scenarios import ScenarioRun, new_run_id

        scenario = self.scenario_list.get(name)
        if scenario is None:
            raise RunnerError(
                f"no scenario {name[:100]!r}",
                status=404,
                hint=f"one of: {', '.join(self.scenario_list)}",
            )
        with self._lock:
            busy = self._active
            if busy is not None and not busy.done:
                raise RunnerError(
                    f"run {busy.run_id} ({busy.scenario.name}) is still going; one run at a time",
                    status=409,
                    hint=f"follow it at /runs/{busy.run_id}",
                )
            run_id = new_run_id()
            run = ScenarioRun(
                scenario,
                self.settings,
                self._make_wire,
                run_id=run_id,
                workdir=runner_dir(self.settings) / "runs" / run_id,
            )
            self._active = run
            self._runs[run_id] = run
            while len(self._runs) > self.keep:
                self._runs.popitem(last=False)
        threading.Thread(target=run.run, name=f"scenario-{run_id}", daemon=True).start()
        log.info("run %s of scenario %s started", run_id, name)
        return run

    def get(self, run_id: str) -> ScenarioRun:
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            raise RunnerError(f"no run {run_id[:100]!r} (or no longer kept)", status=404)
        return run

    def runs(self) -> list[dict[str, Any]]:
        with self._lock:
            kept = list(self._runs.values())
        summaries = []
        for run in reversed(kept):
            snap = run.snapshot()
            summaries.append(
                {
                    k: snap[k]
                    for k in ("run_id", "scenario", "status", "started_at_ms", "finished_at_ms")
                }
                | {"summary": snap["summary"]}
            )
        return summaries

    def artifact(self, run_id: str, name: str) -> Any:
        if not _NAME.fullmatch(run_id) or not _NAME.fullmatch(name):
            raise RunnerError("not a run id or artifact name", status=400)
        with self._lock:
            run = self._runs.get(run_id)
        if run is not None:
            snap_artifacts = run.artifacts
            if name in snap_artifacts:
                return snap_artifacts[name]
        path = runner_dir(self.settings) / "runs" / run_id / f"{name}.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise RunnerError(f"run {run_id} has no artifact {name!r}", status=404) from None
        except (OSError, ValueError) as exc:
            raise RunnerError(f"artifact {name!r} cannot be read: {exc}", status=500) from None


# -- HTTP ------------------------------------------------------------------------------


def build_app(runner: DemoRunner, token: Any) -> web.Application:
    """The runner's routes behind ``token`` (a :class:`~streams.httpauth.BearerToken`)."""
    from aiohttp import web

    from streams.httpauth import AuthenticationError

    def error(status: int, reason: str, hint: str | None = None) -> web.Response:
        return web.json_response({"error": reason, "hint": hint}, status=status)

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path != "/healthz":
            try:
                token.verify(request.headers.get("Authorization"))
            except AuthenticationError as exc:
                return error(401, exc.reason, exc.hint)
        try:
            return await handler(request)
        except RunnerError as exc:
            return error(exc.status, exc.reason, exc.hint)

    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.StreamResponse:
        active = runner.active
        return web.json_response({"ok": True, "active_run": active.run_id if active else None})

    @routes.get("/scenarios")
    async def scenarios(request: web.Request) -> web.StreamResponse:
        return web.json_response({"scenarios": runner.scenarios()})

    @routes.post("/runs")
    async def start(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return error(400, 'send JSON: {"scenario": "<name>"}')
        name = body.get("scenario") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return error(400, 'send JSON: {"scenario": "<name>"}', "GET /scenarios lists them")
        run = runner.start(name)
        return web.json_response(
            {"run_id": run.run_id, "scenario": run.scenario.name, "status": run.status},
            status=201,
            headers={"Location": f"/runs/{run.run_id}"},
        )

    @routes.get("/runs")
    async def runs(request: web.Request) -> web.StreamResponse:
        return web.json_response({"runs": runner.runs()})

    @routes.get("/runs/{run_id}")
    async def run(request: web.Request) -> web.StreamResponse:
        return web.json_response(runner.get(request.match_info["run_id"]).snapshot())

    @routes.get("/runs/{run_id}/artifacts/{name}")
    async def artifact(request: web.Request) -> web.StreamResponse:
        found = runner.artifact(request.match_info["run_id"], request.match_info["name"])
        return web.json_response(found)

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app.add_routes(routes)
    return app


def serve(settings: Settings, *, port: int = DEMO_RUNNER_PORT, bind: str = "127.0.0.1") -> None:
    """Serve until interrupted."""
    from aiohttp import web

    from processors.exceptions import ConfigError
    from streams.httpauth import BearerToken, require_safe_bind

    token = BearerToken.from_file(token_path(settings))
    try:  # the token is never a configured one: beyond loopback is always refused
        require_safe_bind(bind, token, what="the demo runner", setting="a token")
    except ConfigError as exc:
        raise ConfigError(
            exc.reason,
            hint="the demo runner holds the demo's operator key and listens on loopback only "
            "(--bind 127.0.0.1); operators reach it through the console",
        ) from exc
    runner = DemoRunner(settings)
    print(
        f"trustplane demo-runner: http://{bind}:{port} ({len(runner.scenario_list)} scenarios; "
        f"token in {token.path})",
        flush=True,
    )
    web.run_app(
        build_app(runner, token),
        host=bind,
        port=port,
        print=None,
        access_log=None,
        handle_signals=True,
    )


def demo_runner_command(
    ctx: typer.Context,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default 6061, demo_runner_port).")
    ] = None,
    bind: Annotated[
        str, typer.Option(help="Address to listen on; loopback only (it holds the demo's keys).")
    ] = "127.0.0.1",
) -> None:
    """Serve the Runtime Governance Demo's scenarios to the console (127.0.0.1:6061).

    Runs scripted scenarios on the real pipeline: per run, agents registered with the
    local operator key (scn-<run>-<role>) publish signed intents, labelled
    context.scenario_run, and the running gate workers decide them. Needs the broker, a
    gate worker and the example estate's policy bundle (`make run`); tamper_one_byte also
    the notary. Requests need the bearer token in <state_dir>/demo-runner/token.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = settings_of(ctx)
    chosen = port if port is not None else getattr(settings, "demo_runner_port", DEMO_RUNNER_PORT)
    serve(settings, port=int(chosen), bind=bind)
