"""``trustplane policy``: validate, test and package Cedar policy bundles.

A bundle is a directory (``policies.cedar``, ``schema.cedarschema`` or
``schema.cedarschema.json``, ``manifest.json``) or the single JSON document published
on the control topic. Every command accepts both.

    trustplane policy validate policies/bundle
    trustplane policy test policies/bundle policies/bundle.cases.json
    trustplane policy bundle policies/bundle -o bundle.json

An invalid bundle or a failing case exits 1 with Cedar's reason; a file that cannot be
read exits 2. ``trustplane policy publish`` signs a bundle and sends it to the workers.

Cedar (``processors.layers.policy``) is imported by the commands, not with this module.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from processors.exceptions import TrustplaneError
from streams.cli.ops import send

if TYPE_CHECKING:
    from processors.layers.policy import PolicyBundle, PolicyBundleError, PolicyEngine

__all__ = ["policy_app"]

policy_app = typer.Typer(
    help="Cedar policy bundles: validate them, run their test tables, package them for publishing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

BundleArg = Annotated[
    Path,
    typer.Argument(help="A bundle directory, or a bundle JSON document.", show_default=False),
]
AtOption = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="Check expiry as of this ISO 8601 time (e.g. 2027-01-01T00:00:00Z); default now.",
    ),
]


def _now_ms(at: str | None) -> int:
    if at is None:
        return time.time_ns() // 1_000_000
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        _fail(TrustplaneError(f"--at {at!r} is not an ISO 8601 time", hint="2027-01-01T00:00:00Z"))
    if moment.tzinfo is None:
        _fail(TrustplaneError(f"--at {at!r} has no time zone", hint="end it with Z for UTC"))
    return int(moment.timestamp() * 1000)


def _fail(exc: TrustplaneError, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/] {escape(exc.diagnostics())}", soft_wrap=True)
    raise typer.Exit(code)


def _invalid(path: Path, exc: PolicyBundleError) -> NoReturn:
    err.print(
        f"[red bold]invalid[/] policy bundle {escape(str(path))}: {escape(exc.reason)}",
        soft_wrap=True,
    )
    if exc.hint:
        err.print(f"  hint: {escape(exc.hint)}", soft_wrap=True)
    raise typer.Exit(1)


def _load(path: Path, now_ms: int) -> tuple[PolicyBundle, PolicyEngine]:
    from processors.layers.policy import PolicyBundle, PolicyBundleError, compile_bundle

    if not path.exists():
        _fail(
            TrustplaneError(f"{path} does not exist", hint="give a bundle directory or JSON file")
        )
    try:
        bundle = PolicyBundle.load(path)
        return bundle, compile_bundle(bundle, now_ms)
    except PolicyBundleError as exc:
        _invalid(path, exc)


def _relative(ms: int, now_ms: int) -> str:
    days = (ms - now_ms) / 86_400_000
    if days >= 1:
        return f"in {days:,.0f} days"
    if days >= 0:
        return f"in {days * 24:.1f} hours"
    return f"{-days:,.1f} days ago"


@policy_app.command("validate")
def validate(bundle: BundleArg, at: AtOption = None) -> None:
    """Check a bundle as a gate worker would: parse, @ids, schema validation, expiry.

    Prints its version, digest, number of policies and expiry; exits 1 with Cedar's
    reason when the bundle is invalid.
    """
    from processors.layers.policy import iso_ms

    now_ms = _now_ms(at)
    loaded, engine = _load(bundle, now_ms)
    manifest = loaded.manifest
    effects = [p.effect for p in engine.policies.values()]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("version", f"[bold]{escape(manifest.version)}[/]")
    grid.add_row("digest", loaded.digest)
    grid.add_row(
        "policies",
        f"{engine.policy_count} ({effects.count('permit')} permit, "
        f"{effects.count('forbid')} forbid)",
    )
    grid.add_row("created", iso_ms(manifest.created_at_ms))
    grid.add_row(
        "expires", f"{iso_ms(manifest.expires_at_ms)} ({_relative(manifest.expires_at_ms, now_ms)})"
    )
    if manifest.description:
        grid.add_row("description", escape(manifest.description))
    grid.add_row("compiled in", f"{engine.compile_ms:.1f} ms")
    out.print(f"[green bold]valid[/] policy bundle {escape(str(bundle))}")
    out.print(grid)


@policy_app.command("test")
def run_tests(
    bundle: BundleArg,
    cases: Annotated[Path, typer.Argument(help="A test table (*.cases.json).", show_default=False)],
    at: AtOption = None,
    failures_only: Annotated[
        bool, typer.Option("--failures-only", help="List only the cases that fail.")
    ] = False,
) -> None:
    """Run a test table of requests and expected decisions against a bundle.

    Prints PASS/FAIL per case with the policies that decided; exits 1 if any case fails.
    """
    from processors.layers.policy import load_cases, run_cases

    _, engine = _load(bundle, _now_ms(at))
    try:
        table_cases = load_cases(cases)
    except TrustplaneError as exc:
        _fail(exc)
    results = run_cases(engine, table_cases)
    table = Table(
        title=f"{escape(cases.name)} against policy bundle {escape(engine.version)}",
        title_justify="left",
    )
    for column in ("", "case", "decision", "determining policies / errors"):
        table.add_column(column, overflow="fold")
    for result in results:
        if failures_only and result.passed:
            continue
        decision = result.decision
        verdict = "[green]allow[/]" if decision.allowed else "[red]deny[/]"
        if decision.determining_policies:
            shown = escape(", ".join(decision.determining_policies))
        elif decision.errors:
            shown = escape("; ".join(decision.errors))
        else:
            shown = "[dim](default deny)[/]"
        name = escape(result.case.name)
        if result.passed:
            table.add_row("[green]PASS[/]", name, verdict, shown)
        else:
            problems = escape("; ".join(result.problems))
            table.add_row("[red bold]FAIL[/]", f"{name}\n[red]{problems}[/]", verdict, shown)
    out.print(table)
    passed = sum(r.passed for r in results)
    failed = len(results) - passed
    style = "green" if not failed else "red"
    out.print(f"[{style} bold]{passed} passed, {failed} failed[/]")
    if failed:
        raise typer.Exit(1)


@policy_app.command("bundle")
def package(
    directory: Annotated[Path, typer.Argument(help="The bundle directory.", show_default=False)],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Where to write the JSON document (- for stdout).",
            show_default=False,
        ),
    ],
    check: Annotated[
        bool, typer.Option(help="Validate before writing (as `policy validate` does).")
    ] = True,
    at: AtOption = None,
) -> None:
    """Write a bundle directory as the single JSON document published on `control`."""
    from processors.layers.policy import PolicyBundle, PolicyBundleError, compile_bundle

    if not directory.is_dir():
        _fail(TrustplaneError(f"{directory} is not a directory", hint="give a bundle directory"))
    try:
        loaded = PolicyBundle.from_directory(directory)
        if check:
            compile_bundle(loaded, _now_ms(at))
    except PolicyBundleError as exc:
        _invalid(directory, exc)
    text = json.dumps(loaded.to_document(), indent=2, ensure_ascii=False) + "\n"
    if str(output) == "-":
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            _fail(TrustplaneError(f"cannot write {output}: {exc}"))
        out.print(f"wrote {escape(str(output))}")
    err.print(f"policy bundle {escape(loaded.version)} {loaded.digest}")


@policy_app.command("publish")
def publish(
    ctx: typer.Context,
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or JSON document.")],
) -> None:
    """Sign and publish a policy bundle; workers hot-reload it (a bad one is refused)."""
    from processors.layers.policy import CONTROL_SUBJECT, PolicyBundle

    loaded = PolicyBundle.load(bundle)
    send(ctx, "policy.publish", loaded.to_document(), subject=CONTROL_SUBJECT)
    out.print(f"bundle {loaded.version} ({loaded.digest}) published")
