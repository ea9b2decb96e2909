"""Read-only SQL: accept one query over the lineage store, refuse everything else, say why.

``trustplane sql`` and the sink's ``/sql`` endpoint run what people type against the
lineage store, in the process that holds the sink's keys and secrets. ClickHouse's own
``readonly=1`` does not make that safe: it still lets the scalar ``file()`` read any file,
``INTO OUTFILE`` write one, and ``DESCRIBE url(...)`` send a request. So every read-only
query passes two checks here before it runs (with ``readonly=1`` and resource limits, the
backend's lock behind them):

1. :func:`check_read_only`, a lexer-level check that needs no engine: exactly one
   statement; its first keyword ``SELECT``, ``WITH``, ``SHOW``, ``DESCRIBE``/``DESC``,
   ``EXPLAIN`` or ``EXISTS``; no statement keyword outside strings and quoted identifiers
   (``INSERT``, ``DROP``, ``SET``, ``SYSTEM``, ...: it catches ``EXPLAIN ... INSERT``, and
   errs on the safe side for a column called ``update``: back-quote it); no ``INTO
   OUTFILE``, no ``FORMAT`` clause; ``DESCRIBE`` of a bare table name only; no call of a
   function that reaches outside the store, however it is quoted.
2. :class:`SqlGuard`, an allowlist over the engine's own parse tree: the text goes to
   ``parseQueryToJSON`` as a query *parameter* (data, never part of the outer statement),
   and the typed tree that comes back is walked. It accepts only ``SELECT`` (with
   ``UNION``/``INTERSECT``/``EXCEPT``, CTEs, joins, subqueries, window functions),
   ``SHOW TABLES [LIKE ...]``, plain ``EXPLAIN`` of such a query, and ``DESCRIBE`` /
   ``SHOW CREATE`` of one lineage table by name. Inside, it refuses any output clause
   (``INTO OUTFILE``, ``COMPRESSION``, ``FORMAT``), any ``SETTINGS``, any table function
   but ``numbers``, any function not in an allowlist built once from the engine's
   ``system.functions`` by category (:class:`FunctionAllowlist`), any table that is
   neither one of the store's own tables and views nor a CTE, and any syntax node it
   does not know (a newer engine fails closed, it does not open up).

Each refusal is a :class:`SqlGuardError` whose reason names what was refused and whose
hint says what to write instead: a false refusal costs a rewrite, a false acceptance could
cost the keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from processors.exceptions import TrustplaneError
from sinks.base import QueryError

__all__ = [
    "SqlGuardError",
    "SqlSyntaxError",
    "Token",
    "TokenKind",
    "GuardedStatement",
    "QueryRunner",
    "FunctionAllowlist",
    "SqlGuard",
    "tokenize",
    "split_statements",
    "check_read_only",
    "READ_ONLY_STATEMENTS",
    "FORBIDDEN_KEYWORDS",
    "FORBIDDEN_FUNCTIONS",
    "ALLOWED_CATEGORIES",
    "ALLOWED_TABLE_FUNCTIONS",
]

READ_ONLY_STATEMENTS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"}
)
"""First keywords of the statements read-only mode accepts (lexical check)."""

FORBIDDEN_KEYWORDS = frozenset(
    {
        "INSERT",
        "ALTER",
        "DROP",
        "CREATE",
        "TRUNCATE",
        "OPTIMIZE",
        "SYSTEM",
        "KILL",
        "SET",
        "ATTACH",
        "DETACH",
        "RENAME",
        "GRANT",
        "REVOKE",
        "DELETE",
        "UPDATE",
        "EXCHANGE",
        "UNDROP",
        "BACKUP",
        "RESTORE",
        "USE",
        "MOVE",
        "CHECK",
        "WATCH",
        "OUTFILE",
    }
)
"""Words that start (or are part of) a statement that writes, administers or escapes."""

FORBIDDEN_FUNCTIONS = frozenset(
    {
        "file",
        "filecluster",
        "filesystem",
        "url",
        "urlcluster",
        "s3",
        "s3cluster",
        "gcs",
        "oss",
        "cosn",
        "azureblobstorage",
        "azureblobstoragecluster",
        "hdfs",
        "hdfscluster",
        "remote",
        "remotesecure",
        "cluster",
        "clusterallreplicas",
        "mysql",
        "postgresql",
        "sqlite",
        "mongodb",
        "redis",
        "jdbc",
        "odbc",
        "executable",
        "executablepool",
        "input",
        "deltalake",
        "deltalakecluster",
        "iceberg",
        "icebergs3",
        "icebergcluster",
        "hudi",
        "hudicluster",
        "python",
        "arrowflight",
        "ytsaurus",
        "dictionary",
        "loop",
        "merge",
        "view",
    }
)
"""Functions the lexical check refuses however they are quoted (compared lower-case).

