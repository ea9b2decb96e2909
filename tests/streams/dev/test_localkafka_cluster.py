"""The native launcher as a cluster (``LocalKafka(state_dir, brokers=3)``), without Java:
each node's ``server.properties``, the ports, the state file and the handles of single
nodes (``node_pids``, ``kill_node``, ``start_node``). ``tests/integration/test_cluster.py``
runs a real three-node cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.dev.localkafka import (
    MAX_BROKERS,
    BrokerError,
    LocalKafka,
    free_ports,
    render_server_properties,
    replication,
)
from streams.sdk.config import Secret

VOTERS = {1: 9101, 2: 9201, 3: 9301}


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def _node(node_id: int, tmp_path: Path) -> dict[str, str]:
    return _properties(
        render_server_properties(
            9000 + 100 * node_id,
            VOTERS[node_id],
            tmp_path / f"node-{node_id}" / "data",
            Secret("pw"),
            node_id=node_id,
            voters=VOTERS,
        )
    )


# -- server.properties ---------------------------------------------------------------


def test_each_node_is_broker_and_controller_and_every_node_votes(tmp_path: Path) -> None:
    nodes = {node_id: _node(node_id, tmp_path) for node_id in VOTERS}

    for node_id, props in nodes.items():
        assert props["process.roles"] == "broker,controller"
        assert props["node.id"] == str(node_id)
        assert props["controller.quorum.voters"] == (
            "1@127.0.0.1:9101,2@127.0.0.1:9201,3@127.0.0.1:9301"
        )
        port = 9000 + 100 * node_id
        assert props["listeners"] == (
            f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{VOTERS[node_id]}"
        )
        assert props["advertised.listeners"] == f"SASL_PLAINTEXT://127.0.0.1:{port}"
        assert props["log.dirs"] == str(tmp_path / f"node-{node_id}" / "data")
    assert len({props["log.dirs"] for props in nodes.values()}) == 3


def test_a_cluster_keeps_three_replicas_and_needs_two_in_sync(tmp_path: Path) -> None:
    props = _node(2, tmp_path)

    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"
    assert int(props["broker.session.timeout.ms"]) > 2 * int(props["broker.heartbeat.interval.ms"])


def test_a_cluster_authenticates_every_listener_and_enforces_acls(tmp_path: Path) -> None:
    props = _node(1, tmp_path)

    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
    )
    # clients and brokers: SCRAM, as on the single broker
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    client_login = props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    assert 'username="broker" password="pw";' in client_login
    # controllers: PLAIN with `broker` as the only user (SCRAM cannot bootstrap a quorum)
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert props["listener.name.controller.sasl.enabled.mechanisms"] == "PLAIN"
    controller_login = props["listener.name.controller.plain.sasl.jaas.config"]
    assert controller_login.startswith("org.apache.kafka.common.security.plain.PlainLoginModule")
    assert 'username="broker" password="pw" user_broker="pw";' in controller_login
    assert "listener.name.controller.scram-sha-512.sasl.jaas.config" not in props
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:broker;User:admin"


def test_a_single_broker_is_configured_as_before(tmp_path: Path) -> None:
    alone = render_server_properties(9192, 9193, tmp_path / "data", Secret("pw"))
    props = _properties(alone)

    assert alone == render_server_properties(
        9192, 9193, tmp_path / "data", Secret("pw"), node_id=1, voters={1: 9193}
    )
    assert props["sasl.mechanism.controller.protocol"] == "SCRAM-SHA-512"
    for key in (
        "default.replication.factor",
        "min.insync.replicas",
        "unclean.leader.election.enable",
        "broker.session.timeout.ms",
    ):
        assert key not in props
    assert props["transaction.state.log.replication.factor"] == "1"


@pytest.mark.parametrize(
    ("brokers", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (5, (3, 2))]
)
def test_replication_by_cluster_size(brokers: int, expected: tuple[int, int]) -> None:
    assert replication(brokers) == expected


# -- the cluster's size, ports and files ------------------------------------------------


@pytest.mark.parametrize("brokers", [0, MAX_BROKERS + 1])
def test_a_cluster_size_out_of_range_is_refused(tmp_path: Path, brokers: int) -> None:
    with pytest.raises(BrokerError, match=f"1 to {MAX_BROKERS} nodes"):
        LocalKafka(tmp_path, brokers=brokers)


def _write_state(kafka: LocalKafka, **state: object) -> None:
    kafka.state_dir.mkdir(parents=True, exist_ok=True)
    kafka.state_path.write_text(json.dumps(state))


def _cluster_state(ports: dict[int, tuple[int, int]], pids: dict[int, int]) -> dict[str, object]:
    return {
        "brokers": len(ports),
        "bootstrap": ",".join(f"127.0.0.1:{port}" for port, _ in ports.values()),
        "nodes": [
            {
                "node_id": node,
                "port": port,
                "controller_port": controller,
                **({"pid": pids[node]} if node in pids else {}),
            }
            for node, (port, controller) in ports.items()
        ],
    }


def test_the_size_comes_from_the_state_file_unless_given(tmp_path: Path) -> None:
    assert LocalKafka(tmp_path).brokers == 1  # a new state dir
    _write_state(LocalKafka(tmp_path), **_cluster_state({1: (1, 2), 2: (3, 4), 3: (5, 6)}, {}))

    assert LocalKafka(tmp_path).brokers == 3
    assert LocalKafka(tmp_path, brokers=1).brokers == 1


def test_an_old_single_broker_state_file_is_one_broker(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path)
    _write_state(kafka, bootstrap="127.0.0.1:9192", controller_port=9193, pid=1)

    assert kafka.brokers == 1
    assert kafka._recorded_ports(kafka._read_state()) == {1: (9192, 9193)}


def test_every_node_gets_two_ports_of_its_own(tmp_path: Path) -> None:
    ports = LocalKafka(tmp_path, brokers=3)._choose_all()

    assert sorted(ports) == [1, 2, 3]
    assert len({port for pair in ports.values() for port in pair}) == 6


def test_a_cluster_keeps_its_free_ports_and_replaces_taken_ones(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path, brokers=3)
    last = dict(zip((1, 2, 3), zip(*[iter(free_ports(6))] * 2, strict=True), strict=True))
    _write_state(kafka, **_cluster_state(last, {}))
    taken_port = last[2][0]
    with subprocess.Popen(  # noqa: S603 - the test's own listener
        [sys.executable, "-c", _LISTEN, str(taken_port)], stdout=subprocess.PIPE
    ) as listener:
        assert listener.stdout is not None and listener.stdout.readline()
        try:
            ports = kafka._choose_all()
        finally:
            listener.kill()

    assert ports[1] == last[1] and ports[3] == last[3]
    assert ports[2][1] == last[2][1] and ports[2][0] != taken_port
    assert len({port for pair in ports.values() for port in pair}) == 6


_LISTEN = """\
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); print("up", flush=True)
time.sleep(60)
"""


def test_a_single_broker_state_dir_is_not_started_as_a_cluster(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("cluster.id=x\n")
    (tmp_path / ".data-has-scram-users").write_text("broker admin\n")

    with pytest.raises(BrokerError, match="data of a single broker, not of 3") as caught:
        LocalKafka(tmp_path, brokers=3).up()
    assert "--brokers 1" in caught.value.diagnostics()
    assert "trustplane kafka reset" in caught.value.diagnostics()


def test_a_cluster_state_dir_is_not_started_as_one_broker(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path, brokers=3)
    _write_state(kafka, **_cluster_state({1: (1, 2), 2: (3, 4), 3: (5, 6)}, {}))
    for node in (1, 2, 3):
        (tmp_path / f"node-{node}" / "data").mkdir(parents=True)
        (tmp_path / f"node-{node}" / "data" / "meta.properties").write_text("cluster.id=x\n")

    with pytest.raises(BrokerError, match="data of a 3-node cluster, not of 1"):
        LocalKafka(tmp_path, brokers=1).up()
    assert kafka._cluster_id() == "x"  # a node formatted again joins the same cluster

    kafka.reset()
    assert not list(tmp_path.glob("node-*/data"))
    assert kafka._formatted_brokers() == 0


# -- single nodes: pids, kill, start, down -------------------------------------------------


def _fake_node(kafka: LocalKafka, node: int) -> subprocess.Popen[bytes]:
    """A process that looks like node ``node`` of ``kafka`` (its command line)."""
    properties = str(kafka.state_dir / f"node-{node}" / "server.properties")
    proc = subprocess.Popen(  # noqa: S603 - the test's own stand-in
        [sys.executable, "-c", "import time; time.sleep(60)", "kafka.Kafka", properties]
    )
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 10
    while properties.encode() not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[tuple[LocalKafka, dict[int, subprocess.Popen[bytes]]]]:
    """A recorded three-node cluster whose nodes 1 and 3 "run" (stand-in processes)."""
    kafka = LocalKafka(tmp_path, brokers=3)
    procs = {node: _fake_node(kafka, node) for node in (1, 3)}
    pids = {node: proc.pid for node, proc in procs.items()}
    _write_state(kafka, **_cluster_state({1: (1, 2), 2: (3, 4), 3: (5, 6)}, {**pids, 2: 1}))
    yield kafka, procs
    for proc in procs.values():
        proc.kill()
        proc.wait()


def test_node_pids_lists_the_running_nodes_only(
    fake_cluster: tuple[LocalKafka, dict[int, subprocess.Popen[bytes]]],
) -> None:
    kafka, procs = fake_cluster
    # node 2's recorded pid (1) is not its process
    assert kafka.node_pids() == {1: procs[1].pid, 3: procs[3].pid}
    info = kafka._info()
    assert info.brokers == 3
    assert info.bootstrap == "127.0.0.1:1,127.0.0.1:3,127.0.0.1:5"
    assert [node.pid for node in info.nodes] == [procs[1].pid, None, procs[3].pid]
    assert info.pid == procs[1].pid


def test_kill_node_signals_only_that_node(
    fake_cluster: tuple[LocalKafka, dict[int, subprocess.Popen[bytes]]],
) -> None:
    kafka, procs = fake_cluster

    kafka.kill_node(3)

    assert procs[3].wait(timeout=5) == -signal.SIGKILL
    assert procs[1].poll() is None
    assert kafka.node_pids() == {1: procs[1].pid}
    with pytest.raises(BrokerError, match="node 3 .* is not running"):
        kafka.kill_node(3)
    with pytest.raises(BrokerError, match="no node 4"):
        kafka.kill_node(4)


def test_kill_node_passes_another_signal(
    fake_cluster: tuple[LocalKafka, dict[int, subprocess.Popen[bytes]]],
) -> None:
    kafka, procs = fake_cluster

    kafka.kill_node(1, signal.SIGTERM)

    assert procs[1].wait(timeout=5) == -signal.SIGTERM


def test_down_stops_every_node_and_forgets_the_pids(
    fake_cluster: tuple[LocalKafka, dict[int, subprocess.Popen[bytes]]],
) -> None:
    kafka, procs = fake_cluster

    assert kafka.down(timeout=5) is True

    assert {node: proc.wait(timeout=5) for node, proc in procs.items()} == {
        1: -signal.SIGTERM,
        3: -signal.SIGTERM,
    }
    state = json.loads(kafka.state_path.read_text())
    assert all("pid" not in node for node in state["nodes"])
    assert state["brokers"] == 3 and state["bootstrap"]  # the ports stay for the next `up`
    assert kafka.down() is False


def test_start_node_needs_a_cluster_that_ran(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="no broker has run") as caught:
        LocalKafka(tmp_path, brokers=3).start_node(2)
    assert "trustplane kafka up" in caught.value.diagnostics()


def test_start_node_refuses_a_node_the_cluster_lacks(
    fake_cluster: tuple[LocalKafka, dict[int, subprocess.Popen[bytes]]],
) -> None:
    kafka, _ = fake_cluster
    with pytest.raises(BrokerError, match="no node 7: .* nodes 1 to 3"):
        kafka.start_node(7)
    with pytest.raises(BrokerError, match="last ran 3 node"):
        LocalKafka(kafka.state_dir, brokers=1).start_node(1)
