"""CPU per intent of the whole gate in process, this tree against another (A/B).

    .venv/bin/python -m bench.bench_gate [--against DIR] [--rounds 3] [--intents 4000]

Each measurement runs in a fresh Python process: the end-to-end benchmark's workload
(``bench/e2e/workload.py``, 1,000 agents) is signed, then the real gate of that tree
(:func:`bench.e2e.inproc.gate_in_process`: every layer, signed approval, signed lineage,
Avro, no Kafka) decides ``--intents`` intents; the process prints its CPU µs per intent.
With ``--against DIR`` (a checkout of another commit, e.g. made by ``git worktree add
/tmp/before <commit>``) the two trees run alternately, ``--rounds`` times each, so the
noise of a shared machine hits both alike; the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_MEASURE = """
from bench.e2e.workload import BenchEstate, Workload
from bench.e2e.inproc import gate_in_process
estate = BenchEstate({agents})
intents = Workload(estate).build({intents})
run = gate_in_process(estate, intents, profile=False)
print(run.cpu_us_per_intent)
"""


def measure(tree: Path, intents: int, agents: int) -> float:
    """CPU µs per intent of the gate of ``tree``, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE.format(agents=agents, intents=intents)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"measuring {tree} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--intents", type=int, default=4000)
    parser.add_argument("--agents", type=int, default=1000)
    args = parser.parse_args(argv)
    trees = [("this tree", ROOT)]
    if args.against is not None:
        if not (args.against / "bench" / "e2e" / "inproc.py").is_file():
            parser.error(f"{args.against} is not a trustplane checkout with bench/e2e/inproc.py")
        trees.insert(0, (f"{args.against}", args.against.resolve()))
    figures: dict[str, list[float]] = {name: [] for name, _ in trees}
    for n in range(args.rounds):
        for name, tree in trees:
            figures[name].append(measure(tree, args.intents, args.agents))
            print(f"round {n + 1}: {name:<24} {figures[name][-1]:7.0f} µs/intent", flush=True)
    print(f"\ngate in process, CPU µs per intent, median of {args.rounds} runs:")
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, value in medians.items():
        print(f"  {name:<24} {value:7.0f}")
    if len(medians) == 2:
        before, after = medians[trees[0][0]], medians["this tree"]
        print(f"  this tree / other        {after / before:7.2f}  ({after - before:+.0f} µs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
