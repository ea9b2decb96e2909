"""A warm standby: a second ``trustplane worker`` with the same worker id waits, decides
nothing, and takes over at once when the deciding one is SIGKILLed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from streams.config import Settings
from streams.dev.estate import setup_estate
from tests.conftest import WorkerProcess, free_port
from tests.integration.test_responses import decide, reasons

pytestmark = pytest.mark.broker


def health(worker: WorkerProcess) -> dict[str, Any]:
    state = worker.health()
    assert state is not None, worker.log()
    return state


def test_a_standby_decides_nothing_until_the_deciding_worker_dies_then_takes_over(
    settings: Settings, worker_factory: Callable[[Settings], WorkerProcess]
) -> None:
    estate = setup_estate(settings)
    active = worker_factory(settings).start()
    standby = worker_factory(dataclasses.replace(settings, web_port=free_port()))
    standby.ready = lambda: bool((standby.health() or {}).get("standby"))
    standby.start()
    assert health(standby)["ready"] is False
    assert "stands by" in standby.log()

    before = decide(settings, estate.intent("billing-agent", "invoices.read", "invoice:1"))
    assert before.topic == "approved", reasons(before)
    assert health(active)["processed"] >= 1
    assert health(standby)["processed"] == 0

    active.kill()
    after = decide(settings, estate.intent("billing-agent", "invoices.read", "invoice:2"))
    assert after.topic == "approved", reasons(after)
    state = health(standby)
    assert state["ready"] is True and state["standby"] is False
    assert state["processed"] >= 1
    # it waited on the lock, then fenced the dead process and took its partitions
    phases = list(state["startup"]["phases"])
    assert phases[phases.index("standby") :] == ["standby", "transactions", "deciding"]
    assert "taking over" in standby.log()
