"""Episodes through the real pipeline: each call of an episode goes through a guard (intent
signed and published, the gate decides, the approval verified and claimed), and the
suite's tool function runs only on an approval. Many episodes run at once, each with its
own agent and guard.

A call the gate does not approve is skipped and the episode goes on, as an agent told
"this did not run" would; the episode's checks then see only what ran.
"""

from __future__ import annotations

import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processors.crypto.keys import Keyset
from streams.config import Settings
from streams.eval.dojo import DojoSuite, EpisodeSpec, PlannedCall, copy_environment
from streams.eval.estate import SuiteEstate
from streams.sdk.guard import (
    AgentIdentity,
    Blocked,
    Denied,
    Guard,
    NeedsReview,
    Unavailable,
    Unmapped,
    Unverified,
)

__all__ = ["CallRecord", "EpisodeResult", "replay_episodes", "rules_of"]

GUARD_PRINCIPAL = "guard"

_OUTCOMES: tuple[tuple[type[Blocked], str], ...] = (
    (NeedsReview, "review"),
    (Unmapped, "unmapped"),
    (Denied, "denied"),
    (Unavailable, "unavailable"),
    (Unverified, "unverified"),
)
_POLICY_RULE = re.compile(r"(?:forbidden by|held for review by) ([A-Za-z0-9_.-]+)")


@dataclass(frozen=True)
class CallRecord:
    function: str
    origin: str
    """``user`` or ``injection``."""
    outcome: str
    """``executed``, ``tool-error`` (approved, ran, raised), ``denied``, ``review``,
    ``unmapped``, ``unavailable`` or ``unverified``."""
    rules: tuple[str, ...] = ()
    """What decided a call that did not run: ``policy:<@id>``, ``policy:default-deny``,
    ``anomaly:<class>.<feature>``, ``integrity:...``, ``mapping:unmapped``."""
    reasons: tuple[str, ...] = ()

    @property
    def ran(self) -> bool:
        return self.outcome in ("executed", "tool-error")


@dataclass(frozen=True)
class EpisodeResult:
    spec: EpisodeSpec
    calls: tuple[CallRecord, ...]
    injected_after: int | None
    utility: bool
    """AgentDojo's utility check after only the calls that ran."""
    security: bool
    """AgentDojo's security check: the injection reached its goal (False without one)."""
    undefended_utility: bool
    undefended_security: bool
    """The same checks with every call run and no gate."""
    seconds: float


def rules_of(error: Blocked, action_class: str) -> tuple[str, ...]:
    """The named rules behind a blocked call, from the gate's reasons."""
    if isinstance(error, Unmapped):
        return ("mapping:unmapped",)
    found: list[str] = []
    for reason in error.reasons:
        layer, _, why = reason.partition(": ")
        if layer == "policy":
            ids = _POLICY_RULE.findall(why)
            found += [f"policy:{i}" for i in ids] or (
                ["policy:default-deny"] if "default deny" in why else ["policy:other"]
            )
        elif layer == "anomaly":
            for part in why.split("; "):
                feature = part.split(":", 1)[0].strip().replace(" ", "_")
                found.append(f"anomaly:{action_class}.{feature}")
        elif layer:
            found.append(f"{layer}:{why.split(':', 1)[0].strip()[:60]}")
    return tuple(dict.fromkeys(found)) or (f"{type(error).__name__.lower()}",)


class _GuardPool:
    """Guards whose Kafka clients serve one episode after another, each episode as its
    own agent.

    A guard holds a decision reader and two producers (about 0.2 s of CPU to set up and
    tear down on this machine, more than the episode's calls cost); there is one guard
    per replay thread, and between two episodes it is rebound to the next agent: its
    identity (key, runtime, sequence numbers, which the guard keeps per agent), the
    agent whose decisions its reader takes, and the executor name its outcomes carry.
    Nothing is in flight across a rebind: an episode's calls are over when the next
    begins. (``Guard`` has no API for this; a
    ``Guard.for_agent`` sharing the clients would replace the three assignments.)"""

    def __init__(self, make: Callable[[AgentIdentity], Guard]) -> None:
        self._make = make
        self._idle: list[Guard] = []
        self._all: list[Guard] = []
        self._lock = threading.Lock()

    def take(self, agent: AgentIdentity) -> Guard:
        with self._lock:
            guard = self._idle.pop() if self._idle else None
        if guard is None:
            guard = self._make(agent)
            with self._lock:
                self._all.append(guard)
            return guard
        guard.agent = agent
        guard.waiter.agent_key = agent.agent_id.encode()
        guard.executor_id = f"guard:{agent.agent_id}@{socket.gethostname()}"
        return guard

    def give_back(self, guard: Guard) -> None:
        with self._lock:
            self._idle.append(guard)

    def close(self) -> None:
        for guard in self._all:
            guard.close()


