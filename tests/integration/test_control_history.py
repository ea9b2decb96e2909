"""Control history that cannot be silently edited: each attack performed on a real broker.

The reviewer's findings, reproduced and refused: tombstones, junk and a genuine command
under the wrong key (which erased facts on the compacted topic), a command whose
predecessor never appeared, a subset of a genuine history on a fresh topic, records
deleted from the log's start, a future-dated command, a retired key signing inside its
old window. Each is refused (lineage, metric) or detected (the worker refuses to start),
and a worker started afterwards still has every fact in force.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from processors.control import (
    ChainLink,
    Signer,
    command_digest,
    command_signing_message,
    sign_command,
)
from processors.crypto.keys import KeyEntry, Keyset, generate_signing_key, load_private_key
from streams import kafka
from streams.codec import default_codec
from streams.config import Settings
from streams.dev.estate import Estate, setup_estate
from streams.operator import OperatorClient
from streams.sdk.client import OutcomeReader
from tests.conftest import WorkerProcess, http_json
from tests.integration.test_responses import decide, reasons

pytestmark = pytest.mark.broker

HOUR_MS = 3_600_000
AS_DEPLOYED = {
    "cleanup.policy": "delete",
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "message.timestamp.type": "LogAppendTime",
}
"""How ``control`` is deployed (streams/topics.py sets it on new topics)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def control_as_deployed(settings: Settings) -> Settings:
    """Make sure the test's control topic is configured as deployed (a no-op once
    streams/topics.py creates it so): never compacted, kept for ever, broker time."""
    admin = kafka.admin(settings)
    resource = ConfigResource(
        ResourceType.TOPIC,
        settings.topic("control"),
        incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
            for name, value in AS_DEPLOYED.items()
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)
    # the broker applies a topic's new config a moment after it acknowledged it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, resource.name)])
        config = next(iter(described.values())).result(30)
        if all(config[name].value == value for name, value in AS_DEPLOYED.items()):
            time.sleep(0.5)
            return settings
        time.sleep(0.2)
    raise AssertionError(f"{resource.name} not configured as deployed within 30 s")


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return control_as_deployed(settings_factory())


@pytest.fixture
def estate(settings: Settings) -> Estate:
    return setup_estate(settings)


def produce(settings: Settings, key: bytes | None, value: bytes | None) -> None:
    """What an attacker with write access to ``control`` (and no operator key) can do."""
    producer = kafka.producer(settings)
    producer.produce(settings.topic("control"), key=key, value=value)
    assert producer.flush(10) == 0


def control_records(settings: Settings) -> list[tuple[bytes | None, bytes | None, dict | None]]:
    """Every record of the control topic: key, value, decoded command."""
    consumer = kafka.consumer(settings, f"reader-{time.time_ns()}")
    tp = TopicPartition(settings.topic("control"), 0, 0)
    _, high = consumer.get_watermark_offsets(tp, timeout=10)
    consumer.assign([tp])
    codec, records = default_codec(), []
    deadline = time.monotonic() + 30
    while len(records) < high and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        value = message.value()
        try:
            decoded = codec.decode(value, "ControlCommand") if value else None
        except Exception:  # noqa: BLE001 - the attacks' junk
            decoded = None
        records.append((message.key(), value, decoded))
    consumer.close()
    return records


