"""What every view needs: the console, JSON bodies, errors as JSON."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streams.console.server import CONSOLE_KEY, Console

__all__ = ["console_of", "json_body", "json_error"]


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE_KEY]


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise json_error(400, "the request body must be JSON") from None
    if not isinstance(body, dict):
        raise json_error(400, "the request body must be a JSON object")
    return body


def json_error(status: int, reason: str, **extra: Any) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        403: web.HTTPForbidden,
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
        502: web.HTTPBadGateway,
        503: web.HTTPServiceUnavailable,
    }
    import json

    return kinds.get(status, web.HTTPBadRequest)(
        text=json.dumps({"error": reason, **extra}), content_type="application/json"
    )
