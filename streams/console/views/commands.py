"""Relaying browser-signed operator commands (the console signs nothing itself)."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from processors.exceptions import TrustplaneError
from streams.console.relay import LinkConflict, RelayError
from streams.console.views.common import console_of, json_body, json_error

routes = web.RouteTableDef()


@routes.post("/api/commands/prepare")
async def prepare(request: web.Request) -> web.StreamResponse:
    """The subject and the place in the key's history a command must be signed at."""
    console = console_of(request)
    body = await json_body(request)
    kind, key_id = body.get("kind"), body.get("key_id")
    if not isinstance(kind, str) or not isinstance(key_id, str) or not key_id:
        raise json_error(400, "give kind, payload and key_id")
    try:
        prepared = await console.blocking(console.relay.prepare, kind, body.get("payload"), key_id)
    except TrustplaneError as exc:
        raise json_error(400, exc.reason) from None
    label = body.get("label")
    issued_by = label if isinstance(label, str) and label.strip() else f"browser:{key_id[:8]}"
    return web.json_response({**prepared, "issued_by": issued_by[:80]})


@routes.post("/api/commands")
async def relay(request: web.Request) -> web.StreamResponse:
    """Send a signed record to ``control``; answer with the verdict the workers' code
    gives it (applied, or refused and why)."""
    console = console_of(request)
    body = await json_body(request)
    try:
        result = await console.blocking(console.relay.relay, body.get("record"))
    except LinkConflict as exc:
        raise json_error(409, exc.reason, expected=exc.expected) from None
    except RelayError as exc:
        raise json_error(400, exc.reason) from None
    except TrustplaneError as exc:
        raise json_error(503, exc.reason) from None
    return web.json_response(dataclasses.asdict(result))
