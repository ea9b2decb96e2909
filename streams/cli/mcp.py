"""``trustplane mcp-proxy``: put an MCP tool server behind the gate.

The command only gathers the settings (mapping, agent key and runtime, the gate's JWKS,
the guard's state folder, Kafka as the ``guard`` principal), checks them before anything
starts, and serves :func:`streams.sdk.guard.mcp_proxy.serve_proxy`. Nothing is ever
written to stdout: it is the MCP channel. ``mcp`` is an optional extra
(``trustplane[mcp]``), imported when the command runs.

Run on its own as ``python -m streams.cli.mcp [OPTIONS] -- COMMAND ...``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from processors.exceptions import ConfigError, TrustplaneError
from streams.cli.context import CliOptions, options
from streams.config import Settings
from streams.sdk.config import ClientConfig

__all__ = ["mcp_app", "mcp_proxy", "guard_client_config", "read_runtime", "main"]

err = Console(stderr=True)

RUNTIME_FIELDS = ("runtime_id", "code_digest", "config_digest", "environment", "host")

HELP = (
    "Serve an MCP tool server behind the gate: its tools run only on a verified approval.\n\n"
    "Starts the tool server (the command after --) as a subprocess and speaks MCP to the host "
    "(Claude Desktop, an IDE, an agent framework) on stdin and stdout. tools/list passes "
    "through unchanged. Each tools/call becomes an intent (--mapping), signed with the "
    "agent's key and published; the tool is called only once the gate's approval of that "
    "exact call has verified, and its outcome is reported. A tool the mapping does not name "
    "is denied. A denied, held, unanswered or unverifiable call is a tool error that says why "
    "(a held one: its intent id, for `trustplane review approve`), and the tool does not run. "
    "Logs go to stderr.\n\n"
    "It runs as the Kafka principal `guard` (publish intents, read the decisions, report "
    "outcomes), the default on the local broker of `trustplane kafka up`. Elsewhere set "
    "TRUSTPLANE_BOOTSTRAP_SERVERS, TRUSTPLANE_TOPIC_PREFIX, TRUSTPLANE_GROUP_ID, "
    "TRUSTPLANE_KAFKA_PRINCIPAL=guard (or TRUSTPLANE_USERNAME=guard) and "
    "TRUSTPLANE_KAFKA_PASSWORD_FILE (or TRUSTPLANE_PASSWORD_FILE). Local keys are found "
    "through TRUSTPLANE_STATE_DIR or TRUSTPLANE_KEYS_DIR. Run no executor for the same "
    "actions: the proxy executes its calls. The tool server gets this environment without "
    "the TRUSTPLANE_* variables.\n\n"
    "Example: trustplane mcp-proxy --mapping policies/tools/billing.toml --agent "
    "billing-agent -- python -m streams.dev.mcp_billing_server"
)

mcp_app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)


@mcp_app.command(
    "mcp-proxy",
    help=HELP,
    context_settings={"allow_interspersed_args": False},
    no_args_is_help=True,
)
def mcp_proxy(
    ctx: typer.Context,
    command: Annotated[
        list[str],
        typer.Argument(
            help="The MCP server to put behind the gate, and its arguments (after --).",
            metavar="SERVER_COMMAND",
        ),
    ],
    mapping: Annotated[
        Path,
        typer.Option(
            help="TOML tool mapping (e.g. policies/tools/billing.toml): which Cedar action, "
            "resource and parameters each tool call becomes. Tools it does not name are "
            "denied.",
        ),
    ],
    agent: Annotated[
        str, typer.Option(help="The registered agent the calls are made as (e.g. billing-agent).")
    ],
    agent_key: Annotated[
        Path | None,
        typer.Option(help="The agent's private key (PEM). Default: <keys_dir>/agents/AGENT.pem."),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="The agent's runtime attestation: a JSON object or a file holding one ("
            + ", ".join(RUNTIME_FIELDS)
            + "). Default: <keys_dir>/agents/AGENT.runtime.json, else the local demo "
            "estate's registration of AGENT.",
        ),
    ] = None,
    gate_jwks: Annotated[
        Path | None,
        typer.Option(
            help="The gate's public keys, which approvals are verified against. Default: "
            "TRUSTPLANE_GATE_JWKS_PATH, else <keys_dir>/approvals.jwks.json."
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="The guard's durable state (used approvals, the agent's sequence numbers): "
            "one per agent and estate, kept across runs. Sequence numbers the gate has seen "
            "from the agent elsewhere (e.g. `trustplane demo`) are not known here, and "
            "lower ones are refused as a replay. Default: "
            "<state_dir>/guard/AGENT.<topic prefix or default>."
        ),
    ] = None,
    deadline: Annotated[
        float,
        typer.Option(help="Seconds a call waits for the gate's decision, else it fails closed."),
    ] = 10.0,
    review_wait: Annotated[
        float,
        typer.Option(
            help="Seconds a call held for review waits for the reviewer (0: answer at once "
            "that it is held, with its intent id)."
        ),
    ] = 0.0,
    http: Annotated[
        str | None,
        typer.Option(
            help="Serve streamable HTTP on HOST:PORT (loopback only, at /mcp) instead of stdio."
        ),
    ] = None,
) -> None:
    given = options(ctx) or CliOptions()
    _log_to_stderr(given.verbose)
    try:
        from streams.sdk.guard.mcp_proxy import serve_proxy
    except ImportError as exc:
        raise ConfigError(
            f"the MCP proxy needs the `mcp` package: {exc}", hint="pip install 'trustplane[mcp]'"
        ) from exc
    from processors.crypto.keys import Keyset, load_private_key
    from streams.gatekeys import gate_jwks_path
    from streams.sdk.guard import AgentIdentity, Guard, load_mapping

    if deadline <= 0 or review_wait < 0:
        raise ConfigError("--deadline must be > 0 and --review-wait >= 0")
    host, port = _http_address(http) if http else ("127.0.0.1", 0)
    settings = given.settings()
    tools = load_mapping(mapping)
    keys_dir = settings.resolved_keys_dir
    key_path = agent_key or keys_dir / "agents" / f"{agent}.pem"
    if not key_path.exists():
        raise ConfigError(
            f"no private key of agent {agent!r} at {key_path}",
            hint="give --agent-key; `trustplane keys generate FILE` makes one and "
            "`trustplane agents register` registers it",
        )
    key = load_private_key(key_path)
    attestation = read_runtime(runtime, keys_dir / "agents" / f"{agent}.runtime.json", agent)
    jwks = gate_jwks or gate_jwks_path(settings)
    Keyset.from_file(jwks)  # refused now, not at the first call
    config = guard_client_config(settings)
    config.kafka_config()  # the password file is read now too
    prefix = settings.topic_prefix.rstrip(".") or "default"
    state = state_dir or settings.state_dir / "guard" / f"{agent}.{prefix}"
    identity = AgentIdentity(agent, key, attestation)

    def connect() -> Guard:
        return Guard(
            config,
            identity,
            tools,
            jwks,
            state_dir=state,
            deadline_s=deadline,
            review_wait_s=review_wait,
        )

    mapped = ", ".join(sorted(tools.tools)) or "none"
    others = "allowed by [default]" if tools.default else "denied"
    err.print(
        f"trustplane mcp-proxy: agent {agent}, toolset {tools.name} (mapped: {mapped}; "
        f"others {others}), broker {config.bootstrap_servers} as "
        f"{config.username or 'unauthenticated'}, deadline {deadline:g} s; "
        f"upstream: {' '.join(command)}" + (f"; serving http://{host}:{port}/mcp" if http else ""),
        highlight=False,
        soft_wrap=True,
    )
    try:
        asyncio.run(
            serve_proxy(
                connect,
                command,
                transport="streamable-http" if http else "stdio",
                host=host,
                port=port,
                wait_s=deadline,
            )
        )
    except KeyboardInterrupt:
        pass


def guard_client_config(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> ClientConfig:
    """Kafka as the ``guard`` principal, unless a principal is configured: the settings'
    (``TRUSTPLANE_KAFKA_PRINCIPAL``, ``TRUSTPLANE_KAFKA_PASSWORD_FILE``), or the SDK's names
    for them (``TRUSTPLANE_USERNAME``, ``TRUSTPLANE_PASSWORD_FILE``)."""
    env = os.environ if environ is None else environ
    changes: dict[str, Any] = {}
    if env.get("TRUSTPLANE_USERNAME") and not settings.kafka_principal:
        changes["kafka_principal"] = env["TRUSTPLANE_USERNAME"]
    if env.get("TRUSTPLANE_PASSWORD_FILE") and settings.kafka_password_file is None:
        changes["kafka_password_file"] = Path(env["TRUSTPLANE_PASSWORD_FILE"])
    return dataclasses.replace(settings, **changes).for_role("guard").client_config()


def read_runtime(given: str | None, default_file: Path, agent: str) -> dict[str, str] | None:
    """The runtime attestation: ``given`` (JSON text or a file), else ``default_file``,
    else the local demo estate's registration of ``agent``, else none."""
    if given is not None:
        text, source = (given, "--runtime") if given.lstrip().startswith("{") else ("", given)
        if not text:
            try:
                text = Path(given).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"--runtime {given!r} is neither a JSON object nor a readable file: {exc}"
                ) from exc
        return _runtime(text, source)
    if default_file.is_file():
        return _runtime(default_file.read_text(encoding="utf-8"), str(default_file))
    try:
        from streams.dev.estate import DEMO_AGENTS
    except ImportError:  # the demo estate needs the gate's dependencies
        DEMO_AGENTS = {}  # noqa: N806
    demo = DEMO_AGENTS.get(agent)
    if demo is not None:
        return demo.runtime()
    logging.getLogger(__name__).warning(
        "no runtime attestation for agent %r: the gate denies intents of an unregistered "
        "runtime (give --runtime)",
        agent,
    )
    return None


def _runtime(text: str, source: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"the runtime attestation {source} is not JSON: {exc}") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"the runtime attestation {source} must be a JSON object of strings")
    missing = [f for f in RUNTIME_FIELDS if f not in value]
    if missing:
        raise ConfigError(
            f"the runtime attestation {source} lacks {', '.join(missing)}",
            hint="as registered with `trustplane runtime register`",
        )
    return {str(k): str(v) for k, v in value.items()}


def _http_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--http wants HOST:PORT, got {value!r}", hint="e.g. 127.0.0.1:8765")
    return host.strip("[]"), int(port)


def _log_to_stderr(verbose: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    # the proxy's own news (blocked calls, the broker connection) is worth seeing
    logging.getLogger("streams.sdk.guard").setLevel(logging.DEBUG if verbose else logging.INFO)


def main() -> None:
    try:
        mcp_app()
    except TrustplaneError as exc:
        err.print(f"[red]error:[/] {exc.diagnostics()}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
