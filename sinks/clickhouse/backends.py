"""Where the SQL runs: chDB on a local folder, or a ClickHouse server via clickhouse-connect.

Both take the same statements and answer ``JSONCompact`` bytes (``results.py`` reads
them). Inserts carry an ``insert_deduplication_token`` (the SHA-256 of the block), so a
retried flush is dropped at once.

Read-only queries (``select(..., readonly=True)``) pass the SQL guard
(:class:`sinks.sql_guard.SqlGuard`, on the engine's own parser) and then run with
``readonly=1`` and the :class:`ReaderLimits` (memory, time, rows and bytes read, result
size). On chDB they run on a small pool of reader connections of their own, never on the
writer's: a slow query does not hold up the sink's writes, nor, up to the pool's size,
the other readers; when every reader is busy a caller waits ``reader_wait_s`` at most,
then gets :class:`QueryBusyError`. A reader whose query failed is closed, not reused:
chDB keeps the output a failed query had already produced (its first rows, say) in the
connection and hands it to the connection's next query, which would be someone else's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sinks.base import MigrationError, SinkError, SinkUnavailableError
from sinks.clickhouse.results import parse_json_compact, query_error
from sinks.sql_guard import QueryRunner, SqlGuard

__all__ = [
    "Backend",
    "ChdbBackend",
    "ConnectBackend",
    "ReaderLimits",
    "QueryBusyError",
    "redact",
    "DEFAULT_READERS",
    "DEFAULT_READER_WAIT_S",
]

log = logging.getLogger(__name__)

DEFAULT_READERS = 2
"""Reader connections of a chDB store: read-only queries that may run at once."""
DEFAULT_READER_WAIT_S = 1.0
"""How long a read-only query waits for a free reader before :class:`QueryBusyError`."""


class QueryBusyError(SinkUnavailableError):
    """Every reader connection is running a query; try again in a moment."""


@dataclass(frozen=True)
class ReaderLimits:
    """What one read-only query may use, as ClickHouse settings on its connection.

    ``readonly=1`` (set with them, last) also forbids a query to change them: a
    ``SETTINGS max_memory_usage=0`` is refused by the engine, not only by the guard.
    """

    max_execution_time_s: int = 60
    max_memory_usage: int = 100_000_000
    """Bytes of memory per query (~95 MiB); beyond it the query stops with code 241."""
    max_threads: int = 1
    """Threads per query: readers must not starve the sink's writer of CPU."""
    max_rows_to_read: int = 100_000_000
    max_bytes_to_read: int = 5_000_000_000
    max_result_rows: int = 100_000
    max_result_bytes: int = 50_000_000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 1:
                raise SinkError(
                    f"the reader limit {f.name} must be >= 1, got {getattr(self, f.name)}",
                    hint="every limit is on; a larger value is a looser limit",
                )

    def settings(self) -> dict[str, str]:
        # readonly last: in a SETTINGS clause the settings are applied in order
        return {
            "max_execution_time": str(self.max_execution_time_s),
            "timeout_overflow_mode": "throw",
            "max_memory_usage": str(self.max_memory_usage),
            "max_threads": str(self.max_threads),
            "max_rows_to_read": str(self.max_rows_to_read),
            "max_bytes_to_read": str(self.max_bytes_to_read),
            "read_overflow_mode": "throw",
            "max_result_rows": str(self.max_result_rows),
            "max_result_bytes": str(self.max_result_bytes),
            "result_overflow_mode": "throw",
            "readonly": "1",
        }


def _limits(limits: ReaderLimits | None, timeout_s: int, max_rows: int) -> ReaderLimits:
    return dataclasses.replace(
        limits or ReaderLimits(), max_execution_time_s=timeout_s, max_result_rows=max_rows
    )


# -- backends ---------------------------------------------------------------------


