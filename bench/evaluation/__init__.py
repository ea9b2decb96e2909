"""The synthetic evaluation: ``python -m bench.evaluation --seed 7 --days 3``.

:mod:`bench.evaluation.workload` generates a labelled workload (benign agents and
scripted attacks); :mod:`bench.evaluation.evaluate` runs it through the real trust
layers and reports what each caught.
"""
