"""What-if patches: measure a proposed change to code the benchmark does not own.

Each patch monkeypatches one function at run time and returns the function that undoes
it. The harness applies a patch in its own process (the in-process gate) or starts the
worker processes through this module::

    python -m streams.bench.whatif --patch control-watermarks worker

so the same ``trustplane worker`` runs with the change, and the before/after numbers
come from one benchmark run. Nothing here is used outside the benchmark; a patch that
proves itself is meant to be made in the real code (see each docstring for where).
The three below were made in the real code in commit 5659b5e (so on later commits they
change nothing); the harness keeps them as worked examples and to reproduce the
before/after on earlier commits. ``--whatif NAME`` / ``--whatif-in-process NAME`` run one.

``control-watermarks``
    ``streams/control.py``, ``ControlFollower.sync``: the gate worker calls it before
    every batch, and it asks the control consumer for a fresh high watermark
    (``get_watermark_offsets(cached=False)``). That consumer also has a long-poll Fetch
    in flight on the same broker connection, and Kafka answers one connection's requests
    in order, so the ListOffsets answer waits for the Fetch to end: ``fetch.wait.max.ms``
    per batch on an idle control topic -- 500 ms (librdkafka's default) until commit
    2b499e2 set it to 10 ms for this consumer, ~10.5 ms per batch since (measured). The
    change asks a second, never-assigned consumer of the follower instead (no fetch in
    flight): same request, same answer, ~0.3 ms.

``control-view-partitions`` (optional: ``--base-patches control-view-partitions``)
    ``streams/app.py``, ``_add_control_view``: the operator's ``control-latest`` Faust
    table is created with ``settings.partitions`` (4) partitions while its source topic
    ``control`` has 1, so every control record crashes the ``follow_control`` agent
    (``faust.exceptions.PartitionsMismatch``, logged by every worker, 54 times in one
    run). Twice here, on code before 2b499e2, a worker of a two-worker group then left
    within seconds of a Faust host-group rebalance, with exit status 0. The change gives
    the table the control topic's partition count (``partitions=1``). It only touches
    the /control view; no decision reads that table.

``cedar-slices``
    ``processors/policy.py``, ``PolicyEngine.__init__`` (``self._slices``): the policy
    subset of a request is cached per *(agent id, roles, action)* in an LRU of 4,096,
    so an estate of more than ~1,000 agents keeps rebuilding subsets
    (``_Slicer.slice`` → ``cedarpy.PolicySet.from_pst``). The subset depends on the agent
    id only when some policy names that agent (``principal == Agent::"..."``); the change
    keys the cache by ``""`` instead of the agent id for every other agent. Same
    policies chosen, so the same decisions.

Two more changes measured here first (RFC 8785 through the C JSON encoder, -6 to -10 %
of the in-process gate's CPU; no re-validation of the gate's own Avro records) landed in
the code while this harness was written (commit 9a14fd4), so they are gone from here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["PATCHES", "apply", "main"]

Undo = Callable[[], None]


def control_watermarks() -> Undo:
    """Patch ``ControlFollower`` to read high watermarks through a client with no fetch
    in flight (see the module docstring)."""
    from confluent_kafka import Consumer

    from streams.gate import control as mod

    cls = mod.ControlFollower
    original_init, original_sync, original_close = cls.__init__, cls.sync, cls.close

    def __init__(self: Any, settings: Any, state: Any, **kwargs: Any) -> None:
        original_init(self, settings, state, **kwargs)
        self._watermarks = Consumer(
            {
                **settings.kafka_config(),
                "group.id": f"{settings.group_id}-control-offsets-{settings.resolved_worker_id()}",
                "enable.auto.commit": False,
            }
        )

    def sync(self: Any, timeout: float = 5.0) -> int:
        # ControlFollower.sync with one change: the watermark comes from self._watermarks
        count = 0
        deadline = time.monotonic() + timeout
        for tp in self.partitions:
            _, high = self._watermarks.get_watermark_offsets(tp, timeout=timeout, cached=False)
            while self._position(tp.partition) < high:
                if time.monotonic() > deadline:
                    raise mod.ControlCatchUpError(
                        f"control topic not caught up within {timeout:.0f} s",
                        hint="the worker decides nothing it cannot check against current state",
                    )
                count += self.poll(timeout=0.1)
        return int(count)

    def close(self: Any) -> None:
        self._watermarks.close()
        original_close(self)

    cls.__init__ = __init__  # type: ignore[method-assign]
    cls.sync = sync  # type: ignore[method-assign]
    cls.close = close  # type: ignore[method-assign]

    def undo() -> None:
        cls.__init__ = original_init  # type: ignore[method-assign]
        cls.sync = original_sync  # type: ignore[method-assign]
        cls.close = original_close  # type: ignore[method-assign]

    return undo


def control_view_partitions() -> Undo:
    """Create the ``control-latest`` table with the control topic's 1 partition."""
    import dataclasses

    from streams.gate import app as mod

    original = mod._add_control_view

    def _add_control_view(app: Any, settings: Any, metrics: Any) -> None:
        original(app, dataclasses.replace(settings, partitions=1), metrics)

    mod._add_control_view = _add_control_view

    def undo() -> None:
        mod._add_control_view = original

    return undo


def cedar_slices() -> Undo:
    """Key the policy-subset cache by agent only for agents that policies name."""
    import functools

    from processors.layers import policy as mod

    cls = mod.PolicyEngine
    original_init = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        slicer = self._slicer
        if slicer is None:
            return
        named = {key[1] for key in slicer._buckets if key[0] == "agent"}
        cached = functools.lru_cache(maxsize=mod._ENTITY_CACHE)(self._build_slice)

        def slices(agent_id: str, roles: tuple[str, ...], action: str) -> Any:
            return cached(agent_id if agent_id in named else "", roles, action)

        self._slices = slices

    cls.__init__ = __init__  # type: ignore[method-assign]

    def undo() -> None:
        cls.__init__ = original_init  # type: ignore[method-assign]

    return undo


PATCHES: dict[str, Callable[[], Undo]] = {
    "cedar-slices": cedar_slices,
    "control-view-partitions": control_view_partitions,
    "control-watermarks": control_watermarks,
}


def apply(names: Sequence[str]) -> Undo:
    """Apply the named patches (in order); return one function undoing all of them."""
    unknown = [n for n in names if n not in PATCHES]
    if unknown:
        raise ValueError(f"unknown what-if patch(es) {unknown}; known: {sorted(PATCHES)}")
    undos = [PATCHES[n]() for n in names]

    def undo() -> None:
        for u in reversed(undos):
            u()

    return undo


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m streams.bench.whatif [--patch NAME]... <trustplane arguments>``"""
    args = list(sys.argv[1:] if argv is None else argv)
    names: list[str] = []
    while len(args) >= 2 and args[0] == "--patch":
        names.append(args[1])
        args = args[2:]
    apply(names)
    from streams.cli.main import main as trustplane

    sys.argv = ["trustplane", *args]
    trustplane()


if __name__ == "__main__":
    main()
