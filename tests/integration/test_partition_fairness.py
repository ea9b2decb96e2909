"""A backlog on one partition does not hold back another (issue 15, fix 5).

A restarted worker used to be handed one partition's whole backlog in a fetch (8 MiB
per partition) and drained it before another partition got an outcome (~77 s in a chaos
run). It now fetches 64 KiB slices (``FAIR_FETCH_BYTES``), so partitions take turns.
Malformed records make the backlog: each is decided at once (rejected), with no rate
rule or agent state in the way, and each rejection names its source partition."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from streams import kafka
from streams.config import Settings
from streams.sdk.client import OutcomeReader
from streams.topics import ensure_topics
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.broker

BACKLOG = 3000
"""Records waiting on partition 0 (about 3 MiB: dozens of fair slices)."""
FEW = 20
"""Records waiting on partition 1."""


def test_a_backlog_on_one_partition_does_not_hold_back_another(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[[Settings], WorkerProcess],
) -> None:
    settings = settings_factory(partitions=2)
    ensure_topics(settings)
    producer = kafka.producer(settings)
    filler = b"x" * 1000
    for n in range(BACKLOG):  # the backlog first: it is older than everything on partition 1
        producer.produce(settings.topic("intents"), filler + b"%d" % n, key=b"k", partition=0)
        if n % 500 == 0:
            producer.poll(0)
    for n in range(FEW):
        producer.produce(settings.topic("intents"), filler + b"%d" % n, key=b"k", partition=1)
    assert producer.flush(30) == 0

    worker_factory(settings).start()
    decided: dict[int, list[int]] = {0: [], 1: []}  # source partition -> rejected_at_ms
    deadline = time.monotonic() + 180
    with OutcomeReader(settings, ["rejected"]) as reader:
        while len(decided[0]) + len(decided[1]) < BACKLOG + FEW:
            assert time.monotonic() < deadline, {p: len(t) for p, t in decided.items()}
            for received in reader.read(timeout=0.5):
                record = received.record
                assert record is not None, received.error
                decided[record["source_partition"]].append(record["rejected_at_ms"])

    backlog = sorted(decided[0])
    print(
        f"partition 1 done {max(decided[1]) - backlog[0]} ms after partition 0 began, "
        f"whose backlog took {backlog[-1] - backlog[0]} ms"
    )
    # partition 1 was decided while partition 0 had most of its backlog still to go
    assert max(decided[1]) <= backlog[BACKLOG // 4], (
        f"partition 1 decided {max(decided[1]) - backlog[0]} ms after the backlog began, "
        f"which took {backlog[-1] - backlog[0]} ms in all"
    )