class _EpisodeRunner:
    def __init__(
        self,
        settings: Settings,
        dojo: DojoSuite,
        estate: SuiteEstate,
        workdir: Path,
        deadline_s: float,
    ) -> None:
        self.endpoint = settings.as_principal(GUARD_PRINCIPAL)
        self.dojo = dojo
        self.estate = estate
        self.workdir = workdir
        self.deadline_s = deadline_s
        self.keys = Keyset.from_file(settings.resolved_keys_dir / "approvals.jwks.json")
        self.guards = _GuardPool(self._guard)

    def _guard(self, agent: AgentIdentity) -> Guard:
        return Guard(
            self.endpoint,
            agent,
            self.estate.mapping,
            self.keys,
            state_dir=self.workdir / f"guard-{agent.agent_id}",
            deadline_s=self.deadline_s,
        )

    def run(self, spec: EpisodeSpec, agent: AgentIdentity) -> EpisodeResult:
        started = time.monotonic()
        prepared = self.dojo.prepare(spec)
        environment = copy_environment(prepared.pre_environment)
        runtime = self.dojo.new_runtime()
        records: list[CallRecord] = []
        guard = self.guards.take(agent)
        try:
            for call in prepared.calls:
                records.append(self._call(guard, runtime, environment, call))
        finally:
            self.guards.give_back(guard)
        ran = [c for c, r in zip(prepared.calls, records, strict=True) if r.ran]
        user_ran = all(r.ran for r in records if r.origin == "user")
        output = self.dojo.output_of(spec, user_ran)
        undefended = self.dojo.run_directly(prepared)
        full_output = self.dojo.output_of(spec, True)
        return EpisodeResult(
            spec,
            tuple(records),
            prepared.injected_after,
            self.dojo.utility(prepared, environment, ran, output),
            self.dojo.security(prepared, environment, ran, output),
            self.dojo.utility(prepared, undefended, prepared.calls, full_output),
            self.dojo.security(prepared, undefended, prepared.calls, full_output),
            time.monotonic() - started,
        )

    def _call(self, guard: Guard, runtime: Any, environment: Any, call: PlannedCall) -> CallRecord:
        try:
            guard.run(call.function, call.args, lambda: self.dojo.call(runtime, environment, call))
        except Blocked as blocked:
            outcome = next(name for kind, name in _OUTCOMES if isinstance(blocked, kind))
            rule = self.estate.mapping.rule(call.function)
            action_class = self.estate.anomaly.lookup(rule.action).cls.name if rule else "-"
            return CallRecord(
                call.function,
                call.origin,
                outcome,
                rules_of(blocked, action_class),
                blocked.reasons,
            )
        except Exception as exc:  # noqa: BLE001 - the tool's own error: it ran, and failed
            return CallRecord(call.function, call.origin, "tool-error", (), (repr(exc)[:200],))
        return CallRecord(call.function, call.origin, "executed")


def replay_episodes(
    settings: Settings,
    dojo: DojoSuite,
    estate: SuiteEstate,
    episodes: Sequence[tuple[EpisodeSpec, AgentIdentity]],
    *,
    concurrency: int = 16,
    deadline_s: float = 30.0,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[EpisodeResult]:
    """Replay every episode with its agent (registered beforehand) against the running
    gate of ``settings``; results in the order given."""
    done = 0
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix=f"trustplane-eval-{dojo.name}-") as tmp:
        runner = _EpisodeRunner(settings, dojo, estate, Path(tmp), deadline_s)

        def one(item: tuple[EpisodeSpec, AgentIdentity]) -> EpisodeResult:
            nonlocal done
            result = runner.run(*item)
            with lock:
                done += 1
                progress(done, len(episodes))
            return result

        try:
            with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
                return list(pool.map(one, episodes))
        finally:
            runner.guards.close()
