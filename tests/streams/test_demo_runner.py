"""The Runtime Governance Demo without Kafka: every scenario against the real gate (all its
layers, the example bundle, policies/anomaly.toml) and an in-process notary, and the
demo runner's routes (streams/dev/demo_runner.py) with aiohttp's test client.

The same scenarios run on the real broker in tests/integration/test_scenarios.py."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import streams.dev.scenarios as scenarios
from processors.approval import KeyringEntry, SigningKeyring
from processors.crypto.keys import KeyEntry, Keyset, generate_signing_key
from processors.exceptions import ConfigError
from processors.layers.policy import CONTROL_SUBJECT, PolicyBundle
from processors.log.attest import verify_event_signature
from processors.log.checkpoint import NoteSigner
from processors.log.notary import Notary
from processors.records import SourcePosition
from streams.cli.proof import verify_inclusion_answer
from streams.codec import default_codec
from streams.config import Settings
from streams.dev.demo_runner import DemoRunner, build_app, serve, token_path
from streams.dev.estate import BUNDLE_DIR
from streams.dev.scenarios import SCENARIOS, Appended, Scenario, ScenarioRun
from streams.gate.wiring import build_gate
from streams.httpauth import BearerToken
from streams.notary.log import event_json
from streams.sdk.client import Received

_real_time = time


class FakeTime:
    """``time`` for the scenarios: sleeps advance a clock instead of waiting (the gate reads
    the same clock), so the amount escalation's minute passes at once."""

    def __init__(self) -> None:
        self.offset_s = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        return _real_time.time() + self.offset_s

    def time_ns(self) -> int:
        return _real_time.time_ns() + int(self.offset_s * 1e9)

    def monotonic(self) -> float:
        return _real_time.monotonic()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.offset_s += seconds

    def now_ms(self) -> int:
        return self.time_ns() // 1_000_000


class OfflineWire:
    """The real gate (``build_gate``: every layer) and a notary, in this process."""

    def __init__(self, tmp_path: Path, clock: Callable[[], int]) -> None:
        self.codec = default_codec()
        self.clock = clock
        self.operator = generate_signing_key()
        self.keyring = SigningKeyring([KeyringEntry(generate_signing_key(), 0, None)])
        self.parts = build_gate(
            Settings(state_dir=tmp_path, worker_id="offline"),
            keyring=self.keyring,
            operator_keys=Keyset([KeyEntry(self.operator.kid, self.operator.public_key)]),
        )
        self.parts.gate.clock = clock
        self.note_signer = NoteSigner("offline.trustplane.test/log", generate_signing_key())
        self.notary = Notary(self.note_signer.name, self.note_signer)
        self.linked: dict[str, dict[str, Any]] = {}
        self.offset = 0
        self.lock = threading.Lock()
        self.on_outcome: Callable[[Received], None] = lambda received: None
        bundle = PolicyBundle.from_directory(BUNDLE_DIR)
        self.command("policy.publish", bundle.to_document(), CONTROL_SUBJECT)

    def start(self, on_outcome: Callable[[Received], None]) -> None:
        self.on_outcome = on_outcome

    def publish(self, key: bytes, value: bytes) -> None:
        with self.lock:
            self.offset += 1
            outputs = self.parts.gate.process(key, value, SourcePosition("intents", 0, self.offset))
            for output in outputs:
                record = self.codec.decode(output.value)
                if output.topic == "lineage":
                    record["log_index"] = self.notary.size
                    _, linked = self.notary.append(record)
                    self.linked[str(record["event_id"])] = linked
                elif output.topic in ("approved", "denied", "review"):
                    self.on_outcome(Received(output.topic, output.key, record))

    def command(
        self, kind: str, payload: Mapping[str, Any], subject: str | None = None
    ) -> Appended:
        with self.lock:
            now = self.clock()
            record, result = self.parts.control.issue(
                kind, subject, payload, self.operator, "operator", now
            )
        assert record is not None, result.reason
        return Appended(record, now, now, now)

    def gate_keyset(self) -> Keyset:
        return self.keyring.public_keyset()

    def inclusion(self, event_id: str, timeout_s: float) -> dict[str, Any]:
        with self.lock:
            linked = self.linked[event_id]
            note = self.notary.checkpoint(self.clock())
            index = int(linked["log_index"])
            return {
                "event": event_json(linked),
                "index": index,
                "proof": self.notary.prove_inclusion(index).to_dict(),
                "checkpoint": note,
            }

    def verify_inclusion(self, answer: Mapping[str, Any], event_id: str) -> None:
        verified = verify_inclusion_answer(answer, self.note_signer.verifier, event_id=event_id)
        verify_event_signature(verified.event, self.gate_keyset())

    def evidence_keys(self) -> dict[str, Any]:
        return {"gate_jwks": self.keyring.jwks(), "notary_vkey": self.note_signer.vkey}

    def close(self) -> None:
        pass


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    clock = FakeTime()
    monkeypatch.setattr(scenarios, "time", clock)
    return clock


