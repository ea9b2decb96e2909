"""The named analytics queries: ``schemas/sql/queries/<name>.sql``, each with a
``-- title:`` and ``-- description:`` header."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sinks.base import ParamValue, QueryError, QueryResult, Sink
from sinks.clickhouse.migrations import SQL_DIR

__all__ = ["QUERIES_DIR", "NamedQuery", "named_queries", "get_named_query", "run_named_query"]

QUERIES_DIR = SQL_DIR / "queries"
"""Named analytics queries, one ``name.sql`` each, with a ``-- title:`` header."""


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
