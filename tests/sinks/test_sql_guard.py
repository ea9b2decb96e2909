"""The read-only SQL guard: one query over the lineage tables in, everything else out, with a
reason.

Two layers: the lexical check (no engine), then the allowlist over chDB's own parse tree,
tested here against a real store (one folder for the module: chDB hosts one per process).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sinks.base import QueryError
from sinks.clickhouse import ClickHouseSink, named_queries
from sinks.clickhouse.backends import ChdbBackend
from sinks.sql_guard import (
    ALLOWED_CATEGORIES,
    ALLOWED_TABLE_FUNCTIONS,
    GuardedStatement,
    QueryRunner,
    SqlGuard,
    SqlGuardError,
    SqlSyntaxError,
    check_read_only,
    split_statements,
    tokenize,
)

# -- 1. the lexical check ---------------------------------------------------------------

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
    ("EXISTS TABLE outcomes", "EXISTS"),  # the allowlist refuses it (below)
    ("SELECT name FROM system.tables", "SELECT"),  # so it does this
    ("SELECT 'DROP TABLE x; INSERT INTO y' AS harmless", "SELECT"),
    ('SELECT `update`, "delete" FROM t', "SELECT"),
    ("SELECT t.update FROM t", "SELECT"),
    ("SELECT replace(reason, 'a', 'b') FROM decisions", "SELECT"),
    ("SELECT format('{}', 1), formatReadableSize(1)", "SELECT"),
    ("SELECT 1 /* ; DROP TABLE x */", "SELECT"),
    ("SELECT 1 # trailing; comment", "SELECT"),
    ("SELECT 'it''s', 'a\\'b'", "SELECT"),
    ("SELECT agent_id FROM decisions WHERE agent_id = {agent:String}", "SELECT"),
    ("SELECT 'file(x)', `file` FROM t", "SELECT"),  # a string and a column, not calls
]


@pytest.mark.parametrize(("sql", "kind"), ACCEPTED)
def test_the_lexical_check_lets_read_only_statements_through(sql: str, kind: str) -> None:
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
    ("sql", "name"),
    [
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "file"),
        ("SELECT * FROM url('http://169.254.169.254/', 'CSV')", "url"),
        ("SELECT * FROM s3('https://bucket/x.csv')", "s3"),
        ("SELECT * FROM remote('other:9000', system.one)", "remote"),
        ("SELECT * FROM mysql('h:3306', 'db', 't', 'u', 'p')", "mysql"),
        ("SELECT * FROM executable('x.sh', 'CSV', 'a String')", "executable"),
        ("SELECT file('secret.txt')", "file"),
        ("SELECT * FROM URL ('http://x', 'CSV')", "URL"),
        # the live hole of the token blocklist: quoted identifiers are the same call
        ("SELECT `file`('/etc/passwd')", "file"),
        ("SELECT \"file\"('/etc/passwd')", "file"),
        ("SELECT * FROM `url`('http://x', 'CSV')", "url"),
        ("SELECT * FROM \"s3\"('https://bucket/x.csv')", "s3"),
    ],
)
def test_functions_that_reach_outside_the_store_are_refused_however_quoted(
    sql: str, name: str
) -> None:
    with pytest.raises(SqlGuardError, match="reaches outside") as caught:
        check_read_only(sql)
    assert caught.value.reason.startswith(f"{name}()")


@pytest.mark.parametrize(
    "sql",
    [
        "DESCRIBE TABLE url('http://127.0.0.1:9/', 'JSONEachRow')",
        "DESCRIBE TABLE `url`('http://127.0.0.1:9/', 'JSONEachRow')",
        "DESC file('/etc/passwd', 'CSVWithNames')",
        "DESCRIBE (SELECT 1)",
        "DESCRIBE TABLE system.processes",
        "DESCRIBE TABLE decisions FORMAT CSV",
    ],
)
def test_describe_takes_a_bare_table_name_only(sql: str) -> None:
    with pytest.raises(SqlGuardError) as caught:
        check_read_only(sql)
    assert caught.value.hint


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


# -- 2. the allowlist over the engine's parse tree, on a real store ---------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseSink]:
    sink = ClickHouseSink(path=tmp_path_factory.mktemp("guard") / "clickhouse")
    sink.setup()
    try:
        yield sink
    finally:
        sink.close()


@pytest.fixture(scope="module")
def backend(store: ClickHouseSink) -> ChdbBackend:
    backend = store._backend
    assert isinstance(backend, ChdbBackend)
    return backend


@pytest.fixture(scope="module")
def guard(backend: ChdbBackend) -> SqlGuard:
    return backend.guard


@pytest.fixture
def run(backend: ChdbBackend) -> Iterator[QueryRunner]:
    with backend.reader() as runner:
        yield runner


def refused(guard: SqlGuard, run: QueryRunner, sql: str) -> SqlGuardError:
    """The guard's refusal of ``sql`` (the test fails if it accepts it)."""
    with pytest.raises(SqlGuardError) as caught:
        guard.check(sql, run)
    assert caught.value.hint, f"no hint for the refusal of {sql!r}"
    return caught.value