The lexical check's net for engines that cannot parse for :class:`SqlGuard`; where the
guard runs, its allowlist refuses these and everything else not known to be safe."""

ALLOWED_CATEGORIES = frozenset(
    {
        "Arithmetic",
        "Comparison",
        "Logical",
        "Conditional",
        "Dates and Times",
        "String",
        "String Search",
        "String Replacement",
        "String Splitting",
        "Type Conversion",
        "Arrays",
        "Tuple",
        "Map",
        "JSON",
        "Hash",
        "Mathematical",
        "Rounding",
        "Null",
        "Aggregate Functions",
        "IP Address",
        "UUID",
        "Encoding",
        "Bit",
        "URL",
        "Time Window",
        "Distance",
        "Financial",
        "Geo",
    }
)
"""``system.functions`` categories whose functions compute on their arguments only.

Not: Other (``file``, ``sleep``, ``hostName``, ``getSetting``, ...), Dictionary, Embedded
Dictionary, Introspection, Machine Learning, AI (calls out to a model), Internal,
Encryption, Random Number, ..."""

_EXTRA_FUNCTIONS = frozenset(
    {
        "lambda",
        "_CAST",
        "caseWithExpression",
        "exists",
        "toTypeName",
        "ignore",
        "materialize",
        "isConstant",
        "identity",
        "transform",
        "bar",
        "formatReadableSize",
        "formatReadableDecimalSize",
        "formatReadableQuantity",
        "formatReadableTimeDelta",
    }
)
"""Harmless functions outside :data:`ALLOWED_CATEGORIES` (or unlisted, like ``lambda``)."""

_NEVER_FUNCTIONS = frozenset(
    {
        "file",
        "hostName",
        "hostname",
        "FQDN",
        "fullHostName",
        "getOSKernelVersion",
        "getSetting",
        "getSettingOrDefault",
        "getServerSetting",
        "getMergeTreeSetting",
        "getMacro",
        "getClientHTTPHeader",
        "showCertificate",
        "buildId",
        "serverUUID",
        "evalMLMethod",
        "sleep",
        "sleepEachRow",
        "generateSerialID",
        "logTrace",
        "currentUser",
        "joinGet",
        "joinGetOrNull",
    }
)
_NEVER_PREFIXES = ("global", "dict", "region", "filesystem", "naiveBayes", "addressTo", "ai", "AI")
_NEVER_SUFFIXES = ("IgnoreSet",)
"""Refused whatever category a future engine files them under: they read files, reach
the network, leak the host, or stall a reader (design note §2.2)."""

ALLOWED_TABLE_FUNCTIONS = frozenset({"numbers"})
"""The only table function a read-only query may use (every other one reads, lists or
reaches something outside the lineage tables: file, url, s3, merge, view, Python, ...)."""

_IN_FUNCTIONS = frozenset({"in", "notIn", "nullIn", "notNullIn"})
"""Functions whose right side may be a table name (``x IN lineage_events``)."""

_EXPLAIN_KINDS = frozenset(
    {
        "EXPLAIN",
        "EXPLAIN AST",
        "EXPLAIN SYNTAX",
        "EXPLAIN PLAN",
        "EXPLAIN PIPELINE",
        "EXPLAIN QUERY TREE",
        "EXPLAIN ESTIMATE",
    }
)
_SELECTS = frozenset({"SelectWithUnionQuery", "SelectIntersectExceptQuery"})
_STATEMENTS = _SELECTS | {"ShowTablesQuery", "ExplainQuery"}

_NODE_TYPES = _SELECTS | {
    "ArrayJoin",
    "Asterisk",
    "ColumnsApplyTransformer",
    "ColumnsExceptTransformer",
    "ColumnsListMatcher",
    "ColumnsRegexpMatcher",
    "ColumnsReplaceTransformer",
    "ColumnsReplaceTransformerReplacement",
    "ColumnsTransformerList",
    "ExpressionList",
    "Function",
    "Identifier",
    "InterpolateElement",
    "Literal",
    "OrderByElement",
    "QualifiedAsterisk",
    "QualifiedColumnsListMatcher",
    "QualifiedColumnsRegexpMatcher",
    "QueryParameter",
    "SampleRatio",
    "SelectQuery",
    "Subquery",
    "TableExpression",
    "TableIdentifier",
    "TableJoin",
    "TablesInSelectQuery",
    "TablesInSelectQueryElement",
    "WindowDefinition",
    "WindowListElement",
    "WithElement",
}
"""Syntax nodes a read-only query may contain; any other is refused (fail closed)."""

_OUTPUT_CLAUSES = {
    "out_file": "INTO OUTFILE",
    "compression": "INTO OUTFILE ... COMPRESSION",
    "compression_level": "INTO OUTFILE ... COMPRESSION ... LEVEL",
    "format_ast": "a FORMAT clause",
}
_OUTPUT_FLAGS = ("is_outfile_append", "is_outfile_truncate", "is_into_outfile_with_stdout")
_SHOW_TABLES_KEYS = frozenset(
    {"type", "like", "not_like", "case_insensitive_like", "limit_length", *_OUTPUT_FLAGS}
)

_NAME = r"`?([A-Za-z_][A-Za-z0-9_]*)`?"
_DESCRIBE_RE = re.compile(rf"^DESC(?:RIBE)?\s+(?:TABLE\s+)?{_NAME}\s*$", re.IGNORECASE)
_SHOW_CREATE_RE = re.compile(
    rf"^SHOW\s+CREATE\s+(?:TEMPORARY\s+)?(?:TABLE\s+|VIEW\s+)?{_NAME}\s*$", re.IGNORECASE
)
_SCOPE_RE = re.compile(r":?\s*In scope SELECT parseQueryToJSON.*$", re.DOTALL)

_HINT_READ_ONLY = (
    "trustplane sql only reads: use one SELECT, WITH, SHOW, DESCRIBE or EXPLAIN "
    "statement (the sink writes the tables; migrations in schemas/sql/ change them)"
)
_HINT_TABLES = "query the lineage tables and views (SHOW TABLES lists them)"
_HINT_FORMAT = "choose the output with --format table|csv|json instead"

QueryRunner = Callable[[str, Mapping[str, str]], bytes]
"""Runs one query on a ``readonly=1`` connection of the store and answers ``JSONCompact``
bytes. The parameters are plain text values for ``{name:String}`` placeholders (the runner
escapes them as its driver needs); engine errors raise :class:`~sinks.base.QueryError`."""


class SqlGuardError(TrustplaneError):
    """A query was refused before it reached ClickHouse; ``reason`` says why."""


class SqlSyntaxError(SqlGuardError):
    """The text does not parse (an unterminated quote or comment, a syntax error)."""


# -- lexing -------------------------------------------------------------------------


class TokenKind(Enum):
    WORD = "word"
    """A bare identifier or keyword."""
    QUOTED = "quoted"
    """A back-quoted or double-quoted identifier."""
    STRING = "string"
    """A single-quoted string literal."""
    NUMBER = "number"
    PUNCT = "punct"
    """Any other character (operators, brackets, ``;``)."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    """The token as written (literals with their quotes)."""
    start: int
    """Offset in the source text."""

    @property
    def upper(self) -> str:
        return self.text.upper()

    @property
    def name(self) -> str:
        """The identifier a WORD or QUOTED token names (quotes and escapes removed)."""
        if self.kind is not TokenKind.QUOTED:
            return self.text
        quote = self.text[0]
        inner = self.text[1:-1]
        return re.sub(r"\\(.)", r"\1", inner.replace(quote * 2, quote))


@dataclass(frozen=True, slots=True)
class GuardedStatement:
    """A statement the guard accepted."""

    sql: str
    """The statement, without comments around it and without a trailing ``;``."""
    kind: str
    """Its first keyword, upper case (``SELECT``, ``WITH``, ...)."""


def _scan_quoted(sql: str, start: int, quote: str) -> int:
    """End offset (exclusive) of the quoted token starting at ``start``.

    ClickHouse escapes a quote by doubling it or with a backslash.
    """
    i = start + 1
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    what = "string" if quote == "'" else "quoted identifier"
    raise SqlSyntaxError(
        f"unterminated {what} starting at character {start + 1}: {_excerpt(sql, start)}",
        hint=f"close it with {quote}",
    )


def _excerpt(sql: str, start: int, width: int = 40) -> str:
    text = sql[start : start + width].replace("\n", " ")
    return text + ("…" if len(sql) > start + width else "")


def tokenize(sql: str) -> list[Token]:
    """The tokens of ``sql``, comments dropped. Raises :class:`SqlSyntaxError`."""
    tokens: list[Token] = []
    i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif (ch == "-" and sql.startswith("--", i)) or ch == "#":
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch == "/" and sql.startswith("/*", i):
            depth = 0
            j = i
            while j < n:
                if sql.startswith("/*", j):
                    depth += 1
                    j += 2
                elif sql.startswith("*/", j):
                    depth -= 1
                    j += 2
                    if depth == 0:
                        break
                else:
                    j += 1
            if depth:
                raise SqlSyntaxError(
                    f"unterminated comment starting at character {i + 1}", hint="close it with */"
                )
            i = j
        elif ch == "'":
            end = _scan_quoted(sql, i, "'")
            tokens.append(Token(TokenKind.STRING, sql[i:end], i))
            i = end
        elif ch in '`"':
            end = _scan_quoted(sql, i, ch)
            tokens.append(Token(TokenKind.QUOTED, sql[i:end], i))
            i = end
        elif ch.isalpha() or ch == "_" or ch == "$":
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "_$"):
                j += 1
            tokens.append(Token(TokenKind.WORD, sql[i:j], i))
            i = j
        elif ch.isdigit():
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "._"):
                j += 1
            tokens.append(Token(TokenKind.NUMBER, sql[i:j], i))
            i = j
        else:
            tokens.append(Token(TokenKind.PUNCT, ch, i))
            i += 1
    return tokens


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql`` (a migration file, say), split at top-level ``;``.

    Semicolons in strings, quoted identifiers and comments do not split. Empty
    statements (``;;``, comment-only tails) are dropped; each statement keeps its text
    from its first token to its last.
    """
    return [_text(sql, statement) for statement in _statements(tokenize(sql))]


