"""The start-up timeline: phases measured from the process's creation."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest

from streams.startup import StartupTimeline, process_age_s


def test_the_process_age_is_measured_from_its_creation() -> None:
    # a child that sleeps before asking: its age includes the sleep and its own start
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(0.5); from streams.startup import process_age_s; "
            "print(process_age_s())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    age = float(child.stdout)
    assert 0.5 <= age < 30
    assert process_age_s() is not None


def test_phases_add_up_to_the_time_it_took_and_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timeline = StartupTimeline("notary")
    time.sleep(0.05)
    timeline.mark("broker")
    time.sleep(0.1)
    timeline.mark("restore")
    with caplog.at_level(logging.INFO, logger="streams.startup"):
        timeline.finish("serving")
        timeline.finish("serving")
    timeline.mark("later")  # after the start: not part of it

    summary = timeline.summary()
    phases = summary["phases"]
    assert list(phases) == ["process", "broker", "restore", "serving"]
    assert phases["broker"] >= 0.05 and phases["restore"] >= 0.1
    assert sum(phases.values()) == pytest.approx(summary["ready_after_s"], abs=0.01)
    lines = [r.getMessage() for r in caplog.records if r.name == "streams.startup"]
    assert len(lines) == 1 and lines[0].startswith("notary serving ")
    assert "broker 0.0" in lines[0] and "restore 0.1" in lines[0]


def test_an_unfinished_start_has_no_ready_time() -> None:
    timeline = StartupTimeline("worker")
    timeline.mark("broker")
    assert timeline.summary()["ready_after_s"] is None
