"""Only the gate's own writes to gate-state count: the reproduced attack, on the real broker.

Before: one forged empty state record on ``gate-state`` and a worker restart wiped an
agent's replay memory and approval ledger, and an exact replay was approved a second time;
one non-JSON record crashed the worker on every start.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from processors.layers.integrity import RESET_KIND, state_reset_subject
from streams import kafka
from streams.config import Settings
from streams.dev.estate import Estate, setup_estate
from streams.operator import OperatorClient
from streams.sdk.client import IntentPublisher, OutcomeReader, Received

pytestmark = pytest.mark.broker


# -- helpers (test_replay.py uses them too) ------------------------------------------------


def wait_for(reader: OutcomeReader, intent_id: str, *, timeout: float = 30.0) -> Received:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for received in reader.read(timeout=0.5):
            if received.record and received.record.get("intent_id") == intent_id:
                return received
    raise AssertionError(f"no outcome for {intent_id} within {timeout} s")


def decide(settings: Settings, intent: dict[str, Any]) -> Received:
    """Publish a signed intent record and wait for its outcome."""
    with OutcomeReader(settings, from_beginning=False) as reader:
        with IntentPublisher(settings) as publisher:
            publisher.publish(intent)
        return wait_for(reader, intent["intent_id"])


def replay(settings: Settings, approval: Received) -> Received:
    """Publish the exact intent bytes an approval carries (anyone can read them) again."""
    record = approval.record or {}
    with OutcomeReader(settings, from_beginning=False) as reader:
        with IntentPublisher(settings) as publisher:
            publisher.publish_raw(str(record["agent_id"]).encode(), record["intent"])
        return wait_for(reader, str(record["intent_id"]))


def reasons(received: Received) -> str:
    return "; ".join((received.record or {}).get("reasons", []))


def approved(settings: Settings, estate: Estate, agent: str, action: str, resource: str):
    received = decide(settings, estate.intent(agent, action, resource))
    assert received.topic == "approved", reasons(received)
    return received


def state_partitions(settings: Settings, agents: set[str], timeout: float = 30.0) -> dict:
    """agent id -> the gate-state partition its (committed) state record is on."""
    found: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    with OutcomeReader(settings, ["gate-state"]) as reader:
        while set(found) < agents and time.monotonic() < deadline:
            for received in reader.read(timeout=0.5):
                agent = (received.key or b"").decode()
                if agent in agents:
                    found[agent] = received.partition
    assert set(found) == agents, f"no gate-state record for {agents - set(found)}"
    return found


# -- the attack ----------------------------------------------------------------------------

FORGED_EMPTY = json.dumps({"v": 1, "layers": {}}).encode()  # what the old worker accepted
JUNK = b"\x00not json at all\xff"


def test_forged_state_records_fail_the_agent_closed_until_an_operator_resets_it(
    settings, worker_factory
):
    estate = setup_estate(settings)
    first = worker_factory(settings).start()
    victims = {
        "billing-agent": ("invoices.read", "invoice:7", FORGED_EMPTY),
        "support-bot": ("tickets.reply", "ticket:7", JUNK),
        "ops-agent": ("reports.read", "report:7", None),  # a tombstone
    }
    approvals = {
        agent: approved(settings, estate, agent, action, resource)
        for agent, (action, resource, _) in victims.items()
    }
    bystander = approved(settings, estate, "analytics-agent", "warehouse.query", "table:sales")
    partitions = state_partitions(settings, set(victims))

    first.kill()
    producer = kafka.producer(settings)
    for agent, (_, _, forged) in victims.items():
        producer.produce(
            settings.topic("gate-state"),
            key=agent.encode(),
            value=forged,
            partition=partitions[agent],
        )
    assert producer.flush(10) == 0
    second = worker_factory(settings).start()

    for agent, approval in approvals.items():
        again = replay(settings, approval)
        assert again.topic == "denied", f"{agent}: the replay was approved a second time"
        why = reasons(again)
        assert f"gate state of agent {agent!r} is not trusted" in why
        assert f"gate-state partition {partitions[agent]} offset" in why
        assert RESET_KIND in why
        fresh = decide(settings, estate.intent(agent, victims[agent][0], "fresh"))
        assert fresh.topic == "denied", "every intent of the agent is denied until a reset"
    assert "failed authentication (it is not a sealed gate-state record" in reasons(
        replay(settings, approvals["billing-agent"])
    )
    assert "is a tombstone" in reasons(replay(settings, approvals["ops-agent"]))

    assert second.proc is not None and second.proc.poll() is None, "the worker keeps running"
    assert (second.health() or {}).get("ready")
    assert "ALERT: gate state of agent 'support-bot' is not trusted" in second.log(200_000)
    assert approved(settings, estate, "analytics-agent", "warehouse.query", "table:other")
    other_replay = replay(settings, bystander)
    assert other_replay.topic == "denied" and "already decided" in reasons(other_replay)

    # the operator looks at the record, then resets the agent's state
    denial = reasons(replay(settings, approvals["billing-agent"]))
    offset = int(denial.split(f"partition {partitions['billing-agent']} offset ")[1].split()[0])
    with OperatorClient(settings) as operator:
        operator.send(
            RESET_KIND,
            {
                "agent_id": "billing-agent",
                "partition": partitions["billing-agent"],
                "offset": offset,
                "reason": "forged record, writer found and removed",
            },
            subject=state_reset_subject("billing-agent"),
        )
    after = approved(settings, estate, "billing-agent", "invoices.read", "invoice:8")
    old = replay(settings, approvals["billing-agent"])
    assert old.topic == "denied" and "before an operator reset" in reasons(old)
    assert decide(settings, estate.intent("support-bot", "tickets.reply", "t:9")).topic == (
        "denied"
    ), "a reset covers only the record it names"

    second.kill()  # the reset state was written, sealed: it is trusted after a restart
    worker_factory(settings).start()
    assert approved(settings, estate, "billing-agent", "invoices.read", "invoice:9")
    copy = replay(settings, after)
    assert copy.topic == "denied" and "already decided" in reasons(copy)
