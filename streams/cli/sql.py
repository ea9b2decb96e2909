"""``trustplane sql`` and ``trustplane sink``: query the lineage store, and fill it.

``streams/cli/main.py`` mounts both commands. Also runnable on its own:
``python -m streams.cli.sql sql "SELECT 1"``. ClickHouse and chDB (``sinks``,
``streams.sink``) are imported by the commands, not with this module.
"""

from __future__ import annotations

import csv
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from processors.exceptions import TrustplaneError
from streams.cli import context
from streams.config import Settings

if TYPE_CHECKING:
    from sinks.base import ParamValue, QueryResult

__all__ = ["sql", "sink", "app", "main", "FORMATS"]

FORMATS = ("table", "csv", "json")

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)


def _settings() -> Settings:
    """The settings when this module's ``app`` runs on its own: the environment."""
    return Settings.load()


def _settings_of(ctx: typer.Context) -> Settings:
    """``trustplane --config``'s settings when mounted there, else :func:`_settings`."""
    given = context.options(ctx)
    return given.settings() if given is not None else _settings()


def _parse_params(pairs: list[str] | None) -> dict[str, ParamValue]:
    params: dict[str, ParamValue] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise TrustplaneError(
                f"--param {pair!r} is not name=value",
                hint="e.g. --param agent=billing-agent for {agent:String} in the query",
            )
        params[name.strip()] = value
    return params


def sql(
    ctx: typer.Context,
    statement: Annotated[
        str | None,
        typer.Argument(
            help="One read-only SQL statement (SELECT, WITH, SHOW, DESCRIBE, ...); - reads stdin."
        ),
    ] = None,
    output: Annotated[
        str, typer.Option("--format", "-f", help="Output: table, csv or json.")
    ] = "table",
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="Run a named analytics query (see --list).")
    ] = None,
    list_queries: Annotated[
        bool, typer.Option("--list", help="List the named analytics queries and exit.")
    ] = False,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="name=value for a {name:Type} placeholder; repeatable."),
    ] = None,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="Let one statement write (a ClickHouse server only; never the embedded store).",
        ),
    ] = False,
) -> None:
    """Query the lineage store with SQL (read-only unless --write).

    Tables/views: lineage_events, decisions, approvals, rejections, outcomes,
    checkpoints, intent_decisions, intent_latency (each *_raw table has the undeduplicated
    rows). With the embedded store the query goes to the running `trustplane sink`, with
    the endpoint's token from <state_dir>/sink/sql.token; with clickhouse_url set, to the
    server.
    """
    from sinks.clickhouse import get_named_query
    from sinks.sql_guard import SqlGuardError
    from streams.sink import SinkConfig, open_query_target
    from streams.sink.sql_server import sql_token_file

    if output not in FORMATS:
        raise TrustplaneError(f"unknown format {output!r}", hint=f"use one of {', '.join(FORMATS)}")
    if list_queries:
        _print_query_list(output)
        return
    if query and statement:
        raise TrustplaneError("give a SQL statement or --query NAME, not both")
    if query:
        text = get_named_query(query).sql
    elif statement == "-":
        text = sys.stdin.read()
    elif statement:
        text = statement
    else:
        raise TrustplaneError(
            "no query given",
            hint='e.g. trustplane sql "SELECT count() FROM lineage_events", or --query NAME '
            "(--list shows them)",
        )
    current = _settings_of(ctx)
    config = SinkConfig.from_settings(current)
    if write and not config.clickhouse_url:
        raise SqlGuardError(
            "--write needs a ClickHouse server",
            hint="the embedded store is written by the sink only; set clickhouse_url to write "
            "to a server",
        )
    target = open_query_target(
        config,
        token=str(getattr(current, "sink_sql_token", "") or "") or None,
        token_file=sql_token_file(current.state_dir),
    )
    try:
        result = target.query(text, _parse_params(param), readonly=not write)
    finally:
        target.close()
    _print_result(result, output, target.description)


