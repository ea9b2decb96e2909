"""The read-only proof endpoint: ``/checkpoint``, ``/vkey``, ``/healthz``,
``/proof/inclusion`` and ``/proof/consistency``, answered from committed state only, and
``/metrics`` for Prometheus (:mod:`streams.notary.metrics`)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from processors.exceptions import ConfigError, TrustplaneError
from streams.config import Settings
from streams.httpauth import AuthenticationError, BearerToken, is_loopback
from streams.notary.exceptions import NotaryServiceError, ProofRequestError
from streams.notary.log import NotaryLog

if TYPE_CHECKING:
    from streams.gate.metrics import GroupLag
    from streams.notary.metrics import NotaryMetrics

__all__ = [
    "DEFAULT_PORT",
    "notary_port",
    "notary_bind",
    "notary_token",
    "handle_request",
    "NotaryHTTPServer",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 6067


def notary_port(settings: Settings) -> int:
    """Port of the proof endpoint: setting ``notary_port``, default 6067."""
    value = getattr(settings, "notary_port", None)
    return DEFAULT_PORT if value is None else int(value)


def notary_bind(settings: Settings) -> str:
    """Address of the proof endpoint: setting ``notary_bind``, default 127.0.0.1."""
    return str(getattr(settings, "notary_bind", None) or "127.0.0.1")


def notary_token(settings: Settings) -> BearerToken | None:
    """The bearer token the proof endpoint requires: setting ``notary_token`` (none: the
    endpoint answers anyone who can reach it, so it must then listen on loopback)."""
    value = str(getattr(settings, "notary_token", None) or "")
    return BearerToken.configured(value, setting="TRUSTPLANE_NOTARY_TOKEN") if value else None


def _query_int(query: Mapping[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values:
        return None
    text = values[-1]
    if not text.isdigit() or len(text) > 20:
        raise ProofRequestError(f"{name}={text!r} is not a non-negative integer", status=400)
    return int(text)


METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def handle_request(
    source: NotaryLog | None,
    vkey: str,
    target: str,
    metrics: Callable[[], bytes] | None = None,
) -> tuple[int, str, bytes]:
    """Answer one GET request: (status, content type, body). ``source`` is None while
    the notary is still restoring; ``metrics`` gives the ``/metrics`` exposition."""
    parts = urlsplit(target)
    query = parse_qs(parts.query)
    path = parts.path.rstrip("/") or "/"
    try:
        if path == "/vkey":
            return 200, "text/plain; charset=utf-8", (vkey + "\n").encode()
        if path == "/metrics" and metrics is not None:  # answers while restoring, too
            return 200, METRICS_CONTENT_TYPE, metrics()
        if source is None:
            raise ProofRequestError(
                "the notary is restoring its log", status=503, hint="retry in a few seconds"
            )
        if path == "/healthz":
            return 200, "application/json", json.dumps(source.status()).encode()
        if path == "/checkpoint":
            latest = source.latest()
            if latest is None:
                raise ProofRequestError("no checkpoint yet", status=503, hint="retry in a second")
            return 200, "text/plain; charset=utf-8", latest[1].encode()
        if path == "/proof/inclusion":
            event_ids = query.get("event_id")
            answer = source.inclusion(
                event_id=event_ids[-1] if event_ids else None, index=_query_int(query, "index")
            )
            return 200, "application/json", json.dumps(answer).encode()
        if path == "/proof/consistency":
            old = _query_int(query, "old")
            if old is None:
                raise ProofRequestError("old=N is required", status=400)
            answer = source.consistency(old, _query_int(query, "new"))
            return 200, "application/json", json.dumps(answer).encode()
        raise ProofRequestError(
            f"no such resource {path}",
            status=404,
            hint="GET /checkpoint, /vkey, /healthz, /metrics, "
            "/proof/inclusion?event_id=…|index=…, /proof/consistency?old=N&new=M",
        )
    except ProofRequestError as exc:
        body = json.dumps({"error": exc.reason, "hint": exc.hint}).encode()
        return exc.status, "application/json", body
    except TrustplaneError as exc:
        log.error("cannot answer %s: %s", target, exc.diagnostics())
        body = json.dumps({"error": exc.reason, "hint": exc.hint}).encode()
        return 500, "application/json", body
    except Exception as exc:  # noqa: BLE001 - e.g. Kafka unreachable: say so, keep serving
        log.exception("cannot answer %s", target)
        body = json.dumps({"error": f"{type(exc).__name__}: {exc}", "hint": None}).encode()
        return 500, "application/json", body


class NotaryHTTPServer:
    """The read-only proof endpoint, on a stdlib HTTP server in a daemon thread.

    Every page but ``/healthz`` needs ``token`` when one is given (``/metrics`` too:
    Prometheus sends it as a bearer token). ``lag``: the notary group's lag on
    ``lineage``, which ``/metrics`` then shows too."""

    def __init__(
        self,
        source: Callable[[], NotaryLog | None],
        vkey: str,
        host: str,
        port: int,
        *,
        token: BearerToken | None = None,
        lag: GroupLag | None = None,
    ) -> None:
        self.source = source
        self.vkey = vkey
        self.metrics = _metrics(source, lag)
        if token is None and not is_loopback(host):
            raise ConfigError(
                f"the notary's proof endpoint would listen on {host!r}, which other machines "
                "can reach, with no token",
                hint="keep notary_bind = 127.0.0.1 (the default), or set "
                "TRUSTPLANE_NOTARY_TOKEN to a secret of at least 32 characters",
            )

        server_self = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "trustplane-notary"

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                try:
                    if token is not None and not self.path.startswith("/healthz"):
                        token.verify(self.headers.get("Authorization"))
                    metrics = server_self.metrics
                    status, content_type, body = handle_request(
                        server_self.source(),
                        server_self.vkey,
                        self.path,
                        metrics.exposition if metrics is not None else None,
                    )
                except AuthenticationError as exc:
                    status, content_type = HTTPStatus.UNAUTHORIZED, "application/json"
                    body = json.dumps({"error": exc.reason, "hint": exc.hint}).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                if status == HTTPStatus.SERVICE_UNAVAILABLE:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    log.debug("http: the client of %s left before the answer", self.path)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
                log.debug("http: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise NotaryServiceError(
                f"cannot serve proofs on {host}:{port}: {exc.strerror or exc}",
                hint="another notary may be running; set TRUSTPLANE_NOTARY_PORT to a free port",
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="notary-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> NotaryHTTPServer:
        if self.metrics is not None:
            self.metrics.start()
        self._thread.start()
        return self

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


def _metrics(source: Callable[[], NotaryLog | None], lag: GroupLag | None) -> NotaryMetrics | None:
    """The notary's metrics, or None where prometheus-client is not installed (the
    notary then answers ``/metrics`` with 404)."""
    try:
        from streams.notary.metrics import NotaryMetrics
    except ImportError:  # pragma: no cover - installed with the gate and sink extras
        log.warning("prometheus-client is not installed: the notary serves no /metrics")
        return None
    return NotaryMetrics(source, lag=lag)
