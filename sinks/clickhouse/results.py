"""ClickHouse answers as Python values: ``JSONCompact`` results and error messages.

Both backends (chDB and a server over HTTP) answer queries as ``JSONCompact`` and are
converted here the same way, so one query returns the same rows from either; their
error texts become a :class:`QueryError` with ClickHouse's code and a hint.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

from sinks.base import QueryError, QueryResult

__all__ = ["parse_json_compact", "query_error"]

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


def query_error(message: str, sql: str | None = None) -> QueryError:
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
