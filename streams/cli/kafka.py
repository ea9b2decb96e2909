"""``trustplane kafka …``: the local broker, and an estate's Kafka users, topics and ACLs.

``up`` starts the project's own broker (SASL/SCRAM, ACLs on; ``streams/dev/localkafka.py``)
and provisions it as ``admin`` (``streams/provision.py``): the role users with their
password files, the topics, the ACLs of the configured topic prefix and name root.
``up --brokers 3`` starts a three-node cluster instead (replication factor 3, min ISR 2);
``status`` and ``down`` then cover every node.
``provision`` does the same against any cluster; ``acls`` shows the ACLs an estate needs
and, with ``--check``, which of them the broker lacks.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from streams.cli.context import settings

if TYPE_CHECKING:
    from streams.config import Settings
    from streams.dev.localkafka import BrokerInfo, LocalKafka

__all__ = ["kafka_app"]

out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)

kafka_app = typer.Typer(
    help="The local Kafka broker (KRaft, from Maven Central; SASL/SCRAM and ACLs on), and "
    "an estate's Kafka users, topics and ACLs."
)


def _progress(message: str) -> None:
    err.print(f"[dim]{message}[/]")


def _local_kafka(ctx: typer.Context, brokers: int | None = None) -> LocalKafka:
    from streams.dev.localkafka import LocalKafka

    return LocalKafka(settings(ctx).kafka_state_dir, brokers=brokers, progress=_progress)


def _print_nodes(info: BrokerInfo) -> None:
    """One line per node of a cluster: where it listens, whether it runs."""
    for node in info.nodes:
        state = f"pid {node.pid}" if node.pid is not None else "[red]not running[/]"
        out.print(f"  node {node.node_id}  {node.address}  {state}  log {node.log_path}")


def _local_settings(ctx: typer.Context, broker: LocalKafka, bootstrap: str) -> Settings:
    """The settings of this command line, pointed at the local broker and its passwords."""
    return dataclasses.replace(
        settings(ctx),
        bootstrap_servers=bootstrap,
        kafka_credentials_dir=broker.credentials.directory,
    )


@kafka_app.command("up")
def kafka_up(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = 90.0,
    brokers: Annotated[
        int | None,
        typer.Option(
            help="Nodes to run: 1 (default; or as many as the state dir last ran), or 3 for "
            "a cluster that loses no acknowledged record when a node dies (replication "
            "factor 3, min.insync.replicas 2).",
            min=1,
        ),
    ] = None,
    provision: Annotated[
        bool,
        typer.Option(
            help="Create the role users, the topics and the ACLs of the configured topic "
            "prefix (as admin)."
        ),
    ] = True,
) -> None:
    """Fetch Kafka with Maven (cached), format storage once, start the broker (or every
    node of a cluster), wait for it, then provision users, topics and ACLs."""
    from streams.provision import provision as provision_estate

    broker = _local_kafka(ctx, brokers)
    info = broker.up(timeout=timeout)
    if provision:
        provision_estate(_local_settings(ctx, broker, info.bootstrap), progress=_progress)
    if info.brokers == 1:
        out.print(
            f"Kafka is up at [bold]{info.bootstrap}[/] (SASL_PLAINTEXT, SCRAM-SHA-512; pid "
            f"{info.pid}, log {info.log_path}); passwords in {broker.credentials.directory}"
        )
        return
    out.print(
        f"Kafka is up: {info.brokers} nodes at [bold]{info.bootstrap}[/] (SASL_PLAINTEXT, "
        f"SCRAM-SHA-512; replication factor 3, min.insync.replicas 2); passwords in "
        f"{broker.credentials.directory}"
    )
    _print_nodes(info)


@kafka_app.command("down")
def kafka_down(ctx: typer.Context) -> None:
    """Stop the local broker, every node of a cluster (data is kept; `kafka reset` deletes
    it)."""
    stopped = _local_kafka(ctx).down()
    out.print("Kafka stopped." if stopped else "Kafka was not running.")


@kafka_app.command("status")
def kafka_status(ctx: typer.Context) -> None:
    """Say whether the local broker is running and answering (a cluster: which nodes run);
    exit 1 if it does not answer."""
    broker = _local_kafka(ctx)
    info = broker.status()
    if info is None:
        if broker.is_legacy():
            out.print(
                "The local broker's data predates authentication: `trustplane kafka reset`, "
                "then `trustplane kafka up`."
            )
        else:
            out.print("Kafka is not running. Start it with `trustplane kafka up`.")
        raise typer.Exit(1)
    if info.brokers == 1:
        out.print(
            f"Kafka is up at [bold]{info.bootstrap}[/] (pid {info.pid}, data {info.data_dir})"
        )
        return
    down = [node.node_id for node in info.nodes if node.pid is None]
    out.print(
        f"Kafka is up: {info.brokers - len(down)} of {info.brokers} nodes running at "
        f"[bold]{info.bootstrap}[/]"
    )
    _print_nodes(info)
    if down:
        out.print(
            f"[yellow]node(s) {', '.join(map(str, down))} not running[/]: `trustplane kafka up` "
            "starts them again"
        )


@kafka_app.command("reset")
def kafka_reset(ctx: typer.Context) -> None:
    """Stop the local broker and delete its data (topics, offsets, users, ACLs). Jars and
    password files stay."""
    _local_kafka(ctx).reset()
    out.print("Kafka stopped and its data deleted.")


@kafka_app.command("provision")
def kafka_provision(
    ctx: typer.Context,
    principal: Annotated[
        str, typer.Option(help="The super user to provision as (its password file is used).")
    ] = "admin",
    users: Annotated[bool, typer.Option(help="Create or update the role users.")] = True,
    topics: Annotated[bool, typer.Option(help="Create the topics, align their configs.")] = True,
    acls: Annotated[bool, typer.Option(help="Grant the roles' ACLs.")] = True,
) -> None:
    """Create the role users (passwords in the credentials dir), the topics and the ACLs of
    the configured topic prefix and name root, on the configured broker."""
    from streams.provision import provision as provision_estate

    report = provision_estate(
        settings(ctx),
        principal=principal,
        users=users,
        topics=topics,
        grant=acls,
        progress=_progress,
    )
    out.print(
        f"provisioned: {len(report.users)} users, {len(report.topics_created)} topics created, "
        f"{len(report.configs_changed)} configs aligned, {report.acls} ACLs"
    )
    for change in report.configs_changed:
        out.print(f"  config {change}")


@kafka_app.command("acls")
def kafka_acls(
    ctx: typer.Context,
    check: Annotated[
        bool, typer.Option("--check", help="Compare with the broker; exit 1 if any is missing.")
    ] = False,
    principal: Annotated[str, typer.Option(help="Who lists the ACLs (with --check).")] = "admin",
) -> None:
    """The ACLs each role needs for the configured topic prefix and name root."""
    from streams.acls import grants
    from streams.provision import check as check_acls

    chosen = settings(ctx)
    wanted = grants(chosen)
    if not check:
        table = Table(title=f"ACLs for prefix {chosen.topic('')!r}")
        for column in ("principal", "operation", "resource", "name", "pattern"):
            table.add_column(column)
        for grant in wanted:
            table.add_row(
                f"User:{grant.principal}",
                grant.operation,
                grant.resource,
                grant.name,
                "PREFIXED" if grant.prefixed else "LITERAL",
            )
        out.print(table)
        return
    result = check_acls(chosen, principal=principal)
    for grant in result.missing:
        out.print(f"[red]missing[/]    {grant}")
    for grant in result.unexpected:
        out.print(f"[yellow]unexpected[/] {grant}")
    out.print(
        f"{len(wanted) - len(result.missing)}/{len(wanted)} ACLs in place, "
        f"{len(result.unexpected)} unexpected"
    )
    if not result.ok:
        out.print("Grant the missing ones with `trustplane kafka provision`.")
        raise typer.Exit(1)


@kafka_app.command("credentials")
def kafka_credentials(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where (default: the configured credentials dir)."),
    ] = None,
) -> None:
    """Create the missing password files (0600) of broker, admin and every role; print
    where they are, never what they hold."""
    from streams.acls import ROLES, SUPER_USERS
    from streams.credentials import CredentialStore

    store = CredentialStore(directory or settings(ctx).resolved_kafka_credentials_dir)
    for user in (*SUPER_USERS, *ROLES):
        store.ensure(user)
        out.print(f"{user:9s} {store.path(user)}")
