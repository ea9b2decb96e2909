"""The native launcher of the local Kafka broker.

Everything but the last test runs without Java: it checks the files the launcher writes,
its choice of ports, its diagnostics and that it never signals a process that is not its
broker. ``test_up_status_topic_down`` really starts a broker (``-m broker``, ~10 s): with
SASL/SCRAM on, ``admin`` gets in, nobody else does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # documented path, stub lacks __all__

from streams import kafka as kafka_clients
from streams.config import PROJECT_ROOT
from streams.dev.localkafka import (
    BrokerError,
    LegacyBrokerError,
    LocalKafka,
    free_ports,
    port_is_free,
    random_cluster_id,
    render_server_properties,
)
from streams.sdk.config import ClientConfig, Secret


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 10
    while args and time.monotonic() < deadline:  # on a busy machine exec() takes a moment
        if args[-1].encode() in cmdline.read_bytes():
            break
        time.sleep(0.01)
    return proc


@pytest.fixture
def no_tools_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds only an empty folder (tests may put fake tools there)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = _spawn()
    yield proc
    proc.kill()
    proc.wait()


# -- server.properties, ports, cluster id ---------------------------------------


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    props = _properties(render_server_properties(9192, 9193, tmp_path / "data", Secret("pw")))

    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9193"
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9192,CONTROLLER://127.0.0.1:9193"
    assert props["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:9192"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert int(props["message.max.bytes"]) >= 5 * 1024 * 1024 + 1024  # the poison record
    assert props["replica.fetch.max.bytes"] == props["message.max.bytes"]
    assert props["transaction.max.timeout.ms"] == "900000"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"


def test_server_properties_authenticate_both_listeners_and_enforce_acls(tmp_path: Path) -> None:
    props = _properties(render_server_properties(9192, 9193, tmp_path / "data", Secret("pw")))

    # no PLAINTEXT listener at all: not even the controller's (it would take CreateAcls)
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
    )
    assert "PLAINTEXT://" not in props["listeners"].replace("SASL_PLAINTEXT://", "")
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.controller.protocol"] == "SCRAM-SHA-512"
    assert props["listener.name.controller.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    for listener in ("sasl_plaintext", "controller"):
        login = props[f"listener.name.{listener}.scram-sha-512.sasl.jaas.config"]
        assert 'username="broker" password="pw";' in login
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:broker;User:admin"


def test_a_broker_formatted_without_authentication_is_explained(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("version=1\n")  # an older `up`

    assert kafka.is_legacy()
    assert kafka.status() is None
    with pytest.raises(LegacyBrokerError, match="formatted without authentication") as caught:
        kafka.up()
    assert "trustplane kafka reset" in caught.value.diagnostics()

    kafka.reset()  # a throwaway dev broker: its data goes, the next `up` formats anew
    assert not kafka.is_legacy()


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3
    assert all(port_is_free(port) for port in ports)


def test_port_in_use_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])


def test_cluster_id_looks_like_kafka_uuid() -> None:
    for _ in range(200):
        cluster_id = random_cluster_id()
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def _write_state(kafka: LocalKafka, **state: object) -> None:
    kafka.state_dir.mkdir(parents=True, exist_ok=True)
    kafka.state_path.write_text(json.dumps(state))


def test_ports_of_last_run_are_reused_when_free(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path)
    port, controller = free_ports(2)
    _write_state(kafka, bootstrap=f"127.0.0.1:{port}", controller_port=controller)

    assert kafka._choose_ports() == (port, controller)


def test_taken_port_of_last_run_is_replaced(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        (controller,) = free_ports(1)
        _write_state(kafka, bootstrap=f"127.0.0.1:{taken_port}", controller_port=controller)
        port, chosen_controller = kafka._choose_ports()

    assert port != taken_port
    assert chosen_controller == controller
    assert port != chosen_controller


def test_fresh_state_dir_gets_two_distinct_ports(tmp_path: Path) -> None:
    port, controller = LocalKafka(tmp_path)._choose_ports()
    assert port != controller


def test_given_port_wins(tmp_path: Path) -> None:
    (wanted,) = free_ports(1)
    port, controller = LocalKafka(tmp_path, port=wanted)._choose_ports()
    assert port == wanted
    assert controller != wanted


def test_up_refuses_a_given_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(BrokerError, match="in use"):
            LocalKafka(tmp_path, port=taken.getsockname()[1]).up()


# -- fetching the jars ------------------------------------------------------------


def test_fetch_without_maven_says_what_to_install(tmp_path: Path, no_tools_on_path: Path) -> None:
    with pytest.raises(BrokerError) as caught:
        LocalKafka(tmp_path / "state").fetch()

    text = caught.value.diagnostics()
    assert "mvn" in text and "java" in text
    assert "apt-get install maven openjdk-17-jre-headless" in text
    assert "Maven Central" in text


def test_fetch_shows_the_end_of_maven_output(tmp_path: Path, no_tools_on_path: Path) -> None:
    for name, script in {
        "mvn": "echo '[ERROR] Could not transfer artifact from central'; exit 1",
        "java": "exit 0",
    }.items():
        (no_tools_on_path / name).write_text(f"#!/bin/sh\n{script}\n")
        (no_tools_on_path / name).chmod(0o755)

    with pytest.raises(BrokerError) as caught:
        LocalKafka(tmp_path / "state").fetch()

    text = caught.value.diagnostics()
    assert "Could not transfer artifact from central" in text
    assert "exit 1" in text
    assert "Maven Central" in text
    assert not (tmp_path / "state" / "lib").exists()


def test_fetch_is_skipped_when_jars_match_the_pom(tmp_path: Path, no_tools_on_path: Path) -> None:
    pom_dir = tmp_path / "pom"
    pom_dir.mkdir()
    (pom_dir / "pom.xml").write_text("<project/>\n")
    lib = tmp_path / "state" / "lib"
    lib.mkdir(parents=True)
    (lib / ".pom.sha256").write_text(hashlib.sha256(b"<project/>\n").hexdigest() + "\n")

    messages: list[str] = []
    kafka = LocalKafka(tmp_path / "state", pom_dir=pom_dir, progress=messages.append)

    assert kafka.fetch() == lib  # no mvn on PATH, so it did not run
    assert messages == []


def test_project_pom_pins_kafka() -> None:
    pom = (PROJECT_ROOT / "infra" / "kafka" / "pom.xml").read_text()
    assert "<kafka.version>3.9.1</kafka.version>" in pom
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert "<artifactId>slf4j-reload4j</artifactId>" in pom
    assert (PROJECT_ROOT / "infra" / "kafka" / "log4j.properties").is_file()


# -- status and down never touch a process that is not our broker ----------------


def test_status_is_none_without_broker_json(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path / "never-started")
    assert kafka.status() is None
    assert kafka.down() is False


def test_down_refuses_a_pid_that_is_not_kafka(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    kafka = LocalKafka(tmp_path)
    _write_state(kafka, bootstrap="127.0.0.1:1", pid=sleeper.pid, controller_port=2)

    assert kafka.status() is None
    assert kafka.down(timeout=1) is False
    assert sleeper.poll() is None  # still alive
    state = json.loads(kafka.state_path.read_text())
    assert "pid" not in state  # the stale pid is forgotten, the ports are kept
    assert state["bootstrap"] == "127.0.0.1:1"


def test_down_refuses_the_broker_of_another_state_dir(tmp_path: Path) -> None:
    other = LocalKafka(tmp_path / "other")
    proc = _spawn("kafka.Kafka", str(other.properties_path))
    try:
        kafka = LocalKafka(tmp_path / "mine")
        _write_state(kafka, bootstrap="127.0.0.1:1", pid=proc.pid, controller_port=2)

        assert kafka.down(timeout=1) is False
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_down_stops_our_broker_process(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path)
    proc = _spawn("kafka.Kafka", str(kafka.properties_path))  # looks like our broker
    try:
        _write_state(kafka, bootstrap="127.0.0.1:1", pid=proc.pid, controller_port=2)

        assert kafka.down(timeout=5) is True
        assert proc.wait(timeout=5) == -15  # SIGTERM
        assert kafka.down() is False
    finally:
        proc.kill()
        proc.wait()


# -- the real thing ------------------------------------------------------------------


@pytest.mark.broker
def test_up_status_topic_down(tmp_path: Path) -> None:
    messages: list[str] = []
    kafka = LocalKafka(tmp_path / "kafka", progress=messages.append)
    try:
        info = kafka.up(timeout=90)

        assert kafka.status() == info
        assert kafka.up() == info  # idempotent: the same broker
        state = json.loads(kafka.state_path.read_text())
        assert state["bootstrap"] == info.bootstrap and state["pid"] == info.pid
        assert any(message.startswith("broker ready in") for message in messages)

        # the secrets are the owner's alone
        assert kafka.properties_path.stat().st_mode & 0o777 == 0o600
        assert kafka.credentials.directory.stat().st_mode & 0o777 == 0o700
        for user in ("broker", "admin"):
            assert kafka.credentials.path(user).stat().st_mode & 0o777 == 0o600
        admin_password = kafka.credentials.read("admin").get()
        assert admin_password not in kafka.properties_path.read_text()

        admin = kafka_clients.admin(kafka.admin_endpoint(info.bootstrap))
        futures = admin.create_topics([NewTopic("launcher-check", num_partitions=4)])
        futures["launcher-check"].result(timeout=30)
        topic = admin.list_topics(timeout=10).topics["launcher-check"]
        assert len(topic.partitions) == 4

        for stranger in (
            kafka_clients.PlainEndpoint(info.bootstrap),  # no SASL at all
            ClientConfig(info.bootstrap, username="admin", password=Secret("wrong")),
        ):
            with pytest.raises(KafkaException):
                kafka_clients.admin(stranger, {"log_level": 0}).list_topics(timeout=3)
    finally:
        stopped = kafka.down()

    assert stopped is True
    assert kafka.status() is None
    assert not kafka._is_our_broker(info.pid)
    assert "pid" not in json.loads(kafka.state_path.read_text())
