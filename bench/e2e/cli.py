"""Command line of the benchmark: ``python -m bench.e2e`` (``make bench``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.e2e.report import write_results
from bench.e2e.run import BenchConfig, run_bench
from processors.exceptions import TrustplaneError

__all__ = ["main", "parser", "config_from"]


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.e2e",
        description="Throughput, end-to-end latency and CPU per intent of the gate on the "
        "local broker, next to a raw consume->produce loop and the Ed25519 crypto floor. "
        "Writes <mode>.json, <mode>.md and <mode>.png to the output folder.",
    )
    p.add_argument("--quick", action="store_true", help="the smoke: a few hundred intents, seconds")
    p.add_argument("--output", type=Path, help="results folder (default: bench/results)")
    p.add_argument("--agents", type=int, help="bench agents (default 1000; quick 60)")
    p.add_argument("--partitions", type=int, help="partitions of the run's topics (default 4)")
    p.add_argument("--rates", type=_floats, help="offered loads, e.g. 500,1000,2000")
    p.add_argument("--phase-seconds", type=float, help="publishing time of each fixed-rate phase")
    p.add_argument("--max-intents", type=int, help="intents of the maximum-rate phase")
    p.add_argument("--workers", type=_ints, help="worker process counts to run, e.g. 1,2")
    p.add_argument("--baselines", help="raw loop modes: plain,txn (empty: none)")
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="py-spy profile of one worker at maximum rate (default: on in full mode)",
    )
    p.add_argument("--bootstrap", help="use this broker instead of the bench broker")
    p.add_argument("--kafka-dir", type=Path, help="folder of the bench broker (.state/bench-kafka)")
    p.add_argument(
        "--keep-broker",
        action="store_true",
        default=None,
        help="leave the bench broker running if this run started it",
    )
    p.add_argument("--state-dir", type=Path, help="keys and worker logs (.state/bench)")
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the workers, e.g. transaction_max_ms=20 (repeatable)",
    )
    return p


def config_from(args: argparse.Namespace) -> BenchConfig:
    overrides: dict[str, Any] = {}
    for name, attr in (
        ("output", "output_dir"),
        ("agents", "agents"),
        ("partitions", "partitions"),
        ("rates", "rates"),
        ("phase_seconds", "phase_s"),
        ("max_intents", "max_intents"),
        ("workers", "workers"),
        ("profile", "profile"),
        ("bootstrap", "bootstrap"),
        ("kafka_dir", "kafka_dir"),
        ("state_dir", "state_dir"),
        ("keep_broker", "keep_broker"),
    ):
        value = getattr(args, name)
        if value is not None:
            overrides[attr] = value
    if args.baselines is not None:
        overrides["baseline_modes"] = tuple(m for m in args.baselines.split(",") if m.strip())
    env = []
    for item in args.worker_env:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise TrustplaneError(f"--worker-env {item!r} is not NAME=VALUE")
        name = name.strip().upper()
        env.append((name if name.startswith("TRUSTPLANE_") else f"TRUSTPLANE_{name}", value))
    if env:
        overrides["worker_env"] = tuple(env)
    return BenchConfig.quick(**overrides) if args.quick else BenchConfig.full(**overrides)


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = config_from(args)
        result = run_bench(config, _log)
        paths = write_results(result, config.output_dir)
    except TrustplaneError as exc:
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(paths["markdown"].read_text())
    for kind, path in paths.items():
        _log(f"wrote {kind}: {path}")
    if "png" not in paths:
        _log("no PNG: matplotlib is not installed (pip install -e '.[bench]')")
    return 0