def allowlist_refusal(guard: SqlGuard, run: QueryRunner, sql: str) -> SqlGuardError:
    """The refusal of ``sql`` by the allowlist alone, the lexical check left out."""
    with pytest.raises(SqlGuardError) as caught:
        guard.check_statement(GuardedStatement(sql, "SELECT"), run)
    return caught.value


def rows(run: QueryRunner, sql: str) -> list[list[object]]:
    return [list(row) for row in json.loads(run(sql, {}))["data"]]


# the project's own queries, and the analytics people write


@pytest.mark.parametrize("name", sorted(named_queries()))
def test_every_named_analytics_query_passes_the_guard_and_runs(
    store: ClickHouseSink, guard: SqlGuard, run: QueryRunner, name: str
) -> None:
    query = named_queries()[name]
    guard.check(query.sql, run)
    store.query(query.sql)


ANALYTICS = [
    "SELECT count() FROM lineage_events",
    "SELECT agent_id, countIf(outcome = 'DENIED'), uniqExact(intent_id), "
    "quantile(0.9)(kafka_offset) FROM decisions FINAL WHERE decided_at > now() - INTERVAL 1 DAY "
    "GROUP BY agent_id ORDER BY 2 DESC LIMIT 10",
    "WITH recent AS (SELECT * FROM decisions WHERE decided_at > today()) "
    "SELECT agent_id, row_number() OVER (PARTITION BY agent_id ORDER BY decided_at) FROM recent",
    "SELECT CAST(1 AS String), 1::UInt8, [1,2][1], (1,2).1, if(1, 'a', 'b'), "
    "CASE WHEN 1 THEN 2 END, CASE 1 WHEN 1 THEN 2 ELSE 3 END, lower('X'), COUNT(*), Count() "
    "FROM lineage_events",
    "SELECT arrayMap(x -> x + 1, [1,2]), sumIf(1, 1), avgOrNullIf(1, 1), uniqMerge(s) "
    "FROM (SELECT uniqState(1) AS s)",
    "SELECT * FROM approvals WHERE intent_id IN (SELECT intent_id FROM decisions)",
    "SELECT count() FROM approvals WHERE intent_id NOT IN decisions_raw",
    "SELECT d.agent_id, a.approval_id FROM decisions AS d "
    "LEFT JOIN approvals AS a ON d.intent_id = a.intent_id",
    "SELECT reason, count() FROM decisions ARRAY JOIN reasons AS reason GROUP BY reason",
    "SELECT intent_id FROM decisions UNION ALL SELECT intent_id FROM approvals",
    "SELECT intent_id FROM decisions INTERSECT SELECT intent_id FROM approvals",
    "SELECT agent_id, count() FROM decisions GROUP BY ROLLUP(agent_id) WITH TOTALS "
    "HAVING count() > 0 ORDER BY agent_id NULLS FIRST LIMIT 1 BY agent_id LIMIT 5",
    "SELECT * EXCEPT (reasons) FROM decisions",
    "SELECT COLUMNS('_id$') APPLY(toString) FROM decisions",
    "SELECT toStartOfHour(decided_at) AS h, count() FROM intent_decisions GROUP BY h",
    "SELECT count() FROM default.decisions",
    "SELECT number FROM numbers(10)",
    "SELECT {agent:String}, {since:DateTime64(3)}",
    "SELECT attributes['scenario'], formatReadableSize(1024) FROM lineage_events",
    "SELECT EXISTS(SELECT 1 FROM decisions)",
    "SELECT 'a\\\\b\ttab\nnewline' AS text -- a comment\n",
    "SHOW TABLES",
    "SHOW TABLES LIKE '%raw'",
    "EXPLAIN SELECT count() FROM decisions",
    "EXPLAIN SYNTAX SELECT 1",
    "DESCRIBE TABLE lineage_events",
    "desc `approvals`",
    "SHOW CREATE TABLE decisions",
]


