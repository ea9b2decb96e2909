"""A warm standby: a second ``trustplane worker`` with the same worker id waits, decides
nothing, and takes over at once when the deciding one is SIGKILLed."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from streams import kafka
from streams.config import Settings
from streams.dev.estate import setup_estate
from streams.gate.state import KafkaAgentStates
from streams.operator import ensure_local_keys
from tests.conftest import WorkerProcess, free_port
from tests.integration.test_gate_state_auth import replay
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
    # its warm copy of the agents' state knows what the dead process approved
    again = replay(settings, before)
    assert again.topic == "denied", "a replay was approved again after the takeover"


# -- the standby's warm agent state ----------------------------------------------------------


def _write(settings: Settings, writer: KafkaAgentStates, changes: dict[tuple[int, str], int]):
    """Commit ``changes`` ((partition, agent) -> how many writes) to gate-state, sealed as
    the gate seals them, one record per write."""
    producer = kafka.producer(settings)
    for (partition, agent), times in changes.items():
        for _ in range(times):
            writer.get(partition, agent)
            writer.touched(partition, agent)
            for record in writer.changes():
                producer.produce(
                    record.topic, key=record.key, value=record.value, partition=record.partition
                )
    assert producer.flush(10) == 0


def _writes(states: KafkaAgentStates, partition: int) -> dict[str, int]:
    return {agent: state["_writes"] for agent, state in states.agents(partition)}


def _follow_until(states: KafkaAgentStates, count: int, timeout: float = 30.0) -> None:
    applied, deadline = 0, time.monotonic() + timeout
    while applied < count and time.monotonic() < deadline:
        applied += states.follow(0.2)
    assert applied == count


def test_a_followed_partition_restores_only_its_tail_and_ends_as_a_full_restore(
    settings: Settings,
) -> None:
    ensure_local_keys(settings)
    writer = KafkaAgentStates(settings, [])
    standby = KafkaAgentStates(settings, [])
    try:
        _write(settings, writer, {(0, "a"): 3, (1, "b"): 2, (2, "c"): 1})
        _follow_until(standby, 6)
        assert _writes(standby, 0) == {"a": 3}
        # the deciding worker goes on; then the standby takes over partitions 0 and 1 only
        _write(settings, writer, {(0, "a"): 1, (1, "d"): 1})
        forged = kafka.producer(settings)  # an intruder's record: the seal refuses it
        forged.produce(settings.topic("gate-state"), key=b"e", value=b"{}", partition=0)
        assert forged.flush(10) == 0

        tail = standby.restore([0, 1])

        assert tail == 3  # what came since it followed: not the 8 records from the start
        full = KafkaAgentStates(settings, [])
        try:
            assert full.restore([0, 1]) == 8
            for partition in (0, 1):
                assert _writes(standby, partition) == _writes(full, partition)
            assert standby.failed(0, "e") == full.failed(0, "e") is not None
        finally:
            full.close()
        assert _writes(standby, 0) == {"a": 4}  # e is not trusted: no state of its own
        assert standby.agents(2) == []  # not taken over: dropped
        # following ended with the takeover: a later restore reads from the beginning
        assert standby.restore([0]) == 5
    finally:
        writer.close()
        standby.close()


def test_a_restore_waits_for_a_transaction_still_open_on_the_changelog(
    settings: Settings,
) -> None:
    """The previous owner's last batch may still be open when a worker restores: its
    offsets may yet commit, and then this worker never decides that batch again, so its
    state writes must be in the restored state. A chaos run found the miss: the restore
    ended at the last stable offset, the next write repeated a write count, and the
    agents' state was distrusted."""
    ensure_local_keys(settings)
    writer = KafkaAgentStates(settings, [])
    reader = KafkaAgentStates(settings, [])
    previous = kafka.transactional_producer(settings, f"{settings.group_id}.previous-owner")
    previous.init_transactions(30)
    try:
        _write(settings, writer, {(0, "a"): 1})
        for outcome, writes in (("commit", 2), ("abort", 2)):
            previous.begin_transaction()
            writer.get(0, "a")
            writer.touched(0, "a")
            for record in writer.changes():
                previous.produce(record.topic, key=record.key, value=record.value, partition=0)
            assert previous.flush(10) == 0  # written, not committed
            restoring = threading.Thread(target=reader.restore, args=([0],))
            restoring.start()
            restoring.join(2.0)
            assert restoring.is_alive(), "the restore ended before the open transaction did"
            if outcome == "commit":
                previous.commit_transaction(30)
            else:
                previous.abort_transaction(30)
            restoring.join(30)
            assert not restoring.is_alive()
            assert _writes(reader, 0) == {"a": writes}, outcome
    finally:
        writer.close()
        reader.close()


def test_a_takeover_waits_for_the_previous_owners_offsets_to_be_decided(
    settings: Settings,
) -> None:
    """The new owner reads its agents' state only once the previous owner's last
    transaction, which added the partition's offsets, has committed or aborted: reading
    before that could miss the batch's state writes, then never decide the batch again."""
    tp = TopicPartition(settings.topic("intents"), 0)
    group = f"{settings.group_id}.stable-offsets"
    previous = kafka.transactional_producer(settings, f"{settings.group_id}.offsets-owner")
    previous.init_transactions(30)
    owner = kafka.consumer(settings, group)
    successor = kafka.consumer(settings, group)
    try:
        previous.begin_transaction()
        previous.send_offsets_to_transaction(
            [TopicPartition(tp.topic, tp.partition, 7)], owner.consumer_group_metadata(), 30
        )
        decided: list[bool] = []
        waiting = threading.Thread(
            target=lambda: decided.append(kafka.await_stable_offsets(successor, [tp]))
        )
        waiting.start()
        waiting.join(2.0)
        assert waiting.is_alive(), "the offsets were read while their transaction was open"
        previous.commit_transaction(30)
        waiting.join(30)
        assert decided == [True]
        assert successor.committed([tp], timeout=10)[0].offset == 7
    finally:
        previous.flush(5)
        owner.close()
        successor.close()
