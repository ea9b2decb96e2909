"""Microbenchmark of the behavioural anomaly layer: µs per evaluate + observe.

Realistic traffic: the labelled synthetic workload (``bench.evaluation.workload``; billing,
support, analytics and deploy agents with their attacks), ``--fleet`` agents per role,
with the shipped ``policies/anomaly.toml``. Intents are decoded up front; the timed
part is exactly ``AnomalyCheck.evaluate`` then ``AnomalyCheck.observe`` per intent (the
pipeline's work for this layer), on warm per-agent state. Also timed: the state's JSON
round trip (``dump_state`` + ``json.dumps`` + ``json.loads`` + ``load_state``), which the
worker pays per agent and transaction when it writes the changelog.

    .venv/bin/python bench/bench_anomaly.py [--days D] [--fleet N] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.evaluation.workload import DAY_MS, generate
from processors.intent import Intent
from processors.layers.anomaly import AnomalyCheck, AnomalyConfig, AnomalyState
from processors.verdict import GateState, Status

_OUTCOME = {Status.ALLOW: "approved", Status.REVIEW: "review"}


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def summary(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    return {
        "n": len(us),
        "mean_us": round(statistics.fmean(us), 2),
        "p50_us": round(percentile(us, 0.50), 2),
        "p99_us": round(percentile(us, 0.99), 2),
        "p999_us": round(percentile(us, 0.999), 2),
        "max_us": round(us[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--fleet", type=int, default=4, help="agents per role")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    workload = generate(args.seed, int(args.days * DAY_MS), fleet=args.fleet)
    timeline = [
        (Intent.from_record(item.record, key=item.agent.encode()), item.time_ms)
        for item in workload.items
    ]
    layer = AnomalyCheck(AnomalyConfig.default_file(), seed=args.seed)
    states: dict[str, dict[str, Any]] = {}

    samples: list[int] = []
    outcomes: dict[str, int] = {}
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter_ns()
        for intent, now in timeline:
            agent_state = states.get(intent.agent_id)
            if agent_state is None:
                agent_state = states[intent.agent_id] = {layer.state_key: layer.new_state()}
            gate = GateState(now_ms=now, agent=agent_state)
            t0 = time.perf_counter_ns()
            verdict = layer.evaluate(intent, gate)
            outcome = _OUTCOME.get(verdict.status, "denied")
            layer.observe(intent, gate, outcome)
            samples.append(time.perf_counter_ns() - t0)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        wall = time.perf_counter_ns() - started
    finally:
        gc.enable()

    roundtrip: list[int] = []
    sizes: list[int] = []
    for _ in range(20):
        for agent_state in states.values():
            state: AnomalyState = agent_state[layer.state_key]
            t0 = time.perf_counter_ns()
            text = json.dumps(layer.dump_state(state), separators=(",", ":"))
            layer.load_state(json.loads(text))
            roundtrip.append(time.perf_counter_ns() - t0)
            sizes.append(len(text))

    result = {
        "intents": len(timeline),
        "agents": len(states),
        "days": args.days,
        "outcomes": outcomes,
        "evaluate_observe": summary(samples),
        "throughput_per_s": round(len(timeline) / (wall / 1e9)),
        "state_json_roundtrip": summary(roundtrip),
        "state_json_bytes": {"mean": round(statistics.fmean(sizes)), "max": max(sizes)},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    e, r = result["evaluate_observe"], result["state_json_roundtrip"]
    print(
        f"anomaly layer: {result['intents']:,} intents from {result['agents']} agents over "
        f"{args.days:g} days ({outcomes})"
    )
    print(
        f"  evaluate+observe: mean {e['mean_us']} µs, p50 {e['p50_us']} µs, "
        f"p99 {e['p99_us']} µs, p99.9 {e['p999_us']} µs, max {e['max_us']} µs "
        f"({result['throughput_per_s']:,} intents/s on one core, timing included)"
    )
    print(
        f"  state JSON round trip per agent: mean {r['mean_us']} µs, p99 {r['p99_us']} µs; "
        f"state size mean {result['state_json_bytes']['mean']:,} B, "
        f"max {result['state_json_bytes']['max']:,} B"
    )


if __name__ == "__main__":
    main()
