"""The project on a three-node cluster (``trustplane kafka up --brokers 3``): its topics are
replicated three times with ``min.insync.replicas=2``, every node knows the SCRAM users,
and SIGKILLing a partition leader loses no acknowledged record.

The cluster is this module's own (a temporary state dir; the jars are shared with the
session broker's folder), provisioned as ``trustplane kafka up`` provisions it. Two writers
run while a node dies and comes back: an idempotent ``acks=all`` producer (every delivery
report is an acknowledgement, and its timing shows how long writes stalled) and a
transactional one (a committed transaction is the acknowledgement; an aborted one is
written again). A ``read_committed`` consumer then finds each acknowledged key exactly
once. The stall is printed, never asserted: it depends on the machine.

The tests without the ``broker`` mark check the replication settings without a broker.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # documented path, stub lacks __all__
    ConfigResource,
    ResourceType,
)

from processors.exceptions import ConfigError
from streams import kafka, names, provision
from streams.acls import ADMIN
from streams.config import Settings
from streams.dev.localkafka import LocalKafka
from streams.notary.topics import CHECKPOINT_TOPIC, LOG_TOPIC
from streams.sdk.config import ClientConfig
from streams.topics import (
    TOPICS,
    TopicError,
    check_replication,
    ensure_topics,
    wait_for_leaders,
)
from tests.conftest import TEST_STATE_DIR

NODES = 3


def _log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A three-node cluster of its own, stopped after the module."""
    jars = LocalKafka(TEST_STATE_DIR).fetch()  # resolved once, shared read-only
    state_dir = tmp_path_factory.mktemp("cluster")
    (state_dir / "lib").symlink_to(jars, target_is_directory=True)
    local = LocalKafka(state_dir, brokers=NODES, progress=_log)
    try:
        local.up(timeout=180)
        yield local
    finally:
        for node in local.node_pids():  # a throwaway cluster: no graceful shutdown
            local.kill_node(node)
        local.down()


@pytest.fixture(scope="module")
def estate(cluster: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """An estate provisioned on the cluster as admin: role users, topics, ACLs."""
    info = cluster.status()
    assert info is not None and info.brokers == NODES
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap_servers=info.bootstrap,
        topic_prefix=f"c{tag}.",
        group_id=f"cluster-{tag}",
        state_dir=tmp_path_factory.mktemp("estate"),
        kafka_principal=ADMIN,
        kafka_credentials_dir=cluster.credentials.directory,
    )
    report = provision.provision(settings)
    assert report.topics_created
    return settings


def _estate_topics(settings: Settings) -> list[str]:
    return [
        *(settings.topic(spec.name) for spec in TOPICS),
        settings.topic(LOG_TOPIC),
        settings.topic(CHECKPOINT_TOPIC),
        *names.gate_changelog_topics(settings),
    ]


def _replication(settings: Settings, topics: list[str]) -> dict[str, tuple[set[int], str]]:
    """Topic -> (the replica counts of its partitions, its min.insync.replicas)."""
    admin = kafka.admin(settings)
    # the metadata that listed them all: the next request may ask a node that learns late
    metadata = wait_for_leaders(admin, topics).topics
    resources = [ConfigResource(ResourceType.TOPIC, topic) for topic in topics]
    found = {}
    for resource, future in admin.describe_configs(resources).items():
        entries = future.result(timeout=30)
        replicas = {len(p.replicas) for p in metadata[resource.name].partitions.values()}
        found[resource.name] = (replicas, str(entries["min.insync.replicas"].value))
    return found


# -- the topics ---------------------------------------------------------------------


@pytest.mark.broker
def test_every_topic_has_three_replicas_and_min_insync_two(estate: Settings) -> None:
    topics = _estate_topics(estate)
    found = _replication(estate, topics)

    assert found == {topic: ({NODES}, "2") for topic in topics}
    _log(f"{len(topics)} topics: replication factor 3, min.insync.replicas 2")


@pytest.mark.broker
def test_every_node_knows_the_users_and_the_acls_hold(
    cluster: LocalKafka, estate: Settings
) -> None:
    info = cluster.status()
    assert info is not None
    for node in info.nodes:  # each node alone: the SCRAM users are in every node's metadata
        gate = ClientConfig(
            node.address, username="gate", password_file=cluster.credentials.path("gate")
        )
        # a node learns of new topics a moment after the controller
        try:
            wait_for_leaders(kafka.admin(gate), [estate.topic("intents")])
        except TopicError as exc:
            pytest.fail(f"node {node.node_id} does not show gate the topics: {exc}")
    assert provision.check(estate).ok


