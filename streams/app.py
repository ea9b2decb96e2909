"""The Faust app that hosts a gate worker: lifecycle, signals, /metrics and /healthz.

The exactly-once decision loop itself is :class:`streams.worker.GateWorker` (see its
docstring for why it drives Kafka transactions directly); here it runs as a Faust
service, so ``trustplane worker`` is a Faust worker with Faust's start-up, shutdown
and web server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import faust
from mode import Service
from prometheus_client import generate_latest

from processors.authorization import AllowList, AllowListAuthorization
from processors.freshness import Freshness
from processors.pipeline import Pipeline
from processors.verdict import Layer
from streams.codec import DecodeError, default_codec
from streams.config import Settings
from streams.gate import Gate
from streams.metrics import GateMetrics
from streams.topics import ensure_topics
from streams.worker import GateWorker

__all__ = ["create_app", "build_gate"]

log = logging.getLogger(__name__)


def build_gate(settings: Settings, metrics: GateMetrics | None = None) -> Gate:
    """The processor chain of this release: decode/validate -> freshness -> authorization."""
    layers: list[Layer] = [
        Freshness(settings.max_clock_skew_ms),
        AllowListAuthorization(AllowList.from_file(settings.allowlist_path)),
    ]
    return Gate(
        Pipeline(layers, layer_timeout_ms=settings.layer_timeout_ms),
        default_codec(),
        worker=settings.resolved_worker_id(),
        max_intent_bytes=settings.max_intent_bytes,
        metrics=metrics,
    )


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
            self._error = exc

    @Service.task
    async def _watch(self) -> None:
        while not self.should_stop:
            if self._thread is not None and not self._thread.is_alive():
                if self._error is not None:
                    await self.crash(self._error)
                return
            await asyncio.sleep(0.5)

    async def on_stop(self) -> None:
        self.worker.stop()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30)


def _add_control_view(app: faust.App, settings: Settings, metrics: GateMetrics) -> None:
    """Keep every worker's view of the compacted ``control`` topic in a Faust table.

    The table holds, per subject, the latest command kind and id. The decision layers
    that act on control commands (agent registry, policy bundles, quarantine, kill
    switch) read their state from here as they land.
    """
    codec = default_codec()
    control = app.topic(
        settings.topic("control"), key_type=bytes, value_type=bytes, value_serializer="raw"
    )
    latest = app.Table("control-latest", default=None, partitions=settings.partitions)

    @app.agent(control)
    async def follow_control(stream: Any) -> None:
        async for event in stream.events():
            try:
                command = codec.decode(event.value or b"", "ControlCommand")
            except DecodeError as exc:
                metrics.control_commands.labels("undecodable").inc()
                log.warning(
                    "control record %s is not a ControlCommand: %s",
                    event.message.offset,
                    exc.reason,
                )
                continue
            latest[command["subject"]] = {"kind": command["kind"], "id": command["command_id"]}
            metrics.control_commands.labels(command["kind"]).inc()


def create_app(settings: Settings) -> faust.App:
    ensure_topics(settings)
    metrics = GateMetrics()
    worker = GateWorker(settings, build_gate(settings, metrics))
    app = faust.App(
        f"{settings.group_id}-host",
        broker=f"kafka://{settings.resolved_bootstrap()}",
        autodiscover=False,
        store="memory://",
        topic_disable_leader=True,
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_bind="0.0.0.0",  # noqa: S104 - Prometheus scrapes it from another container
        web_host="127.0.0.1",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )
    # a child of the app, not an @app.service: those start only after Faust's own group
    # has settled, and a crashed predecessor holds that group for a whole session timeout
    app.add_dependency(GateService(worker))
    _add_control_view(app, settings, metrics)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp wants the charset apart from the content type
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain")

    @app.page("/healthz")
    async def health_page(web: Any, request: Any) -> Any:
        body = {
            "worker": worker.worker_id,
            "ready": worker.ready.is_set(),
            "processed": worker.processed,
        }
        return web.bytes(json.dumps(body).encode(), content_type="application/json")

    return app