@pytest.mark.parametrize("sql", ANALYTICS)
def test_everyday_analytics_pass_the_guard(guard: SqlGuard, run: QueryRunner, sql: str) -> None:
    guard.check(sql, run)


def test_a_query_that_passed_the_guard_runs_with_its_text_unchanged(store: ClickHouseSink) -> None:
    result = store.query("SELECT 'a\\\\b\ttab\nnewline' AS text -- a comment\n")
    assert result.scalar() == "a\\b\ttab\nnewline"


# file, network and host functions: refused as scalars, however spelled and wherever put

OUTSIDE = [
    "file",
    "filesystemAvailable",
    "filesystemCapacity",
    "hostName",
    "FQDN",
    "getOSKernelVersion",
    "getSetting",
    "getServerSetting",
    "getMacro",
    "getClientHTTPHeader",
    "showCertificate",
    "buildId",
    "serverUUID",
    "currentUser",
    "dictGet",
    "dictHas",
    "joinGet",
    "regionToName",
    "evalMLMethod",
    "aiGenerate",
    "addressToSymbol",
    "sleep",
    "sleepEachRow",
    "globalIn",
]
SPELLINGS = ["{f}('x')", "`{f}`('x')", "\"{f}\"('x')"]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("function", OUTSIDE)
def test_functions_that_read_files_reach_out_or_leak_the_host_are_refused(
    guard: SqlGuard, run: QueryRunner, function: str, spelling: str
) -> None:
    call = spelling.format(f=function)
    error = refused(guard, run, f"SELECT {call}")
    assert function in error.reason
    # and by the allowlist alone, without the lexical net
    alone = allowlist_refusal(guard, run, f"SELECT {call}")
    assert f"function {function}()" in alone.reason


PLACES = [
    "SELECT {call}",
    "SELECT * FROM (SELECT {call} AS v)",
    "SELECT (SELECT {call})",
    "WITH c AS (SELECT {call} AS v) SELECT v FROM c",
    "WITH {call} AS v SELECT v",
    "WITH p -> {fn}(p) AS g SELECT g('x')",
    "SELECT arrayMap(p -> {fn}(p), ['x'])",
    "SELECT count() FROM decisions WHERE {call} != ''",
    "SELECT agent_id FROM decisions ORDER BY {call}",
    "SELECT 1 FROM decisions AS d JOIN approvals AS a ON {call} = a.intent_id",
    "SELECT 'a' UNION ALL SELECT {call}",
    "SELECT 1 WHERE 'x' IN (SELECT {call})",
    "SELECT * APPLY({fn}) FROM (SELECT 'x' AS p)",
    "SELECT row_number() OVER (ORDER BY {call}) FROM decisions",
    "EXPLAIN SELECT {call}",
    "EXPLAIN AST SELECT {call}",
]


@pytest.mark.parametrize("fn", ["file", "`file`", '"file"', "fIle", "`fi\nle`", "hostName"])
@pytest.mark.parametrize("place", PLACES)
def test_a_forbidden_function_is_found_anywhere_in_the_query(
    guard: SqlGuard, run: QueryRunner, place: str, fn: str
) -> None:
    sql = place.format(call=f"{fn}('/etc/passwd')", fn=fn)
    error = refused(guard, run, sql)
    assert "not allowed" in error.reason or "reaches outside" in error.reason


