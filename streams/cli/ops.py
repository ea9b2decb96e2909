"""Operator commands: keys, agents, runtimes, policy publishing, quarantine, kill switch,
review, and approval verification. Each control command is signed with the operator
key (``<keys_dir>/operator.pem`` or TRUSTPLANE_OPERATOR_KEY_PATH) and published to
``control``; every worker applies it before its next batch.

``streams/cli/main.py`` mounts these apps and commands; ``policy publish`` lives with the
other policy commands (``streams/cli/policy.py``) and sends through :func:`send`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from processors.approval import SigningKeyring, verify_approval
from processors.crypto.keys import (
    Keyset,
    b64url,
    generate_signing_key,
    jwk_thumbprint,
    load_private_key,
    raw_public_key,
    save_private_key,
)
from processors.exceptions import TrustplaneError
from processors.layers.integrity import runtime_quarantine_subject, runtime_subject
from processors.layers.integrity.resets import RESET_KIND, state_reset_subject
from processors.layers.killswitch import subject_of as killswitch_subject
from streams.cli.context import settings

__all__ = [
    "keys_app",
    "agents_app",
    "runtime_app",
    "killswitch_app",
    "review_app",
    "quarantine",
    "release",
    "verify",
    "send",
]

out = Console(width=None if sys.stdout.isatty() else 140)

keys_app = typer.Typer(help="Local keys: operator trust root, approval signing keys, agent keys.")
agents_app = typer.Typer(help="Register, revoke, suspend and list agents (signed commands).")
runtime_app = typer.Typer(help="Register runtimes and their allowed code/config measurements.")
killswitch_app = typer.Typer(help="Stop all intents, one agent's, or one action's, at once.")
review_app = typer.Typer(help="Intents held for review: list them, approve or deny them.")


def send(
    ctx: typer.Context, kind: str, payload: dict[str, Any], *, subject: str | None = None
) -> dict[str, Any]:
    """Sign a control command with the operator key, as the next of the key's history on
    ``control`` (read first), and publish it there under its subject."""
    from streams.operator import OperatorClient

    with OperatorClient(settings(ctx)) as operator:
        record = operator.send(kind, payload, subject=subject)
    out.print(
        f"[green]sent[/] {kind} for [bold]{record['subject']}[/] (command {record['command_id']}, "
        f"sequence {record['sequence']} of operator key {record['key_id']})"
    )
    return record


# -- keys ---------------------------------------------------------------------------


@keys_app.command("init")
def keys_init(ctx: typer.Context) -> None:
    """Create the local operator key + keyset, the approval signing keyring and the gate
    state key (idempotent)."""
    from streams.gate.seal import state_key_path
    from streams.operator import ensure_local_keys

    keys = ensure_local_keys(settings(ctx))
    for path in keys.created:
        out.print(f"created {path}")
    out.print(f"operator keyset (workers' trust root): {keys.operator_keyset_path}")
    out.print(f"approval keys for executors (JWKS):    {keys.approval_jwks_path}")
    out.print(f"gate state key (every gate worker):    {state_key_path(settings(ctx))}")


@keys_app.command("generate")
def keys_generate(
    path: Annotated[Path, typer.Argument(help="Where to write the new private key (0600).")],
) -> None:
    """Generate an Ed25519 key (for an agent or an operator) and print its public JWK."""
    if path.exists():
        raise TrustplaneError(
            f"{path} exists", hint="choose another path; keys are never overwritten"
        )
    key = generate_signing_key()
    save_private_key(path, key)
    out.print_json(json.dumps(key.public_jwk()))


@keys_app.command("jwks")
def keys_jwks(ctx: typer.Context) -> None:
    """Print the approval signing keys as JWKS (what executors verify approvals with)."""
    keyring = SigningKeyring.load(settings(ctx).resolved_signing_keys_dir)
    print(json.dumps(keyring.jwks(), indent=2))


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    not_before: Annotated[float, typer.Option(help="Seconds from now when the new key signs.")] = 0,
) -> None:
    """Add an approval signing key that signs from NOT_BEFORE on (older keys keep verifying)."""
    directory = settings(ctx).resolved_signing_keys_dir
    entry = SigningKeyring.rotate(directory, int(time.time() * 1000 + not_before * 1000))
    out.print(
        f"new signing key {entry.kid} from {entry.not_before_ms}; publish `trustplane keys jwks`"
    )


@keys_app.command("retire")
def keys_retire(
    ctx: typer.Context, kid: str, at: Annotated[float, typer.Option(help="Seconds from now.")] = 0
) -> None:
    """Retire an approval signing key: from then on it neither signs nor verifies."""
    directory = settings(ctx).resolved_signing_keys_dir
    SigningKeyring.retire(directory, kid, int(time.time() * 1000 + at * 1000))
    out.print(f"retired {kid}; publish `trustplane keys jwks`")


# -- agents -------------------------------------------------------------------------


@agents_app.command("register")
def agents_register(
    ctx: typer.Context,
    agent_id: str,
    key: Annotated[Path, typer.Option(help="The agent's private or public key file (PEM).")],
    role: Annotated[list[str] | None, typer.Option(help="A role (repeat).")] = None,
    runtime: Annotated[
        list[str] | None, typer.Option(help="A runtime id it may run on (repeat).")
    ] = None,
    environment: Annotated[list[str] | None, typer.Option(help="An environment (repeat).")] = None,
) -> None:
    """Register (or update) an agent with its Ed25519 key, roles, runtimes, environments."""
    public = _public_key(key)
    payload = {
        "agent_id": agent_id,
        "keys": [{"kid": jwk_thumbprint(public), "x": b64url(raw_public_key(public))}],
        "roles": role or [],
        "runtimes": runtime or [],
        "environments": environment or [],
    }
    send(ctx, "agent.register", payload)


def _public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = path.read_bytes()
    if b"PRIVATE" in data:
        return load_private_key(path).public_key
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise TrustplaneError(f"{path} is not an Ed25519 key")
    return key


@agents_app.command("revoke")
def agents_revoke(
    ctx: typer.Context, agent_id: str, reason: Annotated[str, typer.Option()]
) -> None:
    """Revoke an agent for good: all its intents are denied."""
    send(ctx, "agent.revoke", {"agent_id": agent_id, "reason": reason})


@agents_app.command("revoke-key")
def agents_revoke_key(
    ctx: typer.Context, agent_id: str, kid: str, reason: Annotated[str, typer.Option()] = ""
) -> None:
    """Revoke one key of an agent."""
    send(ctx, "key.revoke", {"agent_id": agent_id, "kid": kid, "reason": reason or "revoked"})


@agents_app.command("suspend")
def agents_suspend(
    ctx: typer.Context, agent_id: str, reason: Annotated[str, typer.Option()]
) -> None:
    """Suspend an agent (reinstate with `agents reinstate`)."""
    send(ctx, "agent.suspend", {"agent_id": agent_id, "reason": reason})


@agents_app.command("reinstate")
def agents_reinstate(ctx: typer.Context, agent_id: str) -> None:
    """Lift a suspension."""
    send(ctx, "agent.reinstate", {"agent_id": agent_id})


@agents_app.command("reset-state")
def agents_reset_state(
    ctx: typer.Context,
    agent_id: str,
    partition: Annotated[int, typer.Option(help="gate-state partition, from the denial")],
    offset: Annotated[int, typer.Option(help="gate-state offset, from the denial")],
    reason: Annotated[str, typer.Option()],
) -> None:
    """Reset an agent whose gate state failed authentication (its intents are denied with
    the record's partition and offset). The fresh state refuses intents issued before."""
    send(
        ctx,
        RESET_KIND,
        {"agent_id": agent_id, "partition": partition, "offset": offset, "reason": reason},
        subject=state_reset_subject(agent_id),
    )


@agents_app.command("list")
def agents_list(ctx: typer.Context) -> None:
    """Rebuild the registry from the control topic and print it."""
    control = _read_control_state(ctx)
    table = Table(title="agents")
    for column in ("agent", "status", "roles", "runtimes", "keys", "since / reason"):
        table.add_column(column)
    for record in sorted(control.agents.values(), key=lambda r: r.agent_id):
        table.add_row(
            record.agent_id,
            record.status,
            ", ".join(record.roles),
            ", ".join(record.runtimes) or "any",
            ", ".join(k[:12] for k in record.keys),
            record.status_reason,
        )
    out.print(table)


def _read_control_state(ctx: typer.Context) -> Any:
    from streams.gate.control import ControlFollower
    from streams.gate.wiring import build_gate
    from streams.operator import ensure_local_keys

    current = settings(ctx)
    ensure_local_keys(current)
    parts = build_gate(current)
    follower = ControlFollower(current, parts.control)
    try:
        follower.catch_up(timeout=30)
    finally:
        follower.close()
    return parts.control


# -- runtimes, quarantine -----------------------------------------------------------


@runtime_app.command("register")
def runtime_register(
    ctx: typer.Context,
    runtime_id: str,
    code_digest: Annotated[
        list[str], typer.Option(help="Allowed code digest sha256:<hex> (repeat).")
    ],
    config_digest: Annotated[list[str], typer.Option(help="Allowed config digest (repeat).")],
    environment: Annotated[str, typer.Option()] = "prod",
    host: Annotated[
        list[str] | None, typer.Option(help="Allowed host (repeat; none = any).")
    ] = None,
) -> None:
    """Register a runtime with its allowed measurements."""
    payload = {
        "runtime_id": runtime_id,
        "code_digests": code_digest,
        "config_digests": config_digest,
        "environment": environment,
        "hosts": host or [],
    }
    send(ctx, "runtime.register", payload, subject=runtime_subject(runtime_id))


def quarantine(
    ctx: typer.Context,
    agent_id: Annotated[str | None, typer.Argument(help="Agent to quarantine.")] = None,
    runtime: Annotated[str | None, typer.Option(help="Quarantine a runtime instead.")] = None,
    reason: Annotated[str, typer.Option()] = "quarantined by an operator",
) -> None:
    """Quarantine an agent (or a runtime): every later intent from it is denied."""
    if runtime:
        payload = {"runtime_id": runtime, "reason": reason}
        send(ctx, "runtime.quarantine", payload, subject=runtime_quarantine_subject(runtime))
    elif agent_id:
        send(ctx, "agent.quarantine", {"agent_id": agent_id, "reason": reason})
    else:
        raise TrustplaneError("name an agent, or --runtime RUNTIME")


def release(
    ctx: typer.Context,
    agent_id: Annotated[str | None, typer.Argument(help="Agent to release.")] = None,
    runtime: Annotated[str | None, typer.Option(help="Release a runtime instead.")] = None,
    reason: Annotated[str, typer.Option()] = "released by an operator",
) -> None:
    """Release a quarantined agent (or runtime)."""
    if runtime:
        payload = {"runtime_id": runtime, "reason": reason}
        send(ctx, "runtime.release", payload, subject=runtime_quarantine_subject(runtime))
    elif agent_id:
        send(ctx, "agent.release", {"agent_id": agent_id, "reason": reason})
    else:
        raise TrustplaneError("name an agent, or --runtime RUNTIME")


# -- kill switch --------------------------------------------------------------------


def _switch(
    ctx: typer.Context, kind: str, scope: str, target: str | None, reason: str | None
) -> None:
    payload: dict[str, Any] = {"scope": scope, "target": target or "*"}
    if reason:
        payload["reason"] = reason
    send(ctx, kind, payload, subject=killswitch_subject(payload))


@killswitch_app.command("engage")
def killswitch_engage(
    ctx: typer.Context,
    scope: Annotated[str, typer.Argument(help="global, agent or action")],
    target: Annotated[str | None, typer.Argument(help="agent id or action pattern")] = None,
    reason: Annotated[str, typer.Option()] = "engaged by an operator",
) -> None:
    """Engage a kill switch: matching intents are denied from the next batch on."""
    _switch(ctx, "killswitch.engage", scope, target, reason)


@killswitch_app.command("release")
def killswitch_release(
    ctx: typer.Context,
    scope: Annotated[str, typer.Argument(help="global, agent or action")],
    target: Annotated[str | None, typer.Argument(help="agent id or action pattern")] = None,
) -> None:
    """Release a kill switch."""
    _switch(ctx, "killswitch.release", scope, target, None)


# -- review -------------------------------------------------------------------------


@review_app.command("list")
def review_list(
    ctx: typer.Context,
    idle: Annotated[float, typer.Option(help="Seconds to wait for records.")] = 2,
) -> None:
    """Intents held for review (read from the `review` topic) and whether they are answered."""
    from streams.sdk.client import OutcomeReader

    held: dict[str, dict[str, Any]] = {}
    final: dict[str, str] = {}
    with OutcomeReader(settings(ctx), ["review", "approved", "denied"]) as reader:
        for received in reader.read(timeout=idle):
            record = received.record or {}
            intent_id = str(record.get("intent_id"))
            if received.topic == "review":
                held[intent_id] = record
            else:
                final[intent_id] = received.topic
    table = Table(title="held for review")
    for column in ("intent", "agent", "reasons", "state"):
        table.add_column(column, overflow="fold")
    for intent_id, record in held.items():
        table.add_row(
            intent_id,
            record["agent_id"],
            "; ".join(record["reasons"]),
            final.get(intent_id, "waiting"),
        )
    out.print(table)


@review_app.command("approve")
def review_approve(
    ctx: typer.Context,
    intent_id: str,
    reason: Annotated[str, typer.Option()] = "approved by a reviewer",
) -> None:
    """Approve a held intent (it is re-checked against kill switch and quarantine, then signed)."""
    send(
        ctx,
        "review.approve",
        {"intent_id": intent_id, "reason": reason},
        subject=f"review/{intent_id}",
    )


@review_app.command("deny")
def review_deny(
    ctx: typer.Context,
    intent_id: str,
    reason: Annotated[str, typer.Option()] = "denied by a reviewer",
) -> None:
    """Deny a held intent."""
    send(
        ctx,
        "review.deny",
        {"intent_id": intent_id, "reason": reason},
        subject=f"review/{intent_id}",
    )


# -- verify -------------------------------------------------------------------------


def verify(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="DSSE envelope JSON file, or - for stdin.")],
    keyset: Annotated[
        Path | None, typer.Option(help="JWKS of approval keys (default: the local one).")
    ] = None,
    intent: Annotated[Path | None, typer.Option(help="The exact intent bytes to check.")] = None,
) -> None:
    """Verify a signed approval as an executor would: signature, key, expiry, digest."""
    data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    current = settings(ctx)
    path = keyset or current.resolved_keys_dir / "approvals.jwks.json"
    keys = Keyset.from_file(path)
    approval = verify_approval(
        data,
        keys,
        time.time_ns() // 1_000_000,
        intent=intent.read_bytes() if intent else None,
    )
    out.print(
        f"[green]verified ✓[/] approval {approval.approval_id}: {approval.agent_id} may "
        f"{approval.action} on {approval.resource} until {approval.expires_at_ms} "
        f"(key {approval.keyid})"
    )
