"""Kafka authentication and ACLs on the real broker: each role may do what it needs and
nothing else (``streams/acls.py``).

An estate (topic prefix and name root) is provisioned once for the module, its topics
seeded with one committed record each; every check then connects as one role with that
role's password. Refused operations are asserted by the broker's error code: 29 TOPIC,
30 GROUP, 53 TRANSACTIONAL_ID authorization failed. Group ACLs are checked by joining
(subscribe): an assign()ing reader's fetch is authorized by its TOPIC READ alone.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # documented path, stub lacks __all__

from streams import kafka, names, provision
from streams.acls import PROJECT_TOPICS, grants
from streams.config import Settings
from streams.sdk.config import ClientConfig, Secret
from tests.conftest import ServiceFactory, TestBroker, role_env, settings_env

pytestmark = pytest.mark.broker

TOPIC_DENIED = KafkaError.TOPIC_AUTHORIZATION_FAILED  # 29
GROUP_DENIED = KafkaError.GROUP_AUTHORIZATION_FAILED  # 30
TXN_DENIED = KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED  # 53
OK = "ok"

Outcome = str | int
"""``ok``, or the error code the broker answered."""


@pytest.fixture(scope="module")
def estate(kafka_broker: TestBroker) -> Iterator[Settings]:
    """A provisioned estate, as admin, with one committed record in every topic."""
    tag = uuid.uuid4().hex[:8]
    settings = kafka_broker.settings(topic_prefix=f"acl{tag}.", group_id=f"acl-{tag}")
    provision.provision(settings, users=False)
    producer = kafka.producer(settings)
    for topic in PROJECT_TOPICS:
        producer.produce(settings.topic(topic), b"seed", key=b"agent-1", partition=0)
    assert producer.flush(30) == 0
    yield settings
    provision.revoke(settings)


def as_role(settings: Settings, role: str) -> Settings:
    return settings.as_principal(role)


def code_of(exc: KafkaException) -> int:
    error = exc.args[0]
    assert isinstance(error, KafkaError), exc
    return int(error.code())


def produce(settings: Settings, topic: str, *, idempotent: bool = True) -> Outcome:
    """Write one record (idempotently, as the project's producers do)."""
    config = {**settings.kafka_config(), "enable.idempotence": idempotent, "log_level": 0}
    producer = Producer(config)
    delivered: list[KafkaError | None] = []
    try:
        producer.produce(
            settings.topic(topic),
            b"x",
            key=b"agent-1",
            on_delivery=lambda e, _: delivered.append(e),
        )
        producer.flush(20)
    except KafkaException as exc:
        return code_of(exc)
    assert delivered, f"no delivery report for {topic}"
    return OK if delivered[0] is None else int(delivered[0].code())


def _settle(consumer: Consumer, wanted: Callable[[Consumer], bool], timeout: float) -> Outcome:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is not None:
            code = message.error().code()
            if code != KafkaError._PARTITION_EOF:
                return int(code)
        if wanted(consumer):
            return OK
    return "timed out"


def join(settings: Settings, group: str, topics: list[str], timeout: float = 20) -> Outcome:
    """Subscribe in ``group`` and wait for an assignment (or the refusal)."""
    consumer = kafka.consumer(settings, group, {"auto.offset.reset": "earliest", "log_level": 0})
    try:
        consumer.subscribe([settings.topic(t) for t in topics])
        return _settle(consumer, lambda c: bool(c.assignment()), timeout)
    finally:
        consumer.close()


def read_one(settings: Settings, group: str, topic: str, timeout: float = 15) -> Outcome:
    """Assign partition 0 of ``topic`` (with ``group``, as restores do) and read a record."""
    consumer = kafka.consumer(settings, group, {"log_level": 0})
    try:
        consumer.assign([TopicPartition(settings.topic(topic), 0, 0)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return int(message.error().code())
            return OK
        return "timed out"
    finally:
        consumer.close()


def init_transactions(settings: Settings, transactional_id: str) -> Outcome:
    producer = kafka.transactional_producer(settings, transactional_id, {"log_level": 0})
    try:
        producer.init_transactions(20)
    except KafkaException as exc:
        return code_of(exc)
    return OK


def transactional_loop(
    settings: Settings, group: str, inputs: list[str], outputs: list[str], txn_id: str
) -> Outcome:
    """A service's cycle: join the group, init the transactional id, produce to every
    output, commit the consumed offsets in the transaction."""
    consumer = kafka.consumer(settings, group, {"auto.offset.reset": "earliest", "log_level": 0})
    producer = kafka.transactional_producer(settings, txn_id, {"log_level": 0})
    try:
        consumer.subscribe([settings.topic(t) for t in inputs])
        joined = _settle(consumer, lambda c: bool(c.assignment()), 20)
        if joined != OK:
            return f"join: {joined}"
        producer.init_transactions(20)
        producer.begin_transaction()
        for topic in outputs:
            producer.produce(settings.topic(topic), b"x", key=b"agent-1")
        offsets = [TopicPartition(tp.topic, tp.partition, 1) for tp in consumer.assignment()]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 20)
        producer.commit_transaction(20)
        return OK
    except KafkaException as exc:
        return code_of(exc)
    finally:
        consumer.close()


# -- what each role may do ----------------------------------------------------------


def test_the_gate_runs_its_whole_transactional_cycle(estate: Settings) -> None:
    gate = as_role(estate, "gate")
    outputs = ["approved", "denied", "review", "rejected", "lineage", "gate-state", "control"]
    loop = transactional_loop(
        gate,
        names.gate_group(gate),
        ["intents", "outcomes"],
        outputs,
        names.gate_worker(gate, "w1"),
    )
    assert loop == OK
    assert read_one(gate, names.gate_state_restore(gate), "gate-state") == OK
    assert read_one(gate, names.control_follower(gate, "w1"), "control") == OK
    assert read_one(gate, names.control_offsets(gate, "w1"), "control") == OK


def test_the_notary_links_lineage_into_its_log(estate: Settings) -> None:
    notary = as_role(estate, "notary")
    loop = transactional_loop(
        notary, names.notary(notary), ["lineage"], ["lineage-log", "checkpoints"],
        names.notary(notary),
    )  # fmt: skip
    assert loop == OK
    assert read_one(notary, names.notary_restore(notary), "lineage-log") == OK
    assert read_one(notary, names.notary_fetch(notary), "lineage-log") == OK


def test_the_sink_reads_what_it_stores_and_writes_its_rejects(estate: Settings) -> None:
    sink = as_role(estate, "sink")
    stored = [
        "lineage-log",
        "approved",
        "denied",
        "review",
        "rejected",
        "outcomes",
        "checkpoints",
        "intents",
    ]
    loop = transactional_loop(
        sink, names.sink_group(sink), stored, ["rejected"], names.sink_worker(sink, "s1")
    )
    assert loop == OK


def test_an_executor_reads_approvals_in_its_group_and_reports_outcomes(estate: Settings) -> None:
    executor = as_role(estate, "executor")
    assert join(executor, names.executor_group(executor), ["approved"]) == OK
    assert produce(executor, "outcomes") == OK


def test_an_agent_publishes_intents(estate: Settings) -> None:
    assert produce(as_role(estate, "agent"), "intents") == OK


def test_a_guard_publishes_intents_reads_decisions_and_reports_outcomes(
    estate: Settings,
) -> None:
    guard = as_role(estate, "guard")
    assert produce(guard, "intents") == OK
    assert produce(guard, "outcomes") == OK
    for topic in ("approved", "denied", "review", "rejected"):
        # assigned partitions, as the guard's decision reader does: no group is joined
        assert read_one(guard, names.guard_group(guard), topic) == OK, topic


@pytest.mark.parametrize("topic", ["approved", "denied", "lineage", "control", "gate-state"])
def test_a_guard_cannot_write_decisions_lineage_or_control(estate: Settings, topic: str) -> None:
    assert produce(as_role(estate, "guard"), topic) == TOPIC_DENIED


def test_a_guard_cannot_read_control_or_lineage_nor_join_a_group(estate: Settings) -> None:
    guard = as_role(estate, "guard")
    for topic in ("control", "lineage", "gate-state", "intents"):
        # refused, or never given the topic's metadata: either way no record is read
        assert read_one(guard, names.guard_group(guard), topic, timeout=5) != OK, topic
    assert join(guard, names.executor_group(guard), ["approved"]) == GROUP_DENIED


def test_an_operator_sends_control_commands_and_reads_every_topic(estate: Settings) -> None:
    operator = as_role(estate, "operator")
    assert produce(operator, "control") == OK
    assert init_transactions(operator, names.operator_transaction(operator, "key-1")) == OK
    assert read_one(operator, names.control_follower(operator, "cli"), "control") == OK
    for topic in ("denied", "review", "lineage-log", "checkpoints"):
        assert read_one(operator, names.reader_group(operator), topic) == OK, topic


def transact(
    settings: Settings, transactional_id: str, topics: list[str], value: bytes = b"x"
) -> Outcome:
    """Produce ``value`` to each topic in one transaction (aborted if refused)."""
    producer = kafka.transactional_producer(settings, transactional_id, {"log_level": 0})
    try:
        producer.init_transactions(20)
        producer.begin_transaction()
        for topic in topics:
            producer.produce(settings.topic(topic), value, key=b"agent-1")
        producer.commit_transaction(20)
        return OK
    except KafkaException as exc:
        with contextlib.suppress(KafkaException):
            producer.abort_transaction(20)
        return code_of(exc)


def committed_values(settings: Settings, group: str, topic: str, timeout: float = 15) -> set[bytes]:
    """Every committed value of ``topic`` (read_committed, all partitions assigned)."""
    consumer = kafka.consumer(settings, group, {"log_level": 0, "enable.partition.eof": True})
    try:
        name = settings.topic(topic)
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        values: set[bytes] = set()
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(partitions) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                at_end.add(message.partition() or 0)
            else:
                values.add(message.value() or b"")
        assert len(at_end) == len(partitions), f"{topic} not read to its end in {timeout}s"
        return values
    finally:
        consumer.close()


def test_the_console_reads(estate: Settings) -> None:
    console = as_role(estate, "console")
    assert read_one(console, names.reader_group(console), "approved") == OK
    assert read_one(console, names.console_group(console, "lineage"), "lineage-log") == OK
    assert read_one(console, names.console_group(console, "intents"), "intents") == OK


def test_the_console_relays_control_commands_in_a_transaction(estate: Settings) -> None:
    console = as_role(estate, "console")
    sent: set[bytes] = set()
    for transactional_id in (
        names.console_transactional_id(console),
        names.console_transactional_id(console, "web-1"),
    ):
        value = f"command via {transactional_id}".encode()
        assert transact(console, transactional_id, ["control"], value) == OK, transactional_id
        sent.add(value)
    # committed: the gate's control follower reads what the console relayed
    gate = as_role(estate, "gate")
    assert sent <= committed_values(gate, names.control_follower(gate, "w9"), "control")


@pytest.mark.parametrize("topic", ["approved", "denied", "lineage", "intents", "gate-state"])
def test_the_console_writes_control_only(estate: Settings, topic: str) -> None:
    console = as_role(estate, "console")
    value = f"console forged {topic} {uuid.uuid4().hex}".encode()
    refused = transact(console, names.console_transactional_id(console, "forger"), [topic], value)
    if topic == "gate-state":  # not even visible to the console: the commit cannot complete
        assert refused != OK
    else:
        assert refused == TOPIC_DENIED
    assert produce(console, topic) in (TOPIC_DENIED, KafkaError._UNKNOWN_TOPIC)
    assert value not in committed_values(estate, names.reader_group(estate), topic)


def test_the_console_cannot_take_another_roles_transactional_id(estate: Settings) -> None:
    console = as_role(estate, "console")
    assert init_transactions(console, names.operator_transaction(console, "key-1")) == TXN_DENIED
    assert init_transactions(console, names.gate_worker(console, "w1")) == TXN_DENIED
    assert init_transactions(console, names.sink_worker(console, "s1")) == TXN_DENIED


# -- what each role may not do ------------------------------------------------------


@pytest.mark.parametrize("topic", ["approved", "lineage", "control", "gate-state"])
def test_an_agent_cannot_write_what_the_gate_or_operators_write(
    estate: Settings, topic: str
) -> None:
    assert produce(as_role(estate, "agent"), topic) == TOPIC_DENIED


def test_an_agent_cannot_read_intents(estate: Settings) -> None:
    agent = as_role(estate, "agent")
    assert join(agent, names.reader_group(agent), ["intents"]) == GROUP_DENIED
    # assigned, not subscribed: the fetch itself is refused (or the group lookup first)
    assert read_one(agent, names.gate_group(agent), "intents") in (TOPIC_DENIED, GROUP_DENIED)


def test_an_agent_cannot_take_a_gate_transactional_id(estate: Settings) -> None:
    agent = as_role(estate, "agent")
    assert init_transactions(agent, names.gate_worker(agent, "w1")) == TXN_DENIED
    assert init_transactions(agent, names.operator_transaction(agent, "key-1")) == TXN_DENIED


def test_the_operator_cannot_join_the_gates_groups_or_take_its_ids(estate: Settings) -> None:
    operator = as_role(estate, "operator")
    gate = as_role(estate, "gate")
    assert join(operator, names.control_follower(gate, "w1"), ["control"]) == GROUP_DENIED
    assert join(operator, names.gate_group(gate), ["control"]) == GROUP_DENIED
    assert init_transactions(operator, names.gate_worker(operator, "w1")) == TXN_DENIED


@pytest.mark.parametrize(
    ("role", "topic"),
    [
        ("executor", "approved"),  # an executor cannot approve for itself
        ("notary", "approved"),
        ("sink", "approved"),
        ("operator", "approved"),
        ("gate", "lineage-log"),  # only the notary writes the log
        ("sink", "lineage"),
        ("operator", "intents"),
        ("console", "approved"),  # the console relays control commands, nothing else
        ("console", "lineage-log"),
    ],
)
def test_only_the_owner_writes_a_topic(estate: Settings, role: str, topic: str) -> None:
    assert produce(as_role(estate, role), topic, idempotent=False) == TOPIC_DENIED


def test_the_sink_cannot_join_the_gates_group(estate: Settings) -> None:
    sink = as_role(estate, "sink")
    assert join(sink, names.gate_group(sink), ["approved"]) == GROUP_DENIED


def test_the_gate_cannot_use_the_notarys_or_a_sinks_transactional_id(estate: Settings) -> None:
    gate = as_role(estate, "gate")
    assert init_transactions(gate, names.notary(gate)) == TXN_DENIED
    assert init_transactions(gate, names.sink_worker(gate, "s1")) == TXN_DENIED


def test_an_executor_joins_only_its_own_group(estate: Settings) -> None:
    """Group ACLs keep a role out of other groups (joining, committing, fencing); a
    Fetch is authorized by TOPIC READ alone, so reading ``approved`` at all is what
    separates executors from everyone else."""
    executor = as_role(estate, "executor")
    assert join(executor, names.reader_group(executor), ["approved"]) == GROUP_DENIED
    assert join(executor, names.executor_group(executor), ["intents"]) == TOPIC_DENIED


def test_nobody_but_admin_creates_topics(estate: Settings) -> None:
    for role in ("gate", "operator", "agent"):
        client = kafka.admin(as_role(estate, role))
        future = client.create_topics([NewTopic(estate.topic(f"new-{role}"), 1, 1)])
        with pytest.raises(KafkaException) as caught:
            future[estate.topic(f"new-{role}")].result(20)
        assert code_of(caught.value) == TOPIC_DENIED


def test_a_role_sees_only_the_topics_it_has_an_acl_on(estate: Settings) -> None:
    seen = kafka.admin(as_role(estate, "agent")).list_topics(timeout=10).topics
    assert {t for t in seen if t.startswith(estate.topic(""))} == {estate.topic("intents")}


def test_an_unauthenticated_client_and_a_wrong_password_get_nothing(
    estate: Settings, kafka_broker: TestBroker
) -> None:
    strangers = {
        "no SASL": kafka.PlainEndpoint(kafka_broker.bootstrap),
        "admin, wrong password": ClientConfig(
            kafka_broker.bootstrap, username="admin", password=Secret("not-it")
        ),
        "unknown user": ClientConfig(
            kafka_broker.bootstrap, username="nobody", password=Secret("x")
        ),
    }
    for what, stranger in strangers.items():
        errors: list[KafkaError] = []
        client = kafka.admin(stranger, {"log_level": 0, "error_cb": errors.append})
        with pytest.raises(KafkaException):
            client.list_topics(timeout=2)
        client.poll(0.2)  # serves the error callbacks
        if what != "no SASL":
            assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), what
        assert produce_as(stranger, estate.topic("intents")) != OK, what


def produce_as(endpoint: kafka.KafkaEndpoint, topic: str) -> Outcome:
    producer = Producer({**endpoint.kafka_config(), "log_level": 0, "message.timeout.ms": 2000})
    delivered: list[KafkaError | None] = []
    producer.produce(topic, b"x", on_delivery=lambda e, _: delivered.append(e))
    producer.flush(5)
    return OK if delivered and delivered[0] is None else "refused"


def test_the_broker_holds_exactly_the_acls_of_the_table(estate: Settings) -> None:
    result = provision.check(estate)
    assert result.missing == [] and result.unexpected == []
    assert len(grants(estate)) == 85


# -- a service without its ACLs says which one it lacks ------------------------------


def test_a_worker_run_as_another_role_stops_naming_the_missing_acl(
    settings: Settings, service_factory: ServiceFactory
) -> None:
    worker = service_factory(
        "worker-as-sink",
        [str(Path(sys.executable).parent / "trustplane"), "worker"],
        {**settings_env(settings), **role_env(settings, "sink")},
    )
    worker.start(wait_ready=False)
    assert worker.wait_exit(60) != 0
    log = " ".join(worker.log().split())  # as printed: wrapped
    missing = "|".join(re.escape(settings.topic(t)) for t in ("intents", "control", "gate-state"))
    assert re.search(rf"User:sink lacks a TOPIC ACL on topic ({missing})", log), log
    assert "trustplane kafka provision" in log
