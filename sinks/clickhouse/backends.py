"""Where the SQL runs: chDB on a local folder, or a ClickHouse server via clickhouse-connect.

Both take the same statements and answer ``JSONCompact`` bytes (``results.py`` reads
them). Inserts carry an ``insert_deduplication_token`` (the SHA-256 of the block), so a
retried flush is dropped at once.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from sinks.base import MigrationError, SinkError, SinkUnavailableError
from sinks.clickhouse.results import parse_json_compact, query_error

__all__ = ["Backend", "ChdbBackend", "ConnectBackend", "redact"]

# -- backends ---------------------------------------------------------------------


class Backend(Protocol):
    kind: str
    description: str

    def execute(self, sql: str) -> None: ...

    def insert(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None: ...

    def select(self, sql: str, params: Mapping[str, str], *, readonly: bool) -> bytes: ...

    def close(self) -> None: ...


def _token(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
        digest.update(b"\x1f")
    return digest.hexdigest()


def _readonly_settings(timeout_s: int, max_rows: int) -> dict[str, str]:
    # readonly last: in a SETTINGS clause the settings are applied in order
    return {
        "max_execution_time": str(timeout_s),
        "max_result_rows": str(max_rows),
        "result_overflow_mode": "throw",
        "readonly": "1",
    }


class ChdbBackend:
    """chDB on a data folder: a writer connection, and a ``readonly=1`` one for queries."""

    kind = "chdb"

    def __init__(self, path: Path, *, timeout_s: int, max_rows: int, create: bool) -> None:
        self.path = path.resolve()
        self.description = f"chDB at {self.path}"
        if not create and not (self.path / "metadata").is_dir():
            raise SinkUnavailableError(
                f"there is no lineage store at {self.path}",
                hint="run `trustplane sink` once: it creates the store and fills it from Kafka",
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self._chdb: Any = importlib.import_module("chdb")
        self._reader_settings = _readonly_settings(timeout_s, max_rows)
        self._writer: Any = self._connect(str(self.path))
        self._reader: Any = None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()

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
                raise query_error(str(exc), sql) from exc

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
                raise SinkError(
                    f"chDB refused {len(data[0]) if data else 0} rows for {table}: {exc}",
                    hint=f"check the disk and the folder {self.path}",
                ) from exc

    def select(self, sql: str, params: Mapping[str, str], *, readonly: bool) -> bytes:
        if readonly:
            with self._read_lock:
                if self._reader is None:
                    options = "&".join(f"{k}={v}" for k, v in self._reader_settings.items())
                    self._reader = self._connect(f"{self.path}?{options}")
                return self._run(self._reader, sql, params)
        with self._write_lock:
            return self._run(self._writer, sql, params)

    def _run(self, conn: Any, sql: str, params: Mapping[str, str]) -> bytes:
        try:
            result = conn.query(sql, "JSONCompact", params=dict(params))
        except Exception as exc:  # noqa: BLE001 - chdb raises ChdbError (an Exception)
            raise query_error(str(exc), sql) from exc
        data = result.bytes()
        return bytes(data) if data is not None else b""

    def close(self) -> None:
        for name in ("_reader", "_writer"):
            conn = getattr(self, name, None)
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001, S110 - closing is best effort
                    pass
                setattr(self, name, None)


class ConnectBackend:
    """A ClickHouse server (or any clickhouse-connect client) over HTTP."""

    kind = "http"

    def __init__(self, client: Any, *, description: str, timeout_s: int, max_rows: int) -> None:
        self.client = client
        self.description = description
        self._readonly = _readonly_settings(timeout_s, max_rows)
        self._types: dict[str, list[str]] = {}
        self._errors: tuple[type[BaseException], ...] = _connect_errors()

    @classmethod
    def from_url(cls, url: str, *, timeout_s: int, max_rows: int) -> ConnectBackend:
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
            client, description=f"ClickHouse at {shown}", timeout_s=timeout_s, max_rows=max_rows
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