EXTRA = {
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
"""The few functions allowed outside the safe categories (all compute on their arguments)."""


def test_every_allowed_function_is_of_a_safe_category(guard: SqlGuard, run: QueryRunner) -> None:
    catalogue = rows(run, "SELECT name, categories, alias_to FROM system.functions")
    category = {str(name): str(cats) for name, cats, _ in catalogue}
    allowed = []
    for name, cats, alias in catalogue:
        name, alias = str(name), str(alias)
        own = category.get(alias, "") if alias else str(cats)
        if guard.functions.allows(name):
            allowed.append(name)
            assert own in ALLOWED_CATEGORIES or {name, alias} & EXTRA, f"{name} ({own!r})"
            assert not name.startswith("global") and "IgnoreSet" not in name
    # about 1500 of about 1900: the computing functions, not Other, Dictionary, AI, ...
    assert 1000 < len(allowed) < len(catalogue)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("count", True),
        ("COUNT", True),  # case-insensitive in the engine
        ("cOuNt", True),
        ("uniqExact", True),
        ("uniqexact", False),  # case-sensitive in the engine
        ("avgOrNullIf", True),  # combinators on an allowed aggregate
        ("uniqMergeState", True),
        ("quantilesExactIf", True),
        ("dense_rank", True),  # an alias, with its target's category
        ("lcase", True),
        ("lowerIf", False),  # a combinator on a function that is no aggregate
        ("fileIf", False),
        ("FILE", False),
        ("sleep", False),
        ("globalNotIn", False),
        ("inIgnoreSet", False),
        ("lambda", True),
    ],
)
def test_the_function_allowlist(guard: SqlGuard, name: str, allowed: bool) -> None:
    assert guard.functions.allows(name) is allowed


# table functions: none but numbers, however spelled, also under DESCRIBE


TABLE_FUNCTION_ARGUMENTS = {
    "view": "SELECT 1",
    "viewIfPermitted": "SELECT 1 ELSE null('a Int8')",
    "viewExplain": "'EXPLAIN', '', (SELECT 1)",
}


TABLE_PLACES = [
    "SELECT * FROM {call}",
    "SELECT count() FROM decisions WHERE intent_id IN (SELECT * FROM {call})",
    "SELECT 1 FROM decisions AS d JOIN {call} AS t ON 1",
    "WITH t AS (SELECT * FROM {call}) SELECT * FROM t",
]


def test_every_table_function_but_numbers_is_refused(guard: SqlGuard, run: QueryRunner) -> None:
    names = [str(row[0]) for row in rows(run, "SELECT name FROM system.table_functions")]
    assert "file" in names and "url" in names and len(names) > 50
    for name in [*names, "Python"]:
        if name in ALLOWED_TABLE_FUNCTIONS:
            continue
        arguments = TABLE_FUNCTION_ARGUMENTS.get(name, "'x'")
        for spelled in (name, f"`{name}`", f'"{name}"'):
            call = f"{spelled}({arguments})"
            for place in TABLE_PLACES:
                sql = place.format(call=call)
                error = refused(guard, run, sql)
                assert name.lower() in error.reason.lower(), (sql, error.reason)
                alone = allowlist_refusal(guard, run, sql)
                assert f"table function {name}()" in alone.reason, (sql, alone.reason)
            error = refused(guard, run, "DESCRIBE TABLE " + call)
            assert "DESCRIBE" in error.reason or name.lower() in error.reason.lower()


# output clauses, settings, other databases, other statements


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT 1 INTO OUTFILE '/tmp/x'", "OUTFILE"),
        ("SELECT 1 INTO OUTFILE '/tmp/x' APPEND", "OUTFILE"),
        ("SELECT 1 INTO OUTFILE '/tmp/x' TRUNCATE", "OUTFILE"),
        ("SELECT 1 INTO OUTFILE '/tmp/x' AND STDOUT", "OUTFILE"),
        ("SELECT 1 INTO OUTFILE '/tmp/x.gz' COMPRESSION 'gzip' LEVEL 3", "OUTFILE"),
        ("EXPLAIN SYNTAX SELECT 1 INTO OUTFILE '/tmp/x'", "OUTFILE"),
        ("SELECT 1 FORMAT CSV", "FORMAT"),
        ("SELECT * FROM decisions FORMAT JSONEachRow", "FORMAT"),
        ("SELECT 1 SETTINGS readonly = 0", "SETTINGS"),
        ("SELECT 1 SETTINGS max_memory_usage = 0", "SETTINGS"),
        ("SELECT * FROM (SELECT 1 SETTINGS max_threads = 64)", "SETTINGS"),
        ("EXPLAIN PLAN actions = 1 SELECT 1", "SETTINGS"),
    ],
)
def test_output_clauses_and_settings_are_refused(
    guard: SqlGuard, run: QueryRunner, sql: str, reason: str
) -> None:
    assert reason in refused(guard, run, sql).reason
    if not sql.startswith("EXPLAIN"):
        alone = allowlist_refusal(guard, run, sql)
        assert any(word in alone.reason for word in (reason, "INTO OUTFILE", "a FORMAT clause"))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM system.processes",
        "SELECT * FROM system.users",
        "SELECT name FROM system.tables",
        "SELECT 1 WHERE 1 IN system.users",
        "SELECT 1 FROM decisions AS d JOIN system.tables AS t ON 1",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM INFORMATION_SCHEMA.TABLES",
        "WITH `system.one` AS (SELECT 1) SELECT * FROM system.one",
        "SELECT * FROM other_database.decisions",
        "SELECT * FROM {t:Identifier}",
        "SELECT 1 WHERE 1 IN {t:Identifier}",
        "SELECT * FROM no_such_table",
    ],
)
def test_only_the_lineage_tables_can_be_read(guard: SqlGuard, run: QueryRunner, sql: str) -> None:
    error = refused(guard, run, sql)
    assert "table" in error.reason


