"""``trustplane operators``: the operator keys beyond the trust root.

The root keys are the operator keyset file (``operators.jwks.json``) the workers load at
start. A root key enrols more operator keys -- the non-extractable keys operators'
browsers hold in the console -- with signed ``operator.enroll`` commands on ``control``,
and retires them with ``operator.retire``: every worker trusts (or stops trusting) the
key from the command's append time on, without a restart
(:mod:`processors.control.operators`).

``invite`` makes a one-time link for the console's enrol page and waits to enrol the
key the browser sends (:mod:`streams.enrollment`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from processors.crypto.keys import KeyEntry, load_private_key
from processors.exceptions import TrustplaneError
from processors.timefmt import iso_ms
from streams.cli.context import settings
from streams.config import Settings

__all__ = ["operators_app"]

out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)

operators_app = typer.Typer(
    help="Operator keys beyond the trust root: enrol a browser's key (signed with a root "
    "key, in force on every worker at once, no restart), retire it, list them, or invite "
    "someone to enrol through the console.",
    no_args_is_help=True,
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _parse_time(text: str) -> int:
    """ISO 8601 (``2030-01-01T00:00:00Z``; no zone: UTC) as ms since the epoch."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TrustplaneError(
            f"--not-after {text!r} is not an ISO 8601 time", hint="e.g. 2030-01-01T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


# -- add, retire --------------------------------------------------------------------


ADD_HELP = (
    "Enrol an operator key, signed with the root key; every worker trusts it from the "
    "moment the broker appends the command.\n\n"
    "The console's enrol page shows this line, with the browser key's x and kid. Compare "
    "the kid with the one the person sees in their browser (in person, or on a channel you "
    "trust) before you run it: an enrolled key signs every control command but "
    "operator.enroll and operator.retire. The root key is TRUSTPLANE_OPERATOR_KEY_PATH "
    "(default <keys_dir>/operator.pem)."
)
RETIRE_HELP = (
    "Retire an enrolled operator key for good.\n\n"
    "Its commands appended from now on are refused; those it signed before stay valid "
    "(the key is kept, so the log still verifies). Root keys are retired in the operator "
    "keyset file instead (retired_at)."
)
LIST_HELP = (
    "List the root keys and the enrolled keys, with status and validity.\n\n"
    "Root keys come from the operator keyset file; enrolled keys from replaying the "
    "control topic, as every worker has them now."
)
INVITE_HELP = (
    "Make a one-time enrolment link for the console; wait for it, and enrol the browser's "
    "key with the root key.\n\n"
    "The link (<console url>/enroll#<id>.<secret>) is good for one key until it expires. "
    "The page makes a non-extractable key in the browser and sends its public half; this "
    "process checks it and sends operator.enroll signed with the root key, so the console "
    "never holds an operator key.\n\n"
    "Exits when the key is enrolled (0), refused (1), or at expiry (2). Whoever opens the "
    "link first gets the enrolment: give it only to the person it is for, and keep the "
    "time short."
)


@operators_app.command("add", help=ADD_HELP)
def add(
    ctx: typer.Context,
    x: Annotated[
        str,
        typer.Option(
            "--x", help="The public key: the JWK member x (base64url, 43 characters, no padding)."
        ),
    ],
    kid: Annotated[
        str, typer.Option("--kid", help="Its id: the RFC 7638 JWK thumbprint of the key.")
    ],
    label: Annotated[
        str, typer.Option(help="Who holds the key (a person, a device): 1-200 characters.")
    ],
    not_after: Annotated[
        str | None,
        typer.Option(
            "--not-after",
            help="ISO 8601 time the key stops signing (e.g. 2030-01-01T00:00:00Z; no zone: "
            "UTC). Default: until retired.",
        ),
    ] = None,
) -> None:
    """Enrol an operator key (:data:`ADD_HELP`)."""
    from streams.operator import enroll_operator

    current = settings(ctx)
    not_after_ms = _parse_time(not_after) if not_after else None
    result = enroll_operator(current, kid=kid, x=x, label=label, not_after_ms=not_after_ms)
    out.print(f"[green]enrolled[/] {result.reason}")


@operators_app.command("retire", help=RETIRE_HELP)
def retire(
    ctx: typer.Context,
    kid: Annotated[
        str,
        typer.Argument(
            help="The enrolled key's id (see `operators list`); one that starts with '-' "
            "goes after `--`: retire --reason R -- -abc..."
        ),
    ],
    reason: Annotated[str, typer.Option(help="Why (kept in the log and shown by `list`).")],
) -> None:
    """Retire an enrolled operator key (:data:`RETIRE_HELP`)."""
    from streams.operator import retire_operator

    result = retire_operator(settings(ctx), kid=kid, reason=reason)
    out.print(f"[green]retired[/] {result.reason}")


# -- list ---------------------------------------------------------------------------


def _root_status(entry: KeyEntry, now: int) -> str:
    if entry.retired_at_ms is not None and now >= entry.retired_at_ms:
        return "retired"
    if entry.not_before_ms is not None and now < entry.not_before_ms:
        return "pending"
    return "active"


