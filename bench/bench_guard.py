"""Tool-call overhead of the guard, end to end: call -> intent published -> the gate
decides -> approval verified -> the tool runs -> outcome reported, against a direct call.

    .venv/bin/python -m bench.bench_guard [--calls 300] [--rate 100] [--seconds 10]

Starts the bench broker if needed (``.state/bench-kafka``, as ``make bench``), registers
the demo estate under a fresh topic prefix, starts one ``trustplane worker``, and drives a
guard of ``billing-agent`` (``read_invoice`` -> ``invoices.read``, approved) in two phases:
``--calls`` calls one after the other (idle: each call alone in the pipeline), then
``--rate`` calls per second for ``--seconds`` seconds from a thread pool (the guard queues
them in sequence order). The tool is a function returning a small dict; the direct call
is that function alone. Prints p50/p95/p99/max per phase and the goals of the
integrations issue (p50 <= 10 ms, p99 <= 50 ms).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.e2e.procs import WorkerProcesses
from processors.crypto.keys import load_private_key
from streams.config import PROJECT_ROOT, Settings
from streams.dev.estate import DEMO_AGENTS, setup_estate
from streams.dev.localkafka import LocalKafka
from streams.sdk.guard import AgentIdentity, Guard
from streams.sdk.guard.mapping import mapping_from_document
from streams.topics import ensure_topics

KAFKA_DIR = PROJECT_ROOT / ".state" / "bench-kafka"
# one agent calling one tool 100 times a second trips the example's rate and burst
# thresholds (they are for real agents): this measures the path, not the anomaly layer
ANOMALY = """
[limits]
max_window_events = 100000

[default]
rate = { max = 60000, response = "review" }
burst = { max = 60000, response = "deny" }
fanout = { max = 60000, response = "review" }
"""
GOALS_MS = {"p50": 10.0, "p99": 50.0}
MAPPING = mapping_from_document(
    {
        "toolset": {"name": "bench"},
        "tools": {"read_invoice": {"action": "invoices.read", "resource": "invoice:{n}"}},
    }
)


def read_invoice(n: int) -> dict[str, object]:
    return {"invoice": n, "total": "12.50", "currency": "EUR"}


def _tool(n: int) -> Callable[[], dict[str, object]]:
    return lambda: read_invoice(n)


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def q(f: float) -> float:
        return ordered[min(len(ordered) - 1, int(f * len(ordered)))]

    return {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": ordered[-1]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="sequential calls (idle)")
    parser.add_argument("--rate", type=float, default=100.0, help="calls/s of the loaded phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the loaded phase")
    args = parser.parse_args(argv)

    broker = LocalKafka(KAFKA_DIR, progress=lambda m: print(f"[kafka] {m}", flush=True))
    info = broker.status() or broker.up(timeout=180)
    prefix = f"guard{uuid.uuid4().hex[:6]}."
    with tempfile.TemporaryDirectory(prefix="trustplane-bench-guard-") as tmp:
        anomaly = Path(tmp) / "anomaly.toml"
        anomaly.write_text(ANOMALY)
        settings = Settings(
            anomaly_config_path=anomaly,
            bootstrap_servers=info.bootstrap,
            topic_prefix=prefix,
            group_id=prefix.rstrip("."),
            state_dir=Path(tmp) / "state",
            web_port=0,
            kafka_principal="admin",
            kafka_credentials_dir=KAFKA_DIR / "credentials",
        )
        ensure_topics(settings)
        setup_estate(settings)
        workers = WorkerProcesses(settings, 1, Path(tmp) / "logs")
        workers.start()
        agent = DEMO_AGENTS["billing-agent"]
        key = load_private_key(settings.resolved_keys_dir / "agents" / "billing-agent.pem")
        guard = Guard(
            settings,
            AgentIdentity(agent.agent_id, key, agent.runtime()),
            MAPPING,
            settings.resolved_keys_dir / "approvals.jwks.json",
            state_dir=Path(tmp) / "guard",
        )
        try:
            for n in range(20):  # warm up: connections, Cedar cache, gate state
                guard.run("read_invoice", {"n": n}, _tool(n))
            direct = []
            for n in range(args.calls):
                started = time.perf_counter()
                read_invoice(n)
                direct.append((time.perf_counter() - started) * 1000)
            idle = []
            for n in range(args.calls):
                started = time.perf_counter()
                guard.run("read_invoice", {"n": n}, _tool(n))
                idle.append((time.perf_counter() - started) * 1000)
            loaded = _loaded(guard, args.rate, args.seconds)
        finally:
            guard.close()
            workers.stop()
    print(f"\nguarded tool call, ms (worker + broker + this process on {_cpus()} CPUs):")
    print(f"{'phase':<28}{'calls':>7}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
    rows = [
        ("direct call (no guard)", direct),
        ("guarded, idle", idle),
        (f"guarded, {args.rate:g} calls/s", loaded),
    ]
    for name, samples in rows:
        p = percentiles(samples)
        print(
            f"{name:<28}{len(samples):>7}{p['p50']:>9.2f}{p['p95']:>9.2f}"
            f"{p['p99']:>9.2f}{p['max']:>9.2f}"
        )
    print("\ngoals (p50 <= 10 ms, p99 <= 50 ms):")
    for name, samples in rows[1:]:
        p = percentiles(samples)
        verdict = all(p[k] <= v for k, v in GOALS_MS.items())
        print(
            f"  {name:<26} p50 {p['p50']:.1f} ms, p99 {p['p99']:.1f} ms: "
            f"{'met' if verdict else 'NOT met'}"
        )
    print(f"  mean guarded idle call: {statistics.fmean(idle):.1f} ms")
    return 0


def _loaded(guard: Guard, rate: float, seconds: float) -> list[float]:
    total = max(1, int(rate * seconds))
    latencies: list[float] = []

    def one(n: int, due: float) -> None:
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        started = time.perf_counter()
        guard.run("read_invoice", {"n": n}, _tool(n))
        latencies.append((time.perf_counter() - started) * 1000)

    begin = time.perf_counter() + 0.2
    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = [pool.submit(one, n, begin + n / rate) for n in range(total)]
        for future in futures:
            future.result()
    return latencies


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    raise SystemExit(main())