def _text(sql: str, tokens: list[Token]) -> str:
    last = tokens[-1]
    return sql[tokens[0].start : last.start + len(last.text)]


def _statements(tokens: list[Token]) -> list[list[Token]]:
    groups: list[list[Token]] = [[]]
    for token in tokens:
        if token.kind is TokenKind.PUNCT and token.text == ";":
            groups.append([])
        else:
            groups[-1].append(token)
    return [group for group in groups if group]


# -- 1. the lexical check -----------------------------------------------------------


def check_read_only(sql: str) -> GuardedStatement:
    """Accept ``sql`` if it is exactly one read-only statement; raise :class:`SqlGuardError`.

    Returns the statement without surrounding comments and trailing semicolon. This is
    the first check only: :meth:`SqlGuard.check` (which calls it) is the one that decides.
    """
    statements = _statements(tokenize(sql))
    if not statements:
        raise SqlGuardError(
            "no SQL statement given", hint="e.g. SELECT count() FROM lineage_events"
        )
    if len(statements) > 1:
        raise SqlGuardError(
            f"{len(statements)} statements given; read-only mode runs exactly one",
            hint="send one statement per call, without ';' between statements",
        )
    statement = statements[0]
    first = statement[0]
    if first.kind is not TokenKind.WORD or first.upper not in READ_ONLY_STATEMENTS:
        shown = first.text if first.kind is TokenKind.WORD else _excerpt(first.text, 0, 20)
        raise SqlGuardError(
            f"{shown.upper()} statements are not allowed in read-only mode", hint=_HINT_READ_ONLY
        )
    for index, token in enumerate(statement):
        _check_token(statement, index, token)
    kind = "DESCRIBE" if first.upper == "DESC" else first.upper
    text = _text(sql, statement)
    if kind == "DESCRIBE" and not _DESCRIBE_RE.match(text):
        raise SqlGuardError(
            "DESCRIBE takes the name of one lineage table or view, nothing else",
            hint="e.g. DESCRIBE TABLE lineage_events (describing a table function would "
            "read or fetch what it names)",
        )
    return GuardedStatement(text, kind)


