"""Runtime Governance Demo: scripted scenarios that run on the real pipeline.

Each scenario registers agents and runtimes of its own for the run (``scn-<run id>-<role>``,
signed ``agent.register`` / ``runtime.register`` commands of the demo operator key), so a
quarantine, a sequence or a baseline of one run never touches another, and lineage tells
the runs apart by agent id. Every intent is signed with its agent's key, carries
``context = {"scenario": <name>, "scenario_run": <run id>, "scenario_step": <n>}``, is
published to ``intents`` as the Kafka principal ``agent`` and decided by whatever gate
workers run; outcomes are read back from the decision topics as ``operator``. Each
intent states what it expects (outcome, and the layer that stops it); a run passes when
every intent got what it expected and every finding held.

The expectations are written against the example estate that ``make run`` sets up: the
policy bundle in ``policies/bundle`` and the anomaly thresholds in
``policies/anomaly.toml``. What the live pipeline can show within seconds differs from
the offline evaluation (``bench/evaluation``) in one way, on purpose: novelty and the
exfiltration pattern are judged only after an agent's 24 h baseline period, so for an
agent registered seconds ago they cannot fire. The scenarios say so, and show what does
stop those attacks live (policy guardrails, the export rate limit).

:class:`ScenarioRun` is one run (its state is what ``trustplane demo-runner`` serves);
it talks to the pipeline through a :class:`Wire`: :class:`KafkaWire` for the real one.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from processors.approval.exceptions import ApprovalVerificationError
from processors.approval.seen import SqliteSeenStore
from processors.approval.statement import parameters_digest
from processors.approval.verify import verify_approval
from processors.crypto.dsse import sign_envelope
from processors.crypto.jcs import canonical_json
from processors.crypto.keys import (
    Keyset,
    SigningKey,
    b64url,
    generate_signing_key,
    raw_public_key,
)
from processors.exceptions import TrustplaneError
from processors.layers.identity import sign_intent
from processors.layers.integrity import runtime_subject
from processors.layers.killswitch import subject_of as killswitch_subject
from processors.timefmt import iso_ms
from streams.codec import Codec, default_codec
from streams.config import Settings
from streams.dev.estate import DemoAgent, measurement
from streams.sdk.client import Received, new_intent

__all__ = [
    "SCENARIOS",
    "Expect",
    "KafkaWire",
    "OperatorDesk",
    "Scenario",
    "ScenarioError",
    "ScenarioRun",
    "TrackedIntent",
    "Wire",
    "new_run_id",
    "run_scenario",
]

log = logging.getLogger(__name__)

CONTEXT_SCENARIO = "scenario"
CONTEXT_RUN = "scenario_run"
CONTEXT_STEP = "scenario_step"
WAIT_S = 30.0
"""How long one step waits for its intents' outcomes."""

ROLES: Mapping[str, tuple[str, ...]] = {
    # a scenario role -> the registry roles the example bundle gives permits to
    "billing": ("payments-agent",),
    "support": ("support",),
    "deploy": ("deployer",),
    "analytics": ("analyst",),
    "ops": ("readonly",),
}


class ScenarioError(TrustplaneError):
    """A scenario could not run (the pipeline, the notary or a key is missing)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_run_id() -> str:
    """Eight lowercase hex digits: short enough for agent ids, unique enough per estate."""
    return secrets.token_hex(4)


# -- expectations and tracked intents --------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What an intent should get: an outcome and, unless approved, the layer that stops it.
    ``alternatives`` are other (outcome, layer) pairs that are right too (an intent in
    flight while a kill switch was being engaged may pass or be stopped)."""

    outcome: str
    layer: str | None = None
    alternatives: tuple[tuple[str, str | None], ...] = ()

    def accepts(self, outcome: str | None, layer: str | None) -> bool:
        if outcome is None:
            return False
        if outcome == self.outcome and (self.layer is None or layer == self.layer):
            return True
        return any(
            outcome == o and (want is None or layer == want) for o, want in self.alternatives
        )

    @property
    def text(self) -> str:
        return " or ".join([self.outcome, *(o for o, _ in self.alternatives)])

    def describe(self) -> str:
        parts = [self.outcome + (f" ({self.layer})" if self.layer else "")]
        parts += [o + (f" ({w})" if w else "") for o, w in self.alternatives]
        return " or ".join(parts)


APPROVED = Expect("approved")


def denied(layer: str) -> Expect:
    return Expect("denied", layer)


def held(layer: str) -> Expect:
    return Expect("review", layer)


@dataclass
class TrackedIntent:
    """An intent this run published, and what became of it."""

    n: int
    label: str
    expect: Expect
    record: dict[str, Any]
    value: bytes
    published_at_ms: int = 0
    outcome: str | None = None
    layer: str | None = None
    reasons: list[str] = field(default_factory=list)
    decided_at_ms: int | None = None
    result: dict[str, Any] | None = None
    """The outcome record as read (an Approval or a Decision)."""

    @property
    def intent_id(self) -> str:
        return str(self.record["intent_id"])

    @property
    def agent_id(self) -> str:
        return str(self.record["agent_id"])

    @property
    def as_expected(self) -> bool | None:
        return None if self.outcome is None else self.expect.accepts(self.outcome, self.layer)

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "intent_id": self.intent_id,
            "agent_id": self.agent_id,
            "action": self.record["action"],
            "resource": self.record["resource"],
            "label": self.label,
            "expected": self.expect.text,
            "expected_layer": self.expect.layer,
            "expected_text": self.expect.describe(),
            "outcome": self.outcome,
            "layer": self.layer,
            "reasons": list(self.reasons),
            "published_at_ms": self.published_at_ms,
            "decided_at_ms": self.decided_at_ms,
            "as_expected": self.as_expected,
        }


def _decision_of(received: Received) -> tuple[str, str | None, list[str], int | None]:
    """(outcome, stopping layer, reasons, decision time) of an outcome record."""
    record = received.record or {}
    verdicts = [v for v in record.get("verdicts") or [] if isinstance(v, Mapping)]
    if received.topic == "approved":
        policy = next((v for v in verdicts if v.get("layer") == "policy"), None)
        reasons = list((policy or {}).get("reasons") or []) or ["every layer allowed"]
        return "approved", None, reasons, record.get("issued_at_ms")
    stopping = next((v for v in verdicts if v.get("status") != "ALLOW"), None)
    layer = str(stopping["layer"]) if stopping else "enforcement"
    return received.topic, layer, list(record.get("reasons") or []), record.get("decided_at_ms")


# -- agents ------------------------------------------------------------------------------


