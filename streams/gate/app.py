"""The Faust app that hosts a gate worker: lifecycle, signals, /metrics and /healthz.

The exactly-once decision loop itself is :class:`streams.gate.worker.GateWorker` (see its
docstring for why it drives Kafka transactions directly); here it runs as a Faust
service, so ``trustplane worker`` is a Faust worker with Faust's start-up, shutdown
and web server. The gate itself is assembled in ``streams/gate/wiring.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
from mode import Service
from prometheus_client import generate_latest

from processors.control import ControlResult
from processors.exceptions import ConfigError, TrustplaneError
from processors.lineage import LineageRecorder
from streams import kafka, names
from streams.brokerwait import wait_for_broker
from streams.config import Settings
from streams.gate.control import ControlFollower
from streams.gate.metrics import GateHealth, GateMetrics, GroupLag
from streams.gate.standby import WorkerLock
from streams.gate.state import KafkaAgentStates
from streams.gate.wiring import GateParts, build_gate
from streams.gate.worker import GateWorker
from streams.httpauth import AuthenticationError, BearerToken, is_loopback
from streams.startup import StartupTimeline
from streams.topics import ensure_topics

__all__ = ["create_app", "build_gate"]

log = logging.getLogger(__name__)

Page = Callable[[Any, Any], Awaitable[Any]]


class GateService(Service):
    """Runs the blocking transactional loop in a thread; a fatal error crashes the app."""

    def __init__(self, worker: GateWorker, **kwargs: Any) -> None:
        self.worker = worker
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gate-worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop below
            log.error("gate worker stopped: %s", exc)
            self._error = exc

    @Service.task
    async def _watch(self) -> None:
        while not self.should_stop:
            if self._thread is not None and not self._thread.is_alive():
                if self._error is not None:
                    # a worker that stopped deciding must not look alive: exit, so that a
                    # supervisor (make run, systemd, Kubernetes) sees it and restarts it
                    log.critical("the gate worker stopped deciding; exiting: %s", self._error)
                    logging.shutdown()
                    os._exit(3)
                return
            await asyncio.sleep(0.5)

    async def on_stop(self) -> None:
        self.worker.stop()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30)


def _web_token(settings: Settings) -> BearerToken | None:
    """The token every page then needs, when one is configured; refuses a non-loopback
    ``web_bind`` without one (the pages show the worker's state and metrics)."""
    configured = str(getattr(settings, "web_token", "") or "")
    token = (
        BearerToken.configured(configured, setting="TRUSTPLANE_WEB_TOKEN") if configured else None
    )
    if settings.web_port > 0 and token is None and not is_loopback(settings.web_bind):
        raise ConfigError(
            f"the worker's web server would listen on {settings.web_bind!r}, which other "
            "machines can reach, with no token",
            hint="keep web_bind = 127.0.0.1 (the default), or set TRUSTPLANE_WEB_TOKEN to a "
            "secret of at least 32 characters and give it to Prometheus (bearer token)",
        )
    return token


def _guard(token: BearerToken | None, page: Page) -> Page:
    """``page``, answering 401 to a request without the bearer token (if one is set)."""
    if token is None:
        return page

    async def guarded(web: Any, request: Any) -> Any:
        try:
            token.verify(request.headers.get("Authorization"))
        except AuthenticationError as exc:
            return web.json({"error": exc.reason, "hint": exc.hint}, status=401)
        return await page(web, request)

    return guarded


def _add_control_view(
    app: faust.App, settings: Settings, metrics: GateMetrics, token: BearerToken | None
) -> None:
    """``/control``: the latest *applied* command per ``control`` subject, as this worker's
    control state applied it (kind, id, signer, sequence, issued and applied times).

    Refused records never show here (they are in lineage, ``control.refused``, and in
    ``trustplane_control_commands_total{kind="<kind>:refused"}``): the view comes from the
    state the decisions use (``streams/gate/control.py``), not from the raw topic, which
    anyone allowed to write it could fill with tombstones, junk or forgeries.
    """
    from streams.gate.control import applied_commands

    topic = settings.topic("control")
    # the Faust host needs a subscription of its own (its consumer refuses to start
    # without one): it reads control too, and leaves applying it to the worker's follower
    control = app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw")

    @app.agent(control)
    async def drain_control(stream: Any) -> None:
        async for _ in stream.events():
            pass

    async def control_page(web: Any, request: Any) -> Any:
        return web.json(applied_commands(topic))

    app.page("/control")(_guard(token, control_page))


CONTROL_REPORTER = "gate"
"""The ``worker`` of a control event: every worker judges the control log the same way
(in log order, at the broker's append time), so the event that says what became of a
command is one event, identical whichever worker -- or restart -- reports it, and the
notary logs it once."""


def _control_lineage(parts: GateParts, metrics: GateMetrics) -> Any:
    recorder = LineageRecorder(CONTROL_REPORTER)

    def on_result(
        record: dict[str, Any] | None, result: ControlResult | None, error: str | None
    ) -> None:
        applied = bool(result and result.applied)
        kind = str((record or {}).get("kind") or "undecodable")
        metrics.control_commands.labels(kind if applied else f"{kind}:refused").inc()
        if record is None:
            return
        reason = error or (result.reason if result else "")
        event = recorder.event(
            subject=str(record.get("command_id")),
            stage="control",
            event_type=f"control.{'applied' if applied else 'refused'}",
            status=kind,
            now_ms=int(record.get("issued_at_ms") or 0),
            agent_id=None,
            reasons=(reason,),
            attributes={
                "subject": str(record.get("subject")),
                "issued_by": str(record.get("issued_by")),
                "key_id": str(record.get("key_id")),
            },
        )
        parts.gate.emit(parts.gate.lineage_outputs(None, [event], parts.gate.clock()))

    return on_result


def _gate_health(parts: GateParts, worker: GateWorker, keys_dir: Path) -> Callable[[], GateHealth]:
    """Reads, at each scrape, the state this worker's decisions use (``/metrics``)."""

    def read() -> GateHealth:
        # the worker thread changes this state while the web server reads it: a dict
        # that changed size under an iteration raises RuntimeError; read again
        for _ in range(2):
            try:
                return _read_health(parts, worker, keys_dir)
            except RuntimeError:
                continue
        return _read_health(parts, worker, keys_dir)

    return read


def _read_health(parts: GateParts, worker: GateWorker, keys_dir: Path) -> GateHealth:
    summary = parts.control.snapshot_summary()
    quarantines = {"agent": 0, "runtime": 0}
    for entry in parts.control.latest_applied().values():
        kind = str(entry.get("kind"))
        if kind in ("agent.quarantine", "runtime.quarantine"):  # released: *.release
            quarantines[kind.split(".")[0]] += 1
    switches = parts.killswitches.summary()
    engine = parts.policies.active
    return GateHealth(
        ready=worker.ready.is_set(),
        agents_by_status=dict(summary.get("agents_by_status") or {}),
        quarantines=quarantines,
        killswitches={
            "global": 1 if switches.get("global") else 0,
            "agent": len(switches.get("agents") or ()),
            "action": len(switches.get("actions") or ()),
        },
        history_problems=len(parts.control.problems),
        policy=(str(engine.version), str(engine.digest)) if engine is not None else None,
        signing_key=_signing_key_since(parts, keys_dir),
        standby=worker.standing_by,
    )


def _signing_key_since(parts: GateParts, keys_dir: Path) -> tuple[str, float] | None:
    """(kid, since) of the key that signs approvals now: since = the later of its
    not-before and its creation (the mtime of its PEM file in the key directory). A
    key from the environment that signs from time 0 has no known age: None."""
    keyring = parts.signer.keyring
    try:
        kid = keyring.signing_key(time.time_ns() // 1_000_000).kid
    except TrustplaneError:  # no key signs now: every approval fails (the log says so)
        return None
    since = max(e.not_before_ms for e in keyring.entries if e.kid == kid) / 1000
    try:
        since = max(since, (keys_dir / f"{kid}.pem").stat().st_mtime)
    except OSError:
        pass  # a key from the environment has no file
    return (kid, since) if since > 0 else None


def _spill_dir(settings: Settings) -> Path:
    """This process's RocksDB cache of agent state: one per process, since a standby of
    the same worker id runs beside the deciding one; those of ended processes are removed."""
    parent = settings.state_dir / "gate-state" / settings.resolved_worker_id()
    for stale in parent.glob("pid-*") if parent.is_dir() else ():
        pid = stale.name.removeprefix("pid-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    return parent / f"pid-{os.getpid()}"


def create_app(settings: Settings) -> faust.App:
    settings = settings.for_role("gate")  # its Kafka principal, unless one is configured
    startup = StartupTimeline("worker")
    wait_for_broker(settings, "worker")
    startup.mark("broker")
    ensure_topics(settings)
    startup.mark("topics")
    metrics = GateMetrics()
    parts = build_gate(settings, metrics)
    spill = _spill_dir(settings) if settings.state_store == "rocksdb" else None
    states = KafkaAgentStates(
        settings,
        list(parts.gate.states.layers.values()),
        spill_dir=spill,
        max_cached=settings.max_cached_agents,
        on_untrusted=lambda _marker: metrics.untrusted_state.inc(),
    )
    parts.gate.states = states
    follower = ControlFollower(
        settings,
        parts.control,
        on_result=_control_lineage(parts, metrics),
    )
    worker = GateWorker(
        settings,
        parts.gate,
        control=follower,
        states=states,
        startup=startup,
        lock=WorkerLock(settings.state_dir, settings.resolved_worker_id()),
    )
    startup.mark("gate")
    metrics.watch(
        _gate_health(parts, worker, settings.resolved_signing_keys_dir),
        GroupLag.of(
            settings,
            names.gate_group(settings),
            [settings.topic("intents"), settings.topic("outcomes")],
        ),
    )
    token = _web_token(settings)
    app = faust.App(
        names.gate_app(settings),
        broker=f"kafka://{settings.resolved_bootstrap()}",
        broker_credentials=kafka.faust_credentials(settings),
        autodiscover=False,
        store="memory://",
        # Faust makes its data folder (empty with the memory store) in the working
        # directory unless told otherwise: keep it with the rest of the worker's state
        datadir=str(settings.state_dir / "faust"),
        topic_disable_leader=True,
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_bind=settings.web_bind,
        web_host="127.0.0.1",
        # Faust's own views would show its routing and table contents to anyone
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )
    # a child of the app, not an @app.service: those start only after Faust's own group
    # has settled, and a crashed predecessor holds that group for a whole session timeout
    app.add_dependency(GateService(worker))
    _add_control_view(app, settings, metrics, token)

    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp wants the charset apart from the content type
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain")

    app.page("/metrics")(_guard(token, metrics_page))

    async def health_page(web: Any, request: Any) -> Any:
        engine = parts.policies.active
        body = {
            "worker": worker.worker_id,
            "ready": worker.ready.is_set(),
            "standby": worker.standing_by,
            "processed": worker.processed,
            "startup": startup.summary(),
            "control": parts.control.snapshot_summary(),
            "policy": (
                {"version": engine.version, "digest": engine.digest}
                if engine is not None
                else {"refused": parts.policies.last_refusal}
            ),
            "killswitch": parts.killswitches.summary(),
            "approval_keys": sorted(parts.signer.public_keyset()),
            "untrusted_agent_state": [
                {"agent_id": m.agent_id, "partition": m.partition, "offset": m.offset}
                for m in states.untrusted()
            ],
        }
        return web.bytes(json.dumps(body).encode(), content_type="application/json")

    app.page("/healthz")(_guard(token, health_page))
    return app
