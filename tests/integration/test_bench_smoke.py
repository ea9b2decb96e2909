"""The benchmark's quick mode end to end on the session broker (a smoke: no speed is
asserted, only that it completes and writes sane result files)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.e2e.cli import main as bench_main
from streams.config import Settings


@pytest.mark.broker
@pytest.mark.timeout(600)
def test_quick_bench_completes_and_writes_its_results(
    kafka_bootstrap: str,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_factory()
    # the bench's clients and workers on the test broker: its admin (the test's settings
    # factory already points TRUSTPLANE_KAFKA_CREDENTIALS_DIR at the passwords)
    monkeypatch.setenv("TRUSTPLANE_KAFKA_PRINCIPAL", "admin")
    output = tmp_path / "results"
    code = bench_main(
        [
            "--quick",
            "--bootstrap", kafka_bootstrap,
            "--state-dir", str(settings.state_dir),
            "--output", str(output),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0, captured.err
    assert "| setup | offered |" in printed  # the table is printed

    result = json.loads((output / "quick.json").read_text())
    assert (output / "quick.md").read_text().startswith("# trustplane benchmark: quick run")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        assert (output / "quick.png").stat().st_size > 10_000

    assert result["mode"] == "quick"
    assert result["workload"]["agents"] >= 50
    assert result["crypto_floor"]["cpu_us_per_intent"] > 0
    assert result["gate_in_process"]["outcomes"] == {
        "approved": result["gate_in_process"]["intents"]
    }
    assert {b["mode"] for b in result["baselines"]} == {"plain", "txn"}
    assert [g["workers"] for g in result["gate"]] == [1]
    for scenario in [*result["baselines"], *result["gate"]]:
        names = [p["name"] for p in scenario["phases"]]
        assert "max" in names
        for phase in scenario["phases"]:
            # every intent got exactly one outcome, and the gate approved (nearly) all
            assert phase["decided"] == phase["intents"] > 0
            assert phase["duplicates"] == 0
            assert phase["outcomes"]["approved"] >= 0.95 * phase["intents"]
            latency = phase["latency"]
            assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["p99.9_ms"]
            assert phase["throughput"] > 0
            assert phase["histogram"]
    gate = result["gate"][0]["phases"]
    assert all(p["cpu_us_per_intent"]["workers"] > 0 for p in gate if p["name"] == "max")
    goals = {g["goal"].split(" (")[0].split(",")[0]: g for g in result["goals"]}
    assert set(goals) >= {
        "CPU per decision / the peer's signed path",
        "CPU per decision / the libsodium crypto floor",
        "capacity",
        "idle p50",
    }
    side = result["side_by_side"]
    assert side["gate_us"] > side["floor_us"] > 0
    # the peer is in the dev extra: it is measured, and its ratio is the goal's figure
    assert side["peer"]["signed_us"] > side["peer"]["full_stack_us"] > 0
    assert (
        f"x{side['peer_ratio']:.2f}"
        in goals["CPU per decision / the peer's signed path"]["measured"]
    )
