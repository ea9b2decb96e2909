"""Lineage analytics in ClickHouse: tables, migrations, the sink, the named queries.

Two backends, one schema and one set of queries:

- **chDB** (default): the ClickHouse engine embedded in this process, on a local data
  folder (``<state_dir>/clickhouse``). A folder can be open in one process only (chDB
  locks it), so the sink process also serves read-only SQL over HTTP
  (``streams/sink.py``) and everyone else queries through it.
- **ClickHouse server** through clickhouse-connect, when a URL such as
  ``http://user:pass@host:8123/db`` is configured.

The DDL is in ``schemas/sql/NNN_*.sql`` (applied once each, recorded in
``schema_migrations`` with a checksum); the analytics queries are in
``schemas/sql/queries/*.sql``. Both work on chDB and on ClickHouse 24.x.

Writes are idempotent: every table is a ReplacingMergeTree keyed on the record id, and
each block is inserted with an ``insert_deduplication_token`` (the SHA-256 of its
content), so a retried flush is dropped at once and a redelivered record is merged
away; the views read ``FINAL``, so queries never count a record twice.

Query results are read as ``JSONCompact`` from both backends and converted the same way,
so the same query returns the same rows from chDB and from a server.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from processors.log.checkpoint import Checkpoint, CheckpointError
from sinks.base import (
    MappingError,
    MigrationError,
    ParamValue,
    QueryError,
    QueryResult,
    Sink,
    SinkError,
    SinkUnavailableError,
)
from sinks.sql_guard import (
    READ_ONLY_STATEMENTS,
    SqlGuardError,
    check_read_only,
    split_statements,
    tokenize,
)

__all__ = [
    "SQL_DIR",
    "QUERIES_DIR",
    "TABLES",
    "TOPIC_RECORDS",
    "TableSpec",
    "Migration",
    "NamedQuery",
    "ClickHouseSink",
    "load_migrations",
    "named_queries",
    "get_named_query",
    "run_named_query",
    "map_record",
    "parse_json_compact",
    "checkpoint_row",
    "checkpoint_from_note",
]

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = PROJECT_ROOT / "schemas" / "sql"
"""Numbered migrations: ``NNN_name.sql``; ``000_*`` is re-applied on every setup."""
QUERIES_DIR = SQL_DIR / "queries"
"""Named analytics queries, one ``name.sql`` each, with a ``-- title:`` header."""

DEFAULT_QUERY_TIMEOUT_S = 60
DEFAULT_MAX_RESULT_ROWS = 100_000
# DateTime64(3) covers 1900-01-01 .. 2299-12-31; refuse times outside instead of storing junk
_MIN_MS = -2_208_988_800_000
_MAX_MS = 10_413_792_000_000 - 1


# -- tables -------------------------------------------------------------------


@dataclass(frozen=True)
class TableSpec:
    """A logical table: where its rows are stored and which columns a row carries."""

    name: str
    """Logical name, used with :meth:`ClickHouseSink.add` (also the deduplicating view)."""
    storage: str
    """The ReplacingMergeTree table the rows go to."""
    columns: tuple[str, ...]
    """Every column a row may give, in insert order."""
    defaults: Mapping[str, Any]
    """Columns a row may leave out, with the value used then."""

    @property
    def required(self) -> frozenset[str]:
        return frozenset(self.columns) - frozenset(self.defaults)

    @functools.cached_property
    def column_set(self) -> frozenset[str]:
        return frozenset(self.columns)

    def complete(self, table: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """``row`` with the defaults filled in; :class:`SinkError` if it does not fit."""
        keys = row.keys()
        missing = sorted(self.required - keys)
        unknown = sorted(keys - self.column_set)
        if missing or unknown:
            raise SinkError(
                f"a {table} row must have the columns {', '.join(self.columns)}; "
                f"missing {missing or 'none'}, unknown {unknown or 'none'}",
                hint="map_record() builds rows from records",
            )
        return {**self.defaults, **row}


_KAFKA = {"kafka_partition": -1, "kafka_offset": -1}
_VERDICT_COLUMNS = (
    "verdict_layers",
    "verdict_statuses",
    "verdict_reasons",
    "verdict_durations_us",
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "lineage_events",
            "lineage_events_raw",
            (
                "event_id",
                "intent_id",
                "agent_id",
                "stage",
                "event_type",
                "status",
                "reasons",
                "attributes",
                "occurred_at_ms",
                "worker",
                "prev_hash",
                "event_hash",
                *_KAFKA,
            ),
            {"prev_hash": None, "event_hash": None, **_KAFKA},
        ),
        TableSpec(
            "decisions",
            "decisions_raw",
            (
                "decision_id",
                "intent_id",
                "agent_id",
                "outcome",
                "reasons",
                *_VERDICT_COLUMNS,
                "intent_digest",
                "decided_at_ms",
                "worker",
                "kafka_topic",
                *_KAFKA,
            ),
            {"kafka_topic": "", **_KAFKA},
        ),
        TableSpec(
            "approvals",
            "approvals_raw",
            (
                "approval_id",
                "intent_id",
                "agent_id",
                "action",
                "resource",
                "intent_digest",
                *_VERDICT_COLUMNS,
                "envelope",
                "issued_at_ms",
                "expires_at_ms",
                "worker",
                *_KAFKA,
            ),
            dict(_KAFKA),
        ),
        TableSpec(
            "rejections",
            "rejections_raw",
            (
                "rejection_id",
                "source_topic",
                "source_partition",
                "source_offset",
                "key",
                "value_sha256",
                "value_prefix_hex",
                "value_size",
                "reason_code",
                "reason",
                "rejected_at_ms",
                "worker",
                *_KAFKA,
            ),
            dict(_KAFKA),
        ),
        TableSpec(
            "outcomes",
            "outcomes_raw",
            (
                "outcome_id",
                "approval_id",
                "intent_id",
                "agent_id",
                "executor_id",
                "status",
                "detail",
                "reported_at_ms",
                *_KAFKA,
            ),
            dict(_KAFKA),
        ),
        TableSpec(
            "checkpoints",
            "checkpoints_raw",
            ("origin", "tree_size", "root_hash", "note", "created_at_ms"),
            {},
        ),
    )
}
"""Every table the sink writes, by logical name."""

TOPIC_RECORDS: dict[str, tuple[str, str]] = {
    "lineage": ("dev.trustplane.LineageEvent", "lineage_events"),
    "approved": ("dev.trustplane.Approval", "approvals"),
    "denied": ("dev.trustplane.Decision", "decisions"),
    "review": ("dev.trustplane.Decision", "decisions"),
    "rejected": ("dev.trustplane.Rejection", "rejections"),
    "outcomes": ("dev.trustplane.Outcome", "outcomes"),
}
"""Logical topic -> (the record type it carries, the table its rows go to)."""


# -- records to rows ------------------------------------------------------------
#
# Records come from the codec, so Avro has already checked every field's type; what is
# left to refuse is what the schema cannot say: an empty id (it would merge unrelated
# rows) and a time ClickHouse cannot store. Hand-made dicts that are not shaped like the
# record fail with a MappingError too (a missing field, a malformed verdict).


def _id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MappingError("invalid_field", f"{name} is empty; a record without an id is not kept")
    return value


def _ms(value: Any, name: str) -> int:
    if type(value) is not int or not _MIN_MS <= value <= _MAX_MS:
        raise MappingError(
            "invalid_field",
            f"{name} = {value!r} is not a time between 1900 and 2299 in milliseconds since epoch",
        )
    return value


def _verdicts(record: Mapping[str, Any]) -> dict[str, Any]:
    verdicts = record["verdicts"]
    try:
        return {
            "verdict_layers": [v["layer"] for v in verdicts],
            "verdict_statuses": [v["status"] for v in verdicts],
            "verdict_reasons": [list(v["reasons"]) for v in verdicts],
            "verdict_durations_us": [int(v["duration_us"]) for v in verdicts],
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise MappingError("invalid_field", f"a verdict is malformed: {exc!r}") from exc


def _bytes_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    return str(value)


def _lineage_row(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "event_id": _id(r["event_id"], "event_id"),
        "intent_id": r["intent_id"] or "",
        "agent_id": r["agent_id"] or "",
        "stage": r["stage"],
        "event_type": r["event_type"],
        "status": r["status"],
        "reasons": r["reasons"],
        "attributes": r["attributes"],
        "occurred_at_ms": _ms(r["occurred_at_ms"], "occurred_at_ms"),
        "worker": r["worker"],
        "prev_hash": r.get("prev_hash"),
        "event_hash": r.get("event_hash"),
    }


def _decision_row(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "decision_id": _id(r["decision_id"], "decision_id"),
        "intent_id": r["intent_id"],
        "agent_id": r["agent_id"],
        "outcome": r["outcome"],
        "reasons": r["reasons"],
        **_verdicts(r),
        "intent_digest": r["intent_digest"],
        "decided_at_ms": _ms(r["decided_at_ms"], "decided_at_ms"),
        "worker": r["worker"],
    }


def _approval_row(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "approval_id": _id(r["approval_id"], "approval_id"),
        "intent_id": r["intent_id"],
        "agent_id": r["agent_id"],
        "action": r["action"],
        "resource": r["resource"],
        "intent_digest": r["intent_digest"],
        **_verdicts(r),
        "envelope": _bytes_text(r["envelope"]),
        "issued_at_ms": _ms(r["issued_at_ms"], "issued_at_ms"),
        "expires_at_ms": _ms(r["expires_at_ms"], "expires_at_ms"),
        "worker": r["worker"],
    }


def _rejection_row(r: Mapping[str, Any]) -> dict[str, Any]:
    key = r["key"]
    return {
        "rejection_id": _id(r["rejection_id"], "rejection_id"),
        "source_topic": r["source_topic"],
        "source_partition": int(r["source_partition"]),
        "source_offset": int(r["source_offset"]),
        "key": None if key is None else _bytes_text(key),
        "value_sha256": r["value_sha256"],
        "value_prefix_hex": bytes(r["value_prefix"]).hex(),
        "value_size": int(r["value_size"]),
        "reason_code": r["reason_code"],
        "reason": r["reason"],
        "rejected_at_ms": _ms(r["rejected_at_ms"], "rejected_at_ms"),
        "worker": r["worker"],
    }


def _outcome_row(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "outcome_id": _id(r["outcome_id"], "outcome_id"),
        "approval_id": r["approval_id"],
        "intent_id": r["intent_id"],
        "agent_id": r["agent_id"],
        "executor_id": r["executor_id"],
        "status": r["status"],
        "detail": r["detail"],
        "reported_at_ms": _ms(r["reported_at_ms"], "reported_at_ms"),
    }


_ROW_BUILDERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "lineage_events": _lineage_row,
    "decisions": _decision_row,
    "approvals": _approval_row,
    "rejections": _rejection_row,
    "outcomes": _outcome_row,
}


def map_record(
    topic: str,
    record: Mapping[str, Any],
    *,
    record_name: str | None = None,
    partition: int = -1,
    offset: int = -1,
) -> tuple[str, dict[str, Any]]:
    """The logical table and row of a decoded record read from logical ``topic``.

    ``record_name`` is the record's full Avro name when known (the codec tells it from
    the header); a record of another type than the topic carries is refused.
    ``partition``/``offset`` say where it was read. Raises :class:`MappingError` with a
    Rejection ``reason_code``.
    """
    expected = TOPIC_RECORDS.get(topic)
    if expected is None:
        raise MappingError(
            "wrong_record_type", f"the sink does not read topic {topic!r}; it has no table"
        )
    name, table = expected
    if record_name is not None and record_name != name:
        raise MappingError(
            "wrong_record_type",
            f"topic {topic} carries {name} records, this is a {record_name} record",
        )
    try:
        row = _ROW_BUILDERS[table](record)
    except MappingError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        short = name.rpartition(".")[2]
        raise MappingError("invalid_field", f"the {short} record is malformed: {exc!r}") from exc
    row["kafka_partition"] = partition
    row["kafka_offset"] = offset
    if table == "decisions":
        row["kafka_topic"] = topic
    return table, row


# -- JSONCompact results ------------------------------------------------------------

_WIDE_INTS = frozenset({"Int64", "UInt64", "Int128", "UInt128", "Int256", "UInt256"})
_WRAPPERS = ("Nullable", "LowCardinality", "SimpleAggregateFunction")
Converter = Callable[[Any], Any]


def _split_type(type_name: str) -> tuple[str, list[str]]:
    """``Map(String, Array(UInt64))`` -> (``Map``, [``String``, ``Array(UInt64)``])."""
    type_name = type_name.strip()
    open_at = type_name.find("(")
    if open_at < 0 or not type_name.endswith(")"):
        return type_name, []
    args: list[str] = []
    depth = 0
    quote: str | None = None
    start = open_at + 1
    for i in range(open_at + 1, len(type_name) - 1):
        ch = type_name[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(type_name[start:i].strip())
            start = i + 1
    args.append(type_name[start : len(type_name) - 1].strip())
    return type_name[:open_at].strip(), args


def _int_or_keep(value: Any) -> Any:
    return int(value) if isinstance(value, str) else value


@functools.lru_cache(maxsize=512)
def _converter(type_name: str) -> Converter | None:
    """How to turn a JSON value of a ClickHouse type into its Python value (None: as is).

    Servers quote 64-bit and wider integers in JSON by default
    (``output_format_json_quote_64bit_integers``), chDB does not: both become ``int``.
    """
    base, args = _split_type(type_name)
    if base in _WRAPPERS and args:
        inner = _converter(args[-1])
        if inner is None:
            return None
        return lambda v: None if v is None else inner(v)
    if base in _WIDE_INTS:
        return _int_or_keep
    if base == "Array" and args:
        item = _converter(args[0])
        if item is None:
            return None
        return lambda v: v if v is None else [item(x) for x in v]
    if base == "Map" and len(args) == 2:
        val = _converter(args[1])
        if val is None:
            return None
        return lambda v: v if v is None else {k: val(x) for k, x in v.items()}
    if base == "Tuple" and args:
        parts = [_converter(_tuple_element_type(a)) for a in args]
        if all(p is None for p in parts):
            return None
        names = [_tuple_element_name(a) for a in args]
        return lambda v: _convert_tuple(v, parts, names)
    return None


def _tuple_element_name(arg: str) -> str | None:
    match = re.match(r"^`?([A-Za-z_][A-Za-z0-9_]*)`?\s+\S", arg)
    if match and not arg.startswith(match.group(1) + "("):
        return match.group(1)
    return None


def _tuple_element_type(arg: str) -> str:
    name = _tuple_element_name(arg)
    if name is None:
        return arg
    return arg.split(None, 1)[1] if not arg.startswith("`") else arg.split("`", 2)[2].strip()


def _convert_tuple(value: Any, parts: list[Converter | None], names: list[str | None]) -> Any:
    if isinstance(value, list):
        return [p(x) if p else x for p, x in zip(parts, value, strict=False)]
    if isinstance(value, dict):
        by_name = {n: p for n, p in zip(names, parts, strict=False) if n and p}
        converted: dict[str, Any] = {}
        for key, item in value.items():
            convert = by_name.get(key)
            converted[key] = convert(item) if convert is not None else item
        return converted
    return value


def parse_json_compact(raw: bytes | str, *, elapsed_ms: float = 0.0) -> QueryResult:
    """A :class:`QueryResult` from ClickHouse ``JSONCompact`` output.

    Statements without a result set (``raw`` empty) give an empty result.
    """
    if not raw or not raw.strip():
        return QueryResult((), (), [], elapsed_ms)
    try:
        document = json.loads(raw)
        meta = document["meta"]
        data = document["data"]
        columns = tuple(str(m["name"]) for m in meta)
        types = tuple(str(m["type"]) for m in meta)
    except (ValueError, KeyError, TypeError) as exc:
        text = raw[:200].decode(errors="replace") if isinstance(raw, bytes) else raw[:200]
        raise QueryError(
            f"ClickHouse did not answer with a JSONCompact result: {text!r}",
            hint="a FORMAT clause in the query overrides the result format; remove it",
        ) from exc
    converters = [_converter(t) for t in types]
    if any(converters):
        rows = [
            tuple(c(v) if c else v for c, v in zip(converters, row, strict=True)) for row in data
        ]
    else:
        rows = [tuple(row) for row in data]
    return QueryResult(columns, types, rows, elapsed_ms)


# -- errors -----------------------------------------------------------------------

_CODE_RE = re.compile(r"Code:\s*(\d+)")
_HINTS = {
    60: "SHOW TABLES lists the tables and views; the sink creates them (`trustplane sink`)",
    81: "the database does not exist; check the database in the ClickHouse URL",
    46: "unknown function: check its name in the ClickHouse SQL reference",
    47: "unknown column: DESCRIBE TABLE <name> lists a table's columns",
    62: "the SQL does not parse: check quotes, commas and keywords",
    164: "trustplane sql only reads; the sink writes the tables",
    159: "the query ran past the time limit: narrow it (WHERE, LIMIT) or pre-aggregate",
    396: "the result has too many rows: add a LIMIT or aggregate",
    456: "a {name:Type} placeholder has no value: pass it with --param name=value",
}


def _query_error(message: str, sql: str | None = None) -> QueryError:
    text = message.strip()
    index = text.find("Code: ")
    if index > 0:
        text = text[index:]
    match = _CODE_RE.search(text)
    code = int(match.group(1)) if match else 0
    text = re.sub(r"\s*\(version [^)]*\)", "", text)
    hint = _HINTS.get(code)
    if sql is not None and code == 62:
        hint = f"{hint}; the query was: {sql[:160]}"
    return QueryError(text[:2000], code=code, hint=hint)


# -- backends ---------------------------------------------------------------------


class _Backend(Protocol):
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


class _ChdbBackend:
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
                raise _query_error(str(exc), sql) from exc

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
            raise _query_error(str(exc), sql) from exc
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


class _ConnectBackend:
    """A ClickHouse server (or any clickhouse-connect client) over HTTP."""

    kind = "http"

    def __init__(self, client: Any, *, description: str, timeout_s: int, max_rows: int) -> None:
        self.client = client
        self.description = description
        self._readonly = _readonly_settings(timeout_s, max_rows)
        self._types: dict[str, list[str]] = {}
        self._errors: tuple[type[BaseException], ...] = _connect_errors()

    @classmethod
    def from_url(cls, url: str, *, timeout_s: int, max_rows: int) -> _ConnectBackend:
        module: Any = importlib.import_module("clickhouse_connect")
        shown = _redact(url)
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
            raise _query_error(str(exc), sql) from exc

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
            raise _query_error(str(exc), sql) from exc
        return bytes(raw)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001, S110 - closing is best effort
            pass


def _connect_errors() -> tuple[type[BaseException], ...]:
    exceptions: Any = importlib.import_module("clickhouse_connect.driver.exceptions")
    return (exceptions.ClickHouseError, OSError)


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


# -- migrations -------------------------------------------------------------------

_MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    """File name, e.g. ``001_lineage.sql``."""
    sql: str
    checksum: str
    """``sha256:<hex>`` of the file's bytes."""

    @property
    def statements(self) -> list[str]:
        return split_statements(self.sql)


