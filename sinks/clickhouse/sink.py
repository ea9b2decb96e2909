"""The lineage store: :class:`ClickHouseSink`, on chDB or on a ClickHouse server."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sinks.base import ParamValue, QueryError, QueryResult, Sink, SinkError
from sinks.clickhouse.backends import Backend, ChdbBackend, ConnectBackend, redact
from sinks.clickhouse.migrations import SQL_DIR, apply_migrations, load_migrations
from sinks.clickhouse.results import parse_json_compact
from sinks.clickhouse.tables import TABLES
from sinks.sql_guard import (
    READ_ONLY_STATEMENTS,
    SqlGuardError,
    check_read_only,
    split_statements,
    tokenize,
)

__all__ = ["ClickHouseSink", "DEFAULT_QUERY_TIMEOUT_S", "DEFAULT_MAX_RESULT_ROWS"]

DEFAULT_QUERY_TIMEOUT_S = 60
DEFAULT_MAX_RESULT_ROWS = 100_000
# DateTime64(3) covers 1900-01-01 .. 2299-12-31; refuse times outside instead of storing junk

# -- the sink ---------------------------------------------------------------------


class ClickHouseSink(Sink):
    """The lineage store: chDB on ``path``, or a ClickHouse server at ``url``.

    Give exactly one of ``path`` (embedded chDB folder), ``url``
    (``http://user:pass@host:8123/db``) or ``client`` (a ready clickhouse-connect client).
    Not thread-safe for writing (one runner adds and flushes); ``query`` may be called
    from other threads.
    """

    def __init__(
        self,
        *,
        path: Path | None = None,
        url: str | None = None,
        client: Any = None,
        migrations_dir: Path = SQL_DIR,
        query_timeout_s: int = DEFAULT_QUERY_TIMEOUT_S,
        max_result_rows: int = DEFAULT_MAX_RESULT_ROWS,
    ) -> None:
        given = sum(x is not None and x != "" for x in (path, url, client))
        if given != 1:
            raise SinkError(
                "give exactly one of a chDB folder, a ClickHouse URL or a client",
                hint="set clickhouse_url for a server; leave it empty for the embedded store",
            )
        self.path = path
        self.url = url or None
        self.client = client
        self.migrations_dir = migrations_dir
        self.query_timeout_s = query_timeout_s
        self.max_result_rows = max_result_rows
        self.applied: list[str] = []
        self._backend: Backend | None = None
        self._buffers: dict[str, list[Mapping[str, Any]]] = {name: [] for name in TABLES}
        self._pending = 0
        self.rows_written = 0

    # -- lifecycle

    @property
    def backend(self) -> str:
        """``chdb`` or ``http``."""
        return "chdb" if self.path is not None else "http"

    @property
    def description(self) -> str:
        if self._backend is not None:
            return self._backend.description
        return f"chDB at {self.path}" if self.path is not None else redact(self.url or "client")

    def setup(self, *, migrate: bool = True) -> None:
        """Connect; with ``migrate`` (the default) apply the pending migrations.

        ``migrate=False`` opens an existing store to query it (a chDB folder must exist).
        """
        if self._backend is not None:
            return
        if self.path is not None:
            backend: Backend = ChdbBackend(
                self.path,
                timeout_s=self.query_timeout_s,
                max_rows=self.max_result_rows,
                create=migrate,
            )
        elif self.url is not None:
            backend = ConnectBackend.from_url(
                self.url, timeout_s=self.query_timeout_s, max_rows=self.max_result_rows
            )
        else:
            backend = ConnectBackend(
                self.client,
                description="ClickHouse (given client)",
                timeout_s=self.query_timeout_s,
                max_rows=self.max_result_rows,
            )
        try:
            if migrate:
                self.applied = apply_migrations(backend, load_migrations(self.migrations_dir))
        except BaseException:
            backend.close()
            raise
        self._backend = backend

    def _require(self) -> Backend:
        if self._backend is None:
            raise SinkError("the ClickHouse sink is not set up", hint="call setup() first")
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # -- writing

    def add(self, table: str, row: Mapping[str, Any]) -> None:
        spec = TABLES.get(table)
        if spec is None:
            raise SinkError(
                f"no table {table!r} in the lineage store", hint=f"tables: {', '.join(TABLES)}"
            )
        if row.keys() != spec.column_set:
            row = spec.complete(table, row)
        self._buffers[table].append(row)
        self._pending += 1

    @property
    def pending(self) -> int:
        return self._pending

    def discard(self) -> int:
        dropped = self._pending
        for rows in self._buffers.values():
            rows.clear()
        self._pending = 0
        return dropped

    def flush(self) -> int:
        backend = self._require()
        written = 0
        for name, rows in self._buffers.items():
            if not rows:
                continue
            spec = TABLES[name]
            data = [[row[column] for row in rows] for column in spec.columns]
            backend.insert(spec.storage, spec.columns, data)
            written += len(rows)
            self._pending -= len(rows)
            rows.clear()
        self.rows_written += written
        return written

    # -- reading

    def query(
        self,
        sql: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        readonly: bool = True,
    ) -> QueryResult:
        backend = self._require()
        if readonly:
            statement = check_read_only(sql).sql
        else:
            statements = split_statements(sql)
            if len(statements) != 1:
                raise SqlGuardError(
                    f"{len(statements)} statements given; exactly one runs at a time",
                    hint="send one statement per call",
                )
            statement = statements[0]
            first = tokenize(statement)[0].upper
            if first not in READ_ONLY_STATEMENTS:
                # a write: run as a command (no result set, no FORMAT appended)
                if params:
                    raise QueryError(
                        "parameters are only bound in queries that return rows",
                        hint="write the values into the statement",
                    )
                started = time.perf_counter()
                backend.execute(statement)
                return QueryResult((), (), [], (time.perf_counter() - started) * 1000)
        bound = _params(statement, params or {})
        started = time.perf_counter()
        raw = backend.select(statement, bound, readonly=readonly)
        return parse_json_compact(raw, elapsed_ms=(time.perf_counter() - started) * 1000)

    def count(self, table: str) -> int:
        """Rows of a table or view (read through the deduplicating view for logical names)."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
            raise SinkError(f"not a table name: {table!r}")
        return int(self.query(f"SELECT count() FROM {table}").scalar())  # noqa: S608


_PLACEHOLDER_RE = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")


def _params(sql: str, params: Mapping[str, ParamValue]) -> dict[str, str]:
    """Check ``params`` against the ``{name:Type}`` placeholders; values as text."""
    wanted = set(_PLACEHOLDER_RE.findall(sql))
    unknown = sorted(set(params) - wanted)
    if unknown:
        raise QueryError(
            f"parameter(s) {', '.join(unknown)} not used by the query",
            hint="refer to a parameter as {name:Type}, e.g. WHERE agent_id = {agent:String}",
        )
    missing = sorted(wanted - set(params))
    if missing:
        raise QueryError(
            f"the query needs a value for {', '.join(missing)}",
            hint="pass it with --param name=value",
        )
    bound: dict[str, str] = {}
    for name, value in params.items():
        if isinstance(value, bool):
            bound[name] = "1" if value else "0"
        elif value is None:
            bound[name] = "\\N"
        else:
            bound[name] = str(value)
    return bound
