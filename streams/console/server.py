"""Builds the console's aiohttp application and runs it (``trustplane console``)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from processors.timefmt import iso_ms
from streams.brokerwait import wait_for_broker
from streams.cli.proof import NotaryClient
from streams.config import Settings
from streams.console.auth import SESSION_KEY, Sessions, security_middleware
from streams.console.data import LineageStore, open_store
from streams.console.demo import DemoRunnerClient
from streams.console.feed import DecisionFeed
from streams.console.health import PrometheusClient
from streams.console.relay import CommandRelay
from streams.console.replica import ControlReplica
from streams.enrollment import InviteStore
from streams.httpauth import BearerToken, is_loopback, require_safe_bind

__all__ = ["Console", "build_app", "console_token", "run_console"]

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
CONSOLE_KEY: web.AppKey[Console] = web.AppKey("console")


def _short(value: object, n: int = 12) -> str:
    text = str(value or "")
    return text if len(text) <= n else text[:n] + "…"


def _number(value: object) -> str:
    if value is None:
        return "—"
    number = float(str(value))
    return f"{number:.0f}" if number.is_integer() else f"{number:.2f}"


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["ms"] = lambda ms: iso_ms(int(ms)) if ms not in (None, "") else ""
    env.filters["short"] = _short
    env.filters["num"] = _number
    env.filters["tojson_pretty"] = lambda v: __import__("json").dumps(
        v, indent=2, sort_keys=True, ensure_ascii=False
    )
    return env


@dataclass
class Console:
    """Everything a request handler reaches (one per process)."""

    settings: Settings
    sessions: Sessions
    replica: ControlReplica
    relay: CommandRelay
    store: LineageStore
    notary: NotaryClient
    prometheus: PrometheusClient
    invites: InviteStore
    feed: DecisionFeed
    demo: DemoRunnerClient
    env: jinja2.Environment = field(default_factory=templates)

    def render(self, request: web.Request, name: str, **values: Any) -> web.Response:
        session = request.get(SESSION_KEY)
        page = self.env.get_template(name).render(
            csrf=session.csrf if session is not None else "",
            path=request.path,
            replica_error=self.replica.error,
            **values,
        )
        return web.Response(text=page, content_type="text/html")

    async def blocking(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(function, *args, **kwargs)


def console_token(settings: Settings) -> BearerToken:
    if settings.console_token:
        return BearerToken.configured(settings.console_token, setting="TRUSTPLANE_CONSOLE_TOKEN")
    return BearerToken.from_file(settings.console_state_dir / "console.token")


def build_app(console: Console) -> web.Application:
    from streams.console.views import (
        access,
        commands,
        demo,
        events,
        governance,
        health,
        lineage,
        proof,
    )

    app = web.Application(
        middlewares=[security_middleware(console.sessions)], client_max_size=2 * 1024 * 1024
    )
    app[CONSOLE_KEY] = console
    app.router.add_static("/static/", HERE / "static", show_index=False)
    for module in (access, commands, events, governance, lineage, health, proof, demo):
        app.add_routes(module.routes)

    async def start_feed(app: web.Application) -> None:
        console.feed.start()

    async def stop_feed(app: web.Application) -> None:
        await console.feed.stop()

    app.on_startup.append(start_feed)
    app.on_cleanup.append(stop_feed)
    return app


def make_console(settings: Settings, token: BearerToken) -> Console:
    from streams.notary import notary_port

    replica = ControlReplica(settings)
    store = LineageStore(open_store(settings))
    notary_token = settings.notary_token or None
    console = Console(
        settings=settings,
        sessions=Sessions(token),
        replica=replica,
        relay=CommandRelay(settings, replica),
        store=store,
        notary=NotaryClient(f"http://127.0.0.1:{notary_port(settings)}", token=notary_token),
        prometheus=PrometheusClient(settings.resolved_prometheus_url),
        invites=InviteStore(settings.console_state_dir / "invites"),
        feed=DecisionFeed(store, replica),
        demo=DemoRunnerClient(
            f"http://127.0.0.1:{settings.demo_runner_port}",
            settings.state_dir / "demo-runner" / "token",
        ),
    )
    return console


def run_console(
    settings: Settings,
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> None:
    """Serve until interrupted; print the login URL first (the token is in it)."""
    host, port = settings.console_bind, settings.console_port
    token = console_token(settings)
    require_safe_bind(host, token, what="the console", setting="TRUSTPLANE_CONSOLE_TOKEN")
    context: ssl.SSLContext | None = None
    if tls_cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_cert, tls_key)
    elif not is_loopback(host):
        from processors.exceptions import ConfigError

        raise ConfigError(
            f"the console would listen on {host!r} without TLS",
            hint="browsers give WebCrypto (which signs operator commands) only to https "
            "origins or loopback: pass --tls-cert and --tls-key, or listen on 127.0.0.1",
        )
    wait_for_broker(settings, "console")
    console = make_console(settings, token)
    console.replica.start()
    url = settings.console_url
    where = "configured token" if token.explicit else f"token in {token.path}"
    print(f"trustplane console: {url}/login?token={token.value}  ({where})", flush=True)
    try:
        web.run_app(
            build_app(console),
            host=host,
            port=port,
            ssl_context=context,
            print=None,
            access_log=None,
            handle_signals=True,
        )
    finally:
        console.replica.stop()
        console.relay.close()
