"""The chaos suite's checker can fail: a consistent dataset passes, and each corruption
makes exactly its invariant fail (no broker)."""

from __future__ import annotations

import pytest

from bench.chaos.check import HARD, INVARIANTS
from bench.chaos.model import OutcomeRecord
from bench.chaos.plan import PlanSpec, make_plan
from bench.chaos.recovery import (
    Timing,
    decision_times,
    phases_after,
    phases_before,
    phases_p50,
    worker_recovery,
)
from bench.chaos.report import figures_line
from bench.chaos.selftest import CORRUPTIONS, consistent_dataset


def test_a_consistent_run_passes_every_invariant() -> None:
    result = consistent_dataset().check()
    assert result.failing() == set()
    assert result.ok
    assert result.details["outcome_mix"] == {
        "garbage->rejected": 1,
        "good->approved": 4,
        "must_deny->denied": 3,
        "review->review": 3,
    }


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_each_corruption_fails_its_invariant(corruption: str) -> None:
    invariant, corrupt = CORRUPTIONS[corruption]
    data = consistent_dataset()
    corrupt(data)
    result = data.check()
    assert result.failing() == {invariant}, result.to_dict()["invariants"]
    assert result.findings[invariant].examples, "a failure says where"
    assert result.ok is (invariant not in HARD)


def test_every_invariant_has_a_corruption() -> None:
    assert {invariant for invariant, _ in CORRUPTIONS.values()} == set(INVARIANTS)


def test_the_line_shows_each_figure() -> None:
    data = consistent_dataset()
    CORRUPTIONS["drop an outcome"][1](data)
    recovery = {"worker": {"p50": 1.25, "max": 2.5}, "notary": {"p50": None, "max": None}}
    line = figures_line(data.check(), recovery)
    assert line.startswith("lost=1 duplicated=0 wrongly_approved=0 good_denied=0 ")
    assert line.endswith("worker_recovery_p50=1.25s max=2.50s notary_recovery_p50=n/a max=n/a")


def test_worker_recovery_is_the_longest_wait_of_a_partition() -> None:
    s = 1_000_000_000
    timings = [
        Timing(0, 0, 1 * s, 2 * s),  # decided before the kill at 10 s
        Timing(0, 1, 9 * s, 13 * s),  # pending at the kill: waited 3 s after it
        Timing(0, 2, 11 * s, 13 * s),
        Timing(1, 0, 12 * s, 12 * s + s // 10),  # another partition: ordinary latency
    ]
    assert worker_recovery(10 * s, timings) == pytest.approx(3.0)
    assert worker_recovery(10 * s, [*timings, Timing(2, 0, 9 * s, None)]) is None
    assert worker_recovery(10 * s, timings, partitions=[1]) == pytest.approx(0.1)


def test_decision_times_are_each_intents_first_outcome_on_the_monotonic_clock() -> None:
    offset = 1_700_000_000_000_000_000  # wall clock minus monotonic clock
    outcomes = [
        OutcomeRecord("review", "d1", "i1", "a", issued_at_ms=1_700_000_000_005),
        OutcomeRecord("approved", "p1", "i1", "a", issued_at_ms=1_700_000_000_009),  # answer
        OutcomeRecord("denied", "d2", "i2", "a", issued_at_ms=1_700_000_000_007),
        OutcomeRecord("rejected", "r1", None, "a", issued_at_ms=1_700_000_000_001),
    ]
    assert decision_times(outcomes, offset) == {"i1": 5_000_000, "i2": 7_000_000}


def test_a_plan_is_seeded_and_its_episodes_do_not_overlap() -> None:
    spec = PlanSpec(
        seed=5, duration_s=300, workers=3, broker_nodes=(1, 2, 3), worker_kills=6,
        worker_stops=2, sink_kills=1, notary_kills=1, broker_kills=2,
    )  # fmt: skip
    plan = make_plan(spec)
    assert plan == make_plan(spec)
    assert plan != make_plan(PlanSpec(**{**spec.__dict__, "seed": 6}))
    assert [f.action for f in plan].count("kill") == 10
    assert [f.action for f in plan].count("restart") == 10
    down: dict[str, float] = {}
    for fault in plan:  # every target comes back before anything else happens to it
        if fault.action in ("kill", "stop"):
            assert fault.target not in down
            down[fault.target] = fault.at_s
            assert len(down) == 1, "one episode at a time"
        else:
            assert 0 <= fault.at_s - down.pop(fault.target) <= 3.0
    assert not down
    assert all(30 <= f.at_s <= 300 * 0.85 + 3 for f in plan)


def test_the_restart_phases_are_the_median_of_the_restarts_that_reported_them() -> None:
    timelines = [
        {"phases": {"process": 1.0, "broker": 0.1, "serving": 0.5}},
        None,  # never became ready
        {"phases": {"process": 3.0, "broker": 0.3, "serving": 0.7}},
        {"phases": {"process": 2.0, "broker": 0.2, "serving": 0.6}},
    ]
    assert phases_p50(timelines) == {"process": 2.0, "broker": 0.2, "serving": 0.6}
    assert phases_p50([None, None]) == {}


def test_a_takeover_counts_only_the_phases_after_the_standby_wait() -> None:
    timeline = {
        "phases": {
            "process": 1.6,
            "host": 1.2,
            "control": 0.2,
            "standby": 30.0,
            "transactions": 0.1,
            "deciding": 0.2,
        }
    }
    assert phases_after(timeline, "standby") == {"phases": {"transactions": 0.1, "deciding": 0.2}}
    assert phases_after({"phases": {"process": 1.6, "deciding": 0.2}}, "standby") is None
    assert phases_after(None, "standby") is None
    assert phases_before(timeline, "standby") == {
        "phases": {"process": 1.6, "host": 1.2, "control": 0.2}
    }
    assert phases_before({"phases": {"process": 1.6}}, "standby") == {"phases": {"process": 1.6}}