@pytest.mark.broker
def test_topics_are_refused_when_min_insync_exceeds_the_replication(
    estate: Settings,
) -> None:
    fresh = f"r{uuid.uuid4().hex[:8]}."
    too_strict = replace(estate, topic_prefix=fresh, topic_min_insync_replicas=NODES + 1)
    with pytest.raises(ConfigError, match="exceeds the replication factor 3 .the broker's default"):
        ensure_topics(too_strict, ["intents"])

    too_many = replace(estate, topic_prefix=fresh, topic_replication_factor=NODES + 1)
    with pytest.raises(TopicError) as caught:
        ensure_topics(too_many, ["intents"])
    assert "INVALID_REPLICATION_FACTOR" in caught.value.reason
    assert "fewer live brokers" in (caught.value.hint or "")


# -- a node dies -----------------------------------------------------------------------


@dataclass
class Ack:
    key: str
    partition: int
    sent: float
    acked: float


@dataclass(eq=False)
class Writer(threading.Thread):
    """Writes records keyed ``<prefix><n>`` to ``topic`` until stopped; ``acked`` is what
    the cluster acknowledged."""

    settings: Settings
    topic: str
    acked: list[Ack] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failure: BaseException | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)

    def run(self) -> None:
        try:
            self.write()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.failure = exc

    def write(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()
        self.join(120)
        assert not self.is_alive(), f"{type(self).__name__} did not stop"
        if self.failure is not None:
            raise AssertionError(f"{type(self).__name__} failed: {self.failure!r}")


class AckWriter(Writer):
    """One record every ~10 ms with an idempotent ``acks=all`` producer."""

    def write(self) -> None:
        producer = kafka.producer(self.settings, {"linger.ms": 2, "client.id": "cluster-acks"})
        n = 0
        while not self.stopping.is_set():
            key = f"a{n:07d}"
            producer.produce(self.topic, key.encode(), key.encode(), on_delivery=self._report(key))
            n += 1
            producer.poll(0.01)
        assert producer.flush(90) == 0, "records still unacknowledged after 90 s"

    def _report(self, key: str) -> Callable[[KafkaError | None, Message], None]:
        sent = time.monotonic()

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self.errors.append(f"{key}: {error.str()}")
                return
            self.acked.append(Ack(key, message.partition() or 0, sent, time.monotonic()))

        return delivered


class TransactionWriter(Writer):
    """Transactions of ten records; an aborted one is written again (new transaction,
    same keys): a ``read_committed`` reader must see each key once."""

    def write(self) -> None:
        producer = kafka.transactional_producer(
            self.settings, f"{names.root(self.settings)}.cluster-txn"
        )
        producer.init_transactions(60)
        n = 0
        while not self.stopping.is_set():
            keys = [f"t{n + i:07d}" for i in range(10)]
            started = time.monotonic()
            if self._transaction(producer, keys):
                now = time.monotonic()
                self.acked += [Ack(key, -1, started, now) for key in keys]
                n += len(keys)
            time.sleep(0.02)

    def _transaction(self, producer: Producer, keys: list[str]) -> bool:
        producer.begin_transaction()
        for key in keys:
            producer.produce(self.topic, key.encode(), key.encode())
        deadline = time.monotonic() + 90
        while True:
            try:
                producer.commit_transaction(15)
                return True
            except KafkaException as exc:
                error = exc.args[0]
                self.errors.append(f"commit: {error.str()}")
                if error.txn_requires_abort():
                    producer.abort_transaction(60)
                    return False
                if not error.retriable() or time.monotonic() > deadline:
                    raise


def _wait(what: str, done: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.05)
    return time.monotonic() - started


def _read_committed(settings: Settings, topic: str) -> Counter[str]:
    """Every key in ``topic`` as a ``read_committed`` consumer sees it, with its count."""
    reader = kafka.consumer(
        settings, f"{names.root(settings)}.cluster-check", {"enable.partition.eof": True}
    )
    try:
        partitions = reader.list_topics(topic, timeout=30).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        keys: Counter[str] = Counter()
        ended: set[int] = set()
        deadline = time.monotonic() + 60
        while len(ended) < len(partitions):
            assert time.monotonic() < deadline, f"{topic} was not read to its end in 60 s"
            for message in reader.consume(500, timeout=0.5):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition() or 0)
                    continue
                assert error is None, error.str()
                keys[(message.key() or b"").decode()] += 1
        return keys
    finally:
        reader.close()


def _in_sync(settings: Settings, topic: str) -> bool:
    metadata = kafka.admin(settings).list_topics(topic, timeout=10).topics[topic]
    return all(len(p.isrs) == NODES for p in metadata.partitions.values())