class Backend(Protocol):
    kind: str
    description: str

    def execute(self, sql: str) -> None: ...

    def insert(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None: ...

    def select(self, sql: str, params: Mapping[str, str], *, readonly: bool) -> bytes: ...

    def reader(self) -> contextlib.AbstractContextManager[QueryRunner]: ...

    def close(self) -> None: ...


def _token(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
        digest.update(b"\x1f")
    return digest.hexdigest()


def _escape_param(value: str) -> str:
    """A text value as chDB's ``params`` want it (the Escaped format of TSV)."""
    return (
        value.replace("\\", "\\\\")
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
        .replace("\0", "\\0")
    )


class _ReaderPool:
    """At most ``size`` reader connections, lent one caller at a time.

    A connection comes back to the pool only after a query that succeeded; after a
    failure it is closed (its output buffer may still hold the failed query's rows).
    """

    def __init__(self, connect: Callable[[], Any], size: int, wait_s: float) -> None:
        if size < 1:
            raise SinkError(f"a store needs at least one reader connection, got {size}")
        self._connect = connect
        self.size = size
        self.wait_s = wait_s
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Any]:
        if not self._slots.acquire(timeout=self.wait_s):
            raise QueryBusyError(
                f"all {self.size} reader connections of the lineage store are busy "
                f"(waited {self.wait_s:g} s)",
                hint="try again in a moment; long queries hold a reader until they end or "
                "reach max_execution_time",
            )
        try:
            with self._lock:
                if self._closed:
                    raise SinkUnavailableError("the lineage store is closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            clean = False
            try:
                yield conn
                clean = True
            finally:
                with self._lock:
                    keep = clean and not self._closed
                    if keep:
                        self._idle.append(conn)
                if not keep:
                    _close_quietly(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001, S110 - closing is best effort
        pass


class ChdbBackend:
    """chDB on a data folder: a writer connection, and a pool of ``readonly=1`` readers."""

    kind = "chdb"

    def __init__(
        self,
        path: Path,
        *,
        timeout_s: int,
        max_rows: int,
        create: bool,
        limits: ReaderLimits | None = None,
        readers: int = DEFAULT_READERS,
        reader_wait_s: float = DEFAULT_READER_WAIT_S,
    ) -> None:
        self.path = path.resolve()
        self.description = f"chDB at {self.path}"
        if not create and not (self.path / "metadata").is_dir():
            raise SinkUnavailableError(
                f"there is no lineage store at {self.path}",
                hint="run `trustplane sink` once: it creates the store and fills it from Kafka",
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self._chdb: Any = importlib.import_module("chdb")
        self.limits = _limits(limits, timeout_s, max_rows)
        options = "&".join(f"{k}={v}" for k, v in self.limits.settings().items())
        self._writer: Any = self._connect(str(self.path))
        self._write_lock = threading.Lock()
        self._readers = _ReaderPool(
            lambda: self._connect(f"{self.path}?{options}"), readers, reader_wait_s
        )
        self._guard: SqlGuard | None = None
        self._guard_lock = threading.Lock()

    def _connect(self, target: str) -> Any:
        try:
            return self._chdb.connect(target)
        except RuntimeError as exc:
            raise self._open_error(exc) from exc

    def _open_error(self, exc: RuntimeError) -> SinkUnavailableError:
        status = self.path / "status"
        owner = ""
        try:
            first = status.read_text(errors="replace").splitlines()[0]
            owner = f" ({first.strip().lower()})" if first.startswith("PID") else ""
        except (OSError, IndexError):
            pass
        message = str(exc)
        if "another path" in message or "different" in message:
            return SinkUnavailableError(
                f"this process already has a chDB engine open on another folder, "
                f"so it cannot open {self.path}: {message}",
                hint="chDB hosts one data folder per process; close the other ClickHouseSink first",
            )
        return SinkUnavailableError(
            f"the chDB folder {self.path} is in use by another process{owner}",
            hint="a chDB folder is owned by one process, normally `trustplane sink`: query "
            "through it (`trustplane sql` does), or stop it first",
        )

    def execute(self, sql: str) -> None:
        with self._write_lock:
            try:
                self._writer.query(sql)
            except Exception as exc:  # noqa: BLE001 - chdb raises its own ChdbError/RuntimeError
                self._drain_writer()
                raise query_error(str(exc), sql) from exc

    def _drain_writer(self) -> None:
        """Empty what a failed statement left in the writer's output (under the lock)."""
        try:
            self._writer.query("SELECT 1", "JSONCompact")
        except Exception:  # noqa: BLE001, S110 - the next statement reports any real trouble
            pass

    def insert(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        payload = json.dumps(dict(zip(columns, data, strict=True)), separators=(",", ":"))
        body = payload.encode()
        token = _token(table.encode(), body)
        statement = (
            f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - names from TABLES
            f"SETTINGS insert_deduplication_token = '{token}'"
        )
        with self._write_lock:
            try:
                with self._writer.send_insert(statement, "JSONColumns") as inserter:
                    inserter.append(body)
                    inserter.finish()
            except Exception as exc:  # noqa: BLE001 - chdb wraps engine errors in RuntimeError
                self._drain_writer()
                raise SinkError(
                    f"chDB refused {len(data[0]) if data else 0} rows for {table}: {exc}",
                    hint=f"check the disk and the folder {self.path}",
                ) from exc

    def select(self, sql: str, params: Mapping[str, str], *, readonly: bool) -> bytes:
        if readonly:
            with self._readers.borrow() as conn:
                self.guard.check(sql, _chdb_runner(conn))
                return _run(conn, sql, params)
        with self._write_lock:
            try:
                return _run(self._writer, sql, params)
            except BaseException:
                self._drain_writer()
                raise

    @property
    def guard(self) -> SqlGuard:
        """The SQL guard of this store (built from its engine on first use)."""
        with self._guard_lock:
            if self._guard is None:
                # the catalogue (~1900 functions) may be longer than max_result_rows allows
                # a query: read it on a connection of its own, readonly=1 without the caps
                catalogue = self._connect(f"{self.path}?readonly=1")
                try:
                    self._guard = SqlGuard.from_engine(_chdb_runner(catalogue))
                finally:
                    _close_quietly(catalogue)
            return self._guard

    @contextlib.contextmanager
    def reader(self) -> Iterator[QueryRunner]:
        """A runner on one reader connection (``readonly=1``, the limits), below the guard.

        For the guard itself and for tests; what people type goes through :meth:`select`.
        """
        with self._readers.borrow() as conn:
            yield _chdb_runner(conn)

    def close(self) -> None:
        readers = getattr(self, "_readers", None)
        if readers is not None:
            readers.close()
        writer = getattr(self, "_writer", None)
        if writer is not None:
            _close_quietly(writer)
            self._writer = None


def _run(conn: Any, sql: str, params: Mapping[str, str]) -> bytes:
    try:
        escaped = {name: _escape_param(value) for name, value in params.items()}
        result = conn.query(sql, "JSONCompact", params=escaped)
    except Exception as exc:  # noqa: BLE001 - chdb raises ChdbError (an Exception)
        raise query_error(str(exc), sql) from exc
    data = result.bytes()
    return bytes(data) if data is not None else b""


def _chdb_runner(conn: Any) -> QueryRunner:
    def run(sql: str, params: Mapping[str, str]) -> bytes:
        escaped = {name: _escape_param(value) for name, value in params.items()}
        try:
            result = conn.query(sql, "JSONCompact", params=escaped)
        except Exception as exc:  # noqa: BLE001 - chdb raises ChdbError (an Exception)
            raise query_error(str(exc)) from exc
        data = result.bytes()
        return bytes(data) if data is not None else b""

    return run


class ConnectBackend:
    """A ClickHouse server (or any clickhouse-connect client) over HTTP."""

    kind = "http"

    def __init__(
        self,
        client: Any,
        *,
        description: str,
        timeout_s: int,
        max_rows: int,
        limits: ReaderLimits | None = None,
    ) -> None:
        self.client = client
        self.description = description
        self.limits = _limits(limits, timeout_s, max_rows)
        self._readonly = self.limits.settings()
        self._types: dict[str, list[str]] = {}
        self._errors: tuple[type[BaseException], ...] = _connect_errors()
        self._guard: SqlGuard | None = None
        self._guard_known = False
        self._guard_lock = threading.Lock()

    @classmethod
    def from_url(
        cls, url: str, *, timeout_s: int, max_rows: int, limits: ReaderLimits | None = None
    ) -> ConnectBackend:
        module: Any = importlib.import_module("clickhouse_connect")
        shown = redact(url)
        try:
            client = module.get_client(
                dsn=url,
                autogenerate_session_id=False,
                connect_timeout=10,
                send_receive_timeout=max(timeout_s + 10, 30),
            )
        except Exception as exc:  # noqa: BLE001 - network, auth and DSN errors alike
            raise SinkUnavailableError(
                f"cannot connect to ClickHouse at {shown}: {exc}",
                hint="check the URL (http://user:password@host:8123/database), that the "
                "server is up, and that the database exists",
            ) from exc
        return cls(
            client,
            description=f"ClickHouse at {shown}",
            timeout_s=timeout_s,
            max_rows=max_rows,
            limits=limits,
        )

    def execute(self, sql: str) -> None:
        try:
            self.client.command(sql)
        except self._errors as exc:
            raise query_error(str(exc), sql) from exc

    def _column_types(self, table: str, columns: Sequence[str]) -> list[str]:
        types = self._types.get(table)
        if types is None:
            result = parse_json_compact(
                self.select(f"DESCRIBE TABLE {table}", {}, readonly=False)  # noqa: S608
            )
            by_name = {row[0]: row[1] for row in result.rows}
            missing = [c for c in columns if c not in by_name]
            if missing:
                raise MigrationError(
                    f"table {table} lacks columns {', '.join(missing)}",
                    hint="the store's schema is older than this sink; check schema_migrations",
                )
            types = [str(by_name[c]) for c in columns]
            self._types[table] = types
        return types

    def insert(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        token = _token(table.encode(), json.dumps(data, separators=(",", ":")).encode())
        try:
            self.client.insert(
                table,
                data,
                column_names=list(columns),
                column_type_names=self._column_types(table, columns),
                column_oriented=True,
                settings={"insert_deduplication_token": token},
            )
        except self._errors as exc:
            raise SinkError(
                f"ClickHouse refused {len(data[0]) if data else 0} rows for {table}: {exc}",
                hint=f"is {self.description} up and writable?",
            ) from exc

    def select(self, sql: str, params: Mapping[str, str], *, readonly: bool) -> bytes:
        if readonly:
            guard = self._server_guard()
            if guard is not None:
                guard.check(sql, self._run_readonly)
        try:
            raw = self.client.raw_query(
                sql,
                parameters=dict(params) or None,
                settings=dict(self._readonly) if readonly else None,
                fmt="JSONCompact",
            )
        except self._errors as exc:
            raise query_error(str(exc), sql) from exc
        return bytes(raw)

    def _run_readonly(self, sql: str, params: Mapping[str, str]) -> bytes:
        try:
            raw = self.client.raw_query(
                sql,
                parameters=dict(params) or None,
                settings=dict(self._readonly),
                fmt="JSONCompact",
            )
        except self._errors as exc:
            raise query_error(str(exc)) from exc
        return bytes(raw)

    def _run_catalogue(self, sql: str, params: Mapping[str, str]) -> bytes:
        """:meth:`_run_readonly` without the result caps (the function catalogue is long)."""
        try:
            raw = self.client.raw_query(
                sql, parameters=dict(params) or None, settings={"readonly": "1"}, fmt="JSONCompact"
            )
        except self._errors as exc:
            raise query_error(str(exc)) from exc
        return bytes(raw)

    def _server_guard(self) -> SqlGuard | None:
        """The SQL guard, when the server has ``parseQueryToJSON`` (else None, once logged:
        the lexical check, ``readonly=1`` and the server's own grants remain)."""
        with self._guard_lock:
            if not self._guard_known:
                found = parse_json_compact(
                    self._run_readonly(
                        "SELECT count() FROM system.functions WHERE name = 'parseQueryToJSON'", {}
                    )
                ).scalar()
                if int(found):
                    self._guard = SqlGuard.from_engine(self._run_catalogue)
                else:
                    log.warning(
                        "%s has no parseQueryToJSON: read-only queries get the lexical check "
                        "and readonly=1 only; give the sink's ClickHouse user read-only grants "
                        "on its database",
                        self.description,
                    )
                self._guard_known = True
            return self._guard

    @contextlib.contextmanager
    def reader(self) -> Iterator[QueryRunner]:
        """A runner with ``readonly=1`` and the limits, below the guard (for tests)."""
        yield self._run_readonly

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001, S110 - closing is best effort
            pass


def _connect_errors() -> tuple[type[BaseException], ...]:
    exceptions: Any = importlib.import_module("clickhouse_connect.driver.exceptions")
    return (exceptions.ClickHouseError, OSError)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)
