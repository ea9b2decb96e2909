"""What every ``trustplane`` command shares: the global options, kept in the typer context.

``trustplane [--config FILE] [--verbose] COMMAND`` stores a :class:`CliOptions` as the
context object (``ctx.obj``) of the run; a command reads it from the ``ctx`` typer gives
it. A command app run on its own (``python -m streams.cli.sql``, a test's ``CliRunner``)
has no such object and gets the defaults: ``TRUSTPLANE_CONFIG`` and the ``TRUSTPLANE_*``
variables.

Nothing is kept in a module: the options live as long as the command line that gave them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from streams.config import Settings

__all__ = ["CliOptions", "options", "settings"]


@dataclass(frozen=True)
class CliOptions:
    """``trustplane``'s global options."""

    config: Path | None = None
    """``--config FILE``: a TOML settings file (else ``TRUSTPLANE_CONFIG``)."""
    verbose: bool = False
    """``--verbose``: tracebacks and debug logs."""

    def settings(self) -> Settings:
        return Settings.load(self.config)


def options(ctx: typer.Context) -> CliOptions | None:
    """``trustplane``'s options for this command line; None when the command runs outside it."""
    found: CliOptions | None = ctx.find_object(CliOptions)
    return found


def settings(ctx: typer.Context) -> Settings:
    """The settings of this command line: ``--config``, else the environment."""
    return (options(ctx) or CliOptions()).settings()
