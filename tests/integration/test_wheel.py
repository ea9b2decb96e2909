"""The SDK as an agent developer gets it: a wheel installed into a fresh venv outside the
checkout, without the gate's dependencies, publishing to and verifying from a real gate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streams.config import PROJECT_ROOT
from streams.dev.estate import DEMO_AGENTS, setup_estate

pytestmark = pytest.mark.broker

SOURCES = ("pyproject.toml", "README.md", "streams", "processors", "sinks", "schemas")
GATE_ONLY = ("faust", "cedarpy", "chdb", "rocksdict", "aiokafka", "clickhouse_connect")

# Runs in the fresh venv, from a folder outside the checkout: an agent and an executor.
AGENT_AND_EXECUTOR = r"""
import json, os, sys, time
from pathlib import Path

from streams.sdk import ClientConfig, IntentPublisher, OutcomeReader, load_private_key, new_intent
from streams.sdk.executor import (
    ApprovalConsumer, InMemorySeenStore, Keyset, OutcomeReporter, VerifiedApproval,
)

# TRUSTPLANE_BOOTSTRAP_SERVERS, _TOPIC_PREFIX, _GROUP_ID, _KAFKA_CREDENTIALS_DIR; one
# Kafka principal per role, as the broker's ACLs want: the agent only writes intents
agent, reader, executor = (ClientConfig.load(username=r) for r in ("agent", "console", "executor"))
key = load_private_key(Path(os.environ["AGENT_KEY"]))
intent = new_intent(
    "billing-agent", "invoices.read", "invoice:wheel", sequence=int(os.environ["SEQUENCE"]),
    runtime=json.loads(os.environ["RUNTIME"]), key_id=key.kid, sign_with=key,
)

# the agent: publish the signed intent, await its outcome
with OutcomeReader(reader) as outcomes_in:
    with IntentPublisher(agent) as publisher:
        publisher.publish(intent)
    outcome, deadline = None, time.monotonic() + 60
    while outcome is None and time.monotonic() < deadline:
        for received in outcomes_in.read(timeout=1.0):
            if received.record and received.record.get("intent_id") == intent["intent_id"]:
                outcome = received
assert outcome is not None, "no outcome within 60 s"
assert outcome.topic == "approved", (outcome.topic, outcome.record.get("reasons"))

# the executor: consume the approval, verify it against the gate's JWKS, mark it used, report
keyset = Keyset.from_file(Path(os.environ["APPROVAL_JWKS"]))
verified = None
group = os.environ["TRUSTPLANE_GROUP_ID"] + ".executor.wheel"
with ApprovalConsumer(executor, keyset, InMemorySeenStore(), group_id=group) as approvals:
    for result in approvals.read(idle_s=20):
        assert isinstance(result, VerifiedApproval), result.reason
        if result.intent_id == intent["intent_id"]:
            verified = result
            break
assert verified is not None, "the approval was not consumed"
verified.check_parameters(intent["parameters"])
with OutcomeReporter(executor) as outcomes:
    outcomes.report(verified, "EXECUTED", "invoice read", "wheel-executor")