def load_migrations(directory: Path = SQL_DIR) -> list[Migration]:
    """The migrations in ``directory``, by version. ``000_*`` must exist (the ledger)."""
    migrations: dict[int, Migration] = {}
    if not directory.is_dir():
        raise MigrationError(f"no migrations folder {directory}")
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_RE.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path.name} in {directory} is not named NNN_name.sql",
                hint="migrations are numbered: 001_lineage.sql, 002_decisions.sql, ...",
            )
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(
                f"two migrations numbered {version:03d}: "
                f"{migrations[version].name} and {path.name}",
                hint="give each migration its own number",
            )
        data = path.read_bytes()
        migrations[version] = Migration(
            version, path.name, data.decode(), "sha256:" + hashlib.sha256(data).hexdigest()
        )
    if 0 not in migrations:
        raise MigrationError(f"{directory} has no 000_*.sql (the schema_migrations ledger)")
    return [migrations[v] for v in sorted(migrations)]


def _apply_migrations(backend: _Backend, migrations: Sequence[Migration]) -> list[str]:
    """Apply what is not applied yet; return the names applied now."""
    ledger, *rest = migrations
    _run_migration(backend, ledger)
    rows = parse_json_compact(
        backend.select(
            "SELECT version, argMax(checksum, applied_at) FROM schema_migrations GROUP BY version",
            {},
            readonly=False,
        )
    ).rows
    applied = {int(version): str(checksum) for version, checksum in rows}
    known = {m.version for m in migrations}
    newer = sorted(v for v in applied if v not in known)
    if newer:
        log.warning(
            "the store has migrations this code does not know (%s): it was set up by a newer "
            "trustplane; writing with the columns this version knows",
            ", ".join(f"{v:03d}" for v in newer),
        )
    done: list[str] = []
    for migration in rest:
        recorded = applied.get(migration.version)
        if recorded is not None:
            if recorded != migration.checksum:
                raise MigrationError(
                    f"migration {migration.name} was changed after it was applied "
                    f"(applied {recorded[:19]}…, file {migration.checksum[:19]}…)",
                    hint="never edit an applied migration: restore the file and put the change "
                    "in a new numbered migration",
                )
            continue
        _run_migration(backend, migration)
        backend.execute(
            "INSERT INTO schema_migrations (version, name, checksum) "  # noqa: S608 - checked names
            f"VALUES ({migration.version}, '{migration.name}', '{migration.checksum}')"
        )
        done.append(migration.name)
        log.info("applied migration %s", migration.name)
    return done


