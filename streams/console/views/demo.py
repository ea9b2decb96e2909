"""Runtime Governance Demo: scenarios on the real pipeline, run by `trustplane demo-runner`."""

from __future__ import annotations

import re

from aiohttp import web

from streams.console.demo import DemoRunnerError
from streams.console.views.common import console_of, json_body, json_error

routes = web.RouteTableDef()
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")


def _checked(value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise json_error(400, f"{what} {value[:40]!r} is not a name")
    return value


@routes.get("/demo")
async def demo_page(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    try:
        scenarios, error = await console.blocking(console.demo.scenarios), ""
    except DemoRunnerError as exc:
        scenarios, error = [], exc.reason
    return console.render(request, "demo.html", scenarios=scenarios, error=error)


@routes.post("/api/demo/runs")
async def start(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    body = await json_body(request)
    scenario = _checked(str(body.get("scenario", "")), "scenario")
    try:
        return web.json_response(await console.blocking(console.demo.start, scenario))
    except DemoRunnerError as exc:
        raise json_error(exc.status, exc.reason) from None


@routes.get("/api/demo/runs/{run_id}")
async def run(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    run_id = _checked(request.match_info["run_id"], "run")
    try:
        return web.json_response(await console.blocking(console.demo.run, run_id))
    except DemoRunnerError as exc:
        raise json_error(exc.status, exc.reason) from None


@routes.get("/api/demo/runs/{run_id}/artifacts/{name}")
async def artifact(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    run_id = _checked(request.match_info["run_id"], "run")
    name = _checked(request.match_info["name"], "artifact")
    try:
        return web.json_response(await console.blocking(console.demo.artifact, run_id, name))
    except DemoRunnerError as exc:
        raise json_error(exc.status, exc.reason) from None
