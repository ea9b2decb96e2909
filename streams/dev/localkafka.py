"""The project's own Apache Kafka (KRaft mode), run natively with Java: a single broker,
or a cluster of a few nodes on this machine.

``LocalKafka(state_dir).up()`` resolves the broker's jars with Maven (``infra/kafka/pom.xml``,
once), writes ``server.properties``, formats the storage (once), starts ``java kafka.Kafka``
detached from the caller and waits until it answers a metadata request as ``admin``.
Everything it knows lives in ``state_dir``::

    lib/               the jars (+ ``.pom.sha256``: the pom they were resolved from)
    data/              the broker's log dir (topics, metadata log, meta.properties)
    credentials/       one password file per Kafka user (0700/0600, streams/credentials.py)
    server.properties  the broker's configuration (0600: it holds the broker's password)
    broker.log         the broker's stdout and stderr (the previous one is broker.log.1)
    broker.json        bootstrap, pid and ports of the running broker (read by clients)

``LocalKafka(state_dir, brokers=3)`` (``trustplane kafka up --brokers 3``) runs a cluster
instead: each node is broker and controller at once, every node a voter of the controller
quorum, and each has its own folder in place of ``data/``, ``server.properties`` and
``broker.log``::

    node-1/ node-2/ node-3/   data/, server.properties, broker.log of each node
    broker.json               the count, every node's address (bootstrap), ports and pid

From three nodes on, topics get 3 replicas and ``min.insync.replicas=2`` (the offsets and
transaction state topics too) and unclean leader election stays off: a record acknowledged
to an ``acks=all`` producer survives the loss of any one node.

The broker authenticates every connection, on the client listener and on the controller
listener alike: SASL_PLAINTEXT with SCRAM-SHA-512 (a PLAINTEXT controller listener would
let any local process send CreateTopics or CreateAcls to it). ``StandardAuthorizer`` with
``allow.everyone.if.no.acl.found=false`` refuses what no ACL allows; ``broker`` (the node
itself) and ``admin`` (provisioning) are the only super users. Their SCRAM credentials
are written into the metadata when the storage is formatted (``StorageTool --add-scram``),
the only time the broker can bootstrap users; the roles' users, the topics and the ACLs
are created afterwards by ``streams/provision.py`` (``trustplane kafka up`` does both).
The controllers of a cluster log in to each other before any metadata (where SCRAM
credentials live) is replicated, which Kafka 3.9 cannot do with SCRAM (KAFKA-15513): their
listener takes SASL PLAIN instead, with ``broker`` as its only user.

``broker.json`` is how a later process (``trustplane kafka status``/``down``, clients
looking for the bootstrap servers) finds the broker again. Ports are kept across restarts
so clients that read ``broker.json`` once keep working.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from processors.exceptions import TrustplaneError
from streams import kafka
from streams.acls import ADMIN, BROKER, SUPER_USERS
from streams.config import PROJECT_ROOT
from streams.credentials import CredentialStore, write_private
from streams.dev.ports import free_ports
from streams.dev.process import (
    command_line,
    has_exited,
    read_text,
    spawn_detached,
    stop_process,
    tail,
)
from streams.sdk.config import DEFAULT_SASL_MECHANISM, ClientConfig, Secret

__all__ = [
    "BrokerError",
    "LegacyBrokerError",
    "BrokerInfo",
    "NodeInfo",
    "LocalKafka",
    "MAX_BROKERS",
    "render_server_properties",
    "replication",
]

HOST = "127.0.0.1"
NODE_ID = 1
HEAP = "-Xmx512m"
CLUSTER_JVM = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
"""A cluster's nodes skip the optimising JIT and the parallel collector: half the CPU time
to start three JVMs (measured 18 s instead of 35 s on 2 cores), ample speed for a dev cluster."""
MAX_BROKERS = 5
INSTALL_HINT = (
    "the local broker needs Java 17+ and Maven, and network access to Maven Central "
    "(https://repo.maven.apache.org) the first time; on Debian/Ubuntu: "
    "`apt-get install maven openjdk-17-jre-headless`"
)


class BrokerError(TrustplaneError):
    """The local Kafka broker could not be fetched, started or stopped."""


class LegacyBrokerError(BrokerError):
    """The state dir holds a broker formatted without authentication (before SASL)."""


@dataclass(frozen=True)
class NodeInfo:
    """One node of the local broker or cluster."""

    node_id: int
    port: int
    controller_port: int
    pid: int | None
    """None: the node is not running."""
    data_dir: Path
    log_path: Path

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class BrokerInfo:
    """A running local broker or cluster, as written to ``broker.json``."""

    bootstrap: str
    """Every node's ``host:port``, comma-separated."""
    pid: int
    """The broker's pid; a cluster's first running node's (``nodes`` has each one's)."""
    controller_port: int
    data_dir: Path
    log_path: Path
    nodes: tuple[NodeInfo, ...] = ()

    @property
    def brokers(self) -> int:
        """How many nodes the broker has (1 unless it is a cluster)."""
        return len(self.nodes) or 1


