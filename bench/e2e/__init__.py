"""The end-to-end benchmark: ``python -m bench.e2e`` (``make bench``).

See :mod:`bench.e2e.run` for what a run measures and ``bench/results/`` for the last
results. ``--quick`` is the smoke (seconds, a few hundred intents); the default is the
full run (several minutes on 2 cores).
"""
