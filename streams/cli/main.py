"""``trustplane``: run the gate, talk to it, and run the local broker.

Every command reads the same settings: defaults, then ``--config FILE`` (TOML) or
``TRUSTPLANE_CONFIG``, then ``TRUSTPLANE_*`` variables. Errors print what went wrong and
what to do, and exit non-zero; ``--verbose`` adds the traceback.

This module assembles the command from the others, and imports run one way: main ->
kafka, ops, policy, proof, sql -> context (policy also -> ops). The global options travel in
the typer context, ``ctx.obj`` (:mod:`streams.cli.context`); no module holds state.
Whatever needs Faust, Cedar, ClickHouse or RocksDB is imported by the command that uses
it, so ``trustplane --help`` and the client commands run with the SDK's dependencies
alone.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from typer.core import TyperGroup

from processors.exceptions import TrustplaneError
from streams.cli import ops
from streams.cli.console import console_command
from streams.cli.context import CliOptions, options, settings
from streams.cli.eval import eval_app
from streams.cli.kafka import kafka_app
from streams.cli.mcp import mcp_app
from streams.cli.operators import operators_app
from streams.cli.policy import policy_app
from streams.cli.prometheus import prometheus_app
from streams.cli.proof import notary_command, proof_app
from streams.cli.sql import sink as sink_command
from streams.cli.sql import sql as sql_command
from streams.config import Settings
from streams.dev.demo_runner import demo_runner_command

__all__ = ["main", "cli"]

# piped output (CI logs, `make run | tee`) gets a readable width instead of rich's 80
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)


class _TrustplaneGroup(TyperGroup):
    """Catches the root error once: prints its diagnostics and exits 2, or, with
    ``--verbose``, lets it raise with its traceback."""

    def invoke(self, ctx: Any) -> Any:  # a typer.Context (its base class is typer's own)
        try:
            return super().invoke(ctx)
        except TrustplaneError as exc:
            given = options(ctx)
            if given is not None and given.verbose:
                raise
            err.print(f"[red]error:[/] {exc.diagnostics()}")
            raise typer.Exit(2) from exc


cli = typer.Typer(
    cls=_TrustplaneGroup,
    help="trustplane: no action an AI agent intends executes without authorization.\n\n"
    "Agents publish intents to Kafka; gate workers authorize them and write each one's "
    "outcome (approved, denied, review or rejected) and its lineage, exactly once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cli.add_typer(kafka_app, name="kafka")
cli.add_typer(prometheus_app, name="prometheus")
cli.add_typer(ops.keys_app, name="keys")
cli.add_typer(ops.agents_app, name="agents")
cli.add_typer(ops.runtime_app, name="runtime")
cli.add_typer(ops.killswitch_app, name="killswitch")
cli.add_typer(ops.review_app, name="review")
cli.add_typer(operators_app, name="operators")
cli.add_typer(policy_app, name="policy")
cli.add_typer(eval_app, name="eval")
cli.command()(ops.quarantine)
cli.command()(ops.release)
cli.command()(ops.verify)
cli.command("sql")(sql_command)
cli.command("sink")(sink_command)
cli.add_typer(proof_app)  # trustplane proof ..., trustplane checkpoint
cli.add_typer(mcp_app)  # trustplane mcp-proxy
cli.command("notary")(notary_command)
cli.command("console")(console_command)
cli.command("demo-runner")(demo_runner_command)


@cli.callback()
def _global(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML settings file (a \\[trustplane] table)."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Tracebacks, debug logs.")
    ] = False,
) -> None:
    ctx.obj = CliOptions(config=config, verbose=verbose)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# -- gate -------------------------------------------------------------------


@cli.command()
def worker(
    ctx: typer.Context,
    worker_id: Annotated[
        str | None,
        typer.Option(
            help="Stable worker name (default: host name). A second worker with the same "
            "name and state folder stands by and takes over when the first one ends."
        ),
    ] = None,
) -> None:
    """Run a gate worker: intents -> authorization -> enforcement -> outcome + lineage.

    Creates missing topics, then decides each intent exactly once (Kafka transactions).
    Serves /metrics and /healthz on TRUSTPLANE_WEB_PORT (6066). Stop with Ctrl-C.

    Warm standby: start a second worker with the same worker id and state folder
    (TRUSTPLANE_STATE_DIR) and its own TRUSTPLANE_WEB_PORT. It loads everything, follows
    the control topic and decides nothing (/healthz says "standby": true) until the
    first one ends, a crash included; then it takes over within about a second.
    """
    import faust

    from streams.gate.app import create_app

    given = options(ctx) or CliOptions()
    chosen = given.settings()
    if worker_id:
        chosen = Settings(**{**chosen.__dict__, "worker_id": worker_id})
    app = create_app(chosen)
    err.print(
        f"gate worker {chosen.resolved_worker_id()} on {chosen.resolved_bootstrap()}, "
        f"topics {chosen.topic('intents')} -> approved/denied/review/rejected"
    )
    faust.Worker(
        app, loglevel="DEBUG" if given.verbose else "WARNING", quiet=True
    ).execute_from_commandline()


@cli.command()
def submit(
    ctx: typer.Context,
    source: Annotated[
        str | None, typer.Argument(help="JSON or JSONL file of intents, or - for stdin.")
    ] = None,
    generate: Annotated[int, typer.Option(help="Generate N intents instead of reading them.")] = 0,
    agent: Annotated[str, typer.Option(help="Agent id of generated intents.")] = "billing-agent",
    action: Annotated[str, typer.Option(help="Action of generated intents.")] = "invoices.read",
    resource: Annotated[str, typer.Option(help="Resource of generated intents.")] = "invoice:1",
) -> None:
    """Publish intents. Fields you leave out (ids, nonce, times, runtime) are filled in."""
    from streams.sdk.client import IntentPublisher, new_intent

    if source is None and not generate:
        raise TrustplaneError("nothing to submit", hint="give a FILE, - for stdin, or --generate N")
    intents: list[dict[str, Any]] = []
    if generate:
        intents = [new_intent(agent, action, resource, sequence=i + 1) for i in range(generate)]
    else:
        for n, raw in enumerate(_read_json_records(source or "-"), start=1):
            intents.append(_complete_intent(raw, n))
    with IntentPublisher(settings(ctx).for_role("agent")) as publisher:
        for intent in intents:
            publisher.publish(intent)
    for intent in intents[:20]:
        out.print(f"published {intent['intent_id']}  {intent['agent_id']}  {intent['action']}")
    if len(intents) > 20:
        out.print(f"... and {len(intents) - 20} more")
    out.print(f"[bold]{len(intents)}[/] intents published.")


def _read_json_records(source: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    text = text.strip()
    try:
        if text.startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise TrustplaneError(
            f"{source} is not JSON or JSONL: {exc}", hint="one intent object per line"
        ) from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TrustplaneError(f"{source}: every intent must be a JSON object")
    return list(records)


def _complete_intent(raw: dict[str, Any], n: int) -> dict[str, Any]:
    from streams.sdk.client import new_intent

    missing = [f for f in ("agent_id", "action", "resource") if f not in raw]
    if missing:
        raise TrustplaneError(f"intent #{n} lacks {', '.join(missing)}")
    base = new_intent(
        raw["agent_id"], raw["action"], raw["resource"], sequence=int(raw.get("sequence", n))
    )
    return {**base, **raw}


@cli.command()
def tail(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="approved, denied, review, rejected, lineage, ...")],
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest record.")] = False,
    limit: Annotated[int, typer.Option("--max", help="Stop after N records (0: no limit).")] = 0,
    idle: Annotated[float, typer.Option(help="Stop after this many idle seconds (0: never).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print a topic's records, decoded (read_committed: only committed decisions)."""
    from streams.sdk.client import OutcomeReader

    count = 0
    last = time.monotonic()
    with OutcomeReader(settings(ctx), [topic], from_beginning=from_beginning) as reader:
        while True:
            for received in reader.read(timeout=0.5):
                last = time.monotonic()
                count += 1
                _print_record(received, as_json)
                if limit and count >= limit:
                    return
            if idle and time.monotonic() - last > idle:
                return