@pytest.mark.parametrize(
    "sql",
    [
        "SHOW TABLES FROM system",
        "SHOW DATABASES",
        "SHOW SETTINGS LIKE 'max%'",
        "SHOW CLUSTERS",
        "SHOW DICTIONARIES",
        "SHOW PROCESSLIST",
        "SHOW GRANTS",
        "SHOW COLUMNS FROM decisions",
        "EXISTS TABLE decisions",
        "EXPLAIN CURRENT TRANSACTION",
        "EXPLAIN TABLE OVERRIDE mysql('h:3306', 'db', 't', 'u', 'p') PARTITION BY x",
        "EXPLAIN AST SHOW TABLES",
        "DESCRIBE TABLE system.processes",
        "DESCRIBE TABLE no_such_table",
        "SHOW CREATE TABLE system.users",
        "SELECT 1; DROP TABLE decisions_raw",
        "SELECT 1; SELECT 2",
        "INSERT INTO decisions_raw SELECT * FROM decisions_raw",
    ],
)
def test_other_statements_are_refused(guard: SqlGuard, run: QueryRunner, sql: str) -> None:
    refused(guard, run, sql)


def test_a_syntax_error_is_reported_with_the_engines_reason(
    guard: SqlGuard, run: QueryRunner
) -> None:
    with pytest.raises(SqlSyntaxError, match="Syntax error") as caught:
        guard.check("SELECT 1 +", run)
    assert "parseQueryToJSON" not in caught.value.reason  # the guard's own query is not shown


def test_a_table_created_after_the_guard_was_built_is_known(
    store: ClickHouseSink, backend: ChdbBackend, guard: SqlGuard, run: QueryRunner
) -> None:
    refused(guard, run, "SELECT count() FROM late_table")
    backend.execute("CREATE TABLE late_table (a Int8) ENGINE = Memory")
    guard.check("SELECT count() FROM late_table", run)
    assert store.query("SELECT count() FROM late_table").scalar() == 0


def test_the_guard_is_applied_below_the_sink_too(backend: ChdbBackend) -> None:
    """Every read-only select of the backend is checked, whoever calls it."""
    with pytest.raises(SqlGuardError, match="file"):
        backend.select("SELECT `file`('/etc/passwd')", {}, readonly=True)
    with pytest.raises(SqlGuardError, match="hostName"):
        backend.select("SELECT hostName()", {}, readonly=True)


def test_the_engine_would_have_read_the_file_without_the_guard(
    run: QueryRunner, tmp_path: Path
) -> None:
    """Why the guard exists: readonly=1 alone lets the scalar file() read any file."""
    secret = tmp_path / "secret.key"
    secret.write_text("private key material")
    answer = rows(run, f"SELECT `file`('{secret}')")
    assert answer == [["private key material"]]


def test_a_guard_refusal_is_not_an_engine_error(guard: SqlGuard, run: QueryRunner) -> None:
    error = refused(guard, run, "SELECT getSetting('readonly')")
    assert not isinstance(error, QueryError)
