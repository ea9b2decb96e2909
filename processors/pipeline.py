"""The processor chain: run every layer on an intent, then enforce.

A layer that raises or overruns its time budget gets an ERROR verdict; the combiner
turns any non-ALLOW into a deny. Nothing here raises for a bad intent.

The budget counts the CPU time the deciding thread spent in the layer, not the wall
clock: a busy machine, a process stopped and continued, or a pause of the interpreter
must not turn a good intent into a denial, while a layer that really does too much work
(a pathological policy, a huge baseline) still does. ``duration_us`` in the verdict is
the wall-clock time, for observability.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from processors.enforcement import Enforcement, Outcome, combine
from processors.intent import Intent
from processors.verdict import ALREADY_DECIDED, GateState, Layer, StatefulLayer, Status, Verdict

__all__ = ["Pipeline"]


class Pipeline:
    def __init__(
        self,
        layers: Sequence[Layer],
        *,
        layer_timeout_ms: int = 200,
        observe_after: str | None = "identity",
    ) -> None:
        if not layers:
            raise ValueError("a pipeline needs at least one layer")
        self.layers = tuple(layers)
        self.layer_names = tuple(layer.name for layer in layers)
        self.stateful = tuple(layer for layer in layers if isinstance(layer, StatefulLayer))
        if observe_after not in self.layer_names:
            observe_after = None
        self.observe_after = observe_after
        self._budget_us = layer_timeout_ms * 1000

    def decide(self, intent: Intent, state: GateState) -> Enforcement:
        """Run the layers in order; the first DENY or ERROR ends the chain.

        Later layers are not asked (an unsigned intent never reaches policy); they are
        listed in ``Enforcement.skipped``. The outcome is a deny either way.
        """
        self.ensure_state(state)
        verdicts: list[Verdict] = []
        for layer in self.layers:
            verdict = self._run(layer, intent, state)
            verdicts.append(verdict)
            if verdict.status in (Status.DENY, Status.ERROR):
                break
        ran = self.layer_names[: len(verdicts)]
        enforcement = combine(verdicts, ran, skipped=self.layer_names[len(verdicts) :])
        return self._observe(intent, state, verdicts, enforcement)

    def _observe(
        self, intent: Intent, state: GateState, verdicts: list[Verdict], result: Enforcement
    ) -> Enforcement:
        """Let stateful layers learn from the intent — only if its identity verified, so
        a forged intent cannot move an agent's sequence, nonces or baselines, and only if
        it is new (an exact replay of a decided intent teaches nothing). A layer that fails
        to update its state turns the decision into a deny."""
        if self.observe_after and not any(
            v.layer == self.observe_after and v.status is Status.ALLOW for v in verdicts
        ):
            return result
        if any(v.evidence.get(ALREADY_DECIDED) == "true" for v in verdicts):
            return result
        for layer in self.stateful:
            try:
                layer.observe(intent, state, result.outcome.value)
            except Exception as exc:  # noqa: BLE001 - fail closed, with the reason
                return Enforcement(
                    Outcome.DENIED,
                    (
                        *result.reasons,
                        f"{layer.name}: state update failed: {type(exc).__name__}: {exc}",
                    ),
                    result.verdicts,
                    result.skipped,
                )
        return result

    def ensure_state(self, state: GateState) -> None:
        """Give every stateful layer a state slot for this agent."""
        for layer in self.stateful:
            if layer.state_key not in state.agent:
                state.agent[layer.state_key] = layer.new_state()

    def _run(self, layer: Layer, intent: Intent, state: GateState) -> Verdict:
        started = time.perf_counter_ns()
        cpu_started = time.thread_time_ns()
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
        worked = (time.thread_time_ns() - cpu_started) // 1000
        if not isinstance(verdict, Verdict) or verdict.layer != layer.name:
            return Verdict(
                layer.name, Status.ERROR, (f"returned {verdict!r}, not its own Verdict",), {}, took
            )
        if worked > self._budget_us:
            return Verdict(
                layer.name,
                Status.ERROR,
                (
                    f"timed out: used {worked / 1000:.1f} ms of CPU, budget "
                    f"{self._budget_us / 1000:.0f} ms",
                ),
                dict(verdict.evidence),
                took,
            )
        return Verdict(verdict.layer, verdict.status, verdict.reasons, verdict.evidence, took)


def _elapsed_us(started_ns: int) -> int:
    return (time.perf_counter_ns() - started_ns) // 1000
