"""The processor chain: run every layer on an intent, then enforce.

A layer that raises or overruns its time budget gets an ERROR verdict; the combiner
turns any non-ALLOW into a deny. Nothing here raises for a bad intent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from processors.enforcement import Enforcement, combine
from processors.intent import Intent
from processors.verdict import GateState, Layer, Status, Verdict

__all__ = ["Pipeline"]


class Pipeline:
    def __init__(self, layers: Sequence[Layer], *, layer_timeout_ms: int = 200) -> None:
        if not layers:
            raise ValueError("a pipeline needs at least one layer")
        self.layers = tuple(layers)
        self.layer_names = tuple(layer.name for layer in layers)
        self._budget_us = layer_timeout_ms * 1000

    def decide(self, intent: Intent, state: GateState) -> Enforcement:
        verdicts = [self._run(layer, intent, state) for layer in self.layers]
        return combine(verdicts, self.layer_names)

    def _run(self, layer: Layer, intent: Intent, state: GateState) -> Verdict:
        started = time.perf_counter_ns()
        try:
            verdict = layer.evaluate(intent, state)
        except Exception as exc:  # noqa: BLE001 - any failure of a layer is a deny, with its reason
            return Verdict(
                layer.name,
                Status.ERROR,
                (f"{type(exc).__name__}: {exc}",),
                duration_us=_elapsed_us(started),
            )
        took = _elapsed_us(started)
        if not isinstance(verdict, Verdict) or verdict.layer != layer.name:
            return Verdict(
                layer.name, Status.ERROR, (f"returned {verdict!r}, not its own Verdict",), {}, took
            )
        if took > self._budget_us:
            return Verdict(
                layer.name,
                Status.ERROR,
                (f"timed out: took {took / 1000:.1f} ms, budget {self._budget_us / 1000:.0f} ms",),
                dict(verdict.evidence),
                took,
            )
        return Verdict(verdict.layer, verdict.status, verdict.reasons, verdict.evidence, took)


def _elapsed_us(started_ns: int) -> int:
    return (time.perf_counter_ns() - started_ns) // 1000
