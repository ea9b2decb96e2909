"""``trustplane prometheus …``: the local Prometheus that the health dashboard reads.

``up`` writes ``<state_dir>/prometheus/prometheus.yml`` (the gate worker, the notary and
the sink of the settings, on 127.0.0.1; the alert rules of ``infra/prometheus``) and
starts Debian's ``prometheus`` on 127.0.0.1:``prometheus_port`` (6069), or reloads the
one already running; ``status`` shows it and its scrape targets; ``down`` stops it
(``streams/dev/prometheus.py``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from streams.cli.context import settings

if TYPE_CHECKING:
    from streams.dev.prometheus import LocalPrometheus

__all__ = ["prometheus_app"]

out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)

prometheus_app = typer.Typer(
    help="The local Prometheus (Debian's `prometheus`): scrapes the gate worker, the notary "
    "and the sink, evaluates the alert rules; the console's health dashboard reads it."
)


def _progress(message: str) -> None:
    err.print(f"[dim]{message}[/]")


def _local(ctx: typer.Context, **overrides: object) -> LocalPrometheus:
    from streams.dev.prometheus import LocalPrometheus

    return LocalPrometheus.for_settings(settings(ctx), progress=_progress, **overrides)


@prometheus_app.command("up")
def prometheus_up(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds to wait until it is ready.")] = 30.0,
    worker: Annotated[
        list[str] | None,
        typer.Option(
            help="host:port of a gate worker to scrape (repeat for several; default: "
            "127.0.0.1:<web_port>)."
        ),
    ] = None,
    scrape_interval: Annotated[
        float, typer.Option(help="Seconds between two scrapes (and rule evaluations).")
    ] = 2.0,
    retention: Annotated[str, typer.Option(help="How long samples are kept.")] = "6h",
) -> None:
    """Start Prometheus on 127.0.0.1:<prometheus_port>, or make the running one reload.

    Writes <state_dir>/prometheus/prometheus.yml (the worker, notary and sink of the
    settings; the alert rules of infra/prometheus), then waits until Prometheus is ready.
    """
    local = _local(
        ctx,
        workers=tuple(worker) if worker else None,
        scrape_interval_s=scrape_interval,
        retention=retention,
    )
    info = local.up(timeout=timeout)
    config = local.config
    jobs = [
        f"worker {', '.join(config.workers) or '(none)'}",
        f"notary {', '.join(config.notaries) or '(none)'}",
        f"sink {', '.join(config.sinks) or '(none)'}",
    ]
    out.print(
        f"Prometheus is up at [bold]{info.url}[/] (pid {info.pid}, log {info.log_path}); "
        f"scraping {'; '.join(jobs)} every {config.scrape_interval_s:g} s; "
        f"alert rules {config.rules_file}",
        highlight=False,
    )


@prometheus_app.command("down")
def prometheus_down(ctx: typer.Context) -> None:
    """Stop the local Prometheus (its data is kept, for the retention time)."""
    stopped = _local(ctx).down()
    out.print("Prometheus stopped." if stopped else "Prometheus was not running.")


@prometheus_app.command("status")
def prometheus_status(ctx: typer.Context) -> None:
    """Show whether the local Prometheus is up, and its scrape targets (exit 1: not up)."""
    local = _local(ctx)
    info = local.status()
    if info is None:
        out.print("Prometheus is not running. Start it with `trustplane prometheus up`.")
        raise typer.Exit(1)
    out.print(f"Prometheus is up at [bold]{info.url}[/] (pid {info.pid}, data {info.data_dir})")
    targets = local.targets()
    if not targets:
        out.print("  no scrape targets yet (Prometheus applies new ones within about 5 s)")
    for target in targets:
        color = "green" if target["health"] == "up" else "red"
        error = f"  {escape(target['last_error'])}" if target["last_error"] else ""
        out.print(
            f"  {target['job']:18s} {target['instance']:22s} "
            f"[{color}]{target['health'] or 'unknown'}[/]{error}",
            highlight=False,
        )