def _run_migration(backend: _Backend, migration: Migration) -> None:
    for number, statement in enumerate(migration.statements, start=1):
        try:
            backend.execute(statement)
        except QueryError as exc:
            raise MigrationError(
                f"migration {migration.name}, statement {number} failed: {exc.reason}",
                hint="fix the migration (statements must be idempotent: IF NOT EXISTS) and "
                "run the sink again",
            ) from exc


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
        self._backend: _Backend | None = None
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
        return f"chDB at {self.path}" if self.path is not None else _redact(self.url or "client")

    def setup(self, *, migrate: bool = True) -> None:
        """Connect; with ``migrate`` (the default) apply the pending migrations.

        ``migrate=False`` opens an existing store to query it (a chDB folder must exist).
        """
        if self._backend is not None:
            return
        if self.path is not None:
            backend: _Backend = _ChdbBackend(
                self.path,
                timeout_s=self.query_timeout_s,
                max_rows=self.max_result_rows,
                create=migrate,
            )
        elif self.url is not None:
            backend = _ConnectBackend.from_url(
                self.url, timeout_s=self.query_timeout_s, max_rows=self.max_result_rows
            )
        else:
            backend = _ConnectBackend(
                self.client,
                description="ClickHouse (given client)",
                timeout_s=self.query_timeout_s,
                max_rows=self.max_result_rows,
            )
        try:
            if migrate:
                self.applied = _apply_migrations(backend, load_migrations(self.migrations_dir))
        except BaseException:
            backend.close()
            raise
        self._backend = backend

    def _require(self) -> _Backend:
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


