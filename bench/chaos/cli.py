"""Command line of the chaos suite: ``python -m bench.chaos``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.chaos.config import ChaosConfig
from bench.chaos.run import run_chaos
from bench.chaos.selftest import run_self_test
from processors.exceptions import TrustplaneError

__all__ = ["main", "parser"]

DESCRIPTION = """\
Chaos test of the whole pipeline. Publishes signed intents with a known must-deny share
(policy-forbidden, unregistered agents, tampered signatures, quarantine triggers and the
quarantined agents' later intents), intents held for review (a share answered approve or
deny) and garbage, while a seeded fault plan SIGKILLs and SIGSTOP/SIGCONTs gate workers,
the sink, the notary and broker nodes (restarts after 0-3 s). Then it checks, with
read_committed readers and the public verifiers: every intent has exactly one first
outcome; nothing must-deny is approved; every approval verifies (gate JWKS, DSSE, subject
digest = SHA-256 of the exact intent bytes); ClickHouse holds what Kafka holds; the
notary's log is the set of distinct lineage events; every checkpoint verifies and is a
prefix of that log; the agents' committed state never goes back (write counts rise).
Prints one line of figures and writes <out>/<run>/report.json and
faults.json (the plan, and what was done when). Exit status 0 when every invariant holds
(the goals -- recovery <= 3 s, no good intent denied -- are reported, not enforced).
"""

FIGURES = """\
the line: lost, duplicated, wrongly_approved, good_denied, sink_mismatch, notary_excess,
notary_missing, approvals_unverified, checkpoints_inconsistent, log_broken,
state_untrusted (counts; see bench/chaos/check.py), worker_recovery p50/max (kill ->
every partition decides again), notary_recovery p50/max (restart -> /healthz answers
200), unplanned_exits (processes that ended by themselves; the suite starts them again,
as a supervisor would).
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=DESCRIPTION,
        epilog=FIGURES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the small run (~2 min): 800 intents at 20/s, 2 workers, 1 broker, 2 worker "
        "kills, 1 worker stop, 1 sink kill, 1 notary kill; default: the full run (50,000 "
        "intents at 40/s, 3 workers, 3 brokers, 20 worker kills, 3 broker kills, ...)",
    )
    p.add_argument("--self-test", action="store_true", help="feed the checker corrupted data")
    p.add_argument("--intents", type=int, help="records to publish")
    p.add_argument("--rate", type=float, help="offered intents per second")
    p.add_argument("--duration", type=float, help="seconds of publishing (sets --rate)")
    p.add_argument("--agents", type=int, help="agents of the good class")
    p.add_argument("--workers", type=int, help="gate worker processes")
    p.add_argument("--brokers", type=int, help="nodes of the run's own cluster")
    p.add_argument("--partitions", type=int, help="partitions of the run's topics")
    p.add_argument("--seed", type=int, help="seed of the fault plan and the workload")
    for name, what in (
        ("worker-kills", "SIGKILLs of a worker (restarted after 0-3 s)"),
        ("worker-stops", "SIGSTOP/SIGCONT of a worker (0.5-3 s)"),
        ("sink-kills", "SIGKILLs of the sink"),
        ("sink-stops", "SIGSTOP/SIGCONT of the sink"),
        ("notary-kills", "SIGKILLs of the notary"),
        ("notary-stops", "SIGSTOP/SIGCONT of the notary"),
        ("broker-kills", "SIGKILLs of a broker node (own cluster only)"),
    ):
        p.add_argument(f"--{name}", type=int, help=what)
    p.add_argument("--out", type=Path, help="where runs write their files (.state/chaos)")
    p.add_argument("--kafka-dir", type=Path, help="the run's own cluster (.state/chaos-kafka)")
    p.add_argument("--keep-broker", action="store_true", help="leave the own cluster running")
    p.add_argument("--bootstrap", help="use this broker instead (as admin; it is never signalled)")
    p.add_argument(
        "--credentials-dir",
        type=Path,
        help="Kafka users' passwords for --bootstrap (default TRUSTPLANE_KAFKA_CREDENTIALS_DIR)",
    )
    p.add_argument("--anomaly-config", type=Path, help="the workers' anomaly thresholds")
    p.add_argument(
        "--no-standby",
        action="store_true",
        help="no warm standby per worker id: a killed worker is only restarted",
    )
    p.add_argument("--drain", type=float, help="seconds to wait for outcomes, notary, sink")
    return p


def config_from(args: argparse.Namespace) -> ChaosConfig:
    config = ChaosConfig.quick() if args.quick else ChaosConfig.full()
    values: dict[str, Any] = {}
    for name in (
        "intents", "rate", "agents", "workers", "brokers", "partitions", "seed",
        "worker_kills", "worker_stops", "sink_kills", "sink_stops", "notary_kills",
        "notary_stops", "broker_kills", "out", "kafka_dir", "bootstrap", "anomaly_config",
    ):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    if args.keep_broker:
        values["keep_broker"] = True
    if args.no_standby:
        values["standby"] = False
    if args.drain is not None:
        values["drain_s"] = args.drain
    if args.bootstrap:
        credentials = args.credentials_dir or os.environ.get("TRUSTPLANE_KAFKA_CREDENTIALS_DIR")
        values["credentials_dir"] = Path(credentials) if credentials else None
    config = replace(config, **values)
    if args.duration is not None:
        config = replace(config, rate=config.intents / args.duration)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.self_test:
        return 0 if run_self_test() else 1

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        run = run_chaos(config_from(args), log)
    except TrustplaneError as exc:
        print(f"chaos run failed: {exc.diagnostics()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every process the run started was stopped", file=sys.stderr)
        return 130
    log(f"report: {run.report_path}")
    print(run.line, flush=True)
    return 0 if run.ok else 1
