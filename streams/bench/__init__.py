"""The benchmark harness: ``trustplane bench`` / ``make bench`` / ``python -m streams.bench``.

See :mod:`streams.bench.run` for what a run measures and ``bench/results/`` for the
last results. ``--quick`` is the smoke (seconds, a few hundred intents); the default is
the full run (several minutes on 2 cores). Nothing is imported here, so that
``python -m streams.bench.whatif`` (how patched workers start) runs its module once.
"""