@pytest.mark.broker
def test_no_acknowledged_record_is_lost_when_a_leader_node_dies(
    cluster: LocalKafka, estate: Settings
) -> None:
    plain, transactional = estate.topic("intents"), estate.topic("lineage")
    metadata = kafka.admin(estate).list_topics(plain, timeout=30).topics[plain]
    victim = metadata.partitions[0].leader
    led = {p.id for p in metadata.partitions.values() if p.leader == victim}
    acks, transactions = AckWriter(estate, plain), TransactionWriter(estate, transactional)
    acks.start()
    transactions.start()
    try:
        _wait("first writes", lambda: len(acks.acked) > 200 and len(transactions.acked) > 50, 60)
        killed = time.monotonic()
        cluster.kill_node(victim)
        assert victim not in cluster.node_pids()

        def resumed() -> bool:
            return any(a.sent > killed and a.partition in led for a in list(acks.acked))

        stall = _wait("acks=all writes resume after the kill", resumed, 60)
        time.sleep(1.5)  # a steady stretch on two nodes
        cluster.start_node(victim, timeout=120)
        restart = time.monotonic() - killed - stall - 1.5
        assert set(cluster.node_pids()) == {1, 2, 3}
        rejoined = _wait(
            "the restarted node back in every ISR", lambda: _in_sync(estate, plain), 60
        )
        time.sleep(0.5)
    finally:
        acks.stop()
        transactions.stop()

    for writer, topic in ((acks, plain), (transactions, transactional)):
        acknowledged = {ack.key for ack in writer.acked}
        seen = _read_committed(estate, topic)
        lost = sorted(acknowledged - set(seen))
        doubled = sorted(key for key, count in seen.items() if count > 1)
        assert (lost[:5], doubled[:5]) == ([], []), (
            f"{topic}: lost {len(lost)}, doubled {len(doubled)}"
        )
        assert len(acknowledged) == len(writer.acked)  # no key acknowledged twice

    before = [a.acked - a.sent for a in acks.acked if killed - 2 < a.sent < killed]
    recovered = killed + stall + 0.5
    after = [a.acked - a.sent for a in acks.acked if recovered < a.sent < recovered + 1]
    commits = sorted({a.acked - a.sent for a in transactions.acked})
    _log(
        f"SIGKILL of node {victim} (leader of partitions {sorted(led)} of {plain}): acks=all "
        f"writes to them acknowledged again after {stall:.2f} s; latency p50 "
        f"{statistics.median(before) * 1000:.1f} ms before, "
        f"{statistics.median(after) * 1000:.1f} ms 0.5-1.5 s after; "
        f"longest transaction {commits[-1]:.2f} s; node back in {restart:.1f} s, "
        f"in every ISR {rejoined:.1f} s later; {len(acks.acked)} records and "
        f"{len(transactions.acked)} in transactions acknowledged, none lost, none doubled; "
        f"delivery errors {len(acks.errors)}, commit retries/aborts {len(transactions.errors)}"
    )
    assert acks.errors == [], acks.errors[:5]
    internal = _replication(estate, ["__transaction_state"])
    assert internal == {"__transaction_state": ({NODES}, "2")}


# -- without a broker ------------------------------------------------------------------


def test_a_lower_acks_is_refused_for_every_producer() -> None:
    endpoint = kafka.PlainEndpoint("127.0.0.1:1")
    with pytest.raises(ConfigError, match="acks=1"):
        kafka.producer(endpoint, {"acks": 1})
    with pytest.raises(ConfigError, match="acks=0"):
        kafka.transactional_producer(endpoint, "t", {"acks": "0"})
    user_set = Settings(bootstrap_servers="127.0.0.1:1", extra={"acks": "1"})
    with pytest.raises(ConfigError, match="acks=1") as caught:
        kafka.producer(user_set)
    assert "TRUSTPLANE_KAFKA_ACKS" in (caught.value.hint or "")


def test_stated_min_insync_above_the_stated_replication_is_refused() -> None:
    settings = Settings(
        bootstrap_servers="127.0.0.1:1", topic_replication_factor=2, topic_min_insync_replicas=3
    )
    with pytest.raises(ConfigError) as caught:
        check_replication(settings, kafka.admin(kafka.PlainEndpoint("127.0.0.1:1")))
    assert "exceeds the replication factor 2 (topic_replication_factor)" in caught.value.reason
    assert "TRUSTPLANE_TOPIC_MIN_INSYNC_REPLICAS" in (caught.value.hint or "")
    fine = Settings(topic_replication_factor=3, topic_min_insync_replicas=2)
    check_replication(fine, kafka.admin(kafka.PlainEndpoint("127.0.0.1:1")))


@pytest.mark.parametrize("name", ["topic_replication_factor", "topic_min_insync_replicas"])
def test_replication_settings_are_broker_default_or_positive(name: str) -> None:
    assert getattr(Settings(), name) == -1
    with pytest.raises(ConfigError, match=f"{name} must be -1"):
        Settings(**{name: 0})  # type: ignore[arg-type]
    loaded = Settings.load(environ={f"TRUSTPLANE_{name.upper()}": "3"})
    assert getattr(loaded, name) == 3
