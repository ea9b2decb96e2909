"""Read-only SQL over HTTP, served by the process that owns the store.

It listens on 127.0.0.1 by default, and every query needs the endpoint's bearer token
(:mod:`streams.httpauth`): the token is kept in ``<state_dir>/sink/sql.token`` (mode
0600, written at the first start), where ``trustplane sql`` finds it, or given by
configuration, which is also what listening on any other address requires.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from processors.exceptions import TrustplaneError
from sinks.base import QueryError, Sink, SinkError
from sinks.clickhouse import named_queries
from sinks.clickhouse.backends import QueryBusyError
from sinks.sql_guard import SqlGuardError
from streams.httpauth import AuthenticationError, BearerToken, require_safe_bind
from streams.sink.exceptions import SinkRunError

__all__ = ["QueryServer", "MAX_REQUEST_BYTES", "TOKEN_SETTING", "sql_token_file"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20
REQUEST_TIMEOUT_S = 30
"""A client that sends its request slower than this is disconnected."""
TOKEN_SETTING = "sink_sql_token"  # noqa: S105 - a setting name, not a secret
"""The setting that gives the endpoint its token explicitly."""


def sql_token_file(state_dir: Path) -> Path:
    """Where the SQL endpoint keeps its bearer token: ``<state_dir>/sink/sql.token``."""
    return Path(state_dir) / "sink" / "sql.token"


def _error_document(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, TrustplaneError):
        return {
            "error": {
                "type": type(exc).__name__,
                "reason": exc.reason,
                "hint": exc.hint,
                "code": getattr(exc, "code", 0) if isinstance(exc, QueryError) else 0,
            }
        }
    return {"error": {"type": type(exc).__name__, "reason": str(exc), "hint": None, "code": 0}}


class QueryServer:
    """Read-only SQL over HTTP, for the process that owns the store.

    ``POST /sql`` with ``Authorization: Bearer <token>`` and ``{"sql": "...", "params":
    {...}}`` (``Content-Type: application/json``, so browsers must preflight and cannot
    post from a web page) answers ``{"columns", "types", "rows", "elapsed_ms"}`` or
    ``{"error": {...}}`` with status 400 (refused or failed query), 401 (no or wrong
    token), 429 (every reader busy: retry) or 503 (store unavailable). ``GET /healthz``,
    ``/metrics`` and ``/queries`` need no token.

    The token: ``token`` (a configured secret), else the file ``token_file``, else
    ``<state_dir>/sink/sql.token`` next to the sink's chDB folder (created at the first
    start). Any host but loopback needs ``token``.
    """

    def __init__(
        self,
        sink: Sink,
        host: str,
        port: int,
        *,
        health: Callable[[], dict[str, Any]] | None = None,
        registry: CollectorRegistry | None = None,
        token: str | None = None,
        token_file: Path | None = None,
    ) -> None:
        self.sink = sink
        self.health = health or (lambda: {"ready": True})
        self.registry = registry
        self.token = _endpoint_token(sink, token, token_file)
        require_safe_bind(host, self.token, what="the sink's SQL endpoint", setting=TOKEN_SETTING)
        handler = self._handler_class()
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise SinkRunError(
                f"cannot serve SQL on {host}:{port}: {exc.strerror or exc}",
                hint="another sink may be running; or choose a free port with "
                "TRUSTPLANE_SINK_HTTP_PORT (0 disables the endpoint)",
            ) from exc
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> QueryServer:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="sink-sql-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(10)
            self._thread = None
        self.server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "trustplane-sink"
            timeout = REQUEST_TIMEOUT_S

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                log.debug("sql endpoint: " + format, *args)

            def _send(
                self,
                status: int,
                body: bytes,
                content_type: str,
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _json(
                self, status: int, document: Any, headers: dict[str, str] | None = None
            ) -> None:
                self._send(status, json.dumps(document).encode(), "application/json", headers)

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                if self.path == "/healthz":
                    self._json(200, outer.health())
                elif self.path == "/metrics" and outer.registry is not None:
                    self._send(200, generate_latest(outer.registry), "text/plain; version=0.0.4")
                elif self.path == "/queries":
                    self._json(
                        200,
                        [
                            {"name": q.name, "title": q.title, "description": q.description}
                            for q in named_queries().values()
                        ],
                    )
                else:
                    self._json(404, {"error": {"type": "NotFound", "reason": self.path}})

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                if self.path != "/sql":
                    self._json(404, {"error": {"type": "NotFound", "reason": self.path}})
                    return
                try:
                    outer.token.verify(self.headers.get("Authorization"))
                except AuthenticationError as exc:
                    self.close_connection = True
                    self._json(
                        401,
                        _error_document(exc),
                        {"WWW-Authenticate": 'Bearer realm="trustplane-sink"'},
                    )
                    return
                if (self.headers.get("Content-Type") or "").split(";")[0] != "application/json":
                    self._json(
                        415,
                        {"error": {"type": "UnsupportedMediaType", "reason": "send JSON"}},
                    )
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 < length <= MAX_REQUEST_BYTES:
                    self._json(413, {"error": {"type": "BadRequest", "reason": "body size"}})
                    return
                try:
                    request = json.loads(self.rfile.read(length))
                    sql = request["sql"]
                    params = request.get("params") or {}
                    if not isinstance(sql, str) or not isinstance(params, dict):
                        raise TypeError("sql must be text and params an object")
                except (ValueError, KeyError, TypeError) as exc:
                    self._json(400, {"error": {"type": "BadRequest", "reason": str(exc)}})
                    return
                try:
                    result = outer.sink.query(sql, params)
                except (SqlGuardError, QueryError) as exc:
                    self._json(400, _error_document(exc))
                    return
                except QueryBusyError as exc:
                    self._json(429, _error_document(exc), {"Retry-After": "1"})
                    return
                except SinkError as exc:
                    self._json(503, _error_document(exc))
                    return
                except Exception as exc:  # noqa: BLE001 - answer, log, keep serving
                    log.exception("sql endpoint failed")
                    self._json(500, _error_document(exc))
                    return
                self._json(200, result.to_json())

        return Handler


def _endpoint_token(sink: Sink, token: str | None, token_file: Path | None) -> BearerToken:
    if token:
        return BearerToken.configured(token, setting=TOKEN_SETTING)
    if token_file is None:
        folder = getattr(sink, "path", None)
        if folder is None:
            # a server-backed sink has no folder of ours: a token no client knows, so
            # the endpoint answers no query until the caller passes token_file
            log.warning(
                "the SQL endpoint has no token file (pass token_file); it refuses every query"
            )
            return BearerToken(secrets.token_urlsafe(32), "generated")
        token_file = sql_token_file(Path(folder).parent)
    return BearerToken.from_file(token_file)