def _neighbour(statement: list[Token], index: int) -> Token | None:
    return statement[index] if 0 <= index < len(statement) else None


def _is_punct(token: Token | None, text: str) -> bool:
    return token is not None and token.kind is TokenKind.PUNCT and token.text == text


def _is_format_clause(statement: list[Token], index: int) -> bool:
    """``FORMAT name`` at the end of the statement (or before its SETTINGS)."""
    name = _neighbour(statement, index + 1)
    if index == 0 or name is None or name.kind not in (TokenKind.WORD, TokenKind.QUOTED):
        return False
    following = _neighbour(statement, index + 2)
    return following is None or following.upper == "SETTINGS"


def _check_token(statement: list[Token], index: int, token: Token) -> None:
    if token.kind not in (TokenKind.WORD, TokenKind.QUOTED):
        return
    before = _neighbour(statement, index - 1)
    after = _neighbour(statement, index + 1)
    # `file`(...), "file"(...) and file(...) are the same call; a.file(...) is not a call
    if (
        token.name.lower() in FORBIDDEN_FUNCTIONS
        and _is_punct(after, "(")
        and not _is_punct(before, ".")
    ):
        raise SqlGuardError(
            f"{token.name}() reaches outside the lineage store; not allowed in read-only mode",
            hint=_HINT_TABLES,
        )
    if token.kind is TokenKind.QUOTED:
        return
    word = token.upper
    # qualified names (system.tables, t.update) and aliases are identifiers, not keywords
    if _is_punct(before, ".") or _is_punct(after, "."):
        return
    if word == "CREATE" and before is not None and before.upper == "SHOW":
        return  # SHOW CREATE TABLE x only reads the definition
    if word == "FORMAT" and after is not None and _is_format_clause(statement, index):
        raise SqlGuardError(
            f"the FORMAT clause ({token.text} {after.text}) is not allowed here",
            hint=_HINT_FORMAT,
        )
    if word == "REPLACE" and after is not None and after.upper in {"TABLE", "DICTIONARY", "VIEW"}:
        raise SqlGuardError(
            f"REPLACE {after.text.upper()} changes the schema and is not allowed in read-only mode",
            hint=_HINT_READ_ONLY,
        )
    if word in FORBIDDEN_KEYWORDS:
        raise SqlGuardError(
            f"{word} is not allowed in read-only mode (found at character {token.start + 1})",
            hint=_HINT_READ_ONLY
            + f"; if {token.text!r} is a column or table name, back-quote it: `{token.text}`",
        )


