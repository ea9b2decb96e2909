"""Read-only SQL: accept one SELECT-like statement, refuse everything else, say why.

``trustplane sql`` and the sink's ``/sql`` endpoint run what people type against the
lineage store. This module is the first of two locks (the second is ClickHouse's own
``readonly=1`` setting, which every backend sets on such queries): it lexes the text the
way ClickHouse does (quotes, back-quoted identifiers, ``--``/``#``/``/* */`` comments)
and refuses, with a reason and a hint,

- anything but exactly one statement (``SELECT 1; DROP TABLE x`` is two);
- a statement that does not start with ``SELECT``, ``WITH``, ``SHOW``, ``DESCRIBE``/``DESC``,
  ``EXPLAIN`` or ``EXISTS``;
- a statement keyword anywhere outside strings and quoted identifiers (``INSERT``,
  ``ALTER``, ``DROP``, ``CREATE``, ``TRUNCATE``, ``OPTIMIZE``, ``SYSTEM``, ``KILL``, ``SET``,
  ``ATTACH``, ``DETACH``, ``RENAME``, ``GRANT``, ``REVOKE``, ``DELETE``, ``UPDATE``, ...):
  it catches ``EXPLAIN ... INSERT`` and friends, and errs on the safe side for a column
  that happens to be called ``update`` (back-quote it: ```update```);
- ``INTO OUTFILE`` and a ``FORMAT`` clause (the caller chooses the output format);
- table functions and functions that reach outside the store (``file``, ``url``, ``s3``,
  ``remote``, ``mysql``, ``executable``, ...).

It is conservative on purpose: a false refusal costs a back-quote, a false acceptance
could cost the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from processors.exceptions import TrustplaneError

__all__ = [
    "SqlGuardError",
    "SqlSyntaxError",
    "Token",
    "TokenKind",
    "GuardedStatement",
    "tokenize",
    "split_statements",
    "check_read_only",
    "READ_ONLY_STATEMENTS",
    "FORBIDDEN_KEYWORDS",
    "FORBIDDEN_FUNCTIONS",
]

READ_ONLY_STATEMENTS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"}
)
"""First keywords of the statements read-only mode accepts."""

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
    }
)
"""Table functions (and the ``file`` scalar) that read or write outside the lineage store."""

_HINT_READ_ONLY = (
    "trustplane sql only reads: use one SELECT, WITH, SHOW, DESCRIBE, EXPLAIN or EXISTS "
    "statement (the sink writes the tables; migrations in schemas/sql/ change them)"
)


class SqlGuardError(TrustplaneError):
    """A query was refused before it reached ClickHouse; ``reason`` says why."""


class SqlSyntaxError(SqlGuardError):
    """The text cannot even be split into statements (an unterminated quote or comment)."""


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
    statements: list[str] = []
    current: list[Token] = []
    for token in tokenize(sql):
        if token.kind is TokenKind.PUNCT and token.text == ";":
            if current:
                statements.append(_text(sql, current))
            current = []
        else:
            current.append(token)
    if current:
        statements.append(_text(sql, current))
    return statements


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


def check_read_only(sql: str) -> GuardedStatement:
    """Accept ``sql`` if it is exactly one read-only statement; raise :class:`SqlGuardError`.

    Returns the statement without surrounding comments and trailing semicolon, ready to
    send (still with ``readonly=1`` on the query: this check is not the only lock).
    """
    tokens = tokenize(sql)
    statements = _statements(tokens)
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
    return GuardedStatement(_text(sql, statement), kind)


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
    if token.kind is not TokenKind.WORD:
        return
    before = _neighbour(statement, index - 1)
    after = _neighbour(statement, index + 1)
    word = token.upper
    # qualified names (system.tables, t.update) and aliases are identifiers, not keywords
    qualified = _is_punct(before, ".") or _is_punct(after, ".")
    if word.lower() in FORBIDDEN_FUNCTIONS and _is_punct(after, "(") and not _is_punct(before, "."):
        raise SqlGuardError(
            f"{token.text}() reaches outside the lineage store; not allowed in read-only mode",
            hint="query the lineage tables and views (SHOW TABLES lists them)",
        )
    if qualified:
        return
    if word == "CREATE" and before is not None and before.upper == "SHOW":
        return  # SHOW CREATE TABLE x only reads the definition
    if word == "FORMAT" and after is not None and _is_format_clause(statement, index):
        raise SqlGuardError(
            f"the FORMAT clause ({token.text} {after.text}) is not allowed here",
            hint="choose the output with --format table|csv|json instead",
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
