"""Asking the sink's SQL endpoint (or the store itself) from another process."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from processors.exceptions import TrustplaneError
from sinks.base import ParamValue, QueryError, QueryResult, SinkError, SinkUnavailableError
from sinks.clickhouse.backends import QueryBusyError
from sinks.sql_guard import SqlGuardError, SqlSyntaxError
from streams.httpauth import AuthenticationError, bearer_header, read_token_file
from streams.sink.config import SinkConfig, build_sink
from streams.sink.sql_server import sql_token_file

__all__ = ["QueryTarget", "SinkQueryClient", "open_query_target"]


class QueryTarget(Protocol):
    """Anything ``trustplane sql`` can ask: the sink's endpoint, a sink, a server."""

    @property
    def description(self) -> str: ...

    def query(
        self,
        sql: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        readonly: bool = True,
    ) -> QueryResult: ...

    def close(self) -> None: ...


_ERROR_TYPES: dict[str, type[TrustplaneError]] = {
    "SqlGuardError": SqlGuardError,
    "SqlSyntaxError": SqlSyntaxError,
    "QueryError": QueryError,
    "MigrationError": SinkError,
    "SinkUnavailableError": SinkUnavailableError,
    "QueryBusyError": QueryBusyError,
    "AuthenticationError": AuthenticationError,
}


class SinkQueryClient:
    """Query the sink's endpoint; errors come back as the sink raised them.

    Each query carries the endpoint's bearer token: ``token``, else the one in
    ``token_file`` (read at each query, so a client made before the sink wrote the file
    works once it has).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_s: float = 90.0,
        token: str | None = None,
        token_file: Path | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout_s = timeout_s
        self.token = token
        self.token_file = token_file
        self.description = f"the lineage sink at {self.endpoint}"

    def _token(self) -> str | None:
        if self.token:
            return self.token
        return read_token_file(self.token_file) if self.token_file is not None else None

    def health(self, timeout_s: float = 2.0) -> dict[str, Any] | None:
        """The sink's /healthz document, or None when nothing answers."""
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own loopback endpoint
                f"{self.endpoint}/healthz", timeout=timeout_s
            ) as response:
                document = json.loads(response.read())
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    def query(
        self,
        sql: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        readonly: bool = True,
    ) -> QueryResult:
        if not readonly:
            raise SqlGuardError(
                "the sink's SQL endpoint only reads",
                hint="writes need a ClickHouse server (clickhouse_url) and `trustplane sql "
                "--write`; the embedded store is written by the sink only",
            )
        body = json.dumps({"sql": sql, "params": dict(params or {})}).encode()
        request = urllib.request.Request(  # noqa: S310 - our own loopback endpoint
            f"{self.endpoint}/sql",
            data=body,
            headers={"Content-Type": "application/json", **bearer_header(self._token())},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return QueryResult.from_json(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            raise self._error_from(exc.code, raw) from None
        except (OSError, ValueError) as exc:
            raise SinkUnavailableError(
                f"the lineage sink at {self.endpoint} does not answer: {exc}",
                hint="is `trustplane sink` running? its port is TRUSTPLANE_SINK_HTTP_PORT",
            ) from exc

    def close(self) -> None:
        return None

    def _error_from(self, status: int, raw: bytes) -> TrustplaneError:
        error = _error_from(status, raw)
        if isinstance(error, AuthenticationError):
            if self.token:
                used = "the configured token (sink_sql_token)"
            elif self.token_file is not None:
                missing = "" if self._token() else ", which does not exist or is empty"
                used = f"the token file {self.token_file}{missing}"
            else:
                used = "no token"
            return AuthenticationError(
                f"the lineage sink refused the query: {error.reason} (this client used {used})",
                hint="run as the user that runs `trustplane sink`, with the same state_dir "
                "(the token file is <state_dir>/sink/sql.token, mode 0600), or give both the "
                "same sink_sql_token",
            )
        return error


def _error_from(status: int, raw: bytes) -> TrustplaneError:
    try:
        error = json.loads(raw)["error"]
        kind = _ERROR_TYPES.get(str(error.get("type")), SinkError)
        reason = str(error.get("reason"))
        hint = error.get("hint")
    except (ValueError, KeyError, TypeError, AttributeError):
        return SinkError(f"the lineage sink answered HTTP {status}: {raw[:200]!r}")
    if kind is QueryError:
        return QueryError(reason, code=int(error.get("code") or 0), hint=hint)
    return kind(reason, hint=hint)


def open_query_target(
    config: SinkConfig, *, token: str | None = None, token_file: Path | None = None
) -> QueryTarget:
    """Where ``trustplane sql`` sends its queries.

    A ClickHouse URL: the server, directly. Else the running sink's endpoint, with the
    bearer token ``token`` or the one in ``token_file`` (default:
    ``<state_dir>/sink/sql.token``, the state folder being the chDB folder's parent); if
    no sink answers, the chDB folder opened read-only in this process (chDB's lock
    guarantees it is not open anywhere else; if it is, the error says by whom).
    """
    if config.clickhouse_url:
        sink = build_sink(config)
        sink.setup(migrate=False)
        return sink
    client = SinkQueryClient(
        config.endpoint,
        timeout_s=config.query_timeout_s + 30,
        token=token,
        token_file=token_file or sql_token_file(config.data_dir.parent),
    )
    if config.http_port and client.health() is not None:
        return client
    sink = build_sink(config)
    try:
        sink.setup(migrate=False)
    except SinkUnavailableError as exc:
        if "in use" in exc.reason:
            raise SinkUnavailableError(
                f"{exc.reason}, but no sink answers at {config.endpoint}",
                hint="query the process that owns the folder; if it is `trustplane sink`, give "
                "both the same TRUSTPLANE_SINK_HTTP_PORT",
            ) from exc
        raise
    return sink