def _print_query_list(output: str) -> None:
    from sinks.clickhouse import named_queries

    queries = named_queries()
    if output == "json":
        print(
            json.dumps(
                [
                    {"name": q.name, "title": q.title, "description": q.description}
                    for q in queries.values()
                ],
                indent=2,
            )
        )
        return
    if output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["name", "title", "description"])
        for q in queries.values():
            writer.writerow([q.name, q.title, q.description])
        return
    table = Table(title="Named analytics queries (trustplane sql --query NAME)")
    for column in ("name", "title", "description"):
        table.add_column(column, overflow="fold")
    for q in queries.values():
        table.add_row(q.name, q.title, q.description)
    out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _print_result(result: QueryResult, output: str, source: str) -> None:
    if output == "json":
        print(json.dumps(result.dicts(), ensure_ascii=False, indent=2))
        return
    if output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        for row in result.rows:
            writer.writerow([_cell(v) for v in row])
        return
    table = Table(show_lines=False)
    for name, kind in zip(result.columns, result.types, strict=True):
        numeric = any(t in kind for t in ("Int", "Float", "Decimal"))
        table.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row in result.rows:
        table.add_row(*(_cell(v) for v in row))
    out.print(table)
    noun = "row" if len(result) == 1 else "rows"
    err.print(f"[dim]{len(result)} {noun} in {result.elapsed_ms:.1f} ms from {source}[/]")


def sink(
    ctx: typer.Context,
    clickhouse_url: Annotated[
        str | None,
        typer.Option(
            help="ClickHouse server, http://user:pass@host:8123/db (default: embedded chDB)."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Embedded chDB folder (default: <state_dir>/clickhouse).")
    ] = None,
    http_port: Annotated[
        int | None, typer.Option(help="Port of the read-only SQL endpoint on 127.0.0.1 (0: off).")
    ] = None,
    batch_rows: Annotated[
        int | None, typer.Option(help="Records per ClickHouse write and Kafka commit, at most.")
    ] = None,
    batch_ms: Annotated[
        int | None,
        typer.Option(help="Write at least this often (milliseconds) while records arrive."),
    ] = None,
    fault_exit_after_flushes: Annotated[
        int | None,
        typer.Option(hidden=True, help="Test hook: exit after N writes, before committing."),
    ] = None,
) -> None:
    """Run the lineage sink: Kafka lineage and outcome topics -> ClickHouse.

    Applies the schema migrations, then writes every record once (idempotent tables;
    offsets are committed only after ClickHouse has the rows). Poison records go to
    `rejected`. Serves read-only SQL on 127.0.0.1 for `trustplane sql` (bearer token in
    <state_dir>/sink/sql.token). Stop with Ctrl-C.
    """
    from streams.sink import RunningSink, SinkConfig, run_sink

    current = _settings_of(ctx)
    config = SinkConfig.from_settings(
        current,
        clickhouse_url=clickhouse_url,
        data_dir=data_dir,
        http_port=http_port,
        batch_rows=batch_rows,
        batch_ms=batch_ms,
    )

    def started(running: RunningSink) -> None:
        def stop(signum: int, frame: object) -> None:
            running.runner.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        server = running.server
        endpoint = ""
        if server is not None:
            endpoint = f", SQL on http://{config.http_host}:{server.port}/sql"
            if server.token.path is not None:
                endpoint += f" (token in {server.token.path})"
        for note in running.notes:
            err.print(f"[dim]{note}[/]")
        err.print(
            f"lineage sink {running.runner.sink_id} on {current.resolved_bootstrap()} -> "
            f"{running.sink.description}{endpoint}"
        )

    run_sink(current, config, on_start=started, fault_exit_after_flushes=fault_exit_after_flushes)


app = typer.Typer(
    help="The lineage store: `sink` fills it from Kafka, `sql` queries it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("sql")(sql)
app.command("sink")(sink)


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app()
    except TrustplaneError as exc:
        err.print(f"[red]error:[/] {exc.diagnostics()}")
        sys.exit(2)


if __name__ == "__main__":
    main()