def offline_run(name: str, tmp_path: Path, clock: FakeTime) -> ScenarioRun:
    wire = OfflineWire(tmp_path / "gate", clock.now_ms)
    run = ScenarioRun(
        SCENARIOS[name], Settings(state_dir=tmp_path), lambda: wire, workdir=tmp_path / "run"
    )
    return run.run()


def as_table(run: ScenarioRun) -> list[tuple[str, str | None, str | None, str]]:
    return [(t.label, t.outcome, t.layer, t.expect.describe()) for t in run.intents]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_scenario_gets_what_it_expects_from_the_real_layers(
    name: str, tmp_path: Path, fake_time: FakeTime
) -> None:
    run = offline_run(name, tmp_path, fake_time)
    snapshot = run.snapshot()
    assert run.status == "passed", (run.error, as_table(run), snapshot["findings"])
    assert snapshot["summary"]["as_expected"] == len(run.intents) > 0
    for tracked in run.intents:
        context = tracked.record["context"]
        assert context["scenario"] == name and context["scenario_run"] == run.run_id
        assert tracked.agent_id.startswith(f"scn-{run.run_id}-")


def test_the_runaway_loop_is_stopped_at_the_sixth_email_and_quarantined(
    tmp_path: Path, fake_time: FakeTime
) -> None:
    run = offline_run("runaway_loop", tmp_path, fake_time)
    outcomes = [(t.outcome, t.layer) for t in run.intents]
    assert outcomes[:5] == [("approved", None)] * 5
    assert outcomes[5:10] == [("denied", "anomaly")] * 5
    assert "quarantine" in " ".join(run.intents[9].reasons)
    assert set(outcomes[10:]) == {("denied", "eligibility")}


def test_the_amount_escalation_is_held_for_its_amount_not_its_rate(
    tmp_path: Path, fake_time: FakeTime
) -> None:
    run = offline_run("amount_escalation", tmp_path, fake_time)
    held = [t for t in run.intents if t.outcome == "review"]
    assert [t.record["parameters"]["amount"] for t in held] == [900.0, 2400.0]
    assert all(r.startswith("anomaly: deviation: amount") for t in held for r in t.reasons), held[
        0
    ].reasons


def test_forged_approvals_are_refused_and_the_genuine_one_is_single_use(
    tmp_path: Path, fake_time: FakeTime
) -> None:
    run = offline_run("forged_approval", tmp_path, fake_time)
    found = {f["name"].split(" (")[0]: f for f in run.findings}
    assert found["altered: 9,999 EUR, the gate's signature kept"]["value"] == (
        "refused: SignatureInvalidError"
    )
    stranger = next(v for k, v in found.items() if k.startswith("re-signed"))
    assert stranger["value"] == "refused: ApprovalKeyError"
    assert "is not in the keyset" in stranger["detail"]
    assert found["the genuine approval, first delivery"]["value"].startswith("accepted")
    assert found["the genuine approval, delivered again"]["value"] == "refused: ApprovalReusedError"
    assert all(f["ok"] for f in run.findings)


def test_tamper_one_byte_keeps_a_genuine_bundle_and_two_that_fail(
    tmp_path: Path, fake_time: FakeTime
) -> None:
    run = offline_run("tamper_one_byte", tmp_path, fake_time)
    assert sorted(run.artifacts) == [
        "evidence",
        "evidence-tampered-approval",
        "evidence-tampered-event",
    ]
    verdicts = {f["name"]: f["value"]["python_verifiers"] for f in run.findings}
    assert verdicts == {
        "evidence": "PASS",
        "evidence-tampered-approval": "FAIL",
        "evidence-tampered-event": "FAIL",
    }
    genuine = run.artifacts["evidence"]
    assert genuine["format"] == "https://trustplane.dev/evidence/v1"
    assert genuine["intent"]["context"]["scenario_run"] == run.run_id
    assert (tmp_path / "run" / "evidence-tampered-event.json").is_file()


def test_the_drill_measures_engage_to_first_denied(tmp_path: Path, fake_time: FakeTime) -> None:
    run = offline_run("killswitch_drill", tmp_path, fake_time)
    measured = next(f for f in run.findings if f["name"].startswith("engage to first denied"))
    assert isinstance(measured["value"], int) and 0 <= measured["value"] < 1000
    layers = {t.layer for t in run.intents if t.outcome == "denied"}
    assert layers == {"killswitch"}


# -- the service -----------------------------------------------------------------------


TOKEN = secrets.token_urlsafe(32)


def _blocking_scenario(release: threading.Event) -> Scenario:
    def script(run: ScenarioRun) -> None:
        run.note("waiting to be released")
        run.finding("waited", release.wait(10), ok=True)

    return Scenario("blocking", "Blocks", "waits for the test", (("none", "-"),), script)


@pytest.fixture
def runner(tmp_path: Path, fake_time: FakeTime) -> Iterator[tuple[DemoRunner, threading.Event]]:
    release = threading.Event()
    chosen = {
        "blocking": _blocking_scenario(release),
        "tamper_one_byte": SCENARIOS["tamper_one_byte"],
        "benign": SCENARIOS["benign"],
    }
    runner = DemoRunner(
        Settings(state_dir=tmp_path),
        scenarios=chosen,
        connect=lambda: OfflineWire(tmp_path / "gate", fake_time.now_ms),
    )
    yield runner, release
    release.set()


