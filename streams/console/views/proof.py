"""Proof Viewer: the page verifies in the browser; these routes only fetch material.

Nothing here says whether anything is valid. The console passes on what the notary and
the store hold (proofs, checkpoints, evidence bundles, the published keys); the page's
own JavaScript (``static/proofs.js``) checks every signature, hash and proof, against a
notary verifier key it pinned on first use.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from processors.exceptions import TrustplaneError
from streams.cli.proof import ProofClientError
from streams.console.evidence import EvidenceError, build_event_evidence, build_evidence
from streams.console.views.common import console_of, json_error
from streams.gatekeys import gate_jwks_path

routes = web.RouteTableDef()

TEST_MATERIAL_ENV = "TRUSTPLANE_CONSOLE_TEST_MATERIAL"
"""A folder whose JSON files ``/api/test/material/<name>`` serves (tests only; unset: 404)."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")

_BY_APPROVAL = "SELECT intent_id FROM approvals WHERE approval_id = {q:String} LIMIT 1"
_BY_EVENT = "SELECT intent_id, event_id FROM lineage_events WHERE event_id = {q:String} LIMIT 1"
_BY_INDEX = "SELECT intent_id, event_id FROM lineage_events WHERE log_index = {i:UInt64} LIMIT 1"
_BY_INTENT = "SELECT intent_id FROM lineage_events WHERE intent_id = {q:String} LIMIT 1"


@routes.get("/proof")
async def proof_page(request: web.Request) -> web.StreamResponse:
    return console_of(request).render(request, "proof.html")


async def _notary(request: web.Request, path: str, params: dict[str, Any]) -> web.Response:
    console = console_of(request)
    try:
        body = await console.blocking(console.notary.get, path, params or None)
    except ProofClientError as exc:
        raise json_error(502, exc.reason) from None
    content_type = "application/json" if path.startswith("/proof/") else "text/plain"
    return web.Response(body=body, content_type=content_type)


@routes.get("/api/proof/checkpoint")
async def checkpoint(request: web.Request) -> web.StreamResponse:
    return await _notary(request, "/checkpoint", {})


@routes.get("/api/proof/vkey")
async def vkey(request: web.Request) -> web.StreamResponse:
    return await _notary(request, "/vkey", {})


@routes.get("/api/proof/consistency")
async def consistency(request: web.Request) -> web.StreamResponse:
    old, new = request.query.get("old", ""), request.query.get("new", "")
    if not old.isdigit() or not new.isdigit():
        raise json_error(400, "give old=N&new=M (tree sizes)")
    return await _notary(request, "/proof/consistency", {"old": old, "new": new})


@routes.get("/api/proof/inclusion")
async def inclusion(request: web.Request) -> web.StreamResponse:
    event_id, index = request.query.get("event_id", ""), request.query.get("index", "")
    if event_id:
        return await _notary(request, "/proof/inclusion", {"event_id": event_id})
    if index.isdigit():
        return await _notary(request, "/proof/inclusion", {"index": index})
    raise json_error(400, "give event_id=… or index=N")


@routes.get("/api/proof/jwks")
async def jwks(request: web.Request) -> web.StreamResponse:
    """The gate's published keys (approvals.jwks.json): public, and pinned by the page."""
    path = gate_jwks_path(console_of(request).settings)
    try:
        return web.json_response(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise json_error(503, f"the gate's JWKS at {path} cannot be read: {exc}") from None


@routes.get("/api/proof/lookup")
async def lookup(request: web.Request) -> web.StreamResponse:
    """An evidence bundle for an intent, an approval, a lineage event or a log index."""
    console = console_of(request)
    q = request.query.get("q", "").strip()[:200]
    if not q:
        raise json_error(400, "give an intent id, an approval id, an event id or a log index")

    def find() -> dict[str, Any]:
        store = console.store
        if q.isdigit():
            rows = store.target.query(_BY_INDEX, {"i": int(q)}).dicts()
        elif q.startswith("approval-"):
            rows = store.target.query(_BY_APPROVAL, {"q": q}).dicts()
        elif q.startswith("event-"):
            rows = store.target.query(_BY_EVENT, {"q": q}).dicts()
        else:
            rows = store.target.query(_BY_INTENT, {"q": q}).dicts()
        if not rows:
            raise EvidenceError(f"nothing in the lineage store is named {q!r} (yet)")
        intent_id = str(rows[0].get("intent_id") or "")
        if intent_id:
            return build_evidence(console.settings, store, console.notary, intent_id)
        return build_event_evidence(console.settings, console.notary, str(rows[0]["event_id"]))

    try:
        bundle = await console.blocking(find)
    except EvidenceError as exc:
        raise json_error(404, str(exc)) from None
    except TrustplaneError as exc:
        raise json_error(503, exc.reason) from None
    return web.json_response(bundle)


@routes.get("/api/test/material/{name}")
async def test_material(request: web.Request) -> web.StreamResponse:
    """Tampered and genuine material for the browser tests (only with the folder set)."""
    folder = os.environ.get(TEST_MATERIAL_ENV)
    name = request.match_info["name"]
    if not folder or not _NAME.fullmatch(name):
        raise web.HTTPNotFound()
    path = Path(folder) / name
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.Response(body=path.read_bytes(), content_type="application/json")
