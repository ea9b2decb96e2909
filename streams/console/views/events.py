"""``/events``: one server-sent-event stream per page (decisions, applied commands)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from streams.console.views.common import console_of

routes = web.RouteTableDef()
KEEPALIVE_S = 15.0


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    feed = console_of(request).feed
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    queue = feed.subscribe()
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            try:
                event, data = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.unsubscribe(queue)
    return response