@dataclass
class ScenarioAgent:
    """An agent registered for one run: its key lives in memory only."""

    agent_id: str
    role: str
    roles: tuple[str, ...]
    key: SigningKey
    environment: str = "prod"
    sequence: int = 0

    @property
    def profile(self) -> DemoAgent:
        """Its runtime's measurements, made as the demo estate makes its agents'."""
        return DemoAgent(self.agent_id, self.roles, f"{self.agent_id}-rt", self.environment)

    @property
    def runtime_id(self) -> str:
        return self.profile.runtime_id

    @property
    def code_digest(self) -> str:
        return self.profile.code_digest

    @property
    def config_digest(self) -> str:
        return self.profile.config_digest

    def runtime(self) -> dict[str, str]:
        return self.profile.runtime()

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    def registration(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "keys": [{"kid": self.key.kid, "x": b64url(raw_public_key(self.key.public_key))}],
            "roles": list(self.roles),
            "runtimes": [self.runtime_id],
            "environments": [self.environment],
        }

    def runtime_registration(self) -> dict[str, Any]:
        return {
            "runtime_id": self.runtime_id,
            "code_digests": [self.code_digest],
            "config_digests": [self.config_digest],
            "environment": self.environment,
            "hosts": [],
        }


# -- the wire: how a run reaches the pipeline -------------------------------------------


@dataclass(frozen=True)
class Appended:
    """A control command as published: the record, and its broker append time."""

    record: dict[str, Any]
    appended_at_ms: int
    sent_at_ms: int
    acked_at_ms: int


