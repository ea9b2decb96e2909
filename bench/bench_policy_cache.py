"""Benchmark of the Cedar decision cache (plain Python, no Kafka), on one core.

    .venv/bin/python -m bench.bench_policy_cache [--agents 500] [--intents 20000] [--rounds 5]

Builds the end-to-end benchmark's workload (``bench/e2e/workload.py``: an estate of
``--agents`` agents in the example bundle's roles, each taking its role's actions on its
own resource pool, with log-normal payment amounts, risk 0-40 and a trace id per intent),
signs and decodes ``--intents`` intents, and times ``PolicyCheck.evaluate`` (intent ->
Verdict, what the gate runs) over the whole stream with the decision cache off and on.
The two run alternately, ``--rounds`` times each, every run with a fresh store (so every
cached run pays its compulsory misses): machine noise hits both alike. Prints the median
CPU µs per decision of each, the hit rate, and what an exact-request cache would hit.
Every verdict of the cached runs is checked against the uncached one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Sequence

from bench.e2e.workload import BenchEstate, Workload
from processors.intent import Intent
from processors.layers.policy import PolicyBundle, PolicyCheck, PolicyRequest, PolicyStore
from processors.layers.policy.encoding import ValueProblem, cedar_record
from processors.layers.policy.projection import exact_key
from processors.verdict import GateState, Status, Verdict
from streams.codec import default_codec
from streams.dev.estate import BUNDLE_DIR


def workload(agents: int, intents: int) -> tuple[list[Intent], dict[str, tuple[str, ...]]]:
    estate = BenchEstate(agents)
    signed = Workload(estate).build(intents)
    codec = default_codec()
    decoded = [
        Intent.from_record(codec.decode(value, "Intent"), key=key)
        for key, value in zip(signed.keys, signed.values, strict=True)
    ]
    return decoded, {agent.agent_id: (agent.role,) for agent in estate.agents}


def run(
    bundle: PolicyBundle,
    stream: Sequence[Intent],
    roles: dict[str, tuple[str, ...]],
    state: GateState,
    cache: int,
) -> tuple[float, list[Verdict], PolicyStore]:
    """CPU µs per decision over the stream, with a fresh store."""
    store = PolicyStore(decision_cache=cache)
    refusal = store.offer(bundle, state.now_ms)
    assert refusal is None, refusal  # noqa: S101 - a benchmark of a bundle that loads
    check = PolicyCheck(store, lambda agent: roles.get(agent, ()))
    evaluate = check.evaluate
    started = time.process_time()
    verdicts = [evaluate(intent, state) for intent in stream]
    took = time.process_time() - started
    return took / len(stream) * 1e6, verdicts, store


def distinct_exact(
    bundle: PolicyBundle, stream: Sequence[Intent], roles: dict[str, tuple[str, ...]]
) -> int:
    keys = set()
    for intent in stream:
        request = PolicyRequest.from_intent(intent, roles.get(intent.agent_id, ()))
        try:
            record = cedar_record(request.context, "context")
        except ValueProblem:
            continue
        keys.add(
            exact_key(
                bundle.digest,
                request.agent_id,
                request.roles,
                request.action,
                request.resource,
                record,
            )
        )
    return len(keys)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--intents", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    print(f"signing {args.intents:,} intents of {args.agents} agents ...", flush=True)
    stream, roles = workload(args.agents, args.intents)
    bundle = PolicyBundle.from_directory(BUNDLE_DIR)
    state = GateState(now_ms=max(intent.issued_at_ms for intent in stream))
    actions = Counter(intent.action for intent in stream)
    print(
        f"{len(stream):,} intents, {len(roles)} agents, "
        + ", ".join(f"{a} {n / len(stream):.0%}" for a, n in actions.most_common())
    )

    timings: dict[str, list[float]] = {"off": [], "on": []}
    reference: list[Verdict] | None = None
    hit_rates: list[float] = []
    entries, keys = 0, "?"
    for r in range(args.rounds):
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            us, verdicts, store = run(bundle, stream, roles, state, 0 if mode == "off" else 10_000)
            timings[mode].append(us)
            if reference is None:
                reference = verdicts
            elif verdicts != reference:
                raise SystemExit("the cached layer returned a different verdict")
            engine = store.active
            stats = engine.decision_stats() if engine is not None else None
            if engine is not None and stats is not None:
                hit_rates.append(stats.hit_rate)
                entries, keys = stats.size, engine.decision_keys
        print(
            f"  round {r + 1}: off {timings['off'][-1]:6.1f} µs/decision, "
            f"on {timings['on'][-1]:6.1f} µs/decision",
            flush=True,
        )

    off, on = statistics.median(timings["off"]), statistics.median(timings["on"])
    allowed = sum(v.status is Status.ALLOW for v in reference or ())
    exact = distinct_exact(bundle, stream, roles)
    print(f"\nPolicyCheck.evaluate, CPU time, median of {args.rounds} interleaved runs each:")
    print(f"  decision cache off   {off:7.1f} µs/decision")
    print(f"  decision cache on    {on:7.1f} µs/decision  ({keys} keys)")
    print(f"  saved                {off - on:7.1f} µs/decision ({(off - on) / off:.0%})")
    print(
        f"  hit rate             {statistics.median(hit_rates):.1%} "
        f"({entries:,} entries for {len(stream):,} intents; {allowed:,} allowed)"
    )
    print(
        f"  exact-request keys   {exact:,} distinct: an exact cache would hit "
        f"{1 - exact / len(stream):.1%}"
    )


if __name__ == "__main__":
    main()
