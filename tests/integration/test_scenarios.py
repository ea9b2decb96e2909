"""The Runtime Governance Demo's scenarios on the real pipeline: a `trustplane worker` and a
`trustplane notary` process on the session's broker, intents published as the ``agent``
principal, commands and outcomes as ``operator`` (the runner's own roles, not ``admin``).

One worker serves every scenario: the slow one (amount escalation, a minute of waiting for
the rate window) runs in a thread beside the others. Then `trustplane demo-runner`, as a
process, runs one scenario over its HTTP API as the console would."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from processors.layers.policy import CONTROL_SUBJECT, PolicyBundle
from streams.config import Settings
from streams.dev.demo_runner import token_path
from streams.dev.estate import BUNDLE_DIR
from streams.dev.scenarios import SCENARIOS, OperatorDesk, ScenarioRun, run_scenario
from streams.httpauth import bearer_header, read_token_file
from tests.conftest import ServiceFactory, free_port, http_json, role_env, settings_env

pytestmark = pytest.mark.broker

SLOW = "amount_escalation"


def _report(run: ScenarioRun) -> str:
    lines = [f"{run.scenario.name}: {run.status} {run.error or ''} ({run.progress})"]
    for t in run.intents:
        mark = "ok " if t.as_expected else "BAD"
        lines.append(
            f"  {mark} {t.n:>3} {t.label[:60]:<60} want {t.expect.describe():<32} got "
            f"{t.outcome} ({t.layer}) {'; '.join(t.reasons)[:120]}"
        )
    lines += [
        f"  finding {f['name']}: {f['value']} ok={f['ok']} {f['detail']}" for f in run.findings
    ]
    return "\n".join(lines)


@pytest.fixture
def pipeline(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[[Settings], Any],
    service_factory: ServiceFactory,
) -> Settings:
    """A worker and a notary for fresh settings, the example bundle published; returns the
    settings the runner uses (no principal configured: each part picks its role)."""
    settings = settings_factory(notary_port=free_port())
    own = dataclasses.replace(settings, kafka_principal="")
    OperatorDesk(own).send(
        "policy.publish", PolicyBundle.from_directory(BUNDLE_DIR).to_document(), CONTROL_SUBJECT
    )
    worker_factory(settings).start()
    notary_url = f"http://127.0.0.1:{settings.notary_port}"
    service_factory(
        "notary",
        [str(Path(sys.executable).parent / "trustplane"), "notary", "--create-key"],
        {**settings_env(settings), **role_env(settings, "notary")},
        ready=lambda: http_json(f"{notary_url}/healthz") is not None,
    ).start()
    return own


def test_every_scenario_passes_on_the_real_pipeline(
    pipeline: Settings, service_factory: ServiceFactory, tmp_path: Path
) -> None:
    runner_url = _demo_runner_process(pipeline, service_factory)
    desk = OperatorDesk(pipeline)  # one history of the demo operator key, shared by threads
    slow: list[ScenarioRun] = []
    thread = threading.Thread(
        target=lambda: slow.append(
            run_scenario(pipeline, SLOW, desk=desk, workdir=tmp_path / SLOW)
        ),
        daemon=True,
    )
    thread.start()
    runs = [
        run_scenario(pipeline, name, desk=desk, workdir=tmp_path / name)
        for name in SCENARIOS
        if name != SLOW
    ]
    # the console's way in, while the escalation waits out its minute (its commands are
    # sent: the runner's own operator client of the same key does not fence it)
    served = _runner_serves_a_run(runner_url, token_path(pipeline))
    thread.join(180)
    assert slow, "the amount escalation did not end"
    runs += slow
    report = "\n".join(_report(run) for run in runs)
    print(report, "\ndemo-runner process:", served["status"], served["progress"])
    assert [r.scenario.name for r in runs if r.status != "passed"] == [], report

    by_name = {r.scenario.name: r for r in runs}
    drill = by_name["killswitch_drill"]
    measured = next(f for f in drill.findings if f["name"].startswith("engage to first denied"))
    assert 0 <= measured["value"] < 5000, measured
    tamper = by_name["tamper_one_byte"]
    assert json.loads((tmp_path / "tamper_one_byte" / "evidence.json").read_text())["events"]
    assert {f["name"]: f["value"]["python_verifiers"] for f in tamper.findings} == {
        "evidence": "PASS",
        "evidence-tampered-approval": "FAIL",
        "evidence-tampered-event": "FAIL",
    }
    agents = {t.agent_id for r in runs for t in r.intents}
    assert all(a.startswith("scn-") for a in agents) and len({r.run_id for r in runs}) == len(runs)


def _call(url: str, token_file: Path, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the local runner
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **bearer_header(read_token_file(token_file))},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def _demo_runner_process(pipeline: Settings, service_factory: ServiceFactory) -> str:
    """`trustplane demo-runner` as `make run` would start it; returns its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service_factory(
        "demo-runner",
        [str(Path(sys.executable).parent / "trustplane"), "demo-runner", "--port", str(port)],
        settings_env(pipeline),
        ready=lambda: http_json(f"{url}/healthz") is not None,
    ).start()
    return url


def _runner_serves_a_run(url: str, tokens: Path) -> dict[str, Any]:
    """What the console does: list, start, poll until the run ends."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/scenarios", timeout=5)  # noqa: S310 - no token
    assert refused.value.code == 401
    refused.value.close()
    names = [s["name"] for s in _call(f"{url}/scenarios", tokens)["scenarios"]]
    assert names == list(SCENARIOS)
    run_id = _call(f"{url}/runs", tokens, {"scenario": "runaway_loop"})["run_id"]
    seen_running = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state: dict[str, Any] = _call(f"{url}/runs/{run_id}", tokens)
        if state["status"] != "running":
            break
        seen_running = True
        time.sleep(0.2)
    assert seen_running
    assert state["status"] == "passed", state
    assert [i["outcome"] for i in state["intents"]][:6] == ["approved"] * 5 + ["denied"]
    assert all(i["agent_id"] == f"scn-{run_id}-support" for i in state["intents"])
    return state
