"""Kafka-free reference points, measured in the bench process itself.

* :func:`crypto_floor` -- one Ed25519 verify (of the intent's real signature over its
  real signing message) plus one Ed25519 sign per intent, with the very functions the
  gate uses (libsodium through PyNaCl): the least any gate that checks identities and
  signs approvals must spend. CPU µs per intent.
* :func:`side_by_side` -- the gate in process, the crypto floor and the peer's signed
  path (``bench/e2e/peer.py``), in interleaved rounds, so their ratios come from the
  same minutes of a noisy machine.
* :func:`gate_in_process` -- the full gate (:func:`streams.gate.wiring.build_gate`, every
  layer, approval signing, lineage, Avro) on the same pre-signed intents, with the
  estate applied to its control state directly and no Kafka at all; plus what the
  worker's per-transaction state write (:meth:`AgentStates.encode` of every touched
  agent) costs. With ``profile=True`` a second pass runs under cProfile and the result
  names the functions with the most own time and the cumulative time of the stages.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.e2e.workload import BenchEstate, SignedIntents
from processors.control import sign_command
from processors.crypto.keys import generate_signing_key, load_private_key, verify_signature
from processors.intent import Intent
from processors.layers.identity import SIGNATURE_SIZE, signing_message_for
from processors.layers.integrity import runtime_subject
from processors.layers.policy import CONTROL_SUBJECT, PolicyBundle
from processors.records import SourcePosition
from streams.codec import default_codec
from streams.config import Settings
from streams.dev.estate import BUNDLE_DIR, registration
from streams.gate.wiring import GateParts, build_gate
from streams.operator import ensure_local_keys

__all__ = [
    "crypto_floor",
    "gate_in_process",
    "side_by_side",
    "build_local_gate",
    "GateRun",
    "STAGES",
]

STAGES: dict[str, tuple[str, ...]] = {
    # stage -> (file suffix:function) entries whose cumulative time is the stage's
    "decode intent (Avro)": ("streams/codec.py:decode",),
    "validate intent": ("processors/intent.py:from_record",),
    "kill switch": ("processors/layers/killswitch.py:evaluate",),
    "freshness": ("processors/layers/freshness.py:evaluate",),
    "identity (Ed25519 verify)": ("processors/layers/identity.py:evaluate",),
    "eligibility": ("processors/layers/eligibility.py:evaluate",),
    "integrity": ("processors/layers/integrity/check.py:evaluate",),
    "Cedar policy": ("processors/layers/policy/check.py:evaluate",),
    "anomaly": ("processors/layers/anomaly/check.py:evaluate",),
    "stateful observe": ("processors/pipeline.py:_observe",),
    "approval (statement, JCS, DSSE sign)": ("processors/records.py:approval_record",),
    "lineage events (build)": (
        "processors/lineage.py:decoded",
        "processors/lineage.py:verdict",
        "processors/lineage.py:enforced",
    ),
    "encode outputs (Avro)": ("streams/codec.py:encode",),
    "state write (JSON per touched agent)": ("streams/gate/state.py:encode",),
}


def _cpu_us() -> int:
    return time.process_time_ns() // 1000


def crypto_floor(estate: BenchEstate, intents: SignedIntents, count: int = 2000) -> dict[str, Any]:
    """CPU µs per intent of one Ed25519 verify + one Ed25519 sign (and of each alone).

    The verify checks each intent's real signature (by its agent's key) over its real
    signing message; the sign signs that message with a gate key. Canonicalization,
    parsing and everything else is left out on purpose: this is the floor.
    """
    codec = default_codec()
    gate_key = generate_signing_key()
    public = {a.agent_id: a.key.private_key.public_key() for a in estate.agents}
    work: list[tuple[Any, bytes, bytes]] = []
    for key_bytes, value in list(zip(intents.keys, intents.values, strict=True))[:count]:
        record = codec.decode(value, "Intent")
        intent = Intent.from_record(record, key=key_bytes)
        signature = bytes(record["signature"])
        if len(signature) != SIGNATURE_SIZE:
            raise ValueError(f"intent {intent.intent_id} has no Ed25519 signature")
        work.append((public[intent.agent_id], signing_message_for(intent), signature))
    n = len(work)
    started = _cpu_us()
    for key, message, signature in work:
        verify_signature(key, signature, message)
    verify_us = _cpu_us() - started
    started = _cpu_us()
    for _, message, _ in work:
        gate_key.sign(message)
    sign_us = _cpu_us() - started
    started = _cpu_us()
    for key, message, signature in work:
        verify_signature(key, signature, message)
        gate_key.sign(message)
    both_us = _cpu_us() - started
    return {
        "intents": n,
        "verify_us": verify_us / n,
        "sign_us": sign_us / n,
        "cpu_us_per_intent": both_us / n,
        "library": "libsodium (PyNaCl), as the gate",
    }


def build_local_gate(estate: BenchEstate, state_dir: Path) -> GateParts:
    """The real gate of ``streams/gate/wiring.py`` with the estate applied, no Kafka."""
    settings = Settings.local(state_dir=state_dir, worker_id="bench-inproc", bootstrap_servers="-")
    ensure_local_keys(settings)
    parts = build_gate(settings)
    operator = load_private_key(settings.resolved_operator_key_path)
    now = time.time_ns() // 1_000_000
    commands: list[tuple[str, str | None, dict[str, Any]]] = []
    for agent in estate.agents:
        demo = agent.demo
        commands.append(("agent.register", None, registration(demo, agent.key)))
        commands.append(
            (
                "runtime.register",
                runtime_subject(demo.runtime_id),
                {
                    "runtime_id": demo.runtime_id,
                    "code_digests": [demo.code_digest],
                    "config_digests": [demo.config_digest],
                    "environment": demo.environment,
                    "hosts": [],
                },
            )
        )
    commands.append(
        ("policy.publish", CONTROL_SUBJECT, PolicyBundle.from_directory(BUNDLE_DIR).to_document())
    )
    for kind, subject, payload in commands:
        result = parts.control.apply(
            sign_command(kind, subject, payload, operator, "operator", now_ms=now), now
        )
        if not result.applied:
            raise RuntimeError(f"{kind} not applied in process: {result.reason}")
    return parts


@dataclass
class GateRun:
    intents: int
    cpu_us_per_intent: float
    state_write_us_per_intent: float
    outcomes: dict[str, int]
    state_bytes_per_intent: float
    stages: dict[str, float]
    """Stage -> cumulative µs per intent under cProfile (inflated by the profiler; read
    as shares)."""
    top_own: list[tuple[str, float]]
    """(function, own µs per intent under cProfile), most first."""


def gate_in_process(
    estate: BenchEstate,
    intents: SignedIntents,
    *,
    batch: int = 200,
    partitions: int = 4,
    profile: bool = True,
) -> GateRun:
    """Decide ``intents`` with the real gate in this process."""
    with tempfile.TemporaryDirectory(prefix="trustplane-bench-") as tmp:
        timed = _decide_all(estate, intents, Path(tmp) / "a", batch, partitions, None)
        profiled = (
            _decide_all(estate, intents, Path(tmp) / "b", batch, partitions, cProfile.Profile())
            if profile
            else None
        )
    count = len(intents)
    stages: dict[str, float] = {}
    top_own: list[tuple[str, float]] = []
    if profiled is not None and profiled[3] is not None:
        stats = pstats.Stats(profiled[3])
        table: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
        for stage, names in STAGES.items():
            total = 0.0
            for (filename, _, func), (_, _, _, cumulative, _) in table.items():
                if any(
                    filename.endswith(n.split(":")[0]) and func == n.split(":")[1] for n in names
                ):
                    total += cumulative
            stages[stage] = total * 1e6 / count
        own = sorted(
            ((f"{_short(f)}:{fn}", tt) for (f, _, fn), (_, _, tt, _, _) in table.items()),
            key=lambda x: -x[1],
        )
        top_own = [(name, t * 1e6 / count) for name, t in own[:15]]
    decide_us, write_us, state_bytes, _, outcomes = timed
    return GateRun(
        intents=count,
        cpu_us_per_intent=decide_us / count,
        state_write_us_per_intent=write_us / count,
        outcomes=outcomes,
        state_bytes_per_intent=state_bytes / count,
        stages=stages,
        top_own=top_own,
    )


def _short(filename: str) -> str:
    parts = Path(filename).parts
    for anchor in ("processors", "streams", "site-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) :][-2:])
    return Path(filename).name


def _decide_all(
    estate: BenchEstate,
    intents: SignedIntents,
    state_dir: Path,
    batch: int,
    partitions: int,
    profiler: cProfile.Profile | None,
) -> tuple[int, int, int, cProfile.Profile | None, dict[str, int]]:
    parts = build_local_gate(estate, state_dir)
    gate = parts.gate
    states = gate.states
    outcomes: dict[str, int] = {}
    decide_us = write_us = state_bytes = 0
    part_of = {a.agent_id: i % partitions for i, a in enumerate(estate.agents)}
    for start in range(0, len(intents), batch):
        chunk = range(start, min(start + batch, len(intents)))
        if profiler is not None:
            profiler.enable()
        began = _cpu_us()
        for i in chunk:
            key = intents.keys[i]
            partition = part_of[key.decode()]
            for output in gate.process(
                key, intents.values[i], SourcePosition("intents", partition, i)
            ):
                if output.topic != "lineage":
                    outcomes[output.topic] = outcomes.get(output.topic, 0) + 1
        middle = _cpu_us()
        for partition, agent_id in states.dirty():
            state_bytes += len(states.encode(partition, agent_id))
        states.clear_dirty()
        ended = _cpu_us()
        if profiler is not None:
            profiler.disable()
        decide_us += middle - began
        write_us += ended - middle
    return decide_us, write_us, state_bytes, profiler, outcomes


def side_by_side(
    estate: BenchEstate,
    intents: SignedIntents,
    *,
    rounds: int = 3,
    peer_actions: int = 2000,
    log: Any = print,
) -> dict[str, Any]:
    """Rounds of (crypto floor, the gate in process, the peer's two paths), interleaved;
    the medians and the ratios of the medians. The peer is skipped, with the reason, when
    its package is not installed (``pip install -e '.[bench]'``)."""
    from bench.e2e.peer import PeerUnavailable, peer_paths

    floors: list[float] = []
    gates: list[float] = []
    peer_full: list[float] = []
    peer_signed: list[float] = []
    peer_info: dict[str, Any] = {}
    peer_error = ""
    for n in range(rounds):
        floors.append(crypto_floor(estate, intents, min(len(intents), 2000))["cpu_us_per_intent"])
        gates.append(gate_in_process(estate, intents, profile=False).cpu_us_per_intent)
        if not peer_error:
            try:
                peer = peer_paths(count=peer_actions, rounds=1)
            except PeerUnavailable as exc:
                peer_error = str(exc)
            else:
                peer_full.append(float(peer["full_stack_us"]))
                peer_signed.append(float(peer["signed_us"]))
                peer_info = {k: peer[k] for k in ("package", "version") if k in peer}
        log(
            f"  round {n + 1}/{rounds}: floor {floors[-1]:.0f} µs, gate {gates[-1]:.0f} µs"
            + (f", peer signed {peer_signed[-1]:.0f} µs" if peer_signed else "")
        )
    out: dict[str, Any] = {
        "rounds": rounds,
        "floor_us": statistics.median(floors),
        "gate_us": statistics.median(gates),
        "floor_rounds": floors,
        "gate_rounds": gates,
        "floor_ratio": statistics.median(gates) / statistics.median(floors),
    }
    if peer_signed:
        out["peer"] = {
            **peer_info,
            "full_stack_us": statistics.median(peer_full),
            "signed_us": statistics.median(peer_signed),
            "full_stack_rounds": peer_full,
            "signed_rounds": peer_signed,
        }
        out["peer_ratio"] = statistics.median(gates) / statistics.median(peer_signed)
    else:
        out["peer_error"] = peer_error
    return out
