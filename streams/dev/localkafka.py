"""The project's own single-node Apache Kafka broker (KRaft mode), run natively with Java.

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

The broker authenticates every connection, on the client listener and on the controller
listener alike: SASL_PLAINTEXT with SCRAM-SHA-512 (a PLAINTEXT controller listener would
let any local process send CreateTopics or CreateAcls to it). ``StandardAuthorizer`` with
``allow.everyone.if.no.acl.found=false`` refuses what no ACL allows; ``broker`` (the node
itself) and ``admin`` (provisioning) are the only super users. Their SCRAM credentials
are written into the metadata when the storage is formatted (``StorageTool --add-scram``),
the only time the broker can bootstrap users; the roles' users, the topics and the ACLs
are created afterwards by ``streams/provision.py`` (``trustplane kafka up`` does both).

so a later process (``trustplane kafka status``/``down``) finds the broker again. Ports are
kept across restarts so clients that read ``broker.json`` once keep working.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from processors.exceptions import TrustplaneError
from streams import kafka
from streams.acls import ADMIN, BROKER, SUPER_USERS
from streams.config import PROJECT_ROOT
from streams.credentials import CredentialStore, write_private
from streams.dev.process import command_line, read_text, spawn_detached, stop_process, tail
from streams.sdk.config import DEFAULT_SASL_MECHANISM, ClientConfig, Secret

__all__ = [
    "BrokerError",
    "LegacyBrokerError",
    "BrokerInfo",
    "LocalKafka",
    "render_server_properties",
]

HOST = "127.0.0.1"
NODE_ID = 1
HEAP = "-Xmx512m"
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
class BrokerInfo:
    """A running local broker, as written to ``broker.json``."""

    bootstrap: str
    pid: int
    controller_port: int
    data_dir: Path
    log_path: Path


def render_server_properties(
    port: int, controller_port: int, data_dir: Path, broker_password: Secret
) -> str:
    """The broker's ``server.properties``: one node that is both broker and controller,
    SASL/SCRAM on both listeners, ACLs enforced. It holds ``broker``'s password: 0600."""
    mechanism = DEFAULT_SASL_MECHANISM
    login = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{BROKER}" password="{broker_password.get()}";'
    )
    settings = {
        "process.roles": "broker,controller",
        "node.id": NODE_ID,
        "controller.quorum.voters": f"{NODE_ID}@{HOST}:{controller_port}",
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
        "sasl.mechanism.controller.protocol": mechanism,
        "listener.name.controller.sasl.enabled.mechanisms": mechanism,
        f"listener.name.controller.{mechanism.lower()}.sasl.jaas.config": login,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(f"User:{user}" for user in SUPER_USERS),
        "log.dirs": data_dir,
        "num.partitions": 4,
        "auto.create.topics.enable": "false",
        # Tests send a 5 MiB poison record; it must reach the gate to be rejected there.
        "message.max.bytes": 8 * 1024 * 1024,
        "replica.fetch.max.bytes": 8 * 1024 * 1024,
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "transaction.max.timeout.ms": 900_000,
        "group.initial.rebalance.delay.ms": 0,
        "log.retention.hours": 168,
    }
    lines = ["# Written by streams/dev/localkafka.py on every `up`; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nobody listens on right now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


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


class LocalKafka:
    """Fetch, start, inspect and stop the broker whose files live in ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        *,
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
        """Start the broker, or return the one already running from this state dir."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if self.is_legacy():
                running = self._running_pid()
                raise LegacyBrokerError(
                    f"the local broker's data in {self.data_dir} was formatted without "
                    "authentication (by a trustplane before SASL/SCRAM and ACLs were on): it "
                    "has no SCRAM users, and Kafka adds them only when storage is formatted",
                    hint="it is a throwaway development broker: `trustplane kafka reset` "
                    + ("stops it, " if running is not None else "")
                    + "deletes its topics and offsets (the jars stay), and the next "
                    "`trustplane kafka up` starts it with authentication and ACLs",
                )
            running = self._running_pid()
            if running is not None:
                info = self._info(running)
                if self._answers(info.bootstrap):
                    self.progress(f"broker already running on {info.bootstrap} (pid {running})")
                    return info
                return self._wait_ready(info, time.monotonic(), timeout)  # still starting

            if self.port is not None and not port_is_free(self.port):
                raise BrokerError(
                    f"port {self.port} on {HOST} is in use", hint="pick another port or none"
                )
            self.fetch()
            java = self._require("java")[0]
            port, controller_port = self._choose_ports()
            broker_password = self.credentials.ensure(BROKER)
            write_private(
                self.properties_path,
                render_server_properties(port, controller_port, self.data_dir, broker_password),
            )
            if not (self.data_dir / "meta.properties").exists():
                self._format(java, {BROKER: broker_password, ADMIN: self.credentials.ensure(ADMIN)})

            self.progress(f"starting broker on {HOST}:{port}…")
            started = time.monotonic()
            pid = self._spawn(java)
            info = BrokerInfo(f"{HOST}:{port}", pid, controller_port, self.data_dir, self.log_path)
            self._write_state(info)
            return self._wait_ready(info, started, timeout)

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, SIGKILL after ``timeout``); True if one was running."""
        with self._locked():
            pid = self._running_pid()
            if pid is not None:
                self._stop(pid, timeout)
            state = self._read_state()
            if "pid" in state:  # stopped or stale; the ports stay for the next `up`
                del state["pid"]
                self._write_json(state)
            return pid is not None

    def status(self) -> BrokerInfo | None:
        """The running broker's info if it answers a metadata request, else None."""
        pid = self._running_pid()
        if pid is None or self.is_legacy():
            return None
        info = self._info(pid)
        return info if self._answers(info.bootstrap) else None

    def reset(self) -> None:
        """Stop the broker and delete its data (topics, offsets, users and ACLs); the jars
        and the password files are kept (the next `up` creates the users again)."""
        self.down()
        self.scram_marker.unlink(missing_ok=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- steps of `up` --------------------------------------------------------

    def _choose_ports(self) -> tuple[int, int]:
        """Last run's ports when they are still free (clients keep working), else new ones."""
        state = self._read_state()
        old_port = int(state["bootstrap"].rsplit(":", 1)[1]) if "bootstrap" in state else None
        old_controller = state.get("controller_port")
        port = self.port
        if port is None and old_port is not None and port_is_free(old_port):
            port = old_port
        controller = None
        if isinstance(old_controller, int) and old_controller != port:
            controller = old_controller if port_is_free(old_controller) else None
        fresh = [p for p in free_ports(4) if p not in (port, controller)]
        return (fresh.pop() if port is None else port), (
            fresh.pop() if controller is None else controller
        )

    def _format(self, java: str, users: dict[str, Secret]) -> None:
        """Format the storage with the SCRAM users the broker starts with.

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
        command = [
            *self._java_command(java, "kafka.tools.StorageTool"),
            "format", "-t", random_cluster_id(), "-c", str(self.properties_path), *scram,
        ]  # fmt: skip
        result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            command, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            output = result.stdout + result.stderr
            for password in users.values():
                output = output.replace(password.get(), "********")
            raise BrokerError(
                f"formatting the broker's storage failed:\n{tail(output)}",
                hint=f"delete {self.data_dir} (all local topics are lost) and retry",
            )
        self.scram_marker.write_text(" ".join(users) + "\n")

    def _spawn(self, java: str) -> int:
        command = [*self._java_command(java, "kafka.Kafka", HEAP), str(self.properties_path)]
        return spawn_detached(
            command,
            self.log_path,
            cwd=self.state_dir,
            timeout=60,
            error=BrokerError,
            what="Java",
            hint=INSTALL_HINT,
        )

    def _answers(self, bootstrap: str) -> bool:
        """Whether the broker answers a metadata request from ``admin``."""
        if not self.credentials.exists(ADMIN):
            return False
        return _answers(bootstrap, self.admin_endpoint(bootstrap))

    def _wait_ready(self, info: BrokerInfo, started: float, timeout: float) -> BrokerInfo:
        deadline = started + timeout
        while not self._answers(info.bootstrap):
            if not self._is_our_broker(info.pid):
                raise BrokerError(
                    f"the broker exited while starting; last lines of {self.log_path}:\n"
                    f"{tail(read_text(self.log_path))}",
                    hint=f"see {self.log_path}; if the data is damaged, a reset starts empty",
                )
            if time.monotonic() > deadline:
                self._stop(info.pid, 10.0)
                raise BrokerError(
                    f"the broker did not answer on {info.bootstrap} within {timeout:.0f} s "
                    f"(stopped it); last lines of {self.log_path}:\n"
                    f"{tail(read_text(self.log_path))}",
                    hint="a slow machine may need a longer timeout",
                )
            time.sleep(0.2)
        self.progress(f"broker ready in {time.monotonic() - started:.1f} s")
        return info

    def _java_command(self, java: str, main_class: str, *options: str) -> list[str]:
        return [
            java,
            *options,
            "-cp",
            f"{self.lib_dir}/*",
            f"-Dlog4j.configuration=file:{self.pom_dir / 'log4j.properties'}",
            main_class,
        ]

    # -- the running process --------------------------------------------------

    def _running_pid(self) -> int | None:
        pid = self._read_state().get("pid")
        return pid if isinstance(pid, int) and self._is_our_broker(pid) else None

    def _is_our_broker(self, pid: int) -> bool:
        """True only for a live ``java kafka.Kafka`` started with this state dir's config."""
        args = command_line(pid)
        return "kafka.Kafka" in args and args[-1] == str(self.properties_path)

    def _stop(self, pid: int, timeout: float) -> None:
        self.progress(f"stopping broker (pid {pid})…")
        stop_process(
            pid,
            self._is_our_broker,
            timeout=timeout,
            kill_wait=10.0,
            error=BrokerError,
            what="broker",
        )

    # -- broker.json ----------------------------------------------------------

    def _info(self, pid: int) -> BrokerInfo:
        state = self._read_state()
        return BrokerInfo(
            bootstrap=str(state["bootstrap"]),
            pid=pid,
            controller_port=int(state["controller_port"]),
            data_dir=Path(state.get("data_dir", self.data_dir)),
            log_path=Path(state.get("log_path", self.log_path)),
        )

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self, info: BrokerInfo) -> None:
        self._write_json(
            {
                "bootstrap": info.bootstrap,
                "pid": info.pid,
                "controller_port": info.controller_port,
                "data_dir": str(info.data_dir),
                "log_path": str(info.log_path),
            }
        )

    def _write_json(self, state: dict[str, Any]) -> None:
        partial = self.state_path.with_suffix(".json.partial")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.replace(self.state_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up`/`down` at a time per state dir, across processes."""
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


def _answers(bootstrap: str, endpoint: kafka.KafkaEndpoint) -> bool:
    """Whether a broker answers a metadata request at ``bootstrap`` (quietly, quickly)."""
    host, port = bootstrap.rsplit(":", 1)
    try:  # a plain connect first: librdkafka logs every refused connection
        with socket.create_connection((host, int(port)), timeout=1.0):
            pass
    except OSError:
        return False
    admin = kafka.admin(endpoint, {"log_level": 0})
    try:
        admin.list_topics(timeout=2.0)
    except KafkaException:
        return False
    return True


def _kafka_version(pom: Path) -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", read_text(pom))
    return match.group(1) if match else "(version from pom)"


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
