"""The benchmark's goal table: each of issue 11's goals against its measured figure."""

from __future__ import annotations

from typing import Any

from bench.e2e.report import goals, markdown


def _phase(
    name: str,
    rate: float | None,
    throughput: float,
    p50: float,
    p99: float,
    *,
    sustained: bool = True,
) -> dict[str, Any]:
    return {
        "name": name,
        "offered_rate": rate,
        "throughput": throughput,
        "sustained": sustained,
        "latency": {"p50_ms": p50, "p95_ms": p99, "p99_ms": p99, "p99.9_ms": p99},
        "cpu_us_per_intent": {"workers": 900.0, "broker": 300.0},
        "machine_busy_cpus": 1.9,
        "outcomes": {"approved": 10},
    }


def _result(gate_us: float, peer_us: float | None) -> dict[str, Any]:
    side: dict[str, Any] = {
        "rounds": 3,
        "gate_us": gate_us,
        "floor_us": 100.0,
        "floor_ratio": gate_us / 100.0,
    }
    if peer_us is None:
        side["peer_error"] = "pip install -e '.[bench]'"
    else:
        side["peer"] = {
            "package": "peer",
            "version": "5",
            "full_stack_us": 90.0,
            "signed_us": peer_us,
        }
        side["peer_ratio"] = gate_us / peer_us
    one = [
        _phase("20/s", 20.0, 20.0, 4.0, 9.0),
        _phase("1000/s", 1000.0, 990.0, 12.0, 30.0),
        _phase("max", None, 2600.0, 400.0, 800.0),
    ]
    two = [_phase("max", None, 3100.0, 300.0, 600.0)]
    return {
        "mode": "full",
        "run_id": "abc123",
        "started_at": "now",
        "elapsed_s": 1.0,
        "machine": {
            "cpus": 2,
            "cpu_model": "x",
            "python": "3.11",
            "confluent_kafka": "2",
            "load_average_at_start": [0.0, 0.0, 0.0],
        },
        "workload": {
            "agents": 1,
            "roles": {"a": 1},
            "intents_signed": 1,
            "sign_encode_us_per_intent": 1.0,
            "mean_intent_bytes": 1.0,
            "anomaly_safe_rate": 1.0,
            "anomaly_binding": "x",
        },
        "crypto_floor": {"verify_us": 60.0, "sign_us": 30.0, "cpu_us_per_intent": 100.0},
        "gate_in_process": {
            "cpu_us_per_intent": gate_us,
            "state_write_us_per_intent": 1.0,
            "state_bytes_per_intent": 1.0,
            "stages": {},
        },
        "side_by_side": side,
        "gate": [{"workers": 1, "phases": one}, {"workers": 2, "phases": two}],
    }


def _by_goal(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["goal"].split(" (")[0].split(",")[0]: row for row in goals(result)}


def test_every_goal_is_reported_with_its_verdict() -> None:
    rows = _by_goal(_result(gate_us=280.0, peer_us=300.0))
    peer = rows["CPU per decision / the peer's signed path"]
    assert peer["met"] and "x0.93" in peer["measured"]
    floor = rows["CPU per decision / the libsodium crypto floor"]
    assert floor["met"] and "x2.8" in floor["measured"]
    assert rows["capacity"]["met"] and "2,600" in rows["capacity"]["measured"]
    assert "broker 300" in rows["capacity"]["measured"]  # worker + broker CPU per intent
    p99 = rows["p99 at 1"]
    assert not p99["met"] and p99["gap"] == "x1.2 over"
    assert rows["idle p50"]["met"] and "20/s" in next(
        g["goal"] for g in goals(_result(280.0, 300.0)) if g["goal"].startswith("idle")
    )
    scaling = rows["2 workers / 1 worker capacity"]
    assert "x1.19" in scaling["measured"] and scaling["gap"] == "the CPUs are the budget"


def test_a_slower_gate_misses_the_peer_goal_and_says_by_how_much() -> None:
    rows = _by_goal(_result(gate_us=900.0, peer_us=300.0))
    peer = rows["CPU per decision / the peer's signed path"]
    assert not peer["met"] and peer["gap"] == "x3.00 over"
    assert not rows["CPU per decision / the libsodium crypto floor"]["met"]


def test_a_missing_peer_is_a_missed_goal_with_the_reason() -> None:
    result = _result(gate_us=280.0, peer_us=None)
    rows = _by_goal(result)
    peer = rows["CPU per decision / the peer's signed path"]
    assert not peer["met"] and "pip install" in peer["measured"]
    text = markdown(result)
    assert "not measured" in text and "## Goals" in text
