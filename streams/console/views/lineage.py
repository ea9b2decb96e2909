"""Execution Lineage Explorer: search, per-intent timelines, gap views, evidence."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from processors.exceptions import TrustplaneError
from streams.console.data import OUTCOMES, SearchFilters
from streams.console.evidence import EvidenceError, build_evidence
from streams.console.views.common import console_of

routes = web.RouteTableDef()


@routes.get("/lineage")
async def search(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    error = ""
    rows: list[dict[str, Any]] = []
    try:
        filters = SearchFilters.from_query(request.query)
    except ValueError as exc:
        filters, error = SearchFilters(), str(exc)
    if not error:
        try:
            rows = await console.blocking(console.store.decisions, filters, limit=200)
        except (TrustplaneError, ValueError) as exc:
            error = str(getattr(exc, "reason", exc))
    return console.render(
        request, "lineage.html", filters=filters, rows=rows, error=error, outcomes=OUTCOMES
    )


@routes.get("/lineage/intent/{intent_id}")
async def timeline(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    intent_id = request.match_info["intent_id"]
    try:
        found = await console.blocking(console.store.timeline, intent_id)
    except TrustplaneError as exc:
        return console.render(request, "intent.html", t=None, intent_id=intent_id, error=exc.reason)
    if not found["events"]:
        response = console.render(
            request,
            "intent.html",
            t=None,
            intent_id=intent_id,
            error="no lineage event names this intent (yet)",
        )
        response.set_status(404)
        return response
    return console.render(request, "intent.html", t=found, intent_id=intent_id, error="")


@routes.get("/lineage/intent/{intent_id}/evidence.json")
async def evidence(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    intent_id = request.match_info["intent_id"]
    try:
        bundle = await console.blocking(
            build_evidence, console.settings, console.store, console.notary, intent_id
        )
    except (EvidenceError, TrustplaneError) as exc:
        reason = getattr(exc, "reason", str(exc))
        raise web.HTTPNotFound(
            text=json.dumps({"error": reason}), content_type="application/json"
        ) from None
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in intent_id)[:80]
    return web.Response(
        text=json.dumps(bundle, indent=2, ensure_ascii=False),
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="evidence-{safe}.json"'},
    )


@routes.get("/lineage/gaps")
async def gaps(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    try:
        found = await console.blocking(console.store.gaps)
        error = ""
    except TrustplaneError as exc:
        found, error = {}, exc.reason
    return console.render(request, "gaps.html", gaps=found, error=error)