def replication(brokers: int) -> tuple[int, int]:
    """The replication factor and ``min.insync.replicas`` of a local cluster of ``brokers``
    nodes: 3 and 2 from three nodes on (any one node may fail), 1 and 1 for one broker."""
    factor = min(3, brokers)
    return factor, max(1, factor - 1)


def render_server_properties(
    port: int,
    controller_port: int,
    data_dir: Path,
    broker_password: Secret,
    *,
    node_id: int = NODE_ID,
    voters: Mapping[int, int] | None = None,
) -> str:
    """A node's ``server.properties``: broker and controller in one process, SASL on both
    listeners, ACLs enforced. ``voters`` maps each node id of a cluster to its controller
    port (default: this node alone). It holds ``broker``'s password: 0600."""
    quorum = dict(voters or {node_id: controller_port})
    cluster = len(quorum) > 1
    factor, min_isr = replication(len(quorum))
    mechanism = DEFAULT_SASL_MECHANISM
    password = broker_password.get()
    login = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{BROKER}" password="{password}";'
    )
    controller_mechanism = "PLAIN" if cluster else mechanism  # KAFKA-15513, see the module doc
    controller_login = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{BROKER}" password="{password}" user_{BROKER}="{password}";'
        if cluster
        else login
    )
    settings: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.voters": ",".join(
            f"{voter}@{HOST}:{voter_port}" for voter, voter_port in sorted(quorum.items())
        ),
        "listeners": f"SASL_PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        # clients and the node's own inter-broker connections
        "sasl.enabled.mechanisms": mechanism,
        "sasl.mechanism.inter.broker.protocol": mechanism,
        f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config": login,
        # the controller listener: the broker side of this node logs in as `broker`
        "sasl.mechanism.controller.protocol": controller_mechanism,
        "listener.name.controller.sasl.enabled.mechanisms": controller_mechanism,
        f"listener.name.controller.{controller_mechanism.lower()}.sasl.jaas.config": (
            controller_login
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(f"User:{user}" for user in SUPER_USERS),
        "log.dirs": data_dir,
        "num.partitions": 4,
        "auto.create.topics.enable": "false",
        # Tests send a 5 MiB poison record; it must reach the gate to be rejected there.
        "message.max.bytes": 8 * 1024 * 1024,
        "replica.fetch.max.bytes": 8 * 1024 * 1024,
        "offsets.topic.replication.factor": factor,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 4,
        "transaction.max.timeout.ms": 900_000,
        "group.initial.rebalance.delay.ms": 0,
        "log.retention.hours": 168,
    }
    if cluster:
        settings |= {
            "default.replication.factor": factor,
            "min.insync.replicas": min_isr,
            "unclean.leader.election.enable": "false",
            # a node that stops heartbeating is fenced (its partitions move) after 3 s,
            # not Kafka's 9: the local cluster is for watching failures, on loopback
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 3000,
        }
    lines = ["# Written by streams/dev/localkafka.py on every `up`; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Java's listeners do
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def random_cluster_id() -> str:
    """A cluster id like Kafka's ``Uuid.randomUuid()``: base64url, 22 chars, no leading '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


Ports = dict[int, tuple[int, int]]
"""Node id -> (client port, controller port)."""


class LocalKafka:
    """Fetch, start, inspect and stop the broker (or cluster) whose files live in
    ``state_dir``.

    ``brokers`` is how many nodes ``up`` starts; unset, the count the state dir was last
    run with (1 for a new one). ``port`` is the (first node's) client port."""

    def __init__(
        self,
        state_dir: Path,
        *,
        brokers: int | None = None,
        pom_dir: Path = PROJECT_ROOT / "infra" / "kafka",
        port: int | None = None,
        progress: Callable[[str], None] = lambda msg: None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.pom_dir = Path(pom_dir).resolve()
        self.port = port
        self.progress = progress
        self.lib_dir = self.state_dir / "lib"
        self.data_dir = self.state_dir / "data"
        self.log_path = self.state_dir / "broker.log"
        self.properties_path = self.state_dir / "server.properties"
        self.state_path = self.state_dir / "broker.json"
        self.credentials = CredentialStore(self.state_dir / "credentials")
        self.scram_marker = self.state_dir / ".data-has-scram-users"
        """Written when ``data/`` is formatted with the SCRAM users (not by older versions)."""
        self.brokers = self._recorded_brokers(self._read_state()) if brokers is None else brokers
        if not 1 <= self.brokers <= MAX_BROKERS:
            raise BrokerError(
                f"a local cluster has 1 to {MAX_BROKERS} nodes, not {self.brokers}",
                hint="3 nodes tolerate the loss of one (replication factor 3, min ISR 2)",
            )

    # -- public API -----------------------------------------------------------

    def fetch(self) -> Path:
        """Resolve the broker's jars into ``state_dir/lib`` (skipped when already done)."""
        pom = self.pom_dir / "pom.xml"
        try:
            digest = hashlib.sha256(pom.read_bytes()).hexdigest()
        except OSError as exc:
            raise BrokerError(f"cannot read {pom}: {exc}") from exc
        marker = self.lib_dir / ".pom.sha256"
        if marker.is_file() and marker.read_text().strip() == digest:
            return self.lib_dir

        mvn = self._require("mvn", "java")[0]
        self.progress(f"resolving Kafka {_kafka_version(pom)} jars with Maven…")
        staging = self.state_dir / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom),
            "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]  # fmt: skip
        try:
            result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
                command, capture_output=True, text=True, timeout=900, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError("Maven did not finish in 15 minutes", hint=INSTALL_HINT) from exc
        if result.returncode != 0 or not any(staging.glob("kafka_*.jar")):
            output = tail(_strip_ansi(result.stdout + result.stderr), 15)
            raise BrokerError(
                f"Maven could not resolve the Kafka jars (exit {result.returncode}):\n{output}",
                hint=INSTALL_HINT,
            )
        (staging / marker.name).write_text(digest + "\n")
        shutil.rmtree(self.lib_dir, ignore_errors=True)
        staging.rename(self.lib_dir)
        return self.lib_dir

    def admin_endpoint(self, bootstrap: str) -> ClientConfig:
        """How ``admin`` reaches this broker (its password from the credentials dir)."""
        return ClientConfig(
            bootstrap_servers=bootstrap,
            username=ADMIN,
            password_file=self.credentials.path(ADMIN),
        )

    def is_legacy(self) -> bool:
        """Whether ``data/`` was formatted without SCRAM users (an older, PLAINTEXT broker)."""
        return (self.data_dir / "meta.properties").exists() and not self.scram_marker.exists()

    def up(self, timeout: float = 60.0) -> BrokerInfo:
        """Start the broker (every node of a cluster), or return the one already running
        from this state dir; the stopped nodes of a running cluster are started again."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if self.is_legacy():
                legacy_pid = self._running_pid()
                raise LegacyBrokerError(
                    f"the local broker's data in {self.data_dir} was formatted without "
                    "authentication (by a trustplane before SASL/SCRAM and ACLs were on): it "
                    "has no SCRAM users, and Kafka adds them only when storage is formatted",
                    hint="it is a throwaway development broker: `trustplane kafka reset` "
                    + ("stops it, " if legacy_pid is not None else "")
                    + "deletes its topics and offsets (the jars stay), and the next "
                    "`trustplane kafka up` starts it with authentication and ACLs",
                )
            self._refuse_another_size()
            running = self.node_pids()
            if len(running) == self.brokers:
                info = self._info()
                if self._serving(info) == set(running):
                    self.progress(
                        f"broker already running on {info.bootstrap} (pid {info.pid})"
                        if self.brokers == 1
                        else f"{self.brokers} nodes already running on {info.bootstrap}"
                    )
                    return info
                return self._wait_ready(info, running, time.monotonic(), timeout)  # starting

            if not running and self.port is not None and not port_is_free(self.port):
                raise BrokerError(
                    f"port {self.port} on {HOST} is in use", hint="pick another port or none"
                )
            self.fetch()
            java = self._require("java")[0]
            # a running node keeps its ports; the quorum's voters must stay where they are
            ports = self._recorded_ports(self._read_state()) if running else self._choose_all()
            stopped = [node for node in ports if node not in running]
            if running:
                for node in stopped:
                    self._check_ports_free(node, ports)
            broker_password = self.credentials.ensure(BROKER)
            for node in stopped:
                self._write_properties(node, ports, broker_password)
            unformatted = [n for n in stopped if not (self._data(n) / "meta.properties").exists()]
            cluster_id = self._cluster_id()
            if unformatted:
                users = {BROKER: broker_password, ADMIN: self.credentials.ensure(ADMIN)}
                self._format(java, unformatted, cluster_id, users)

            started = time.monotonic()
            if self.brokers == 1:
                self.progress(f"starting broker on {HOST}:{ports[NODE_ID][0]}…")
            else:
                self.progress(f"starting nodes {', '.join(map(str, stopped))} of {len(ports)}…")
            spawned = {node: self._spawn(java, node) for node in stopped}
            self._write_state(ports, {**running, **spawned}, cluster_id)
            return self._wait_ready(self._info(), spawned, started, timeout)

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the broker, every node of a cluster (SIGTERM, SIGKILL after ``timeout``);
        True if one was running."""
        with self._locked():
            pids = self.node_pids()
            self._stop(pids, timeout)
            state = self._read_state()
            state.pop("pid", None)  # stopped or stale; the ports stay for the next `up`
            for node in state.get("nodes", []):
                if isinstance(node, dict):
                    node.pop("pid", None)
            if state:
                self._write_json(state)
            return bool(pids)

    def status(self) -> BrokerInfo | None:
        """The running broker's info if it answers a metadata request, else None. A
        cluster answers while any node does; ``nodes`` says which ones run."""
        if self.is_legacy() or not self.node_pids():
            return None
        info = self._info()
        return info if self._serving(info) else None

    def reset(self) -> None:
        """Stop the broker and delete its data (topics, offsets, users and ACLs); the jars
        and the password files are kept (the next `up` creates the users again)."""
        self.down()
        self.scram_marker.unlink(missing_ok=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for node_dir in self.state_dir.glob("node-*"):
            shutil.rmtree(node_dir / "data", ignore_errors=True)

    # -- single nodes (the chaos tests' handles) -----------------------------

    def node_pids(self) -> dict[int, int]:
        """Node id -> pid of each node of this state dir that is running now."""
        state = self._read_state()
        brokers = self._recorded_brokers(state)
        recorded: dict[int, object] = (
            {NODE_ID: state.get("pid")}
            if brokers == 1
            else {
                int(node["node_id"]): node.get("pid")
                for node in state.get("nodes", [])
                if isinstance(node, dict) and isinstance(node.get("node_id"), int)
            }
        )
        return {
            node: pid
            for node, pid in recorded.items()
            if isinstance(pid, int) and self._is_our_node(node, pid, brokers)
        }

    def kill_node(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one running node (a crash, by default); with SIGKILL, return
        once the process is gone."""
        brokers = self._recorded_brokers(self._read_state())
        self._check_node(node_id, brokers)
        pid = self.node_pids().get(node_id)
        if pid is None:
            raise BrokerError(
                f"node {node_id} of {self.state_dir} is not running",
                hint="`trustplane kafka status` lists the nodes that run",
            )
        name = signal.Signals(sig).name if sig in set(signal.Signals) else str(sig)
        self.progress(f"signal {name} to node {node_id} (pid {pid})")
        os.kill(pid, sig)
        deadline = time.monotonic() + 10.0
        while sig == signal.SIGKILL and not self._exited(node_id, pid, brokers):
            if time.monotonic() > deadline:
                raise BrokerError(f"node {node_id} (pid {pid}) survived SIGKILL")
            time.sleep(0.05)

    def start_node(self, node_id: int, timeout: float = 60.0) -> None:
        """Start one stopped (or killed) node of the broker that last ran from this state
        dir, on its own ports, and wait until it serves again (at once if it runs)."""
        with self._locked():
            state = self._read_state()
            brokers = self._recorded_brokers(state)
            ports = self._recorded_ports(state)
            if not ports:
                raise BrokerError(
                    f"no broker has run from {self.state_dir} yet",
                    hint="start it whole first: `trustplane kafka up`",
                )
            self._check_node(node_id, brokers)
            if brokers != self.brokers:
                raise BrokerError(
                    f"{self.state_dir} last ran {brokers} node(s), not {self.brokers}",
                    hint=f"use LocalKafka(state_dir, brokers={brokers}), or leave brokers unset",
                )
            running = self.node_pids()
            started = time.monotonic()
            if node_id in running:
                self._wait_ready(self._info(), {node_id: running[node_id]}, started, timeout)
                return
            self._check_ports_free(node_id, ports)
            java = self._require("java")[0]
            self._write_properties(node_id, ports, self.credentials.ensure(BROKER))
            if not (self._data(node_id) / "meta.properties").exists():
                users = {
                    BROKER: self.credentials.ensure(BROKER),
                    ADMIN: self.credentials.ensure(ADMIN),
                }
                self._format(java, [node_id], self._cluster_id(), users)
            self.progress(f"starting node {node_id} on {HOST}:{ports[node_id][0]}…")
            spawned = {node_id: self._spawn(java, node_id)}
            self._write_state(ports, {**running, **spawned}, self._cluster_id())
            self._wait_ready(self._info(), spawned, started, timeout)

    # -- a node's files --------------------------------------------------------

    def _home(self, node_id: int, brokers: int | None = None) -> Path:
        """A node's folder: the state dir itself for a single broker."""
        return (
            self.state_dir if (brokers or self.brokers) == 1 else self.state_dir / f"node-{node_id}"
        )

    def _data(self, node_id: int, brokers: int | None = None) -> Path:
        return self._home(node_id, brokers) / "data"

    def _properties(self, node_id: int, brokers: int | None = None) -> Path:
        return self._home(node_id, brokers) / "server.properties"

    def _log(self, node_id: int, brokers: int | None = None) -> Path:
        return self._home(node_id, brokers) / "broker.log"

    # -- steps of `up` --------------------------------------------------------

    def _refuse_another_size(self) -> None:
        """Refuse to start a state dir formatted for another number of nodes."""
        found = self._formatted_brokers()
        if found and found != self.brokers:
            size = {1: "a single broker"}.get(found, f"a {found}-node cluster")
            raise BrokerError(
                f"{self.state_dir} holds the data of {size}, not of {self.brokers} node(s)",
                hint=f"`trustplane kafka up --brokers {found}` starts it as it is; "
                "`trustplane kafka reset` deletes its topics and users first (any size then); "
                "or start the other size in a state dir of its own (TRUSTPLANE_STATE_DIR)",
            )

    def _formatted_brokers(self) -> int:
        """How many nodes the data in the state dir belongs to (0: none formatted)."""
        if (self.data_dir / "meta.properties").exists():
            return 1
        formatted = list(self.state_dir.glob("node-*/data/meta.properties"))
        if not formatted:
            return 0
        recorded = self._read_state().get("brokers")
        return recorded if isinstance(recorded, int) and recorded > 1 else len(formatted)

    def _choose_ports(self) -> tuple[int, int]:
        """A single broker's ports (see :meth:`_choose_all`)."""
        return self._choose_all(1)[NODE_ID]

    def _choose_all(self, brokers: int | None = None) -> Ports:
        """Each node's last ports when they are still free (clients keep working), else
        new ones; ``port``, when given, is the first node's client port."""
        count = brokers or self.brokers
        state = self._read_state()
        recorded = self._recorded_ports(state) if self._recorded_brokers(state) == count else {}
        kept: dict[tuple[int, int], int] = {}
        if self.port is not None:
            kept[(NODE_ID, 0)] = self.port
        for node, pair in sorted(recorded.items()):
            for kind, port in enumerate(pair):
                if (node, kind) not in kept and port not in kept.values() and port_is_free(port):
                    kept[(node, kind)] = port
        fresh = [port for port in free_ports(2 * count) if port not in kept.values()]
        return {
            node: (
                kept.get((node, 0)) or fresh.pop(),
                kept.get((node, 1)) or fresh.pop(),
            )
            for node in range(1, count + 1)
        }

    def _write_properties(self, node_id: int, ports: Ports, broker_password: Secret) -> None:
        port, controller_port = ports[node_id]
        self._home(node_id).mkdir(parents=True, exist_ok=True)
        write_private(
            self._properties(node_id),
            render_server_properties(
                port,
                controller_port,
                self._data(node_id),
                broker_password,
                node_id=node_id,
                voters={node: pair[1] for node, pair in ports.items()},
            ),
        )

    def _cluster_id(self) -> str:
        """The id the nodes were formatted with (all nodes share it), else a new one."""
        for meta in [
            self.data_dir / "meta.properties",
            *self.state_dir.glob("node-*/data/meta.properties"),
        ]:
            found = re.search(r"^cluster\.id=(\S+)", read_text(meta), re.MULTILINE)
            if found:
                return found.group(1)
        return random_cluster_id()

    def _format(
        self, java: str, nodes: list[int], cluster_id: str, users: dict[str, Secret]
    ) -> None:
        """Format the nodes' storage (in parallel) with the SCRAM users they start with.

        StorageTool takes the passwords as arguments (visible in /proc for the few
        seconds it runs); only ``broker`` and ``admin`` are created this way, the roles'
        users through the admin API."""
        self.progress("formatting KRaft storage…")
        scram: list[str] = []
        for user, password in users.items():
            scram += [
                "--add-scram",
                f"{DEFAULT_SASL_MECHANISM}=[name={user},password={password.get()}]",
            ]
        running = {
            node: subprocess.Popen(  # noqa: S603 - fixed arguments, no shell
                [
                    *self._java_command(java, "kafka.tools.StorageTool", *self._tuning()),
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(self._properties(node)),
                    *scram,
                ],  # fmt: skip
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for node in nodes
        }
        failed: list[str] = []
        for node, process in running.items():
            try:
                output, _ = process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
            if process.returncode != 0:
                for password in users.values():
                    output = output.replace(password.get(), "********")
                failed.append(f"node {node}:\n{tail(output)}" if len(nodes) > 1 else tail(output))
        if failed:
            data = self.data_dir if self.brokers == 1 else self.state_dir / "node-*" / "data"
            raise BrokerError(
                "formatting the broker's storage failed:\n" + "\n".join(failed),
                hint=f"delete {data} (all local topics are lost) and retry",
            )
        if self.brokers == 1:
            self.scram_marker.write_text(" ".join(users) + "\n")

    def _tuning(self) -> tuple[str, ...]:
        return () if self.brokers == 1 else CLUSTER_JVM

    def _spawn(self, java: str, node_id: int) -> int:
        command = [
            *self._java_command(java, "kafka.Kafka", HEAP, *self._tuning()),
            str(self._properties(node_id)),
        ]
        return spawn_detached(
            command,
            self._log(node_id),
            cwd=self._home(node_id),
            timeout=60,
            error=BrokerError,
            what="Java",
            hint=INSTALL_HINT,
        )

    def _serving(self, info: BrokerInfo) -> set[int]:
        """The nodes that answer ``admin``'s metadata request themselves.

        Asked one by one: a node killed moments ago is still listed by the others until
        the controller fences it, and a node's own listener opens only once it is back
        in the cluster (caught up and unfenced)."""
        if not self.credentials.exists(ADMIN):
            return set()
        return {
            node.node_id
            for node in info.nodes
            if node.node_id in _live_brokers(node.address, self.admin_endpoint(node.address))
        }

    def _wait_ready(
        self, info: BrokerInfo, watched: dict[int, int], started: float, timeout: float
    ) -> BrokerInfo:
        """Wait until every node in ``watched`` (node id -> pid) serves; stop them if they
        do not within ``timeout``."""
        deadline = started + timeout
        waiting = set(watched)
        while waiting:
            waiting -= self._serving(info)
            if not waiting:
                break
            for node in sorted(waiting):
                if self._exited(node, watched[node], self.brokers):
                    log = self._log(node)
                    raise BrokerError(
                        f"the {self._name(node)} exited while starting; last lines of {log}:\n"
                        f"{tail(read_text(log))}",
                        hint=f"see {log}; if the data is damaged, a reset starts empty",
                    )
            if time.monotonic() > deadline:
                self._stop({node: watched[node] for node in waiting}, 10.0)
                logs = ", ".join(str(self._log(node)) for node in sorted(waiting))
                raise BrokerError(
                    f"the {self._name(min(waiting))} did not answer on {info.bootstrap} within "
                    f"{timeout:.0f} s (stopped it); last lines of {self._log(min(waiting))}:\n"
                    f"{tail(read_text(self._log(min(waiting))))}",
                    hint=f"a slow machine may need a longer timeout; see {logs}",
                )
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        if self.brokers == 1:
            self.progress(f"broker ready in {elapsed:.1f} s")
        else:
            self.progress(
                f"node(s) {', '.join(map(str, sorted(watched)))} ready in {elapsed:.1f} s"
            )
        return self._info()

    def _name(self, node_id: int) -> str:
        return "broker" if self.brokers == 1 else f"node {node_id}"

    def _java_command(self, java: str, main_class: str, *options: str) -> list[str]:
        return [
            java,
            *options,
            "-cp",
            f"{self.lib_dir}/*",
            f"-Dlog4j.configuration=file:{self.pom_dir / 'log4j.properties'}",
            main_class,
        ]

    # -- the running processes ------------------------------------------------

    def _running_pid(self) -> int | None:
        return self.node_pids().get(NODE_ID)

    def _is_our_node(self, node_id: int, pid: int, brokers: int | None = None) -> bool:
        """True only for a live ``java kafka.Kafka`` started with this node's config."""
        args = command_line(pid)
        return "kafka.Kafka" in args and args[-1] == str(self._properties(node_id, brokers))

    def _exited(self, node_id: int, pid: int, brokers: int) -> bool:
        """Whether the node's process is gone with its sockets closed: a dying process
        loses its command line before its file descriptors, a zombie has closed them."""
        return has_exited(pid, lambda candidate: self._is_our_node(node_id, candidate, brokers))

    def _is_our_broker(self, pid: int) -> bool:
        """True only for a live ``java kafka.Kafka`` started with a config of this state dir."""
        args = command_line(pid)
        ours = {str(self.properties_path)} | {
            str(path) for path in self.state_dir.glob("node-*/server.properties")
        }
        return "kafka.Kafka" in args and args[-1] in ours

    def _check_ports_free(self, node_id: int, ports: Ports, wait: float = 10.0) -> None:
        """A node joining running ones must take its own ports (the others' quorum
        configuration names its controller port); those of a node that has just died
        take a moment to close."""
        deadline = time.monotonic() + wait
        while busy := [port for port in ports[node_id] if not port_is_free(port)]:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"port {busy[0]} of node {node_id} is in use by another process",
                    hint="`trustplane kafka down` then `up` moves every node to free ports",
                )
            time.sleep(0.2)

    def _check_node(self, node_id: int, brokers: int) -> None:
        if not 1 <= node_id <= brokers:
            raise BrokerError(
                f"no node {node_id}: the broker of {self.state_dir} has nodes 1 to {brokers}"
            )

    def _stop(self, pids: dict[int, int], timeout: float) -> None:
        """SIGTERM every node at once (a cluster's last nodes would otherwise wait for a
        quorum that is gone), then SIGKILL whichever is left after ``timeout``."""
        if not pids:
            return
        listed = ", ".join(f"{node} (pid {pid})" for node, pid in sorted(pids.items()))
        self.progress(
            f"stopping broker (pid {pids[min(pids)]})…"
            if len(pids) == 1 and self.brokers == 1
            else f"stopping node(s) {listed}…"
        )
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for pid in pids.values():
            stop_process(
                pid,
                self._is_our_broker,
                timeout=max(0.0, deadline - time.monotonic()),
                kill_wait=10.0,
                error=BrokerError,
                what="broker",
            )

    # -- broker.json ----------------------------------------------------------

    @staticmethod
    def _recorded_brokers(state: Mapping[str, Any]) -> int:
        count = state.get("brokers", 1)
        return count if isinstance(count, int) and count >= 1 else 1

    def _recorded_ports(self, state: Mapping[str, Any]) -> Ports:
        """Each node's ports as ``broker.json`` has them (empty: none recorded)."""
        if self._recorded_brokers(state) > 1:
            return {
                int(node["node_id"]): (int(node["port"]), int(node["controller_port"]))
                for node in state.get("nodes", [])
                if isinstance(node, dict) and {"node_id", "port", "controller_port"} <= set(node)
            }
        bootstrap, controller = state.get("bootstrap"), state.get("controller_port")
        if not isinstance(bootstrap, str) or not isinstance(controller, int):
            return {}
        return {NODE_ID: (int(bootstrap.rsplit(":", 1)[1]), controller)}

    def _info(self) -> BrokerInfo:
        state = self._read_state()
        brokers = self._recorded_brokers(state)
        pids = self.node_pids()
        nodes = tuple(
            NodeInfo(
                node_id=node,
                port=port,
                controller_port=controller,
                pid=pids.get(node),
                data_dir=self._data(node, brokers),
                log_path=self._log(node, brokers),
            )
            for node, (port, controller) in sorted(self._recorded_ports(state).items())
        )
        if brokers == 1:
            return BrokerInfo(
                bootstrap=str(state["bootstrap"]),
                pid=pids.get(NODE_ID, 0),
                controller_port=int(state["controller_port"]),
                data_dir=Path(state.get("data_dir", self.data_dir)),
                log_path=Path(state.get("log_path", self.log_path)),
                nodes=nodes,
            )
        first = next((node for node in nodes if node.pid is not None), nodes[0])
        return BrokerInfo(
            bootstrap=",".join(node.address for node in nodes),
            pid=first.pid or 0,
            controller_port=first.controller_port,
            data_dir=first.data_dir,
            log_path=first.log_path,
            nodes=nodes,
        )

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self, ports: Ports, pids: Mapping[int, int], cluster_id: str) -> None:
        if self.brokers == 1:
            port, controller_port = ports[NODE_ID]
            self._write_json(
                {
                    "bootstrap": f"{HOST}:{port}",
                    "pid": pids[NODE_ID],
                    "controller_port": controller_port,
                    "data_dir": str(self.data_dir),
                    "log_path": str(self.log_path),
                }
            )
            return
        nodes = [
            {
                "node_id": node,
                "port": port,
                "controller_port": controller,
                **({"pid": pids[node]} if node in pids else {}),
                "data_dir": str(self._data(node)),
                "log_path": str(self._log(node)),
            }
            for node, (port, controller) in sorted(ports.items())
        ]
        self._write_json(
            {
                "brokers": self.brokers,
                "bootstrap": ",".join(f"{HOST}:{node['port']}" for node in nodes),
                "cluster_id": cluster_id,
                "nodes": nodes,
            }
        )

    def _write_json(self, state: dict[str, Any]) -> None:
        partial = self.state_path.with_suffix(".json.partial")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.replace(self.state_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up`/`down`/`start_node` at a time per state dir, across processes."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @staticmethod
    def _require(*programs: str) -> list[str]:
        found = {name: shutil.which(name) for name in programs}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise BrokerError(f"not found on PATH: {', '.join(missing)}", hint=INSTALL_HINT)
        return [path for path in found.values() if path is not None]


def _live_brokers(bootstrap: str, endpoint: kafka.KafkaEndpoint) -> set[int]:
    """The ids of the brokers that the cluster at ``bootstrap`` lists as serving (empty
    when nothing answers), quietly and quickly."""
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    try:  # a plain connect first: librdkafka logs every refused connection
        with socket.create_connection((host, int(port)), timeout=1.0):
            pass
    except OSError:
        return set()
    admin = kafka.admin(endpoint, {"log_level": 0})
    try:
        return set(admin.list_topics(timeout=2.0).brokers)
    except KafkaException:
        return set()


def _kafka_version(pom: Path) -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", read_text(pom))
    return match.group(1) if match else "(version from pom)"


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