# -- 2. the allowlist over the engine's parse tree ----------------------------------


def _rows(raw: bytes) -> list[list[Any]]:
    data = json.loads(raw)["data"]
    return [list(row) for row in data]


@dataclass(frozen=True)
class FunctionAllowlist:
    """The functions a read-only query may call, from the engine's ``system.functions``.

    A name is allowed as written, or in any case when the engine matches it without
    case (``COUNT``, ``Cast``); an aggregate also with combinator suffixes
    (``avgOrNullIf``, ``uniqMerge``), when the function under them is allowed.
    """

    names: frozenset[str]
    """Allowed names, exactly as the engine spells them."""
    case_insensitive: frozenset[str]
    """Allowed names the engine matches in any case, lower-cased."""
    aggregates: frozenset[str]
    """The allowed aggregate functions (exact names, and lower-cased when case-insensitive)."""
    combinators: tuple[str, ...] = ()
    """Aggregate combinator suffixes, longest first."""

    @classmethod
    def from_engine(cls, run: QueryRunner) -> FunctionAllowlist:
        """Read ``system.functions`` and the combinators once (at start-up)."""
        rows = _rows(
            run(
                "SELECT name, categories, case_insensitive, alias_to, is_aggregate "
                "FROM system.functions",
                {},
            )
        )
        category = {str(row[0]): str(row[1]) for row in rows}
        names: set[str] = set()
        lowered: set[str] = set()
        aggregates: set[str] = set()
        for name, categories, case_insensitive, alias_to, is_aggregate in rows:
            name, alias_to = str(name), str(alias_to or "")
            target = alias_to or name
            own = category.get(target, "") if alias_to else str(categories)
            parts = {part.strip() for part in own.split(",") if part.strip()}
            allowed = (
                (bool(parts) and parts <= ALLOWED_CATEGORIES)
                or name in _EXTRA_FUNCTIONS
                or alias_to in _EXTRA_FUNCTIONS
            )
            if not allowed or _never(name) or (alias_to and _never(alias_to)):
                continue
            names.add(name)
            if int(case_insensitive):
                lowered.add(name.lower())
            if int(is_aggregate):
                aggregates.add(name)
                if int(case_insensitive):
                    aggregates.add(name.lower())
        names |= _EXTRA_FUNCTIONS
        combinators = [
            str(row[0])
            for row in _rows(run("SELECT name FROM system.aggregate_function_combinators", {}))
        ]
        return cls(
            frozenset(names),
            frozenset(lowered),
            frozenset(aggregates),
            tuple(sorted(combinators, key=len, reverse=True)),
        )

    def allows(self, name: str) -> bool:
        if _never(name):
            return False
        if name in self.names or name.lower() in self.case_insensitive:
            return True
        return self._aggregate(name)

    def _aggregate(self, name: str) -> bool:
        lowered = name.lower()
        if name in self.aggregates or (
            lowered in self.case_insensitive and lowered in self.aggregates
        ):
            return True
        return any(
            name.endswith(suffix)
            and len(name) > len(suffix)
            and self._aggregate(name[: -len(suffix)])
            for suffix in self.combinators
        )


