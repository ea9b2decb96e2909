"""The read-only SQL guard: one SELECT-like statement in, everything else out, with a reason."""

from __future__ import annotations

import pytest

from sinks.sql_guard import (
    SqlGuardError,
    SqlSyntaxError,
    check_read_only,
    split_statements,
    tokenize,
)

ACCEPTED = [
    ("SELECT 1", "SELECT"),
    ("select count() from lineage_events", "SELECT"),
    ("  -- why\nSELECT * FROM approvals LIMIT 5;  ", "SELECT"),
    ("WITH x AS (SELECT 1 AS a) SELECT a FROM x", "WITH"),
    ("SHOW TABLES", "SHOW"),
    ("SHOW CREATE TABLE lineage_events_raw", "SHOW"),
    ("DESCRIBE TABLE decisions", "DESCRIBE"),
    ("desc approvals", "DESCRIBE"),
    ("EXPLAIN SELECT 1", "EXPLAIN"),
    ("EXPLAIN PIPELINE SELECT count() FROM outcomes", "EXPLAIN"),
    ("EXISTS TABLE outcomes", "EXISTS"),
    ("SELECT name FROM system.tables", "SELECT"),
    ("SELECT 'DROP TABLE x; INSERT INTO y' AS harmless", "SELECT"),
    ('SELECT `update`, "delete" FROM t', "SELECT"),
    ("SELECT t.update FROM t", "SELECT"),
    ("SELECT replace(reason, 'a', 'b') FROM decisions", "SELECT"),
    ("SELECT format('{}', 1), formatReadableSize(1)", "SELECT"),
    ("SELECT 1 /* ; DROP TABLE x */", "SELECT"),
    ("SELECT 1 # trailing; comment", "SELECT"),
    ("SELECT 'it''s', 'a\\'b'", "SELECT"),
    ("SELECT count() FROM decisions SETTINGS max_threads = 1", "SELECT"),
    ("SELECT agent_id FROM decisions WHERE agent_id = {agent:String}", "SELECT"),
]


@pytest.mark.parametrize(("sql", "kind"), ACCEPTED)
def test_read_only_statements_are_accepted(sql: str, kind: str) -> None:
    statement = check_read_only(sql)
    assert statement.kind == kind
    assert not statement.sql.endswith(";")
    assert not statement.sql.startswith(" ")


REFUSED = [
    ("INSERT INTO lineage_events_raw (event_id) VALUES ('x')", "INSERT"),
    ("ALTER TABLE decisions_raw DELETE WHERE 1", "ALTER"),
    ("DROP TABLE approvals_raw", "DROP"),
    ("CREATE TABLE x (a Int8) ENGINE = Memory", "CREATE"),
    ("TRUNCATE TABLE outcomes_raw", "TRUNCATE"),
    ("OPTIMIZE TABLE lineage_events_raw FINAL", "OPTIMIZE"),
    ("SYSTEM STOP MERGES", "SYSTEM"),
    ("KILL QUERY WHERE 1", "KILL"),
    ("SET readonly = 0", "SET"),
    ("ATTACH TABLE x", "ATTACH"),
    ("DETACH TABLE approvals_raw", "DETACH"),
    ("RENAME TABLE a TO b", "RENAME"),
    ("GRANT ALL ON *.* TO me", "GRANT"),
    ("REVOKE ALL ON *.* FROM me", "REVOKE"),
    ("DELETE FROM decisions_raw WHERE 1", "DELETE"),
    ("UPDATE decisions_raw SET outcome = 'x' WHERE 1", "UPDATE"),
    ("USE system", "USE"),
    ("EXCHANGE TABLES a AND b", "EXCHANGE"),
    ("BACKUP TABLE a TO Disk('d', 'x')", "BACKUP"),
    ("EXPLAIN SYNTAX INSERT INTO t VALUES (1)", "INSERT"),
    ("EXPLAIN AST DROP TABLE t", "DROP"),
    ("SELECT 1 INTO OUTFILE '/tmp/x'", "OUTFILE"),
    ("REPLACE TABLE a AS SELECT 1", "REPLACE"),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "INSERT"),
]


@pytest.mark.parametrize(("sql", "word"), REFUSED)
def test_writes_and_administration_are_refused_with_the_keyword(sql: str, word: str) -> None:
    with pytest.raises(SqlGuardError) as caught:
        check_read_only(sql)
    assert word in caught.value.reason
    assert caught.value.hint, "every refusal says what to do instead"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; SELECT 2",
        "SELECT 1; DROP TABLE lineage_events_raw",
        "SELECT 1;;SELECT 2;",
        "SELECT 1 -- x\n; INSERT INTO t VALUES (1)",
    ],
)
def test_more_than_one_statement_is_refused(sql: str) -> None:
    with pytest.raises(SqlGuardError, match="statements given"):
        check_read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM url('http://169.254.169.254/', 'CSV')",
        "SELECT * FROM s3('https://bucket/x.csv')",
        "SELECT * FROM remote('other:9000', system.one)",
        "SELECT * FROM mysql('h:3306', 'db', 't', 'u', 'p')",
        "SELECT * FROM executable('x.sh', 'CSV', 'a String')",
        "SELECT file('secret.txt')",
        "SELECT * FROM URL ('http://x', 'CSV')",
    ],
)
def test_functions_that_reach_outside_the_store_are_refused(sql: str) -> None:
    with pytest.raises(SqlGuardError, match="reaches outside"):
        check_read_only(sql)


def test_a_format_clause_is_refused_because_the_caller_picks_the_format() -> None:
    with pytest.raises(SqlGuardError, match="FORMAT") as caught:
        check_read_only("SELECT 1 FORMAT CSV")
    assert "--format" in (caught.value.hint or "")
    # a column called format is not a FORMAT clause
    assert check_read_only("SELECT format FROM t WHERE 1").kind == "SELECT"


@pytest.mark.parametrize("sql", ["", "   ", "-- only a comment", "/* nothing */ ;", ";"])
def test_no_statement_is_refused(sql: str) -> None:
    with pytest.raises(SqlGuardError, match="no SQL statement"):
        check_read_only(sql)


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("SELECT 'open", "string"),
        ("SELECT `open", "quoted identifier"),
        ("SELECT 1 /* open", "comment"),
    ],
)
def test_unterminated_quotes_and_comments_are_syntax_errors(sql: str, what: str) -> None:
    with pytest.raises(SqlSyntaxError, match=f"unterminated {what}"):
        check_read_only(sql)


def test_a_column_named_like_a_keyword_is_refused_with_a_hint_to_back_quote_it() -> None:
    with pytest.raises(SqlGuardError) as caught:
        check_read_only("SELECT update FROM t")
    assert "`update`" in (caught.value.hint or "")


def test_split_statements_respects_quotes_and_comments() -> None:
    text = """
    -- header; with a semicolon
    CREATE TABLE a (x String DEFAULT ';') ENGINE = Memory;
    /* ; */ CREATE VIEW b AS SELECT 'x;y' AS z;

    ;
    """
    assert split_statements(text) == [
        "CREATE TABLE a (x String DEFAULT ';') ENGINE = Memory",
        "CREATE VIEW b AS SELECT 'x;y' AS z",
    ]


def test_tokens_keep_their_positions() -> None:
    tokens = tokenize("SELECT  x -- c\nFROM t")
    assert [(t.text, t.start) for t in tokens] == [("SELECT", 0), ("x", 8), ("FROM", 15), ("t", 20)]
