"""Infrastructure Health Dashboard: the health of the guarantees, from Prometheus."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from streams.console.health import PANELS, PrometheusError
from streams.console.views.common import console_of

routes = web.RouteTableDef()


async def _snapshot(request: web.Request) -> dict[str, Any]:
    console = console_of(request)
    client = console.prometheus
    panels = await asyncio.gather(*(asyncio.to_thread(client.panel, panel) for panel in PANELS))
    try:
        alerts = await asyncio.to_thread(client.alerts)
        alerts_error = ""
    except PrometheusError as exc:
        alerts, alerts_error = [], str(exc)
    errors = {p.error for p in panels}
    down = next(iter(errors)) if len(errors) == 1 and "" not in errors else ""
    return {
        "prometheus": client.url,
        "prometheus_down": down,
        "panels": [p.to_dict() for p in panels],
        "alerts": alerts,
        "alerts_error": alerts_error,
        "feed_error": console.feed.error,
        "replica_error": console.replica.error,
        "at_ms": time.time_ns() // 1_000_000,
    }


@routes.get("/health")
async def health(request: web.Request) -> web.StreamResponse:
    snapshot = await _snapshot(request)
    return console_of(request).render(request, "health.html", h=snapshot)


@routes.get("/api/health")
async def health_json(request: web.Request) -> web.StreamResponse:
    return web.json_response(await _snapshot(request))