def _never(name: str) -> bool:
    return (
        name in _NEVER_FUNCTIONS
        or name.startswith(_NEVER_PREFIXES)
        or name.endswith(_NEVER_SUFFIXES)
    )


def _engine_reason(text: str) -> str:
    return _SCOPE_RE.sub("", text).strip().rstrip(":").strip()


@dataclass
class _Scan:
    """What a walk over one parse tree found."""

    ctes: set[str] = field(default_factory=set)
    tables: list[tuple[str, str | None]] = field(default_factory=list)
    """(table, database or None) for every table the query names."""


class SqlGuard:
    """The allowlist check of read-only queries, over the engine's own parser.

    Build it once per store with :meth:`from_engine` (it reads the function catalogue
    and the store's tables through a ``readonly=1`` connection), then :meth:`check` each
    query with a runner on one of those connections. The table list is read again when
    a query names a table it does not know (the store may have gained a migration).
    """

    def __init__(
        self, functions: FunctionAllowlist, tables: Iterable[str], *, database: str = "default"
    ) -> None:
        self.functions = functions
        self.tables = frozenset(tables)
        self.database = database

    @classmethod
    def from_engine(cls, run: QueryRunner) -> SqlGuard:
        database = str(_rows(run("SELECT currentDatabase()", {}))[0][0])
        return cls(FunctionAllowlist.from_engine(run), _show_tables(run), database=database)

    def refresh_tables(self, run: QueryRunner) -> None:
        self.tables = frozenset(_show_tables(run))

    # -- the check

    def check(self, sql: str, run: QueryRunner) -> GuardedStatement:
        """Accept ``sql`` or raise :class:`SqlGuardError` with the reason and a hint."""
        statement = check_read_only(sql)
        if statement.kind == "EXISTS":
            raise SqlGuardError(
                "EXISTS statements are not allowed in read-only mode",
                hint="SHOW TABLES LIKE 'name' says whether a table exists",
            )
        by_name = _DESCRIBE_RE.match(statement.sql) or _SHOW_CREATE_RE.match(statement.sql)
        if by_name:  # DESCRIBE/SHOW CREATE have no JSON form: only a bare name passes
            self._require_tables([(by_name.group(1), None)], set(), run)
            return statement
        if statement.kind == "DESCRIBE":  # check_read_only let no other DESCRIBE through
            raise SqlGuardError("DESCRIBE takes the name of one lineage table or view")
        return self.check_statement(statement, run)

    def check_statement(self, statement: GuardedStatement, run: QueryRunner) -> GuardedStatement:
        """The allowlist check of a statement :func:`check_read_only` accepted."""
        tree = self._parse(statement, run)
        kind = tree.get("type")
        if kind not in _STATEMENTS:
            raise SqlGuardError(
                f"{statement.kind} statements of this kind ({kind}) are not allowed in "
                "read-only mode",
                hint=_HINT_READ_ONLY,
            )
        scan = _Scan()
        _collect_ctes(tree, scan.ctes)
        if kind == "ShowTablesQuery":
            self._show_tables(tree)
        elif kind == "ExplainQuery":
            self._explain(tree, scan)
        else:
            self._walk(tree, None, scan)
        self._require_tables(scan.tables, scan.ctes, run)
        return statement

    def _parse(self, statement: GuardedStatement, run: QueryRunner) -> dict[str, Any]:
        try:
            raw = run("SELECT parseQueryToJSON({q:String})", {"q": statement.sql})
            tree = json.loads(_rows(raw)[0][0])
        except QueryError as exc:
            reason = _engine_reason(exc.reason)
            if exc.code == 36:  # this kind of statement has no JSON form: not a plain query
                raise SqlGuardError(
                    f"this {statement.kind} statement is not allowed in read-only mode",
                    hint=_HINT_READ_ONLY,
                ) from None
            if exc.code == 62:
                raise SqlSyntaxError(
                    reason, hint="the SQL does not parse: check quotes, commas and keywords"
                ) from None
            raise SqlGuardError(
                f"the query could not be checked: {reason}", hint="simplify the query"
            ) from None
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise SqlGuardError(
                f"the query could not be checked: the engine's parse tree is unreadable ({exc})",
                hint="this chDB version may not be supported; check the pinned chdb version",
            ) from None
        if not isinstance(tree, dict):
            raise SqlGuardError("the query could not be checked: unexpected parse tree")
        return tree

    def _show_tables(self, tree: Mapping[str, Any]) -> None:
        extra = sorted(set(tree) - _SHOW_TABLES_KEYS)
        if extra or any(tree.get(flag) for flag in _OUTPUT_FLAGS):
            raise SqlGuardError(
                "only SHOW TABLES [LIKE 'pattern'] is allowed in read-only mode "
                f"(this one has {', '.join(extra) or 'an output clause'})",
                hint="SHOW TABLES lists the lineage tables and views; DESCRIBE TABLE name "
                "lists a table's columns",
            )

    def _explain(self, tree: Mapping[str, Any], scan: _Scan) -> None:
        kind = tree.get("kind")
        if kind not in _EXPLAIN_KINDS:
            raise SqlGuardError(
                f"{kind} is not allowed in read-only mode",
                hint="EXPLAIN [AST|SYNTAX|PLAN|PIPELINE|QUERY TREE|ESTIMATE] SELECT ...",
            )
        inner = tree.get("query")
        if not isinstance(inner, dict) or inner.get("type") not in _SELECTS:
            raise SqlGuardError(
                "EXPLAIN explains a SELECT query only in read-only mode", hint=_HINT_READ_ONLY
            )
        rest = {k: v for k, v in tree.items() if k not in ("type", "kind", "query")}
        self._walk(rest, "ExplainQuery", scan, typed=False)
        self._walk(inner, None, scan)

    def _walk(self, node: Any, key: str | None, scan: _Scan, *, typed: bool = True) -> None:
        if isinstance(node, list):
            for item in node:
                self._walk(item, key, scan)
            return
        if not isinstance(node, dict):
            return
        for clause, what in _OUTPUT_CLAUSES.items():
            if clause in node:
                raise SqlGuardError(f"{what} is not allowed in read-only mode", hint=_HINT_FORMAT)
        if any(node.get(flag) for flag in _OUTPUT_FLAGS):
            raise SqlGuardError("INTO OUTFILE is not allowed in read-only mode", hint=_HINT_FORMAT)
        kind = node.get("type")
        if kind == "SetQuery" or "settings" in node:
            raise SqlGuardError(
                "a SETTINGS clause is not allowed in read-only mode",
                hint="the endpoint fixes the limits and settings of every query; drop SETTINGS",
            )
        if typed and kind not in _NODE_TYPES:
            raise SqlGuardError(
                f"this syntax ({kind or 'an untyped node'}) is not supported in read-only mode",
                hint="rewrite the query with plain SELECT syntax; if it should be allowed, "
                "the guard's node list (sinks/sql_guard.py) needs it, with a test",
            )
        if kind == "Literal":
            return  # a value, never a name
        if kind == "Function":
            self._function(node, key, scan)
        elif kind == "ColumnsApplyTransformer" and "func_name" in node:
            self._call(str(node["func_name"]), "APPLY")
        elif kind == "TableIdentifier":
            scan.tables.append(_table_ref(node))
        for child_key, child in node.items():
            self._walk(child, child_key, scan)

    def _function(self, node: Mapping[str, Any], key: str | None, scan: _Scan) -> None:
        name = str(node.get("name", ""))
        if key == "table_function":
            if name not in ALLOWED_TABLE_FUNCTIONS:
                raise SqlGuardError(
                    f"table function {name}() is not allowed in read-only mode",
                    hint=_HINT_TABLES + "; numbers(N) is the only table function allowed",
                )
            return
        self._call(name, "function")
        if name in _IN_FUNCTIONS:
            arguments = (node.get("arguments") or {}).get("children") or []
            if len(arguments) == 2 and isinstance(arguments[1], dict):
                right = arguments[1]
                if right.get("type") == "Identifier":
                    scan.tables.append(_table_ref(right))

    def _call(self, name: str, what: str) -> None:
        if not self.functions.allows(name):
            shown = name.encode("unicode_escape").decode()
            raise SqlGuardError(
                f"{what} {shown}() is not allowed in read-only mode",
                hint="read-only queries may call computing functions (arithmetic, strings, "
                "dates, arrays, JSON, aggregates, ...), not ones that read files, reach the "
                "network, or inspect the host; SELECT name FROM system.functions is not "
                "available here, see the ClickHouse SQL reference",
            )

    def _require_tables(
        self, refs: list[tuple[str, str | None]], ctes: set[str], run: QueryRunner
    ) -> None:
        def unknown() -> list[str]:
            missing = []
            for name, database in refs:
                if database is None and (name in self.tables or name in ctes):
                    continue
                if database == self.database and name in self.tables:
                    continue
                missing.append(f"{database}.{name}" if database is not None else name)
            return missing

        missing = unknown()
        if missing:
            self.refresh_tables(run)
            missing = unknown()
        if missing:
            shown = ", ".join(repr(m) for m in missing)
            raise SqlGuardError(
                f"table {shown} is not one of the lineage store's tables or views",
                hint=_HINT_TABLES + " (system tables and other databases are not available)",
            )


def _show_tables(run: QueryRunner) -> list[str]:
    return [str(row[0]) for row in _rows(run("SHOW TABLES", {}))]


def _table_ref(node: Mapping[str, Any]) -> tuple[str, str | None]:
    """(name, database or None) of a TableIdentifier, or of an Identifier used as a table."""
    name = str(node.get("name") or "")
    parts = node.get("name_parts")
    if node.get("children") or not name:
        raise SqlGuardError(
            "a table given as a {name:Identifier} parameter is not allowed in read-only mode",
            hint="write the table's name into the query; parameters are for values",
        )
    if isinstance(parts, list) and parts:
        if len(parts) != 2:
            raise SqlGuardError(
                f"the table name {name!r} has {len(parts)} parts; use table or database.table",
                hint=_HINT_TABLES,
            )
        return (str(parts[1]), str(parts[0]))
    return (name, None)


def _collect_ctes(node: Any, ctes: set[str]) -> None:
    for item in _nodes(node):
        if item.get("type") == "WithElement" and item.get("name"):
            ctes.add(str(item["name"]))


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from _nodes(item)
    elif isinstance(node, dict):
        yield node
        for child in node.values():
            yield from _nodes(child)
