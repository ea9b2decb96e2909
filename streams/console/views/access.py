"""Logging in, enrolling this browser's operator key, and that key's standing."""

from __future__ import annotations

import time

from aiohttp import web

from processors.control import Signer
from processors.control.commands import Refused
from processors.exceptions import TrustplaneError
from streams.console.auth import COOKIE
from streams.console.views.common import console_of, json_body, json_error

routes = web.RouteTableDef()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@routes.get("/login")
async def login_page(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    given = request.query.get("token", "")
    if given:
        return _login(request, given)
    return console.render(request, "login.html", error="")


@routes.post("/login")
async def login_form(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    given = form.get("token", "")
    return _login(request, given if isinstance(given, str) else "")


def _login(request: web.Request, given: str) -> web.StreamResponse:
    console = console_of(request)
    if not console.sessions.token_matches(given.strip()):
        response = console.render(
            request,
            "login.html",
            error="That token is wrong. Use the one `trustplane console` printed "
            "(or <state_dir>/console/console.token).",
        )
        response.set_status(401)
        return response
    session = console.sessions.open("token")
    # a redirect takes the token out of the address bar and the history
    response = web.HTTPSeeOther("/governance")
    console.sessions.set_cookie(response, session, request.secure)
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    console_of(request).sessions.close(request.cookies.get(COOKIE, ""))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    return response


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/governance")


@routes.get("/enroll")
async def enroll_page(request: web.Request) -> web.StreamResponse:
    return console_of(request).render(request, "enroll.html")


@routes.post("/api/enroll")
async def enroll(request: web.Request) -> web.StreamResponse:
    """Redeem a one-time invitation with this browser's public key; the invitation is
    also the login. The root operator's `trustplane operators invite` then enrols it."""
    console = console_of(request)
    body = await json_body(request)
    fields = {}
    for name in ("invite_id", "secret", "x", "kid", "label"):
        value = body.get(name)
        if not isinstance(value, str) or not value or len(value) > 200:
            raise json_error(400, f"{name} must be a short non-empty string")
        fields[name] = value
    try:
        await console.blocking(
            console.invites.redeem,
            fields["invite_id"],
            fields["secret"],
            fields["x"],
            fields["kid"],
            fields["label"],
        )
    except TrustplaneError as exc:
        raise json_error(403, exc.reason) from None
    session = console.sessions.open(f"invite:{fields['invite_id']}")
    session.operator_kid = fields["kid"]
    response = web.json_response({"kid": fields["kid"], "status": "requested"})
    console.sessions.set_cookie(response, session, request.secure)
    return response


@routes.get("/api/enroll/{invite_id}")
async def enroll_status(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    status = await console.blocking(console.invites.status, request.match_info["invite_id"])
    return web.json_response({"status": str(getattr(status, "state", status))})


@routes.get("/api/operator")
async def operator_status(request: web.Request) -> web.StreamResponse:
    """Whether the workers would trust key ``kid`` now (the replica runs their code)."""
    console = console_of(request)
    kid = request.query.get("kid", "")
    if not kid:
        raise json_error(400, "give the key id: /api/operator?kid=…")
    replica = console.replica
    with replica.lock:
        try:
            replica.state.verifier.signer_of(kid, "killswitch.engage", "", _now_ms())
            trusted, reason = True, ""
        except Refused as exc:
            trusted, reason = False, exc.reason
        link = replica.state.log.history.next_link(Signer("operator", kid))
    return web.json_response(
        {
            "kid": kid,
            "trusted": trusted,
            "reason": reason,
            "commands": link.sequence,
            "caught_up": replica.caught_up.is_set(),
        }
    )
