"""Benchmarks and the synthetic evaluation: run from the repository root, not shipped.

* ``python -m bench.e2e [--quick]``: the end-to-end benchmark on the local broker
  (``make bench``); results in ``bench/results/``.
* ``python -m bench.evaluation --seed 7 --days 3``: the labelled synthetic workload
  through the real trust layers (detection rate, false positives).
* ``python bench/bench_*.py``: one micro-benchmark each.

Not part of the wheel (only ``streams``, ``processors``, ``sinks`` are): nothing in
those packages imports this one.
"""
