"""Microbenchmark of the runtime integrity layer: µs per evaluate + observe.

Realistic intents (uuid ids and nonces, a registered runtime with two allowed builds and
hosts), against an agent that already remembers ``--remembered`` ids/nonces (10,000 by
default, i.e. at ``max_remembered``, so every observe also forgets the oldest entry).

    .venv/bin/python bench/bench_integrity.py [--intents N] [--remembered N]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import uuid

from processors.intent import Intent, RuntimeAttestation
from processors.layers.integrity import (
    IntegrityCheck,
    IntegrityConfig,
    IntegrityState,
    RuntimeRegistration,
    RuntimeRegistry,
)
from processors.verdict import GateState, Status

CODE = ("sha256:" + "1a" * 32, "sha256:" + "2b" * 32)
CONFIG = "sha256:" + "3c" * 32
T0 = 1_700_000_000_000


def intent(n: int, now: int) -> Intent:
    return Intent(
        intent_id=str(uuid.uuid4()),
        agent_id="billing-agent",
        runtime=RuntimeAttestation("billing-rt", CODE[n % 2], CONFIG, "prod", "node-7"),
        action="payments.transfer",
        resource=f"acct:{n % 997}",
        parameters={"amount": 10.5, "currency": "EUR"},
        context={},
        sequence=n,
        issued_at_ms=now,
        expires_at_ms=now + 300_000,
        nonce=uuid.uuid4().hex,
        key_id="k-1",
        signature=None,
    )


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--intents", type=int, default=50_000)
    parser.add_argument("--remembered", type=int, default=10_000)
    parser.add_argument(
        "--gc-off", action="store_true", help="disable the cyclic GC while timing (attribution)"
    )
    args = parser.parse_args()

    registry = RuntimeRegistry(
        [
            RuntimeRegistration(
                "billing-rt",
                frozenset(CODE),
                frozenset({CONFIG}),
                "prod",
                frozenset({"node-7", "node-8"}),
            )
        ]
    )
    layer = IntegrityCheck(registry, IntegrityConfig(max_remembered=args.remembered))
    agent: dict[str, object] = {}
    now = T0
    for n in range(args.remembered):  # warm the state up to the limit
        now += 10
        gate = GateState(now_ms=now, agent=agent)
        layer.observe(intent(n, now), gate, "approved")
    state = agent["integrity"]
    if not isinstance(state, IntegrityState) or len(state) != args.remembered:
        raise SystemExit("warm-up did not fill the state")

    base = args.remembered
    batch = [intent(base + n, now + 10 * (n + 1)) for n in range(args.intents)]
    gates = [GateState(now_ms=i.issued_at_ms, agent=agent) for i in batch]
    samples: list[float] = []
    clock = time.perf_counter_ns
    if args.gc_off:
        gc.disable()
    started = clock()
    for item, gate in zip(batch, gates, strict=True):
        t = clock()
        verdict = layer.evaluate(item, gate)
        layer.observe(item, gate, "approved")
        samples.append((clock() - t) / 1000)
        if verdict.status is not Status.ALLOW:
            raise SystemExit(f"unexpected verdict: {verdict}")
    total_s = (clock() - started) / 1e9
    gc.enable()
    if len(state) != args.remembered:
        raise SystemExit(f"state holds {len(state)} entries, not {args.remembered}")

    # the deny path: replays of remembered ids
    replays = batch[-1000:]
    last_gate = gates[-1]
    t = clock()
    for item in replays:
        layer.evaluate(item, last_gate)
    replay_us = (clock() - t) / 1000 / len(replays)

    # the changelog side: dump + JSON + load of a full state
    t = clock()
    text = json.dumps(layer.dump_state(state), separators=(",", ":"))
    dump_ms = (clock() - t) / 1e6
    t = clock()
    layer.load_state(json.loads(text))
    load_ms = (clock() - t) / 1e6

    samples.sort()
    print(
        f"integrity: {args.intents} intents, agent remembering {args.remembered} ids/nonces"
        + (" (GC off while timing)" if args.gc_off else "")
    )
    print(
        f"  evaluate+observe (allow path): mean {statistics.fmean(samples):.2f} µs, "
        f"p50 {percentile(samples, 0.50):.2f} µs, p99 {percentile(samples, 0.99):.2f} µs, "
        f"max {samples[-1]:.1f} µs; {args.intents / total_s:,.0f} intents/s"
    )
    print(f"  evaluate (replay deny path):   mean {replay_us:.2f} µs")
    print(
        f"  state of {len(state)} entries: {len(text):,} bytes of JSON; "
        f"dump+json.dumps {dump_ms:.1f} ms, json.loads+load {load_ms:.1f} ms"
    )


if __name__ == "__main__":
    main()