def _print_record(received: Any, as_json: bool) -> None:
    record = received.record
    if as_json:
        body = record if record is not None else {"undecodable": received.error}
        out.print_json(json.dumps(body, default=_json_default), indent=None)
        return
    if record is None:
        out.print(f"[red]{received.topic}[/] undecodable: {received.error}")
        return
    summary = {k: v for k, v in record.items() if k not in ("envelope", "value_prefix")}
    out.print(f"[bold]{received.topic}[/] p{received.partition}@{received.offset} ", end="")
    out.print(json.dumps(summary, default=_json_default), highlight=False, soft_wrap=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 64 else f"<{len(value)} bytes>"
    raise TypeError(f"cannot show {type(value).__name__}")


@cli.command()
def demo(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every outcome.")] = 60.0,
    agents: Annotated[
        bool,
        typer.Option(
            "--agents",
            help="Then run an agent's tool calls through `trustplane mcp-proxy` in front of "
            "the example billing MCP server (needs the [mcp] extra).",
        ),
    ] = False,
) -> None:
    """Publish a small demo stream (allowed, denied, malformed) and summarize the outcomes.

    Needs a running broker and worker (`make run` starts both). With --agents, an MCP
    client then calls four tools as `billing-assistant` through the proxy: one runs, one
    is denied, one is held for review, one is not in the mapping.
    """
    from rich.markup import escape

    from streams.dev.demo import run_demo

    with Progress(
        TextColumn("waiting for outcomes"), BarColumn(), MofNCompleteColumn(), console=err
    ) as bar:
        task = bar.add_task("outcomes", total=None)
        result = run_demo(
            settings(ctx),
            timeout_s=timeout,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
        )
    table = Table(title=f"What the gate did with {len(result.items)} demo intents")
    for column in ("#", "demo intent", "expected", "outcome", "why"):
        table.add_column(column, overflow="fold")
    colors = {"approved": "green", "denied": "red", "review": "yellow", "rejected": "magenta"}
    for n, item in enumerate(result.items, start=1):
        got = item.got or "NO OUTCOME"
        mark = "" if item.got == item.expected else " [bold red](unexpected)[/]"
        table.add_row(
            str(n),
            item.label,
            item.expected,
            f"[{colors.get(got, 'red')}]{got}[/]{mark}",
            escape(item.reason[:160]),
        )
    out.print(table)
    counts = {k: sum(1 for i in result.items if i.got == k) for k in colors}
    out.print(
        ", ".join(f"{v} {k}" for k, v in counts.items())
        + f" — {result.matched}/{len(result.items)} as expected, in {result.elapsed_s:.1f} s"
    )
    if result.matched != len(result.items):
        raise TrustplaneError(
            f"{len(result.items) - result.matched} demo intents did not end as expected "
            f"({result.missing} without any outcome)",
            hint="is a worker running? see .state/worker.log or run `trustplane worker`",
        )
    if agents:
        _agent_demo(settings(ctx))


def _agent_demo(config: Any) -> None:
    import asyncio

    from rich.markup import escape

    from streams.dev.agent_demo import run_agent_demo

    results = asyncio.run(run_agent_demo(config))
    table = Table(title="An agent's tool calls through `trustplane mcp-proxy` (billing-assistant)")
    for column in ("tool call", "tool", "ran?", "what the agent was told"):
        table.add_column(column, overflow="fold")
    for r in results:
        ran = "[green]ran[/]" if r.ran else "[red]did not run[/]"
        mark = "" if r.as_expected else " [bold red](unexpected)[/]"
        told = escape(r.text.replace("\n", " ")[:260])  # the tool's and the gate's text
        table.add_row(r.call.label, r.call.tool, ran + mark, told)
    out.print(table)
    held = [r for r in results if "review" in r.text and not r.ran]
    if held:
        out.print(
            "The refund waits for a person: `trustplane review list`, then "
            "`trustplane review approve <intent id>`."
        )
    if not all(r.as_expected for r in results):
        raise TrustplaneError(
            "the agent demo's tool calls did not end as expected",
            hint=f"see {config.state_dir / 'agent-demo' / 'mcp-proxy.log'}",
        )


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
