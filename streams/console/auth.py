"""Who may read the console, and which writes it accepts.

Reading needs a session: the access token (printed at start, or given by
``console_token``) or a redeemed enrolment invitation opens one, kept in an HttpOnly,
SameSite=Strict cookie. Every write (any method but GET/HEAD) also needs the session's
CSRF token in ``X-CSRF-Token`` (or a ``csrf`` form field) and, when the browser sends an
``Origin``, this server's own. Every answer carries a strict Content-Security-Policy:
scripts only from ``/static/``, nothing inline, no framing.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware

from streams.httpauth import BearerToken

__all__ = [
    "COOKIE",
    "PUBLIC_PATHS",
    "SECURITY_HEADERS",
    "SESSION_KEY",
    "Session",
    "Sessions",
    "security_middleware",
]

COOKIE = "tp_console"
SESSION_TTL_S = 12 * 3600
PUBLIC_PATHS = ("/login", "/enroll", "/api/enroll", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # not no-referrer: with it, browsers send "Origin: null" on form posts
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Session:
    sid: str
    csrf: str
    opened_at: float
    how: str
    """``token`` or ``invite:<id>``."""
    operator_kid: str = ""
    """The browser key enrolled through this session's invitation, if any."""
    seen: float = field(default_factory=time.monotonic)


SESSION_KEY: web.RequestKey[Session] = web.RequestKey("session", Session)


class Sessions:
    """Server-side sessions (a restart logs everyone out: nothing to forge offline)."""

    def __init__(self, token: BearerToken, ttl_s: float = SESSION_TTL_S) -> None:
        self.token = token
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}

    def token_matches(self, given: str) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.token.value.encode())

    def open(self, how: str) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time(), how)
        self._sessions[session.sid] = session
        return session

    def get(self, sid: str) -> Session | None:
        session = self._sessions.get(sid)
        if session is None:
            return None
        if time.time() - session.opened_at > self.ttl_s:
            del self._sessions[sid]
            return None
        return session

    def close(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    def set_cookie(self, response: web.StreamResponse, session: Session, secure: bool) -> None:
        response.set_cookie(
            COOKIE,
            session.sid,
            httponly=True,
            samesite="Strict",
            path="/",
            secure=secure,
            max_age=int(self.ttl_s),
        )


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


async def _csrf_of(request: web.Request) -> str:
    sent = request.headers.get("X-CSRF-Token")
    if sent is not None:
        return sent
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        value = form.get("csrf", "")
        return value if isinstance(value, str) else ""
    return ""


def security_middleware(sessions: Sessions) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await _guarded(request, handler)
        except web.HTTPException as exc:
            response = exc
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if isinstance(response, web.HTTPException):
            raise response
        return response

    async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        writes = request.method not in ("GET", "HEAD", "OPTIONS")
        if writes and not _same_origin(request):
            raise web.HTTPForbidden(text="cross-origin write refused")
        if _is_public(request.path):
            return await handler(request)
        session = sessions.get(request.cookies.get(COOKIE, ""))
        if session is None:
            if request.path.startswith("/api/") or request.path == "/events":
                raise web.HTTPUnauthorized(
                    text="log in first: open the console URL that `trustplane console` printed"
                )
            raise web.HTTPSeeOther("/login")
        if writes:
            sent = await _csrf_of(request)
            if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                raise web.HTTPForbidden(
                    text="missing or wrong CSRF token: reload the page and try again"
                )
        session.seen = time.monotonic()
        request[SESSION_KEY] = session
        return await handler(request)

    return middleware
