"""The labelled synthetic workload: deterministic, well-formed, realistic enough."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from datetime import UTC, datetime

import pytest

from bench.evaluation.workload import (
    BENIGN,
    DAY_MS,
    DEFAULT_START_MS,
    SCENARIOS,
    Workload,
    WorkloadError,
    generate,
)
from processors.intent import Intent
from streams.sdk.client import new_intent


@pytest.fixture(scope="module")
def workload() -> Workload:
    return generate(seed=11, duration_ms=3 * DAY_MS)


def _hour(ms: int) -> tuple[int, int]:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.weekday(), moment.hour


def _benign(workload: Workload, agent: str, action: str | None = None):
    return [
        item
        for item in workload.items
        if item.label == BENIGN
        and item.agent == agent
        and (action is None or item.record["action"] == action)
    ]


def test_generation_is_deterministic_per_seed():
    first = generate(seed=5, duration_ms=DAY_MS * 2)
    again = generate(seed=5, duration_ms=DAY_MS * 2)
    other = generate(seed=6, duration_ms=DAY_MS * 2)
    assert first.items == again.items
    assert first.scenarios == again.scenarios
    assert [i.record["intent_id"] for i in first.items] != [
        i.record["intent_id"] for i in other.items
    ]


def test_items_are_time_ordered_and_labelled(workload: Workload):
    times = [item.time_ms for item in workload.items]
    assert times == sorted(times)
    assert workload.items[0].time_ms >= DEFAULT_START_MS
    labels = workload.labels()
    assert set(labels) == {BENIGN, *SCENARIOS}
    assert labels[BENIGN] > 5_000
    assert set(workload.scenarios) == set(SCENARIOS)
    for name, scenario in workload.scenarios.items():
        assert scenario.intents == labels[name]
        assert scenario.start_ms <= scenario.end_ms
        assert scenario.expected_layer in ("integrity", "anomaly")
        assert workload.start_ms + 0.45 * workload.duration_ms <= scenario.start_ms


def test_items_are_tuples_of_record_label_agent_time(workload: Workload):
    record, label, agent, time_ms = workload.items[0]
    assert record["agent_id"] == agent
    assert record["issued_at_ms"] == time_ms
    assert isinstance(label, str)


def test_records_are_shaped_like_the_sdk_builds_them(workload: Workload):
    shape = set(new_intent("a", "b.c", "r:1", sequence=1))
    for item in workload.items:
        assert set(item.record) == shape
        assert item.record["signature"] is None
        assert item.record["expires_at_ms"] - item.record["issued_at_ms"] == workload.ttl_ms
        intent = Intent.from_record(item.record, key=item.agent.encode())
        assert intent.agent_id == item.agent


def test_records_carry_no_labels(workload: Workload):
    """The detectors must not be able to read the answer off the record."""
    for item in workload.items:
        flat = repr(item.record)
        assert "benign" not in flat
        assert not any(name in flat for name in SCENARIOS)


def test_sequences_increase_per_agent_except_replays(workload: Workload):
    last: dict[str, int] = {}
    seen: set[str] = set()
    for item in workload.items:
        if item.label == "replay":
            assert item.record["intent_id"] in seen
            continue
        seen.add(item.record["intent_id"])
        assert item.record["sequence"] == last.get(item.agent, 0) + 1
        last[item.agent] = item.record["sequence"]


def test_ids_and_nonces_are_unique_except_replays(workload: Workload):
    ids = Counter(i.record["intent_id"] for i in workload.items if i.label != "replay")
    nonces = Counter(i.record["nonce"] for i in workload.items if i.label != "replay")
    assert max(ids.values()) == 1 and max(nonces.values()) == 1


# --------------------------------------------------------------------------- benign patterns


def test_billing_pays_in_business_hours_with_log_normal_amounts(workload: Workload):
    transfers = _benign(workload, "billing-agent", "payments.transfer")
    assert len(transfers) > 400
    for item in transfers:
        weekday, hour = _hour(item.time_ms)
        assert weekday < 5 and 8 <= hour < 18
    amounts = [item.record["parameters"]["amount"] for item in transfers]
    assert all(a > 0 for a in amounts)
    logs = [math.log(a) for a in amounts]
    assert 700 < math.exp(statistics.median(logs)) < 1_050
    assert 0.55 < statistics.stdev(logs) < 0.85
    reads = _benign(workload, "billing-agent", "invoices.read")
    assert len(reads) == len(transfers), "every payment reads its invoice first"


def test_the_support_bot_is_busier_by_day_than_by_night(workload: Workload):
    reads = _benign(workload, "support-bot", "tickets.read")
    by_hour = Counter(_hour(item.time_ms)[1] for item in reads)
    night = sum(by_hour[h] for h in range(0, 6))
    day = sum(by_hour[h] for h in range(10, 16))
    assert day > 4 * night > 0
    emails = _benign(workload, "support-bot", "email.send")
    assert 0.3 < len(emails) / len(reads) < 0.6
    assert {item.record["resource"].split(":")[0] for item in emails} == {"customer"}


def test_analytics_exports_only_to_its_usual_bucket(workload: Workload):
    exports = _benign(workload, "analytics-agent", "warehouse.export")
    assert len(exports) >= 3
    assert {e.record["parameters"]["destination"] for e in exports} == {
        "s3://acme-analytics-reports"
    }
    queries = _benign(workload, "analytics-agent", "warehouse.query")
    assert len(queries) > 10 * len(exports)


def test_the_deploy_bot_deploys_from_ci(workload: Workload):
    deploys = _benign(workload, "deploy-bot")
    actions = Counter(item.record["action"] for item in deploys)
    assert set(actions) == {"deploy.staging", "deploy.production"}
    assert actions["deploy.staging"] > 3 * actions["deploy.production"] > 0
    assert all(item.record["context"]["trigger"] == "ci" for item in deploys)
    for item in deploys:
        if item.record["action"] == "deploy.production":
            weekday, hour = _hour(item.time_ms)
            assert weekday < 5 and 14 <= hour < 17


def test_benign_intents_come_from_the_registered_runtimes(workload: Workload):
    for item in workload.items:
        if item.label != "tampered_runtime":
            assert item.record["runtime"] == dict(workload.agents[item.agent].runtime)


def test_weekends_are_quiet_for_billing():
    week = generate(seed=2, duration_ms=7 * DAY_MS, scenarios=())
    weekend = [
        item for item in week.items if item.agent == "billing-agent" and _hour(item.time_ms)[0] >= 5
    ]
    assert weekend == []


# --------------------------------------------------------------------------- attacks


def test_tampered_runtime(workload: Workload):
    items = workload.of("tampered_runtime")
    registered = workload.agents["billing-agent"].runtime
    assert items and all(
        i.record["runtime"]["code_digest"] != registered["code_digest"] for i in items
    )
    assert all(i.record["runtime"]["runtime_id"] == registered["runtime_id"] for i in items)


def test_replays_are_verbatim_copies_within_the_ttl(workload: Workload):
    originals = {i.record["intent_id"]: i for i in workload.items if i.label == BENIGN}
    replays = workload.of("replay")
    assert len(replays) == 6
    for replay in replays:
        original = originals[replay.record["intent_id"]]
        assert replay.record == original.record
        assert replay.record is not original.record
        assert 0 < replay.time_ms - original.time_ms < workload.ttl_ms


def test_runaway_loop(workload: Workload):
    items = workload.of("runaway_loop")
    assert len(items) >= 300
    assert items[-1].time_ms - items[0].time_ms < 60_000
    assert len({(i.record["action"], i.record["resource"]) for i in items}) == 1


def test_slow_drip_exfiltration(workload: Workload):
    items = workload.of("slow_drip_exfiltration")
    reads = [i for i in items if i.record["action"] == "warehouse.query"]
    exports = [i for i in items if i.record["action"] == "warehouse.export"]
    assert len(reads) >= 200 and len(exports) >= 1
    assert max(r.time_ms for r in reads) < min(e.time_ms for e in exports)
    gaps = [b.time_ms - a.time_ms for a, b in zip(reads, reads[1:], strict=False)]
    assert min(gaps) >= 60_000, "slow: never more than one read a minute"
    usual = {
        i.record["parameters"].get("destination")
        for i in _benign(workload, "analytics-agent", "warehouse.export")
    }
    assert all(e.record["parameters"]["destination"] not in usual for e in exports)


def test_novel_destructive_action(workload: Workload):
    items = workload.of("novel_destructive_action")
    assert {(i.record["action"], i.record["resource"]) for i in items} == {
        ("db.drop", "db:production")
    }
    assert not any(i.record["action"] == "db.drop" for i in workload.of(BENIGN))


def test_amount_escalation(workload: Workload):
    amounts = [i.record["parameters"]["amount"] for i in workload.of("amount_escalation")]
    benign = statistics.median(
        i.record["parameters"]["amount"]
        for i in _benign(workload, "billing-agent", "payments.transfer")
    )
    assert amounts[0] < 2 * benign
    assert amounts[-1] > 100 * benign
    assert all(b > a * 0.95 for a, b in zip(amounts, amounts[1:], strict=False))


# --------------------------------------------------------------------------- options


def test_benign_only_and_a_subset_of_scenarios():
    assert set(generate(seed=1, duration_ms=DAY_MS, scenarios=()).labels()) == {BENIGN}
    only = generate(seed=1, duration_ms=2 * DAY_MS, scenarios=["runaway_loop"])
    assert set(only.scenarios) == {"runaway_loop"}


def test_a_fleet_has_several_agents_per_role():
    fleet = generate(seed=1, duration_ms=DAY_MS, scenarios=(), fleet=3)
    assert {"billing-agent", "billing-agent-2", "billing-agent-3"} <= set(fleet.agents)
    assert len(fleet.agents) == 12
    assert {item.agent for item in fleet.items} == set(fleet.agents)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"duration_ms": 0}, "duration_ms must be > 0"),
        ({"fleet": 0}, "fleet must be >= 1"),
        ({"ttl_ms": 0}, "ttl_ms must be > 0"),
        ({"scenarios": ["sql_injection"]}, "unknown scenarios"),
    ],
)
def test_bad_arguments_are_typed_errors(kwargs, message):
    with pytest.raises(WorkloadError, match=message):
        generate(seed=1, **kwargs)


def test_summary(workload: Workload):
    assert workload.summary().startswith("seed 11: ")
    assert "runaway_loop 400" in workload.summary()