# -- named queries ----------------------------------------------------------------


@dataclass(frozen=True)
class NamedQuery:
    name: str
    title: str
    description: str
    sql: str
    path: Path


def named_queries(directory: Path = QUERIES_DIR) -> dict[str, NamedQuery]:
    """The analytics queries in ``directory``, by name (the file name without ``.sql``)."""
    found: dict[str, NamedQuery] = {}
    for path in sorted(directory.glob("*.sql")):
        text = path.read_text()
        header: dict[str, str] = {}
        for line in text.splitlines():
            stripped = line.strip()
            if not stripped.startswith("--"):
                break
            key, sep, value = stripped[2:].strip().partition(":")
            if sep and key.strip().lower() in {"title", "description"}:
                header[key.strip().lower()] = value.strip()
        found[path.stem] = NamedQuery(
            path.stem, header.get("title", path.stem), header.get("description", ""), text, path
        )
    return found


def get_named_query(name: str, directory: Path = QUERIES_DIR) -> NamedQuery:
    queries = named_queries(directory)
    query = queries.get(name)
    if query is None:
        raise QueryError(
            f"no analytics query named {name!r}",
            hint=f"known queries: {', '.join(queries) or 'none'} (`trustplane sql --list`)",
        )
    return query


def run_named_query(
    sink: Sink, name: str, params: Mapping[str, ParamValue] | None = None
) -> QueryResult:
    """Run the analytics query ``name`` (read-only) on ``sink``."""
    return sink.query(get_named_query(name).sql, params)


