"""What became of a control command is one lineage event, whichever worker reports it.

Every worker reads the whole ``control`` topic and reports each command; the worker
that issued a quarantine reads its own command back. All of them must produce the same
event (same id, same content but the gate signature), so the notary logs one entry per
command however many workers run and restart.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Any

import pytest

from streams.dev.estate import measurement, setup_estate
from streams.sdk.client import OutcomeReader
from tests.conftest import free_port
from tests.integration.test_responses import decide, reasons

pytestmark = pytest.mark.broker

SIGNED = ("signer", "signature")


def control_events_by_id(
    settings: Any, copies: int, timeout: float = 90.0
) -> dict[str, list[dict[str, Any]]]:
    """The control events on ``lineage`` by event id, once a quarantine was reported and
    every event has been reported ``copies`` times."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    deadline = time.monotonic() + timeout
    with OutcomeReader(settings, ["lineage"]) as reader:
        while time.monotonic() < deadline:
            for received in reader.read(timeout=0.5):
                record = received.record or {}
                if record.get("stage") == "control":
                    by_id[record["event_id"]].append(record)
            quarantined = any(c[0]["status"] == "agent.quarantine" for c in by_id.values())
            if quarantined and min(len(c) for c in by_id.values()) >= copies:
                return by_id
    seen = {k: len(v) for k, v in by_id.items()}
    raise AssertionError(f"control events within {timeout} s: {seen}, want {copies} each")


def test_every_worker_and_restart_reports_a_command_with_the_same_event(settings, worker_factory):
    estate = setup_estate(settings)
    first = worker_factory(settings).start()
    tampered = {**estate.agents["ops-agent"].runtime(), "code_digest": measurement("patched")}
    violation = decide(
        settings, estate.intent("ops-agent", "reports.read", "r:1", runtime=tampered)
    )
    assert violation.topic == "denied" and "integrity: attestation" in reasons(violation)

    second_settings = dataclasses.replace(settings, worker_id="w-second", web_port=free_port())
    second = worker_factory(second_settings).start()
    first.kill()
    worker_factory(settings).start()  # the issuer again, from offset 0 of control

    # the estate's commands and the quarantine, reported by three worker starts
    by_id = control_events_by_id(settings, copies=3)
    events = [event for copies in by_id.values() for event in copies]
    assert len(by_id) >= 2

    for event_id, copies in by_id.items():
        contents = [{k: v for k, v in e.items() if k not in SIGNED} for e in copies]
        assert all(c == contents[0] for c in contents), f"{event_id} differs between reports"
        assert copies[0]["worker"] == "gate"

    quarantines = [
        copies[0] for copies in by_id.values() if copies[0]["status"] == "agent.quarantine"
    ]
    assert len(quarantines) == 1
    quarantine = quarantines[0]
    assert quarantine["event_type"] == "control.applied", quarantine["reasons"]
    assert len(by_id[quarantine["event_id"]]) >= 2, "read back by the issuer and the others"
    assert not any(e["event_type"] == "control.refused" for e in events), [
        e["reasons"] for e in events if e["event_type"] == "control.refused"
    ]
    second.kill()