def _rows(current: Settings) -> list[dict[str, Any]]:
    from streams.operator import read_operators

    state = read_operators(current)
    now = _now_ms()
    rows: list[dict[str, Any]] = []
    for kid in state.operator_keys:
        entry = state.operator_keys[kid]
        rows.append(
            {
                "kid": kid,
                "role": "root",
                "label": "",
                "status": _root_status(entry, now),
                "from_ms": entry.not_before_ms,
                "until_ms": entry.retired_at_ms,
                "by": str(current.resolved_operator_keys_path),
                "reason": "",
            }
        )
    for kid in state.operators:
        enrolled = state.operators[kid]
        rows.append(
            {
                "kid": kid,
                "role": "enrolled",
                "label": enrolled.label,
                "status": enrolled.status(now),
                "from_ms": enrolled.enrolled_at_ms,
                "until_ms": enrolled.until_ms,
                "by": enrolled.enrolled_by,
                "reason": enrolled.retire_reason,
                "x": enrolled.x,
                "retired_by": enrolled.retired_by,
            }
        )
    return rows


@operators_app.command("list", help=LIST_HELP)
def list_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
) -> None:
    """List operator keys (:data:`LIST_HELP`)."""
    rows = _rows(settings(ctx))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="operator keys")
    for column in ("kid", "role", "label", "status", "valid from", "until", "enrolled by"):
        table.add_column(column, overflow="fold")
    colors = {"active": "green", "retired": "red", "expired": "yellow", "pending": "yellow"}
    for row in rows:
        status = f"[{colors.get(row['status'], 'white')}]{row['status']}[/]"
        if row["reason"]:
            status += f" ({row['reason']})"
        table.add_row(
            row["kid"],
            row["role"],
            row["label"],
            status,
            iso_ms(row["from_ms"]) if row["from_ms"] is not None else "-",
            iso_ms(row["until_ms"]) if row["until_ms"] is not None else "-",
            row["by"] if row["role"] == "enrolled" else "(trust root)",
        )
    out.print(table)


# -- invite -------------------------------------------------------------------------


@operators_app.command("invite", help=INVITE_HELP)
def invite(
    ctx: typer.Context,
    label: Annotated[str, typer.Option(help="Who the link is for (what the key is enrolled as).")],
    ttl: Annotated[
        int, typer.Option(help="Seconds the link stays valid (at most 7 days).", min=1)
    ] = 600,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            help="Print the link, then wait in the background (pid in <state_dir>/invite.pid, "
            "log in <state_dir>/invite.log).",
        ),
    ] = False,
) -> None:
    """Invite someone to enrol a browser key (:data:`INVITE_HELP`)."""
    from streams.enrollment import InviteStore
    from streams.operator import root_keyset

    current = settings(ctx)
    key = load_private_key(current.resolved_operator_key_path)
    roots = root_keyset(current)
    if key.kid not in roots:
        raise TrustplaneError(
            f"key {key.kid!r} ({current.resolved_operator_key_path}) is not a root operator key",
            hint=f"invitations are enrolled by a root key of {current.resolved_operator_keys_path}",
        )
    roots.key_for(key.kid, _now_ms())  # valid now, else UnknownKeyError with the reason
    store = InviteStore(current.console_state_dir / "invites")
    made = store.create(label, ttl)
    link = made.link(current.console_url)
    out.print(
        f"enrolment link for [bold]{made.label}[/] (one key, until {iso_ms(made.expires_at_ms)}):"
    )
    out.print(link, soft_wrap=True, highlight=False, markup=False)
    if detach:
        pid_path = current.state_dir / "invite.pid"
        log_path = current.state_dir / "invite.log"
        child = _detach(pid_path, log_path)
        if child:  # the parent
            out.print(f"waiting in the background (pid {child}; log {log_path})")
            return
        code = _wait(current, store, made, key)
        _forget_pid(pid_path)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    code = _wait(current, store, made, key, raise_expired=True)
    if code:
        raise typer.Exit(code)


def _detach(pid_path: Path, log_path: Path) -> int:
    """Fork. In the parent: the child's pid, written to ``pid_path``. In the child
    (a new session, output to ``log_path``): 0."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.fork()
    if pid > 0:
        pid_path.write_text(f"{pid}\n")
        return pid
    os.setsid()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null_fd)
    os.close(log_fd)
    return 0


def _forget_pid(pid_path: Path) -> None:
    try:
        if pid_path.read_text().strip() == str(os.getpid()):
            pid_path.unlink()
    except OSError:
        pass


def _wait(
    current: Settings, store: Any, made: Any, key: Any, *, raise_expired: bool = False
) -> int:
    """Wait for the invitation, enrol its key; the exit code (0 enrolled, 1 refused,
    2 expired)."""
    from streams.enrollment import InviteExpired, Redemption, await_enrolment
    from streams.operator import enroll_operator

    def say(text: str) -> None:
        print(f"{datetime.now(UTC).isoformat(timespec='seconds')} {text}", flush=True)

    def enroll(redemption: Redemption) -> str:
        result = enroll_operator(
            current, kid=redemption.kid, x=redemption.x, label=redemption.enrolled_label, key=key
        )
        return result.reason

    say(f"invitation {made.id} ({made.label}): waiting until {iso_ms(made.expires_at_ms)}")
    try:
        status = await_enrolment(store, made, enroll, say=say)
    except InviteExpired as exc:
        if raise_expired:
            raise
        say(exc.diagnostics())
        return 2
    except TrustplaneError as exc:
        if raise_expired:
            raise
        say(f"error: {exc.diagnostics()}")
        return 1
    if status.state == "enrolled":
        say(f"operator key {status.kid} enrolled as {made.label!r}: {status.detail}")
        return 0
    say(f"invitation {made.id}: {status.state}: {status.detail}")
    return 1