def checkpoint_from_note(note: str | bytes, created_at_ms: int) -> dict[str, Any]:
    """A ``checkpoints`` row from a C2SP signed note (the notary's ``checkpoints`` record).

    The note is parsed, not verified: the store keeps what the log published, and
    ``trustplane verify``/proofs check signatures against the notary's key. Raises
    :class:`MappingError` (``invalid_field``) when the text is not a checkpoint.
    """
    text = note.decode("utf-8", errors="replace") if isinstance(note, bytes) else note
    body, _, _ = text.partition("\n\n")
    try:
        checkpoint = Checkpoint.parse(body + "\n")
    except CheckpointError as exc:
        raise MappingError("invalid_field", f"not a checkpoint note: {exc.reason}") from exc
    return checkpoint_row(
        checkpoint.origin, checkpoint.size, checkpoint.root_hash, text, _ms(created_at_ms, "time")
    )


def checkpoint_row(
    origin: str, tree_size: int, root_hash: bytes | str, note: str, created_at_ms: int
) -> dict[str, Any]:
    """A ``checkpoints`` row (for the notary): the root hash is stored as base64 text."""
    root = root_hash if isinstance(root_hash, str) else base64.b64encode(root_hash).decode()
    return {
        "origin": origin,
        "tree_size": tree_size,
        "root_hash": root,
        "note": note,
        "created_at_ms": created_at_ms,
    }