class Wire(Protocol):
    """What a run needs from the pipeline. :class:`KafkaWire` is the real one."""

    codec: Codec

    def start(self, on_outcome: Callable[[Received], None]) -> None: ...
    def publish(self, key: bytes, value: bytes) -> None: ...
    def command(
        self, kind: str, payload: Mapping[str, Any], subject: str | None = None
    ) -> Appended: ...
    def gate_keyset(self) -> Keyset: ...
    def inclusion(self, event_id: str, timeout_s: float) -> dict[str, Any]: ...
    def verify_inclusion(self, answer: Mapping[str, Any], event_id: str) -> None: ...
    def evidence_keys(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class OperatorDesk:
    """The demo operator key's one client, shared by every run of a process: commands
    signed with one key are one history, and two clients of one key would fence each
    other."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.for_role("operator")
        self._lock = threading.Lock()
        self._client: Any = None

    def send(self, kind: str, payload: Mapping[str, Any], subject: str | None) -> dict[str, Any]:
        from streams.operator import OperatorClient

        with self._lock:
            if self._client is None:
                self._client = OperatorClient(self.settings, issued_by="demo-runner")
            record: dict[str, Any] = self._client.send(kind, payload, subject=subject)
            return record


class KafkaWire:
    """The real pipeline: intents to Kafka as ``agent``, outcomes and ``control`` read as
    ``operator``, commands signed with the demo operator key, proofs from the notary."""

    def __init__(self, settings: Settings, desk: OperatorDesk | None = None) -> None:
        from streams.operator import ensure_local_keys
        from streams.sdk.client import IntentPublisher, OutcomeReader
        from streams.topics import ensure_topics

        self.settings = settings
        self.codec = default_codec()
        ensure_local_keys(settings)  # the demo operator key (never overwrites)
        ensure_topics(settings)
        self.desk = desk or OperatorDesk(settings)
        reader_settings = settings.for_role("operator")
        # both readers start at the topics' current ends: only this run's records matter
        self._outcomes = OutcomeReader(reader_settings, from_beginning=False, codec=self.codec)
        self._control = OutcomeReader(
            reader_settings, topics=("control",), from_beginning=False, codec=self.codec
        )
        self._publisher = IntentPublisher(settings.for_role("agent"), self.codec)
        self._publish_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def start(self, on_outcome: Callable[[Received], None]) -> None:
        def pump() -> None:
            try:
                while not self._stop.is_set():
                    for received in self._outcomes.read(timeout=0.2):
                        on_outcome(received)
                        if self._stop.is_set():
                            return
            except BaseException as exc:  # noqa: BLE001 - reported to the run, not lost
                self.failure = exc
                log.exception("reading outcomes failed")

        self._thread = threading.Thread(target=pump, name="scenario-outcomes", daemon=True)
        self._thread.start()

    def publish(self, key: bytes, value: bytes) -> None:
        if self.failure is not None:
            raise ScenarioError(f"outcomes can no longer be read: {self.failure}")
        with self._publish_lock:
            self._publisher.publish_raw(key, value)
            self._publisher.flush(10.0)

    def command(
        self, kind: str, payload: Mapping[str, Any], subject: str | None = None
    ) -> Appended:
        sent = _now_ms()
        record = self.desk.send(kind, payload, subject)
        acked = _now_ms()
        return Appended(record, self._append_time(str(record["command_id"])), sent, acked)

    def _append_time(self, command_id: str, timeout_s: float = 15.0) -> int:
        """The broker's append time of the command (``control`` is LogAppendTime)."""
        deadline = time.monotonic() + timeout_s
        consumer = self._control.consumer
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            try:
                record = self.codec.decode(message.value() or b"")
            except TrustplaneError:
                continue
            if record.get("command_id") == command_id:
                return int(message.timestamp()[1])
        raise ScenarioError(f"control command {command_id} was not read back from control")

    def gate_keyset(self) -> Keyset:
        from streams.gatekeys import gate_jwks_path

        return Keyset.from_file(gate_jwks_path(self.settings))

    def _notary(self) -> Any:
        from streams.cli.proof import NotaryClient
        from streams.notary import notary_port

        token = str(getattr(self.settings, "notary_token", None) or "") or None
        return NotaryClient(f"http://127.0.0.1:{notary_port(self.settings)}", token=token)

    def inclusion(self, event_id: str, timeout_s: float) -> dict[str, Any]:
        """The notary's inclusion proof of ``event_id``, waiting until it is checkpointed."""
        from streams.cli.proof import ProofClientError

        notary = self._notary()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                answer: dict[str, Any] = notary.inclusion(event_id=event_id)
                return answer
            except ProofClientError as exc:
                if time.monotonic() >= deadline:
                    raise ScenarioError(
                        f"the notary has no proof of lineage event {event_id}: {exc.reason}",
                        hint="is the notary running? `trustplane notary` (`make run` starts it)",
                    ) from exc
                time.sleep(0.3)

    def verify_inclusion(self, answer: Mapping[str, Any], event_id: str) -> None:
        from processors.log.attest import verify_event_signature
        from streams.cli.proof import load_verifier, verify_inclusion_answer

        verified = verify_inclusion_answer(
            answer, load_verifier(None, self.settings), event_id=event_id
        )
        verify_event_signature(verified.event, self.gate_keyset())

    def evidence_keys(self) -> dict[str, Any]:
        from streams.gatekeys import gate_jwks_path
        from streams.notary import notary_vkey_path

        def text(path: Path) -> str | None:
            try:
                return path.read_text().strip()
            except OSError:
                return None

        jwks = text(gate_jwks_path(self.settings))
        return {
            "gate_jwks": json.loads(jwks) if jwks else None,
            "notary_vkey": text(notary_vkey_path(self.settings)),
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        try:
            self._publisher.flush(5.0)
        except TrustplaneError as exc:
            log.warning("closing the publisher: %s", exc.reason)
        self._outcomes.close()
        self._control.close()


# -- one run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    shows: str
    expects: tuple[tuple[str, str], ...]
    """(which intents, what they should get), for people."""
    script: Callable[[ScenarioRun], None]
    needs_notary: bool = False
    duration_s: float = 5.0
    """About how long a run takes."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.shows,
            "shows": self.shows,
            "expected": [{"intents": what, "expected": want} for what, want in self.expects],
            "needs_notary": self.needs_notary,
            "duration_s": self.duration_s,
        }


class ScenarioRun:
    """One run of a scenario: the agents it registered, every intent it published with
    what it expected and what it got, findings and artifacts. Thread-safe; the demo
    runner serves :meth:`snapshot` while the run goes."""

    def __init__(
        self,
        scenario: Scenario,
        settings: Settings,
        connect: Callable[[], Wire],
        *,
        run_id: str | None = None,
        workdir: Path | None = None,
    ) -> None:
        """``connect`` makes the run's :class:`Wire` when the run starts (so a broker that
        cannot be reached ends the run as ``error``, not its creation)."""
        self.scenario = scenario
        self.settings = settings
        self._connect = connect
        self._wire: Wire | None = None
        self.run_id = run_id or new_run_id()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"scenario-{self.run_id}-"))
        self.codec = default_codec()
        self.status = "running"
        self.progress = "starting"
        self.error: str | None = None
        self.started_at_ms = _now_ms()
        self.finished_at_ms: int | None = None
        self.agents: dict[str, ScenarioAgent] = {}
        self.intents: list[TrackedIntent] = []
        self.findings: list[dict[str, Any]] = []
        self.artifacts: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)

    @property
    def wire(self) -> Wire:
        if self._wire is None:
            raise ScenarioError(f"run {self.run_id} has not started")
        return self._wire

    # -- state, for the runner ----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "run_id": self.run_id,
                "scenario": self.scenario.name,
                "title": self.scenario.title,
                "status": self.status,
                "progress": self.progress,
                "error": self.error,
                "started_at_ms": self.started_at_ms,
                "finished_at_ms": self.finished_at_ms,
                "agents": sorted(self.agents),
                "context": {CONTEXT_SCENARIO: self.scenario.name, CONTEXT_RUN: self.run_id},
                "intents": [t.to_json() for t in self.intents],
                "findings": [dict(f) for f in self.findings],
                "artifacts": sorted(self.artifacts),
                "summary": self._summary(),
            }

    def _summary(self) -> dict[str, int]:
        decided = [t for t in self.intents if t.outcome is not None]
        return {
            "intents": len(self.intents),
            "decided": len(decided),
            "as_expected": sum(1 for t in decided if t.as_expected),
            "findings_failed": sum(1 for f in self.findings if f.get("ok") is False),
        }

    @property
    def done(self) -> bool:
        return self.status != "running"

    # -- running --------------------------------------------------------------------------

    def run(self) -> ScenarioRun:
        """Run the scenario to its end; never raises (an error ends the run as ``error``)."""
        try:
            self.note("connecting to the pipeline")
            self._wire = self._connect()
            self.wire.start(self._on_outcome)
            self.scenario.script(self)
            with self._lock:
                passed = all(t.as_expected for t in self.intents) and not any(
                    f.get("ok") is False for f in self.findings
                )
                self.status = "passed" if passed else "failed"
                missing = [t.n for t in self.intents if t.outcome is None]
                if missing:
                    self.error = f"no outcome within {WAIT_S:.0f} s for intents {missing}"
        except TrustplaneError as exc:
            self._fail(exc.diagnostics())
        except Exception as exc:  # noqa: BLE001 - a run reports, the runner goes on
            log.exception("scenario %s (run %s) failed", self.scenario.name, self.run_id)
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            try:
                if self._wire is not None:
                    self._wire.close()
            except Exception:  # noqa: BLE001 - closing must not hide the result
                log.exception("closing the wire of run %s", self.run_id)
            self._wire = None  # let its Kafka clients go
            with self._lock:
                self.finished_at_ms = _now_ms()
                took = (self.finished_at_ms - self.started_at_ms) / 1000
                self.progress = f"{self.status} in {took:.1f} s"
                self._changed.notify_all()
        return self

    def _fail(self, reason: str) -> None:
        with self._lock:
            self.status = "error"
            self.error = reason

    def note(self, text: str) -> None:
        """What the run is doing now (shown while it goes)."""
        with self._lock:
            self.progress = text

    def finding(self, name: str, value: Any, *, ok: bool | None = None, detail: str = "") -> None:
        with self._lock:
            self.findings.append({"name": name, "value": value, "ok": ok, "detail": detail})

    def artifact(self, name: str, document: Any) -> None:
        """Keep a JSON document for the page (and a copy in the run's folder)."""
        with self._lock:
            self.artifacts[name] = document
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            (self.workdir / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
        except OSError as exc:
            log.warning("cannot keep artifact %s: %s", name, exc)

    # -- agents -------------------------------------------------------------------------

    def register(self, *roles: str) -> list[ScenarioAgent]:
        """Register one agent (and its runtime) per role for this run; in force for every
        intent published after this returns."""
        made = []
        for role in roles:
            agent = ScenarioAgent(
                f"scn-{self.run_id}-{role}", role, ROLES[role], generate_signing_key()
            )
            self.note(f"registering {agent.agent_id} (roles {', '.join(agent.roles)})")
            self.wire.command(
                "runtime.register",
                agent.runtime_registration(),
                subject=runtime_subject(agent.runtime_id),
            )
            self.wire.command("agent.register", agent.registration())
            with self._lock:
                self.agents[agent.agent_id] = agent
            made.append(agent)
        return made

    def command(
        self, kind: str, payload: Mapping[str, Any], subject: str | None = None
    ) -> Appended:
        return self.wire.command(kind, payload, subject)

    # -- intents --------------------------------------------------------------------------

    def intent_record(
        self,
        agent: ScenarioAgent,
        action: str,
        resource: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        runtime: Mapping[str, str] | None = None,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        """A signed intent of ``agent`` labelled with this run (not published)."""
        with self._lock:
            step = len(self.intents) + 1
        record = new_intent(
            agent.agent_id,
            action,
            resource,
            sequence=agent.next_sequence(),
            parameters=parameters,
            context={
                CONTEXT_SCENARIO: self.scenario.name,
                CONTEXT_RUN: self.run_id,
                CONTEXT_STEP: step,
            },
            runtime=runtime or agent.runtime(),
            key_id=agent.key.kid,
        )
        if nonce is not None:
            record["nonce"] = nonce
        return sign_intent(record, agent.key)

    def publish(
        self,
        agent: ScenarioAgent,
        action: str,
        resource: str,
        *,
        label: str,
        expect: Expect,
        parameters: Mapping[str, Any] | None = None,
        runtime: Mapping[str, str] | None = None,
        nonce: str | None = None,
    ) -> TrackedIntent:
        record = self.intent_record(
            agent, action, resource, parameters=parameters, runtime=runtime, nonce=nonce
        )
        return self.send(record, self.codec.encode("Intent", record), label=label, expect=expect)

    def resend(self, original: TrackedIntent, *, label: str, expect: Expect) -> TrackedIntent:
        """Publish the exact bytes of an intent again (a replay)."""
        return self.send(dict(original.record), original.value, label=label, expect=expect)

    def send(
        self, record: dict[str, Any], value: bytes, *, label: str, expect: Expect
    ) -> TrackedIntent:
        with self._lock:
            tracked = TrackedIntent(len(self.intents) + 1, label, expect, record, value)
            tracked.published_at_ms = _now_ms()
            self.intents.append(tracked)
        self.wire.publish(str(record["agent_id"]).encode(), value)
        return tracked

    def _on_outcome(self, received: Received) -> None:
        record = received.record or {}
        intent_id = record.get("intent_id")
        if received.topic not in ("approved", "denied", "review") or not intent_id:
            return
        outcome, layer, reasons, decided_at = _decision_of(received)
        with self._lock:
            # the first undecided intent with this id: a replay is decided after its original
            tracked = next(
                (t for t in self.intents if t.intent_id == intent_id and t.outcome is None), None
            )
            if tracked is None:
                return  # not ours, or a later outcome (a held intent timing out)
            tracked.outcome, tracked.layer, tracked.reasons = outcome, layer, reasons
            tracked.decided_at_ms = int(decided_at) if decided_at is not None else _now_ms()
            tracked.result = dict(record)
            self._changed.notify_all()

    def expect_undecided(self, expect: Expect) -> None:
        """Give every intent still waiting for its outcome this expectation (those in
        flight when the pipeline's rules changed under them)."""
        with self._lock:
            for tracked in self.intents:
                if tracked.outcome is None:
                    tracked.expect = expect

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
        """Wait until ``predicate()`` (called under the run's lock) holds."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
                failure = getattr(self._wire, "failure", None)
                if failure is not None:
                    raise ScenarioError(f"outcomes can no longer be read: {failure}")
            return True

    def wait(self, items: Iterable[TrackedIntent], timeout_s: float = WAIT_S) -> bool:
        """Wait until every one of ``items`` has its outcome; False if some did not in time."""
        waiting = list(items)
        return self.wait_for(lambda: all(t.outcome is not None for t in waiting), timeout_s)


# -- the scenarios -----------------------------------------------------------------------


def _quarantined_layer(run: ScenarioRun) -> str:
    """Where the next intent of a quarantined agent is stopped: eligibility for an agent
    quarantine (the default), integrity for a runtime one (``quarantine_scope``)."""
    return "integrity" if run.settings.quarantine_scope == "runtime" else "eligibility"


def _benign(run: ScenarioRun) -> None:
    billing, support, deploy, analytics, ops = run.register(
        "billing", "support", "deploy", "analytics", "ops"
    )
    run.note("publishing everyday intents of five agents")
    items = [
        run.publish(
            billing,
            "payments.transfer",
            "acct:ACME-42",
            label="billing pays an invoice",
            expect=APPROVED,
            parameters={"amount": 1250.0, "currency": "EUR", "invoice_id": "INV-2026-118"},
        ),
        run.publish(
            billing,
            "invoices.read",
            "invoice:INV-2026-118",
            label="billing reads the invoice",
            expect=APPROVED,
        ),
        run.publish(
            support,
            "tickets.reply",
            "ticket:8812",
            label="support answers a ticket",
            expect=APPROVED,
            parameters={"body": "Your refund is on its way."},
        ),
        run.publish(
            support,
            "email.send",
            "mailto:customer@example.com",
            label="support emails the customer",
            expect=APPROVED,
            parameters={"template": "follow-up"},
        ),
        run.publish(
            deploy,
            "deploy.staging",
            "service:checkout",
            label="deploy checkout to staging",
            expect=APPROVED,
            parameters={"version": "1.42.0"},
        ),
        run.publish(
            analytics,
            "warehouse.query",
            "table:orders",
            label="analytics queries the orders table",
            expect=APPROVED,
            parameters={"sql": "SELECT count(*) FROM orders", "max_rows": 1.0},
        ),
        run.publish(
            analytics,
            "warehouse.export",
            "s3://acme-exports/2026-11/orders.csv.gz",
            label="analytics exports to the approved bucket",
            expect=APPROVED,
            parameters={"format": "csv", "rows": 1200.0},
        ),
        run.publish(
            ops,
            "reports.read",
            "report:q3",
            label="a read-only agent reads a report",
            expect=APPROVED,
            parameters={"period": "2026-Q3"},
        ),
    ]
    run.wait(items)


def _tampered_runtime(run: ScenarioRun) -> None:
    (billing,) = run.register("billing")
    ok = run.publish(
        billing,
        "payments.transfer",
        "acct:vendor-017",
        label="a transfer from its registered runtime",
        expect=APPROVED,
        parameters={"amount": 820.0, "currency": "EUR"},
    )
    run.wait([ok])
    run.note("the agent's key, used from a runtime with patched code on a foreign host")
    tampered = {
        **billing.runtime(),
        "code_digest": measurement(f"{billing.agent_id} code v1+implant"),
        "host": "203.0.113.7",
    }
    bad = run.publish(
        billing,
        "payments.transfer",
        "acct:vendor-017",
        label="same key, patched code on a foreign host (quarantines)",
        expect=denied("integrity"),
        parameters={"amount": 790.0, "currency": "EUR"},
        runtime=tampered,
    )
    run.wait([bad])
    after = run.publish(
        billing,
        "payments.transfer",
        "acct:vendor-017",
        label="the agent's next intent, from its registered runtime",
        expect=denied(_quarantined_layer(run)),
        parameters={"amount": 805.0, "currency": "EUR"},
    )
    run.wait([after])
    run.finding("attestation", bad.reasons[0] if bad.reasons else None, ok=bad.as_expected)
    run.finding("quarantine", after.reasons[0] if after.reasons else None, ok=after.as_expected)


def _replay(run: ScenarioRun) -> None:
    (billing,) = run.register("billing")
    original = run.publish(
        billing,
        "payments.transfer",
        "acct:vendor-042",
        label="a transfer",
        expect=APPROVED,
        parameters={"amount": 640.0, "currency": "EUR"},
    )
    run.wait([original])
    run.note("the same signed intent, sent again byte for byte")
    copy_ = run.resend(
        original,
        label="the exact same intent again (a verbatim replay: refused, no quarantine)",
        expect=denied("integrity"),
    )
    run.wait([copy_])
    next_ = run.publish(
        billing,
        "payments.transfer",
        "acct:vendor-042",
        label="the agent's next transfer (a replay by someone else does not stop it)",
        expect=APPROVED,
        parameters={"amount": 655.0, "currency": "EUR"},
    )
    run.wait([next_])
    run.note("a new intent signed with the agent's key, reusing a nonce it used before")
    reused = run.publish(
        billing,
        "payments.transfer",
        "acct:attacker-9",
        label="a different intent reusing a nonce (quarantines)",
        expect=denied("integrity"),
        parameters={"amount": 640.0, "currency": "EUR"},
        nonce=str(next_.record["nonce"]),
    )
    run.wait([reused])
    after = run.publish(
        billing,
        "payments.transfer",
        "acct:vendor-042",
        label="the agent's next intent",
        expect=denied(_quarantined_layer(run)),
        parameters={"amount": 610.0, "currency": "EUR"},
    )
    run.wait([after])


LOOP_LENGTH = 14
"""Email class (policies/anomaly.toml): burst > 5/s denied; the 5th violation in 10 min
quarantines. So: 5 approved, 4 denied by burst, the 10th denied and quarantining, the rest
denied as quarantined."""


def _runaway_loop(run: ScenarioRun) -> None:
    (support,) = run.register("support")
    run.note(f"the same email {LOOP_LENGTH} times, 20 ms apart")
    items = []
    for n in range(1, LOOP_LENGTH + 1):
        if n <= 5:
            expect, why = APPROVED, "within the burst limit"
        elif n < 10:
            expect, why = denied("anomaly"), "burst > 5/s"
        elif n == 10:
            expect, why = denied("anomaly"), "burst; 5th violation: quarantine"
        else:
            expect, why = denied("eligibility"), "quarantined"
        items.append(
            run.publish(
                support,
                "email.send",
                "mailto:customer@example.com",
                label=f"follow-up email #{n} ({why})",
                expect=expect,
                parameters={"template": "follow-up"},
            )
        )
        time.sleep(0.02)
    run.wait(items)
    stopped = next((t for t in items if t.outcome == "denied"), None)
    run.finding(
        "stopped after",
        f"{stopped.n - 1} emails" if stopped else "never",
        ok=stopped is not None and stopped.n == 6,
        detail=stopped.reasons[0] if stopped and stopped.reasons else "",
    )


DRIP_EXPORTS = 10
"""Exports class: rate > 10 per minute is held for review. The refused drop to an unlisted
bucket counts too (activity counts every decided intent), so the 10th drip is held."""


def _page_sql(page: int) -> str:
    # text an agent would send as a parameter; nothing runs it
    return f"SELECT * FROM customers LIMIT 5000 OFFSET {page * 5000}"  # noqa: S608


def _slow_drip(run: ScenarioRun) -> None:
    (analytics,) = run.register("analytics")
    run.note("paging through the customers table")
    pages = [
        run.publish(
            analytics,
            "warehouse.query",
            "table:customers",
            label=f"read customers page {p + 1}",
            expect=APPROVED,
            parameters={"sql": _page_sql(p)},
        )
        for p in range(6)
    ]
    run.wait(pages)
    drop = f"s3://sync-backup-{secrets.token_hex(2)}/customers-full.csv.gz"
    whole = run.publish(
        analytics,
        "warehouse.export",
        drop,
        label="export the whole table to a bucket of its own (not on the allowlist)",
        expect=denied("policy"),
        parameters={"format": "csv", "rows": 30000.0},
    )
    run.wait([whole])
    for k in range(1, DRIP_EXPORTS + 1):
        run.note(f"dripping the table out to an allowed bucket: part {k} of {DRIP_EXPORTS}")
        page = run.publish(
            analytics,
            "warehouse.query",
            "table:customers",
            label=f"read customers page {6 + k}",
            expect=APPROVED,
            parameters={"sql": _page_sql(5 + k)},
        )
        last = k == DRIP_EXPORTS
        part = run.publish(
            analytics,
            "warehouse.export",
            f"s3://acme-partner-share/drip/customers-part-{k:04d}.csv.gz",
            label=f"drip part {k} to the partner bucket"
            + (" (11th export in a minute: held)" if last else ""),
            expect=held("anomaly") if last else APPROVED,
            parameters={"format": "csv", "rows": 5000.0},
        )
        run.wait([page, part])
        if not last:
            time.sleep(0.55)  # under the exports' burst limit (3/s)
    held_ = run.intents[-1]
    run.finding(
        "drip held",
        held_.reasons[0] if held_.reasons else None,
        ok=held_.as_expected,
        detail="the exfiltration pattern (>= 150 reads then a new destination: quarantine) "
        "is judged after an agent's 24 h baseline; this agent is seconds old",
    )


def _novel_destructive(run: ScenarioRun) -> None:
    (deploy,) = run.register("deploy")
    usual = run.publish(
        deploy,
        "deploy.staging",
        "service:checkout",
        label="its usual work: deploy to staging",
        expect=APPROVED,
        parameters={"version": "1.42.1"},
    )
    run.wait([usual])
    run.note("an action this agent never took: dropping databases")
    prod = run.publish(
        deploy,
        "db.drop",
        "db:production",
        label="drop the production database (guardrail)",
        expect=denied("policy"),
    )
    staging = run.publish(
        deploy,
        "db.drop",
        "db:orders-staging",
        label="drop a staging database (no permit: default deny)",
        expect=denied("policy"),
    )
    run.wait([prod, staging])
    run.finding(
        "stopped by",
        "; ".join(prod.reasons[:1] + staging.reasons[:1]),
        ok=prod.as_expected and staging.as_expected,
        detail="policy decides before the anomaly layer: for an agent past its baseline, "
        "the destructive class would also deny a novel action",
    )


BASELINE_AMOUNTS = tuple(
    round(180.0 * f, 2)
    for f in (
        *(0.62, 0.66, 0.7, 0.75, 0.8, 0.84, 0.87, 0.9, 0.93, 0.95),
        *(0.97, 0.99, 1.0, 1.01, 1.03, 1.05, 1.07, 1.1, 1.12, 1.15),
        *(1.18, 1.21, 1.25, 1.3, 1.35, 1.4, 1.47, 1.55, 1.65, 1.8),
    )
)
"""30 transfers around a median of 180 EUR: the payments class judges amounts after 30."""
ESCALATION = (
    (240.0, APPROVED),
    (330.0, APPROVED),
    (420.0, APPROVED),
    (900.0, None),
    (2400.0, None),
)
"""Robust z on a log scale (> 4.5 is held): about 0.9, 2.1, 2.9, then 5.8 and 9.5."""
RATE_WINDOW_S = 61.0


def _amount_escalation(run: ScenarioRun) -> None:
    (billing,) = run.register("billing")
    baseline = []
    for n, amount in enumerate(BASELINE_AMOUNTS, 1):
        run.note(f"building a baseline: transfer {n} of {len(BASELINE_AMOUNTS)}")
        item = run.publish(
            billing,
            "payments.transfer",
            f"acct:vendor-{n:03d}",
            label=f"baseline transfer {n}: {amount:.2f} EUR",
            expect=APPROVED,
            parameters={"amount": amount, "currency": "EUR"},
        )
        run.wait([item])
        baseline.append(item)
        time.sleep(0.25)  # under the payments' burst limit (5/s)
    first = baseline[0].decided_at_ms or baseline[0].published_at_ms
    # payments rate: > 30 transfers a minute is held too; let the first baseline transfer
    # leave that window, so what holds the escalation is the amount alone
    wait_s = max(0.0, first / 1000 + RATE_WINDOW_S - time.time())
    run.note(f"waiting {wait_s:.0f} s: the rate window (30 transfers/min) must not decide this")
    time.sleep(wait_s)
    account = f"acct:ext-{secrets.randbelow(90_000_000) + 10_000_000}"
    for amount, want in ESCALATION:
        run.note(f"escalating: {amount:.0f} EUR to {account}")
        item = run.publish(
            billing,
            "payments.transfer",
            account,
            label=f"{amount:,.0f} EUR ({amount / 180:.1f}x the median)",
            expect=want or held("anomaly"),
            parameters={"amount": amount, "currency": "EUR"},
        )
        run.wait([item])
        time.sleep(1.0)
    first_held = next((t for t in run.intents if t.outcome == "review"), None)
    run.finding(
        "held at",
        first_held.label if first_held else "never",
        ok=first_held is not None and first_held.as_expected,
        detail=first_held.reasons[0] if first_held and first_held.reasons else "",
    )


# -- forged approvals --------------------------------------------------------------------


def _approval_of(tracked: TrackedIntent) -> dict[str, Any]:
    if tracked.outcome != "approved" or tracked.result is None:
        raise ScenarioError(
            f"intent {tracked.intent_id} was not approved ({tracked.outcome}): no approval "
            "to work with"
        )
    return tracked.result


def _statement(envelope: Mapping[str, Any]) -> dict[str, Any]:
    statement: dict[str, Any] = json.loads(base64.b64decode(str(envelope["payload"])))
    return statement


def _forge(
    codec: Codec, approval: Mapping[str, Any], amount: float, key: SigningKey | None
) -> dict[str, Any]:
    """The approval of the same intent with another amount: the statement altered to match
    the altered intent; its signature kept (``key`` None) or made with ``key``."""
    intent = codec.decode(bytes(approval["intent"]), "Intent")
    intent["parameters"] = {**intent["parameters"], "amount": amount}
    intent_bytes = codec.encode("Intent", intent)
    envelope = json.loads(bytes(approval["envelope"]))
    statement = _statement(envelope)
    statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(intent_bytes).hexdigest()
    statement["predicate"]["parametersDigest"] = parameters_digest(intent["parameters"])
    payload = canonical_json(statement)
    if key is None:
        envelope["payload"] = base64.b64encode(payload).decode()
    else:
        envelope = sign_envelope(payload, str(envelope["payloadType"]), key)
    forged = dict(approval)
    forged["envelope"] = json.dumps(envelope).encode()
    forged["intent"] = intent_bytes
    forged["intent_digest"] = "sha256:" + hashlib.sha256(intent_bytes).hexdigest()
    return forged


def _executor_check(
    run: ScenarioRun,
    name: str,
    approval: Mapping[str, Any],
    keyset: Keyset,
    seen: SqliteSeenStore,
    *,
    accept: bool,
    refusal: str = "",
) -> None:
    """Deliver ``approval`` to the executor's verification (streams/sdk/executor.py) and
    record whether it acted as an executor must."""
    from streams.sdk.executor import verify_approval_record

    value = run.codec.encode("Approval", dict(approval))
    key = str(approval["agent_id"]).encode()
    try:
        verified = verify_approval_record(key, value, keyset, _now_ms(), seen, codec=run.codec)
    except ApprovalVerificationError as exc:
        kind = type(exc).__name__
        run.finding(
            name,
            f"refused: {kind}",
            ok=not accept and (not refusal or kind == refusal),
            detail=exc.reason,
        )
        return
    run.finding(
        name,
        f"accepted approval {verified.approval_id}",
        ok=accept,
        detail=f"{verified.action} {verified.resource}, signed by key {verified.keyid}",
    )


def _forged_approval(run: ScenarioRun) -> None:
    (billing,) = run.register("billing")
    genuine = run.publish(
        billing,
        "payments.transfer",
        "acct:ACME-42",
        label="a 250 EUR transfer (its approval is the one forged below)",
        expect=APPROVED,
        parameters={"amount": 250.0, "currency": "EUR"},
    )
    run.wait([genuine])
    approval = _approval_of(genuine)
    keyset = run.wire.gate_keyset()
    run.note("delivering forged and genuine approvals to an executor's verification")
    with SqliteSeenStore(run.workdir / "executor-seen.db") as seen:
        _executor_check(
            run,
            "altered: 9,999 EUR, the gate's signature kept",
            _forge(run.codec, approval, 9999.0, None),
            keyset,
            seen,
            accept=False,
            refusal="SignatureInvalidError",
        )
        stranger = generate_signing_key()
        _executor_check(
            run,
            f"re-signed with a key not in the gate's JWKS ({stranger.kid[:12]}…)",
            _forge(run.codec, approval, 9999.0, stranger),
            keyset,
            seen,
            accept=False,
            refusal="ApprovalKeyError",
        )
        _executor_check(
            run, "the genuine approval, first delivery", approval, keyset, seen, accept=True
        )
        _executor_check(
            run,
            "the genuine approval, delivered again",
            approval,
            keyset,
            seen,
            accept=False,
            refusal="ApprovalReusedError",
        )


# -- kill switch drill -------------------------------------------------------------------


DRILL_INTERVAL_S = 0.05
DRILL_ACTIONS = (
    ("invoices.read", "invoice:INV-{n}"),
    ("tickets.read", "ticket:{n}"),
    ("warehouse.query", "table:orders"),
    ("reports.read", "report:q{q}"),
)
"""Four read actions in turn: each stays far below its rate and burst limits at 20/s."""
EITHER = Expect("approved", None, (("denied", "killswitch"),))
PHASES = {
    "before": APPROVED,
    "engaging": EITHER,
    "engaged": denied("killswitch"),
    "releasing": Expect("denied", "killswitch", (("approved", None),)),
    "released": APPROVED,
}


def _relative(ms: int) -> str:
    return f"{ms} ms after it" if ms >= 0 else f"{-ms} ms before it (in flight as it was sent)"


def _killswitch_drill(run: ScenarioRun) -> None:
    (agent,) = run.register("ops")
    phase = ["before"]
    phase_lock = threading.Lock()
    stop = threading.Event()
    problem: list[BaseException] = []

    def pump() -> None:
        n = 0
        try:
            while not stop.is_set():
                n += 1
                action, resource = DRILL_ACTIONS[n % len(DRILL_ACTIONS)]
                with phase_lock:
                    now = phase[0]
                    run.publish(
                        agent,
                        action,
                        resource.format(n=n, q=n % 4 + 1),
                        label=f"drill intent {n} ({now})",
                        expect=PHASES[now],
                    )
                stop.wait(DRILL_INTERVAL_S)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            problem.append(exc)

    def switch_to(name: str) -> None:
        """Enter phase ``name``; intents not decided yet may fall either side."""
        with phase_lock:
            phase[0] = name
            if name in ("engaging", "releasing"):
                run.expect_undecided(PHASES[name])

    def count(name: str, outcome: str | None = None) -> int:
        return sum(
            1
            for t in run.intents
            if f"({name})" in t.label
            and t.outcome is not None
            and (outcome is None or t.outcome == outcome)
        )

    switch = {"scope": "agent", "target": agent.agent_id}
    thread = threading.Thread(target=pump, name="drill-pump", daemon=True)
    run.note(f"{agent.agent_id} publishes an intent every {DRILL_INTERVAL_S * 1000:.0f} ms")
    thread.start()
    try:
        if not run.wait_for(lambda: count("before", "approved") >= 6):
            raise ScenarioError("the drill's first intents were not approved in time")
        run.note("engaging the kill switch for this agent")
        switch_to("engaging")
        engage = run.command(
            "killswitch.engage",
            {**switch, "reason": f"demo drill (run {run.run_id})"},
            subject=killswitch_subject(switch),
        )
        switch_to("engaged")
        run.note("engaged: waiting for the first denied intent")
        if not run.wait_for(lambda: count("engaged", "denied") >= 5):
            raise ScenarioError("no intent was denied by the kill switch in time")
        run.note("releasing the kill switch")
        switch_to("releasing")
        release = run.command("killswitch.release", switch, subject=killswitch_subject(switch))
        switch_to("released")
        if not run.wait_for(lambda: count("released", "approved") >= 5):
            raise ScenarioError("the intents after the release were not approved in time")
    finally:
        stop.set()
        thread.join(5)
    if problem:
        raise ScenarioError(f"publishing the drill's intents failed: {problem[0]}")
    run.wait(run.intents)
    stopped = sorted(
        (t for t in run.intents if t.outcome == "denied" and t.layer == "killswitch"),
        key=lambda t: t.decided_at_ms or 0,
    )
    restarted = sorted(
        (
            t
            for t in run.intents
            if t.outcome == "approved" and (t.decided_at_ms or 0) >= release.appended_at_ms
        ),
        key=lambda t: t.decided_at_ms or 0,
    )
    if not stopped:
        run.finding("engage to first denied intent", None, ok=False)
        return
    first = stopped[0]
    measured = (first.decided_at_ms or 0) - engage.appended_at_ms
    lead = first.published_at_ms - engage.appended_at_ms
    run.finding(
        "engage to first denied intent (ms)",
        measured,
        ok=measured >= 0,
        detail=f"engage appended to control at {iso_ms(engage.appended_at_ms)}; the first "
        f"intent denied ({first.n}) was published {_relative(lead)} and denied "
        f"{(first.decided_at_ms or 0) - first.published_at_ms} ms after it was published: "
        f"{'; '.join(first.reasons[:1])}",
    )
    run.finding(
        "engage command acknowledged (ms)",
        engage.acked_at_ms - engage.sent_at_ms,
        detail="signed with the demo operator key, committed to control",
    )
    if restarted:
        run.finding(
            "release to first approved intent (ms)",
            (restarted[0].decided_at_ms or 0) - release.appended_at_ms,
        )
    run.finding(
        "intents denied by the switch",
        len(stopped),
        ok=all(t.as_expected for t in run.intents),
    )


# -- tamper one byte ---------------------------------------------------------------------


def _flip(text: str, start: int) -> tuple[str, int, str, str]:
    """``text`` with one letter at or after ``start`` changed in case (one bit of one
    byte); returns (new text, index, old char, new char)."""
    for i in range(start, len(text)):
        if text[i].isascii() and text[i].isalpha():
            flipped = chr(ord(text[i]) ^ 0x20)
            return text[:i] + flipped + text[i + 1 :], i, text[i], flipped
    raise ScenarioError("nothing to flip")


def _evidence(
    run: ScenarioRun, tracked: TrackedIntent, approval: Mapping[str, Any], answer: Any
) -> dict[str, Any]:
    """The evidence bundle of one approved intent, in the shape of
    ``streams/console/evidence.py`` (assembled from the approval and the notary's proof,
    so it needs no lineage store)."""
    from streams.console.evidence import EVIDENCE_FORMAT

    intent_bytes = bytes(approval["intent"])
    return {
        "format": EVIDENCE_FORMAT,
        "created_at": iso_ms(_now_ms()),
        "intent_id": tracked.intent_id,
        "intent": {
            "record_b64": base64.b64encode(intent_bytes).decode(),
            "intent_digest": approval["intent_digest"],
            "agent_id": tracked.agent_id,
            "action": tracked.record["action"],
            "resource": tracked.record["resource"],
            "parameters": dict(tracked.record["parameters"]),
            "context": dict(tracked.record["context"]),
        },
        "approvals": [
            {"approval_id": approval["approval_id"], "envelope": json.loads(approval["envelope"])}
        ],
        "outcomes": [],
        "events": [answer],
        "unproven_events": [],
        "checkpoints": [answer["checkpoint"]],
        "keys": run.wire.evidence_keys(),
    }


def _check_bundle(
    run: ScenarioRun, name: str, bundle: Mapping[str, Any], keyset: Keyset, event_id: str
) -> tuple[bool, list[str]]:
    """Verify a bundle's approval and lineage event with the Python verifiers."""
    failures = []
    intent_bytes = base64.b64decode(bundle["intent"]["record_b64"])
    approval = bundle["approvals"][0]
    try:
        verify_approval(approval["envelope"], keyset, _now_ms(), intent=intent_bytes)
    except ApprovalVerificationError as exc:
        failures.append(f"approval: {type(exc).__name__}: {exc.reason}")
    try:
        run.wire.verify_inclusion(bundle["events"][0], event_id)
    except TrustplaneError as exc:
        failures.append(f"lineage event: {type(exc).__name__}: {exc.reason}")
    return not failures, failures


def _tamper_one_byte(run: ScenarioRun) -> None:
    (billing,) = run.register("billing")
    item = run.publish(
        billing,
        "payments.transfer",
        "acct:ACME-42",
        label="a transfer whose approval and lineage become evidence",
        expect=APPROVED,
        parameters={"amount": 480.0, "currency": "EUR"},
    )
    run.wait([item])
    approval = _approval_of(item)
    event_id = str(_statement(json.loads(approval["envelope"]))["predicate"]["lineage"]["eventId"])
    run.note(f"asking the notary for the inclusion proof of {event_id}")
    answer = run.wire.inclusion(event_id, timeout_s=WAIT_S)
    genuine = _evidence(run, item, approval, answer)
    keyset = run.wire.gate_keyset()

    tampered_approval = copy.deepcopy(genuine)
    envelope = tampered_approval["approvals"][0]["envelope"]
    payload = str(envelope["payload"])
    envelope["payload"], at, was, now = _flip(payload, len(payload) // 2)
    approval_note = f"approvals[0].envelope.payload[{at}]: {was!r} -> {now!r}"

    tampered_event = copy.deepcopy(genuine)
    attributes = tampered_event["events"][0]["event"]["attributes"]
    resource = str(attributes["resource"])
    attributes["resource"], at, was, now = _flip(resource, resource.find(":") + 1)
    event_note = f"events[0].event.attributes.resource[{at}]: {was!r} -> {now!r}"

    for name, bundle, expected, flipped in (
        ("evidence", genuine, True, "nothing"),
        ("evidence-tampered-approval", tampered_approval, False, approval_note),
        ("evidence-tampered-event", tampered_event, False, event_note),
    ):
        run.artifact(name, bundle)
        passed, failures = _check_bundle(run, name, bundle, keyset, event_id)
        run.finding(
            name,
            {
                "expected": "PASS" if expected else "FAIL",
                "python_verifiers": "PASS" if passed else "FAIL",
                "flipped": flipped,
            },
            ok=passed == expected,
            detail="; ".join(failures) or "approval and inclusion proof verify",
        )


# -- the catalogue -----------------------------------------------------------------------


SCENARIOS: Mapping[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "benign",
            "Benign traffic",
            "Five agents (payments, support, deploy, analytics, read-only) do their everyday "
            "work: every intent passes every layer and gets a signed approval.",
            (("8 everyday intents", "approved"),),
            _benign,
            duration_s=3,
        ),
        Scenario(
            "tampered_runtime",
            "Tampered runtime",
            "The agent's real key, used from a runtime whose code digest is not the "
            "registered one: runtime integrity denies it and quarantines the agent, so its "
            "next intent is denied too, until an operator releases it.",
            (
                ("a transfer from the registered runtime", "approved"),
                ("the same key from patched code", "denied (integrity), quarantine"),
                ("the agent's next intent", "denied (eligibility: quarantined)"),
            ),
            _tampered_runtime,
            duration_s=3,
        ),
        Scenario(
            "replay",
            "Replay",
            "An approved intent sent again byte for byte is refused as already decided, "
            "without quarantining the agent (anyone who saw it can replay it); a different "
            "intent signed with the agent's key that reuses a nonce is a violation and "
            "quarantines.",
            (
                ("the original transfer", "approved"),
                ("its exact copy", "denied (integrity)"),
                ("the agent's next transfer", "approved"),
                ("a new intent reusing a nonce", "denied (integrity), quarantine"),
                ("the agent's next intent", "denied (eligibility: quarantined)"),
            ),
            _replay,
            duration_s=4,
        ),
        Scenario(
            "runaway_loop",
            "Runaway loop",
            f"A support bot stuck in a loop sends the same email {LOOP_LENGTH} times, 20 ms "
            "apart: the anomaly layer's burst limit for email (5/s) stops it at the 6th, "
            "and the 5th violation quarantines the agent.",
            (
                ("emails 1-5", "approved"),
                ("emails 6-10", "denied (anomaly: burst; the 10th quarantines)"),
                (f"emails 11-{LOOP_LENGTH}", "denied (eligibility: quarantined)"),
            ),
            _runaway_loop,
            duration_s=3,
        ),
        Scenario(
            "slow_drip_exfiltration",
            "Slow-drip exfiltration",
            "An analytics agent pages through the customers table, tries to export it to a "
            "bucket of its own (policy refuses: not an approved destination), then drips it "
            "out to an allowed bucket one small file at a time, under the burst limit: the "
            "exports' rate rule holds the 11th export in a minute for review. (The "
            "exfiltration pattern itself, reads then a new destination, is judged after an "
            "agent's 24 h baseline, which a demo agent does not have.)",
            (
                ("16 reads of customer pages", "approved"),
                ("export to an unlisted bucket", "denied (policy)"),
                ("drip exports 1-9", "approved"),
                ("drip export 10", "review (anomaly: rate)"),
            ),
            _slow_drip,
            duration_s=9,
        ),
        Scenario(
            "novel_destructive_action",
            "Novel destructive action",
            "A deploy bot that only ever deployed to staging tries db.drop: on production the "
            "policy guardrail forbids it, elsewhere no permit allows it. Policy decides "
            "before the anomaly layer (which, for an agent past its baseline, also denies a "
            "destructive action it never took).",
            (
                ("deploy to staging", "approved"),
                ("db.drop db:production", "denied (policy: forbid)"),
                ("db.drop db:orders-staging", "denied (policy: no permit)"),
            ),
            _novel_destructive,
            duration_s=3,
        ),
        Scenario(
            "amount_escalation",
            "Amount escalation",
            "A payments agent makes 30 ordinary transfers (median 180 EUR), then pays one "
            "account growing amounts: the anomaly layer's robust z-score of the amount "
            "(log scale, > 4.5 after 30 samples) holds the 5x transfer for review. The run "
            "waits a minute in between, so the rate limit (30 transfers/min) does not decide "
            "instead.",
            (
                ("30 baseline transfers", "approved"),
                ("240, 330, 420 EUR", "approved"),
                ("900, 2,400 EUR", "review (anomaly: deviation)"),
            ),
            _amount_escalation,
            duration_s=80,
        ),
        Scenario(
            "forged_approval",
            "Forged approval",
            "A real approval of this run's 250 EUR transfer is altered (9,999 EUR, the "
            "gate's signature kept) and re-signed with a key the gate's JWKS does not hold; "
            "the executor's verification refuses both, accepts the genuine approval once "
            "and refuses it the second time.",
            (
                ("the 250 EUR transfer", "approved"),
                ("altered approval", "refused (signature)"),
                ("re-signed approval", "refused (unknown key)"),
                ("genuine approval twice", "accepted, then refused (reused)"),
            ),
            _forged_approval,
            duration_s=3,
        ),
        Scenario(
            "killswitch_drill",
            "Kill-switch drill",
            "An agent publishes an intent every 50 ms; the demo operator engages a kill "
            "switch for that agent, and the run measures the time from the command's append "
            "to control to the first intent the gate denies; then releases it.",
            (
                ("intents before the engage", "approved"),
                ("intents after the engage was acknowledged", "denied (killswitch)"),
                ("intents after the release", "approved"),
            ),
            _killswitch_drill,
            duration_s=6,
        ),
        Scenario(
            "tamper_one_byte",
            "Tamper one byte",
            "The evidence bundle of this run's approved transfer (intent bytes, signed "
            "approval, lineage event with its inclusion proof and signed checkpoint), and "
            "two copies with one byte flipped: in the approval, and in the lineage event. "
            "Open each in the Proof Viewer: the genuine one passes, the others fail.",
            (
                ("a transfer", "approved"),
                ("evidence", "PASS"),
                ("evidence-tampered-approval, evidence-tampered-event", "FAIL"),
            ),
            _tamper_one_byte,
            needs_notary=True,
            duration_s=4,
        ),
    )
}


def run_scenario(
    settings: Settings,
    name: str,
    *,
    wire: Wire | None = None,
    desk: OperatorDesk | None = None,
    run_id: str | None = None,
    workdir: Path | None = None,
) -> ScenarioRun:
    """Run scenario ``name`` to its end on the pipeline of ``settings`` (blocking)."""
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise ScenarioError(f"no scenario {name!r}", hint=f"one of: {', '.join(SCENARIOS)}")
    return ScenarioRun(
        scenario,
        settings,
        (lambda: wire) if wire is not None else (lambda: KafkaWire(settings, desk)),
        run_id=run_id,
        workdir=workdir,
    ).run()
