"""The console's gate for people: a session to read, a CSRF token and our own origin to
write, strict headers on every answer."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streams.console.auth import COOKIE, SESSION_KEY, Sessions, security_middleware
from streams.httpauth import BearerToken

TOKEN = secrets.token_urlsafe(32)


def _app() -> tuple[web.Application, Sessions]:
    sessions = Sessions(BearerToken.configured(TOKEN))
    app = web.Application(middlewares=[security_middleware(sessions)])

    async def login(request: web.Request) -> web.StreamResponse:
        if not sessions.token_matches(request.query.get("token", "")):
            return web.Response(status=401)
        session = sessions.open("token")
        response = web.HTTPSeeOther("/page")
        sessions.set_cookie(response, session, False)
        return response

    async def page(request: web.Request) -> web.StreamResponse:
        return web.Response(text=request[SESSION_KEY].csrf)

    async def write(request: web.Request) -> web.StreamResponse:
        return web.json_response({"written": True})

    app.add_routes(
        [web.get("/login", login), web.get("/page", page), web.post("/api/write", write)]
    )
    return app, sessions


def _run(test: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        app, _ = _app()
        async with TestClient(TestServer(app)) as client:
            await test(client)

    asyncio.run(main())


async def _login(client: TestClient[Any, Any]) -> str:
    response = await client.get(f"/login?token={TOKEN}", allow_redirects=False)
    assert response.status == 303
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = await client.get("/page")
    return await page.text()


def test_reading_needs_a_session() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        page = await client.get("/page", allow_redirects=False)
        assert page.status == 303 and page.headers["Location"] == "/login"
        api = await client.post("/api/write", json={})
        assert api.status == 401
        wrong = await client.get("/login?token=" + "x" * 43, allow_redirects=False)
        assert wrong.status == 401
        assert COOKIE not in wrong.cookies

    _run(test)


def test_a_write_without_the_csrf_token_is_refused() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        csrf = await _login(client)
        missing = await client.post("/api/write", json={})
        assert missing.status == 403
        wrong = await client.post("/api/write", json={}, headers={"X-CSRF-Token": "nope"})
        assert wrong.status == 403
        right = await client.post("/api/write", json={}, headers={"X-CSRF-Token": csrf})
        assert right.status == 200 and (await right.json()) == {"written": True}

    _run(test)


def test_a_cross_origin_write_is_refused_even_with_the_token() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        csrf = await _login(client)
        response = await client.post(
            "/api/write",
            json={},
            headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
        )
        assert response.status == 403

    _run(test)


def test_every_answer_carries_the_security_headers() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        for response in (
            await client.get("/page", allow_redirects=False),
            await client.get("/nowhere"),
        ):
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert response.headers["X-Content-Type-Options"] == "nosniff"

    _run(test)
