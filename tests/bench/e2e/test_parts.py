"""The benchmark's building blocks, without Kafka."""

from __future__ import annotations

from bench.e2e.procs import intent_id_of
from bench.e2e.profile import summarize
from bench.e2e.stats import Latency
from bench.e2e.workload import BenchEstate, Workload, _smooth_cycle
from processors.layers.anomaly import AnomalyConfig
from streams.codec import default_codec
from streams.config import Settings


def test_smooth_cycle_spreads_each_index_by_its_weight():
    order = _smooth_cycle([3, 3, 2, 1, 1])
    assert sorted(order) == [0, 0, 0, 1, 1, 1, 2, 2, 3, 4]
    assert all(a != b for a, b in zip(order, order[1:], strict=False))  # no repeats


def test_the_workload_is_signed_and_the_intent_id_is_read_from_the_bytes():
    estate = BenchEstate(40)
    intents = Workload(estate).build(120)
    codec = default_codec()
    assert len(intents) == 120
    assert len(set(intents.ids)) == 120
    for key, value, intent_id in zip(intents.keys, intents.values, intents.ids, strict=True):
        record = codec.decode(value, "Intent")
        assert record["intent_id"] == intent_id == intent_id_of(value, 0)
        assert record["agent_id"].encode() == key
        assert len(record["signature"]) == 64
    # every agent's sequence starts at 1 and has no gaps
    sequences: dict[str, list[int]] = {}
    for value in intents.values:
        record = codec.decode(value, "Intent")
        sequences.setdefault(record["agent_id"], []).append(record["sequence"])
    assert all(seq == list(range(1, len(seq) + 1)) for seq in sequences.values())


def test_the_anomaly_safe_rate_grows_with_the_estate():
    config = AnomalyConfig.from_file(Settings().anomaly_config_path)
    small, _ = Workload(BenchEstate(100)).anomaly_safe_rate(config)
    large, binding = Workload(BenchEstate(1000)).anomaly_safe_rate(config)
    assert 0 < small < large
    assert large > 2000, binding


def test_latency_summary_is_in_milliseconds():
    latency = Latency()
    for ms in range(1, 101):
        latency.record_ns(ms * 1_000_000)
    summary = latency.summary()
    assert 49 <= summary["p50_ms"] <= 51
    assert 98 <= summary["p99_ms"] <= 100.1
    assert latency.encode()


def test_py_spy_raw_profiles_are_summarized_per_thread():
    raw = "\n".join(
        [
            "thread (1): gate-worker;run (w.py:1);decide (g.py:2);sign (k.py:3) 30",
            "thread (1): gate-worker;run (w.py:1);decide (g.py:2) 10",
            "thread (2): MainThread;select (selectors.py:9) 60",
        ]
    )
    summary = summarize(raw)
    assert summary["samples"] == 100
    gate = summary["threads"]["gate-worker"]
    assert gate["share"] == 0.4
    assert gate["top_own"][0] == ("sign (k.py)", 0.75)
    assert dict(gate["top_inclusive"])["decide (g.py)"] == 1.0