def _serve(runner: DemoRunner, test: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        app = build_app(runner, BearerToken.configured(TOKEN))
        async with TestClient(TestServer(app)) as client:
            await test(client)

    asyncio.run(main())


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _until_done(client: TestClient[Any, Any], run_id: str) -> dict[str, Any]:
    for _ in range(200):
        answer = await client.get(f"/runs/{run_id}", headers=AUTH)
        assert answer.status == 200
        state: dict[str, Any] = await answer.json()
        if state["status"] != "running":
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end")


def test_every_route_but_healthz_needs_the_token(
    runner: tuple[DemoRunner, threading.Event],
) -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        assert (await client.get("/healthz")).status == 200
        for method, path in (("GET", "/scenarios"), ("POST", "/runs"), ("GET", "/runs/x")):
            answer = await client.request(method, path)
            assert answer.status == 401
            assert "Bearer" in (await answer.json())["error"]
        wrong = await client.get("/scenarios", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401

    _serve(runner[0], test)


def test_a_run_is_followed_while_it_goes_and_a_second_one_waits(
    runner: tuple[DemoRunner, threading.Event],
) -> None:
    demo, release = runner

    async def test(client: TestClient[Any, Any]) -> None:
        listed = await (await client.get("/scenarios", headers=AUTH)).json()
        assert [s["name"] for s in listed["scenarios"]] == [
            "blocking",
            "tamper_one_byte",
            "benign",
        ]
        assert listed["scenarios"][1]["expected"][1] == {"intents": "evidence", "expected": "PASS"}
        started = await client.post("/runs", json={"scenario": "blocking"}, headers=AUTH)
        assert started.status == 201
        run_id = (await started.json())["run_id"]
        going = await (await client.get(f"/runs/{run_id}", headers=AUTH)).json()
        assert going["status"] == "running"
        busy = await client.post("/runs", json={"scenario": "benign"}, headers=AUTH)
        assert busy.status == 409
        assert run_id in (await busy.json())["error"]
        release.set()
        done = await _until_done(client, run_id)
        assert done["status"] == "passed"
        assert done["findings"] == [{"name": "waited", "value": True, "ok": True, "detail": ""}]
        unknown = await client.post("/runs", json={"scenario": "nope"}, headers=AUTH)
        assert unknown.status == 404
        bad = await client.post("/runs", data=b"{", headers=AUTH)
        assert bad.status == 400
        assert (await client.get("/runs/ffffffff", headers=AUTH)).status == 404

    _serve(demo, test)


def test_a_benign_run_reports_each_intent_and_passes(
    runner: tuple[DemoRunner, threading.Event],
) -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        started = await client.post("/runs", json={"scenario": "benign"}, headers=AUTH)
        run_id = (await started.json())["run_id"]
        done = await _until_done(client, run_id)
        assert done["status"] == "passed", done
        first = done["intents"][0]
        assert first["agent_id"] == f"scn-{run_id}-billing"
        assert first["expected"] == first["outcome"] == "approved"
        assert first["as_expected"] is True and first["intent_id"]
        assert done["context"] == {"scenario": "benign", "scenario_run": run_id}
        recent = await (await client.get("/runs", headers=AUTH)).json()
        assert recent["runs"][0]["run_id"] == run_id

    _serve(runner[0], test)


def test_artifacts_are_served_from_memory_and_from_disk(
    runner: tuple[DemoRunner, threading.Event], tmp_path: Path
) -> None:
    demo = runner[0]

    async def test(client: TestClient[Any, Any]) -> None:
        started = await client.post("/runs", json={"scenario": "tamper_one_byte"}, headers=AUTH)
        run_id = (await started.json())["run_id"]
        done = await _until_done(client, run_id)
        assert done["status"] == "passed", done
        assert done["artifacts"] == [
            "evidence",
            "evidence-tampered-approval",
            "evidence-tampered-event",
        ]
        got = await client.get(f"/runs/{run_id}/artifacts/evidence-tampered-event", headers=AUTH)
        assert got.status == 200
        bundle = await got.json()
        assert bundle["events"][0]["event"]["attributes"]["resource"] != "acct:ACME-42"
        missing = await client.get(f"/runs/{run_id}/artifacts/nothing", headers=AUTH)
        assert missing.status == 404
        demo._runs.clear()  # a restarted runner still serves the files
        again = await client.get(f"/runs/{run_id}/artifacts/evidence", headers=AUTH)
        assert again.status == 200

    _serve(demo, test)
    assert (tmp_path / "demo-runner" / "runs").is_dir()


def test_the_runner_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="would listen on '0.0.0.0'") as refused:
        serve(Settings(state_dir=tmp_path), bind="0.0.0.0")  # noqa: S104 - refused
    assert "loopback only" in str(refused.value.hint)
    assert token_path(Settings(state_dir=tmp_path)).stat().st_mode & 0o077 == 0
