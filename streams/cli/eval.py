"""``trustplane eval``: external evaluations of the gate (``eval agentdojo``).

The evaluation's packages (``agentdojo``, matplotlib) come with the ``eval`` extra and
are imported by the command, so ``trustplane --help`` needs none of them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streams.config import PROJECT_ROOT

__all__ = ["eval_app"]

eval_app = typer.Typer(
    help="Evaluate the gate on public test suites such as AgentDojo (needs the eval extra).",
    no_args_is_help=True,
)
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)


@eval_app.command("agentdojo")
def agentdojo(
    suite: Annotated[
        list[str] | None,
        typer.Option(
            "--suite", "-s", help="workspace, travel, banking or slack (repeat; default: all)."
        ),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Where report.md, report.json and plot.png go.")
    ] = PROJECT_ROOT / "docs" / "agentdojo",
    user_tasks: Annotated[
        int | None, typer.Option(help="Only the first N user tasks of each suite.")
    ] = None,
    injection_tasks: Annotated[
        int | None, typer.Option(help="Only the first N injection tasks of each suite.")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Episodes replayed at once.")] = 16,
    deadline: Annotated[
        float, typer.Option(help="Seconds a call may wait for its decision.")
    ] = 30.0,
    kafka_dir: Annotated[
        Path | None,
        typer.Option(help="The local broker's folder (default .state/eval-kafka; started if down)"),
    ] = None,
    keep_broker: Annotated[
        bool, typer.Option(help="Leave a broker this command started running.")
    ] = False,
) -> None:
    """Replay AgentDojo's four suites through the real pipeline and report.

    For each suite: an estate (one agent per episode, a runtime, the Cedar bundle, tool
    mapping and anomaly settings of policies/agentdojo/<suite>/), a gate worker, and every
    user task's ground-truth calls alone (utility), then with every injection task's calls
    interleaved where the injected text is read (attack), each call through the guard with
    the suite's own tool functions as the tools. Writes report.md, report.json, plot.png.
    """
    from rich.markup import escape

    from streams.eval.dojo import SUITES
    from streams.eval.report import write_report
    from streams.eval.run import EVAL_KAFKA_DIR, EvalOptions, run_agentdojo
    from streams.eval.scoring import score_suite

    chosen = tuple(suite or SUITES)
    options = EvalOptions(
        suites=chosen,
        user_tasks=user_tasks,
        injection_tasks=injection_tasks,
        concurrency=concurrency,
        deadline_s=deadline,
    )
    started = time.monotonic()

    def log(message: str) -> None:
        err.print(f"[dim]{time.monotonic() - started:6.1f}s[/] {escape(message)}", highlight=False)

    runs = run_agentdojo(
        options, kafka_dir=kafka_dir or EVAL_KAFKA_DIR, keep_broker=keep_broker, log=log
    )
    write_report(runs, options, out_dir, seconds=time.monotonic() - started)
    table = Table(title=f"AgentDojo {options.version} through the gate")
    for column in ("suite", "utility", "utility under attack", "ASR", "ASR undefended", "held"):
        table.add_column(column)
    for run in runs:
        f = score_suite(run.suite, run.results).figures()
        table.add_row(
            run.suite,
            *(
                f"{100 * f[key]:.1f}%"
                for key in (
                    "utility",
                    "utility_under_attack",
                    "attack_success_rate",
                    "undefended_attack_success_rate",
                    "held_for_review",
                )
            ),
        )
    out.print(table)
    out.print(f"report: {out_dir / 'report.md'} (and report.json, plot.png)")
