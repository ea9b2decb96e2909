"""``trustplane console``: the operators' web console (streams/console)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from processors.exceptions import TrustplaneError
from streams.cli.context import settings as settings_of

__all__ = ["console_command"]

err = Console(stderr=True)


def console_command(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="Port (default 6060, console_port).")] = None,
    bind: Annotated[
        str | None,
        typer.Option(
            help="Address to listen on (default 127.0.0.1). Beyond loopback it needs "
            "TRUSTPLANE_CONSOLE_TOKEN and --tls-cert/--tls-key."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate chain, to serve https.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
) -> None:
    """Serve the operators' console: Governance, Lineage, Health, Proof Viewer, Demo.

    Reading needs a login: open the URL printed at start (its token is kept in
    <state_dir>/console/console.token, 0600, or given as TRUSTPLANE_CONSOLE_TOKEN).
    The console holds no operator key: each operator's browser holds its own
    (enrol one with `trustplane operators invite`) and signs every command; the console
    relays them to `control`, where the workers verify them. It reads lineage from the
    sink's SQL endpoint (or clickhouse_url), proofs from the notary and metrics from
    Prometheus (`trustplane prometheus up`). Runs as the Kafka user `console`.
    """
    from streams.console.server import run_console

    current = settings_of(ctx).for_role("console")
    if port is not None:
        current = dataclasses.replace(current, console_port=port)
    if bind is not None:
        current = dataclasses.replace(current, console_bind=bind)
    if (tls_cert is None) != (tls_key is None):
        err.print("[red]error:[/] give both --tls-cert and --tls-key")
        raise typer.Exit(2)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run_console(current, tls_cert=tls_cert, tls_key=tls_key)
    except TrustplaneError as exc:
        err.print(f"[red]error:[/] {exc.reason}")
        if exc.hint:
            err.print(f"  hint: {exc.hint}")
        raise typer.Exit(1) from None
