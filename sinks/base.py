"""The sink contract: what the Kafka runner needs from an outside store.

Shaped like quix-streams' ``BatchingSink``: the runner hands over rows one by one
(:meth:`Sink.add` only buffers), and calls :meth:`Sink.flush` when it is about to
commit the Kafka offsets of everything added so far. A sink must therefore have
written every buffered row durably when ``flush`` returns, and nothing it writes may
depend on being written once: the runner is at-least-once, so after a crash the rows
since the last commit arrive again and the store must absorb them (idempotent keys).

``query`` reads with SQL. It is read-only by default; the result is plain JSON-able
data so it can travel over HTTP unchanged (see ``streams/sink/``).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from processors.exceptions import TrustplaneError

__all__ = [
    "Sink",
    "QueryResult",
    "SinkError",
    "SinkUnavailableError",
    "MigrationError",
    "QueryError",
    "MappingError",
    "ParamValue",
]

ParamValue = str | int | float | bool | None
"""A query parameter value, bound server-side to a ``{name:Type}`` placeholder."""


class SinkError(TrustplaneError):
    """The store could not be reached, written or set up."""


class SinkUnavailableError(SinkError):
    """The store is not there or is held by another process (e.g. an open chDB folder)."""


class MigrationError(SinkError):
    """A schema migration is missing, malformed, edited after it was applied, or failed."""


class QueryError(SinkError):
    """ClickHouse refused or failed a query; ``code`` is its error code (0 if unknown)."""

    def __init__(self, reason: str, *, code: int = 0, hint: str | None = None) -> None:
        super().__init__(reason, hint=hint)
        self.code = code


class MappingError(SinkError):
    """A decoded record cannot become a row (wrong type for its topic, bad value).

    ``code`` is a Rejection ``reason_code`` (``wrong_record_type``, ``invalid_field``).
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class QueryResult:
    """Rows of a query, with column names and ClickHouse type names.

    Values are JSON types: integers of any width are ``int``, floats ``float``,
    ``Array``/``Tuple`` lists, ``Map`` dicts, and dates, times, UUIDs and decimals the
    text ClickHouse writes for them (``2025-01-31 12:00:00.123``).
    """

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    elapsed_ms: float = 0.0

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def column(self, name: str) -> list[Any]:
        """Every value of one column."""
        try:
            index = self.columns.index(name)
        except ValueError:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.columns)}") from None
        return [row[index] for row in self.rows]

    def scalar(self) -> Any:
        """The single value of a one-row, one-column result."""
        if len(self.rows) != 1 or len(self.columns) != 1:
            raise ValueError(
                f"expected one row and one column, got {len(self.rows)} x {len(self.columns)}"
            )
        return self.rows[0][0]

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "types": list(self.types),
            "rows": [list(row) for row in self.rows],
            "elapsed_ms": self.elapsed_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QueryResult:
        """Inverse of :meth:`to_json`; raises :class:`QueryError` on a malformed document."""
        try:
            columns = tuple(str(c) for c in data["columns"])
            types = tuple(str(t) for t in data["types"])
            rows = [tuple(row) for row in data["rows"]]
            elapsed = float(data.get("elapsed_ms", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise QueryError(f"malformed query result: {exc!r}") from exc
        if len(columns) != len(types) or any(len(row) != len(columns) for row in rows):
            raise QueryError("malformed query result: rows and columns do not line up")
        return cls(columns, types, rows, elapsed)


class Sink(abc.ABC):
    """A batching, idempotent writer into an outside store, which can also be queried."""

    @abc.abstractmethod
    def setup(self) -> None:
        """Connect, and bring the store's schema up to date. Call once before ``add``."""

    @abc.abstractmethod
    def add(self, table: str, row: Mapping[str, Any]) -> None:
        """Buffer one row for ``table`` (a logical table name). Writes nothing yet."""

    @abc.abstractmethod
    def flush(self) -> int:
        """Write every buffered row; return how many. Raises :class:`SinkError`.

        When it returns, the rows are durable and the caller may commit its input
        offsets. When it raises, nothing is known about which rows were written: the
        caller rewinds its input and adds them again (the store absorbs duplicates).
        """

    @abc.abstractmethod
    def discard(self) -> int:
        """Drop the buffered rows without writing them; return how many were dropped."""

    @property
    @abc.abstractmethod
    def pending(self) -> int:
        """Rows buffered and not yet flushed."""

    @abc.abstractmethod
    def query(
        self,
        sql: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        readonly: bool = True,
    ) -> QueryResult:
        """Run one SQL statement and return its rows.

        ``readonly`` (the default) refuses anything but one read-only statement
        (:mod:`sinks.sql_guard`) and sets ClickHouse's ``readonly=1`` on the query.
        ``params`` bind ``{name:Type}`` placeholders server-side.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections. Buffered rows are not flushed: call ``flush`` first."""

    def __enter__(self) -> Sink:
        self.setup()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