import streams
print(json.dumps({
    "approval_id": verified.approval_id,
    "intent_id": verified.intent_id,
    "keyid": verified.keyid,
    "streams_at": streams.__file__,
}))
"""


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the checkout with only the wheel and its base dependencies."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"  # a copy: the build leaves nothing in the checkout
    source.mkdir()
    for name in SOURCES:
        origin = PROJECT_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, source / name)
    dist = root / "dist"
    pip = [sys.executable, "-m", "pip"]
    run(*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", dist, source, cwd=root)
    (wheel,) = dist.glob("trustplane-*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=root)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=root)
    return venv


def test_the_wheel_brings_its_schemas_and_not_the_gate(sdk_venv: Path, tmp_path: Path) -> None:
    python = sdk_venv / "bin" / "python"
    probe = (
        "import importlib.util, json\n"
        "from streams.codec import default_codec\n"
        f"print(json.dumps({{'missing': [m for m in {GATE_ONLY!r} "
        "if importlib.util.find_spec(m) is None],"
        " 'records': list(default_codec().registry.names)}))"
    )
    found = json.loads(run(python, "-c", probe, cwd=tmp_path))
    assert found["missing"] == list(GATE_ONLY), "the base install pulls no gate dependency"
    assert "dev.trustplane.Intent" in found["records"]
    assert "dev.trustplane.Approval" in found["records"]
    run(sdk_venv / "bin" / "trustplane", "--help", cwd=tmp_path)
    # the console's pages and browser modules ship in the wheel (its extra brings jinja2)
    shipped = (
        "import importlib.resources as r, json\n"
        "root = r.files('streams.console')\n"
        "print(json.dumps([str(p) for p in ('templates/governance.html', 'static/tpsign.js',"
        " 'static/console.css') if not (root / p).is_file()]))"
    )
    assert json.loads(run(python, "-c", shipped, cwd=tmp_path)) == []


def test_an_installed_agent_and_executor_work_with_the_real_gate(
    sdk_venv: Path, settings, worker_factory, tmp_path: Path
) -> None:
    estate = setup_estate(settings)
    estate.key("billing-agent")  # created and registered by setup_estate
    worker_factory(settings).start()
    keys = settings.resolved_keys_dir
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "TRUSTPLANE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "TRUSTPLANE_TOPIC_PREFIX": settings.topic_prefix,
        "TRUSTPLANE_GROUP_ID": settings.group_id,
        "TRUSTPLANE_KAFKA_CREDENTIALS_DIR": str(settings.resolved_kafka_credentials_dir),
        "AGENT_KEY": str(keys / "agents" / "billing-agent.pem"),
        "SEQUENCE": str(estate.next_sequence("billing-agent")),
        "RUNTIME": json.dumps(DEMO_AGENTS["billing-agent"].runtime()),
        "APPROVAL_JWKS": str(keys / "approvals.jwks.json"),
    }
    script = tmp_path / "agent_and_executor.py"
    script.write_text(AGENT_AND_EXECUTOR)

    result = json.loads(run(sdk_venv / "bin" / "python", script, cwd=tmp_path, env=env))

    assert Path(result["streams_at"]).is_relative_to(sdk_venv), "the wheel, not the checkout"
    assert result["approval_id"].startswith("approval-")
    jwks = json.loads((keys / "approvals.jwks.json").read_text())
    assert result["keyid"] in {k["kid"] for k in jwks["keys"]}


FRAMEWORKS = {"mcp": "mcp", "langchain": "langchain", "openai-agents": "agents"}
ADAPTERS = {"mcp": "mcp_proxy", "langchain": "langchain", "openai-agents": "openai_agents"}
BROUGHT = {"mcp": ["mcp"], "langchain": ["langchain"], "openai-agents": ["agents", "mcp"]}
"""What each extra installs of the frameworks (the Agents SDK itself depends on mcp)."""


@pytest.mark.parametrize("extra", sorted(FRAMEWORKS))
def test_an_adapter_extra_installs_that_framework_and_no_other(
    sdk_venv: Path, tmp_path: Path, extra: str
) -> None:
    (wheel,) = (sdk_venv.parent / "dist").glob("trustplane-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", f"{wheel}[{extra}]", cwd=tmp_path)
    probe = (
        "import importlib.util, json\n"
        f"import streams.sdk.guard.{ADAPTERS[extra]}\n"
        f"print(json.dumps([m for m in {sorted(FRAMEWORKS.values()) + ['cedarpy']!r}"
        " if importlib.util.find_spec(m) is not None]))"
    )
    assert json.loads(run(python, "-c", probe, cwd=tmp_path)) == BROUGHT[extra]
    if extra == "mcp":
        assert "mcp-proxy" in run(venv / "bin" / "trustplane", "--help", cwd=tmp_path)