def control_events(settings: Settings, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The workers' control lineage events (applied and refused), at least ``count``."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    with OutcomeReader(settings, ["lineage"]) as reader:
        while len(events) < count and time.monotonic() < deadline:
            for received in reader.read(timeout=0.5):
                record = received.record or {}
                if record.get("stage") == "control":
                    events.append(record)
    return events


def refused(events: list[dict[str, Any]]) -> list[str]:
    return [
        f"{e['status']}: {'; '.join(e['reasons'])}"
        for e in events
        if e["event_type"] == "control.refused"
    ]


def health(worker: WorkerProcess) -> dict[str, Any]:
    document = worker.health()
    assert document is not None
    return document


def control_view(worker: WorkerProcess) -> dict[str, Any]:
    document = http_json(f"{worker.web}/control", timeout=5)
    assert isinstance(document, dict)
    return document


def metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in worker.metrics().splitlines():
        if line.startswith(f"{name}{{{want}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def refuses_to_start(worker: WorkerProcess, *expected: str) -> str:
    """Start a worker that must exit (non-zero) without ever being ready; its log."""
    worker.start(wait_ready=False)
    code = worker.wait_exit(90)
    log = worker.log(20_000)
    assert code != 0, log
    assert not worker.ready()
    for text in expected:
        assert text in log, log
    return log


# --- the reviewer's erasure, and what a restarted worker still has in force ----------------


def test_erasure_is_refused_and_a_restarted_worker_keeps_every_fact(
    settings: Settings, estate: Estate, worker_factory: Callable[[Settings], WorkerProcess]
) -> None:
    first = worker_factory(settings).start()
    with OperatorClient(settings) as operator:
        operator.send("agent.revoke", {"agent_id": "billing-agent", "reason": "key stolen"})
        operator.send("agent.quarantine", {"agent_id": "ops-agent", "reason": "host rebuilt"})
        operator.send(
            "killswitch.engage",
            {"scope": "global", "target": "*", "reason": "incident 42"},
            subject="killswitch/global/*",
        )
    genuine = [r for r in control_records(settings) if r[2] is not None]
    registration = next(r for r in genuine if r[2]["kind"] == "agent.register")
    stranger = generate_signing_key("mallory")
    forged = sign_command(
        "killswitch.release",
        "killswitch/global/*",
        {"scope": "global", "target": "*"},
        stranger,
        "mallory",
        link=ChainLink.first(),
    )

    # the attacks: two tombstones and junk under the facts' keys, a genuine command
    # under another key, a forged release under the right key
    produce(settings, b"billing-agent/status/revocation", None)
    produce(settings, b"ops-agent/status/quarantine", None)
    produce(settings, b"killswitch/global/*", b"\xc3\x01 junk, not a command")
    produce(settings, b"killswitch/global/*", registration[1])
    produce(settings, b"killswitch/global/*", default_codec().encode("ControlCommand", forged))

    stopped = decide(settings, estate.intent("support-bot", "tickets.reply", "ticket:1"))
    assert stopped.topic == "denied" and "kill switch (global)" in reasons(stopped)
    alerts = refused(control_events(settings, len(genuine) + 5))
    assert len(alerts) == 5, alerts
    assert any(a.startswith("tombstone: a tombstone") and "revocation" in a for a in alerts)
    assert any(a.startswith("tombstone: a tombstone") and "quarantine" in a for a in alerts)
    assert any(a.startswith("undecodable: not a ControlCommand record") for a in alerts)
    assert any(
        "stored under key 'killswitch/global/*', but its subject is 'billing-agent'" in a
        for a in alerts
    )
    assert any("key_id 'mallory' is not an operator key" in a for a in alerts)
    assert metric(first, "trustplane_control_commands_total", kind="tombstone:refused") == 2
    assert metric(first, "trustplane_control_commands_total", kind="undecodable:refused") == 1
    # /control shows what was applied, never the refused records
    view = control_view(first)
    assert view["killswitch/global/*"]["kind"] == "killswitch.engage"
    assert view["billing-agent/status/revocation"]["kind"] == "agent.revoke"
    assert view["ops-agent/status/quarantine"]["kind"] == "agent.quarantine"
    assert view["billing-agent"]["kind"] == "agent.register"
    assert all(v["signer"] == f"operator key '{registration[2]['key_id']}'" for v in view.values())

    first.kill()
    restarted = worker_factory(settings).start()
    state = health(restarted)
    # where the restart's time went, from the process's creation to its first assignment
    phases = state["startup"]["phases"]
    assert list(phases) == [
        "process",
        "broker",
        "topics",
        "gate",
        "host",
        "control",
        "transactions",
        "deciding",
    ]
    assert state["startup"]["ready_after_s"] == pytest.approx(sum(phases.values()), abs=0.01)
    assert state["killswitch"]["global"] is True
    assert state["control"]["agents_by_status"]["revoked"] == 1
    assert state["control"]["agents_by_status"]["quarantined"] == 1
    assert state["control"]["history"]["problems"] == []
    assert control_view(restarted)["killswitch/global/*"]["kind"] == "killswitch.engage"
    stopped = decide(settings, estate.intent("support-bot", "tickets.reply", "ticket:2"))
    assert stopped.topic == "denied" and "kill switch (global)" in reasons(stopped)

    with OperatorClient(settings) as operator:
        operator.send("killswitch.release", {"scope": "global"}, subject="killswitch/global/*")
    revoked = decide(settings, estate.intent("billing-agent", "invoices.read", "invoice:1"))
    assert revoked.topic == "denied" and "revoked" in reasons(revoked)
    quarantined = decide(settings, estate.intent("ops-agent", "reports.read", "r:1"))
    assert quarantined.topic == "denied" and "quarantined" in reasons(quarantined)
    assert decide(settings, estate.intent("support-bot", "tickets.reply", "t:3")).topic == (
        "approved"
    )


# --- time: the broker's append time judges every command --------------------------------


def test_a_future_dated_command_is_refused_now_and_after_a_restart(
    settings: Settings, estate: Estate, worker_factory: Callable[[Settings], WorkerProcess]
) -> None:
    first = worker_factory(settings).start()
    switch = {"scope": "agent", "target": "support-bot", "reason": "a time bomb"}
    with OperatorClient(settings) as operator:
        bomb = operator.send(
            "killswitch.engage",
            switch,
            subject="killswitch/agent/support-bot",
            now_ms=now_ms() + HOUR_MS,
        )
        after = operator.send("agent.suspend", {"agent_id": "deploy-bot", "reason": "audit"})
    assert after["sequence"] == bomb["sequence"] + 1, "the refused command keeps its place"
    assert decide(settings, estate.intent("support-bot", "tickets.reply", "t:1")).topic == (
        "approved"
    )
    alerts = refused(control_events(settings, 1))
    assert any("a command dated in the future is refused, for ever" in a for a in alerts), alerts
    assert "killswitch/agent/support-bot" not in control_view(first)
    assert control_view(first)["deploy-bot/status/suspension"]["kind"] == "agent.suspend"

    first.kill()
    restarted = worker_factory(settings).start()  # rebuilt later: the same verdict
    assert health(restarted)["killswitch"]["agents"] == []
    assert decide(settings, estate.intent("support-bot", "tickets.reply", "t:2")).topic == (
        "approved"
    )
    suspended = decide(settings, estate.intent("deploy-bot", "deploy.run", "svc:1"))
    assert suspended.topic == "denied" and "suspended" in reasons(suspended)


def test_a_retired_key_cannot_sign_inside_its_old_window(
    settings: Settings, estate: Estate, worker_factory: Callable[[Settings], WorkerProcess]
) -> None:
    old = generate_signing_key("ops-2024")
    retired_at = now_ms() - 10 * 60_000
    keyset_path = settings.resolved_operator_keys_path
    current = Keyset.from_file(keyset_path)
    keys = [current[kid] for kid in current]
    keys.append(KeyEntry(old.kid, old.public_key, retired_at - 24 * HOUR_MS, retired_at))
    keyset_path.write_text(json.dumps(Keyset(keys).to_jwks(), indent=2))

    first = worker_factory(settings).start()
    switch = {"scope": "agent", "target": "support-bot", "reason": "incident 9"}
    with OperatorClient(settings) as operator:
        operator.send("killswitch.engage", switch, subject="killswitch/agent/support-bot")
    release = sign_command(
        "killswitch.release",
        "killswitch/agent/support-bot",
        {"scope": "agent", "target": "support-bot"},
        old,
        "operator",
        now_ms=retired_at - 5 * 60_000,  # inside the key's old window
        link=ChainLink.first(),
    )
    produce(
        settings, b"killswitch/agent/support-bot", default_codec().encode("ControlCommand", release)
    )
    stopped = decide(settings, estate.intent("support-bot", "tickets.reply", "t:1"))
    assert stopped.topic == "denied" and "kill switch (agent 'support-bot')" in reasons(stopped)
    alerts = refused(control_events(settings, 1))
    assert any(
        "key_id 'ops-2024' is not an operator key valid at" in a
        and "(when the broker appended it)" in a
        for a in alerts
    ), alerts

    first.kill()
    restarted = worker_factory(settings).start()  # starts: the forgery breaks no history
    assert health(restarted)["killswitch"]["agents"] == ["support-bot"]
    stopped = decide(settings, estate.intent("support-bot", "tickets.reply", "t:2"))
    assert stopped.topic == "denied" and "kill switch" in reasons(stopped)


# --- missing history: workers refuse to start ----------------------------------------------


def test_a_command_whose_predecessor_never_appeared_stops_every_worker(
    settings: Settings, estate: Estate, worker_factory: Callable[[Settings], WorkerProcess]
) -> None:
    running = worker_factory(settings).start()
    operator_key = load_private_key(settings.resolved_operator_key_path)
    with OperatorClient(settings) as operator:
        erased = operator.command("agent.revoke", {"agent_id": "deploy-bot", "reason": "x"})
    digest = digest_of(erased)
    later = sign_command(
        "agent.suspend",
        None,
        {"agent_id": "support-bot", "reason": "after the erased revocation"},
        operator_key,
        "operator",
        link=ChainLink(erased["sequence"] + 1, digest),
    )
    produce(settings, later["subject"].encode(), default_codec().encode("ControlCommand", later))
    signer = Signer("operator", operator_key.kid)
    expected = f"gap in the history of {signer}: sequence {erased['sequence']} missing"

    deadline = time.monotonic() + 30
    while expected not in running.log(20_000) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "ControlHistoryError" in running.log(20_000) and expected in running.log(20_000)
    with pytest.raises(AssertionError, match="no outcome"):  # the running worker stopped deciding
        decide(settings, estate.intent("support-bot", "tickets.reply", "t:1"), timeout=10)
    running.stop()
    log = refuses_to_start(worker_factory(settings), "ControlHistoryError", expected, "hint:")
    assert f"retire key {operator_key.kid!r}" in log


def test_a_subset_of_a_genuine_history_on_a_fresh_topic_is_detected(
    settings: Settings,
    estate: Estate,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[[Settings], WorkerProcess],
) -> None:
    with OperatorClient(settings) as operator:
        operator.send("agent.revoke", {"agent_id": "billing-agent", "reason": "key stolen"})
        operator.send("agent.suspend", {"agent_id": "support-bot", "reason": "audit"})
    records = control_records(settings)
    # the same keys, another (fresh) control topic holding every record but the revocation
    fresh = control_as_deployed(settings_factory(keys_dir=settings.resolved_keys_dir))
    producer = kafka.producer(fresh)
    for key, value, decoded in records:
        if decoded is None or decoded["kind"] != "agent.revoke":
            producer.produce(fresh.topic("control"), key=key, value=value)
    assert producer.flush(10) == 0
    revocation = next(d for _, _, d in records if d and d["kind"] == "agent.revoke")
    refuses_to_start(
        worker_factory(fresh),
        "ControlHistoryError",
        f"sequence {revocation['sequence']} missing",
    )
    # the genuine topic still starts a worker, with the revocation in force
    worker = worker_factory(settings).start()
    assert health(worker)["control"]["agents_by_status"]["revoked"] == 1


def test_records_deleted_from_the_start_are_detected(
    settings: Settings, estate: Estate, worker_factory: Callable[[Settings], WorkerProcess]
) -> None:
    admin = kafka.admin(settings)
    deleted = admin.delete_records([TopicPartition(settings.topic("control"), 0, 2)])
    for future in deleted.values():
        future.result(30)
    refuses_to_start(
        worker_factory(settings),
        "ControlHistoryError",
        f"{settings.topic('control')} [0] starts at offset 2: records 0-1 were deleted",
    )


def digest_of(record: dict[str, Any]) -> str:
    message = command_signing_message(
        payload=json.loads(record["payload"]),
        **{k: record[k] for k in ("command_id", "kind", "subject", "issued_by", "issued_at_ms")},
        key_id=record["key_id"],
        link=ChainLink(record["sequence"], record["previous"]),
    )
    return command_digest(message)


def test_two_clients_with_one_key_never_fork_its_history(settings: Settings) -> None:
    """Two operators with the same key publish at once: the one fenced by the other's
    start reads the history again and takes the next place."""
    from processors.control import ControlState
    from streams.gate.control import ControlFollower

    alice, bob = OperatorClient(settings), OperatorClient(settings)
    first = alice.send("agent.suspend", {"agent_id": "a-1", "reason": "one"})
    second = bob.send("agent.suspend", {"agent_id": "a-2", "reason": "two"})  # fences alice
    third = alice.send("agent.suspend", {"agent_id": "a-3", "reason": "three"})
    assert [first["sequence"], second["sequence"], third["sequence"]] == [0, 1, 2]
    assert third["previous"] == digest_of(second)

    state = ControlState(Keyset.from_file(settings.resolved_operator_keys_path))
    follower = ControlFollower(settings, state)
    try:
        follower.catch_up(timeout=30)
    finally:
        follower.close()
    assert not state.problems and state.commands_applied == 3
