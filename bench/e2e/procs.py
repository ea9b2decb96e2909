"""The processes of a benchmark run on the real broker.

* :class:`WorkerProcesses` -- real ``trustplane worker`` processes (one gate each,
  distinct worker ids, one consumer group), configured only through ``TRUSTPLANE_*``
  variables as an operator would, with /healthz for readiness and /proc for CPU time.
* :class:`Collector` -- a child process with a ``read_committed`` consumer on the outcome
  topics: it stamps each record's arrival (``CLOCK_MONOTONIC``, shared by every process
  on the machine) and hands (intent id, arrival, topic) back to the harness.
* :class:`Baseline` -- a child process running the raw reference loop: consume → produce
  the same bytes, no work, either plain (auto-commit) or transactional with the gate
  worker's batching (offsets in the transaction, ``read_committed`` downstream).
* :func:`Publisher` -- the load generator's producer (the SDK's settings).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from processors.exceptions import TrustplaneError
from streams.config import Settings
from streams.dev.ports import free_port
from streams.kafka import LOOP_PRODUCER_TUNING
from streams.topics import MAX_MESSAGE_BYTES

__all__ = [
    "BenchError",
    "Baseline",
    "Collector",
    "Receipt",
    "WorkerProcesses",
    "cpu_seconds",
    "free_port",
    "intent_id_of",
]

OUTCOME_NAMES = ("approved", "denied", "review", "rejected")
HEADER = 10  # Avro single-object header: C3 01 + 8-byte fingerprint

Receipt = tuple[str, int, int]
"""(intent id, arrival in CLOCK_MONOTONIC ns, outcome code)"""

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SPAWN = multiprocessing.get_context("spawn")


class BenchError(TrustplaneError):
    """The benchmark could not run (a process did not start, outcomes went missing, …)."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children (/proc/PID/stat)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # the command name (field 2) may contain spaces and parentheses: split after it
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / _CLOCK_TICKS


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def intent_id_of(value: bytes, field_index: int) -> str:
    """The string field ``field_index`` (0 or 1) of an Avro single-object record whose
    first fields are strings: ``intent_id`` is field 0 of an Intent and field 1 of an
    Approval or a Decision. Reading two length-prefixed strings is ~1 µs; decoding the
    whole record would cost the collector ~50 µs per outcome on a 2-core machine."""
    pos = HEADER
    for _ in range(field_index):
        length, pos = _varint(value, pos)
        pos += length
    length, pos = _varint(value, pos)
    return value[pos : pos + length].decode()


# -- gate workers -------------------------------------------------------------


@dataclass
class _Worker:
    worker_id: str
    port: int
    proc: subprocess.Popen[bytes]
    log: BinaryIO


@dataclass
class WorkerProcesses:
    """``count`` ``trustplane worker`` processes with one group and distinct ids."""

    settings: Settings
    count: int
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[_Worker] = field(default_factory=list)

    def command(self) -> list[str]:
        executable = Path(sys.executable).parent / "trustplane"
        if not executable.exists():
            raise BenchError(
                f"{executable} is missing", hint="install the project: pip install -e '.[bench]'"
            )
        return [str(executable), "worker"]

    def env(self, worker_id: str, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTPLANE_")}
        for f in dataclasses.fields(self.settings):
            value = getattr(self.settings, f.name)
            if f.name != "extra" and value is not None:
                env[f"TRUSTPLANE_{f.name.upper()}"] = str(value)
        for name, value in self.settings.extra.items():
            env[f"TRUSTPLANE_KAFKA_{name.upper().replace('.', '_')}"] = value
        env["TRUSTPLANE_WORKER_ID"] = worker_id
        env["TRUSTPLANE_WEB_PORT"] = str(port)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 90.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        command = self.command()
        for n in range(self.count):
            worker_id = f"{self.settings.group_id}-{n + 1}"
            port = free_port()
            log = open(self.log_dir / f"{worker_id}.log", "ab")  # noqa: SIM115 - closed in stop()
            home = self.log_dir / worker_id  # Faust writes its <app>-data folder here
            home.mkdir(exist_ok=True)
            proc = subprocess.Popen(  # noqa: S603 - our own console script
                command,
                env=self.env(worker_id, port),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=home,
            )
            self.workers.append(_Worker(worker_id, port, proc, log))
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            while True:
                if worker.proc.poll() is not None:
                    raise BenchError(
                        f"worker {worker.worker_id} exited at start with status "
                        f"{worker.proc.returncode}:\n{self.tail(worker)}"
                    )
                health = self._health(worker)
                if health and health.get("ready"):
                    break
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"worker {worker.worker_id} not ready in {timeout:.0f} s:\n"
                        f"{self.tail(worker)}"
                    )
                time.sleep(0.2)

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    def cpu_seconds(self) -> list[float]:
        return [cpu_seconds(pid) for pid in self.pids]

    def check_alive(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is not None:
                raise BenchError(
                    f"worker {worker.worker_id} exited with status {worker.proc.returncode}:\n"
                    f"{self.tail(worker)}"
                )

    def tail(self, worker: _Worker, size: int = 3000) -> str:
        worker.log.flush()
        try:
            return (self.log_dir / f"{worker.worker_id}.log").read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"

    def _health(self, worker: _Worker) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{worker.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                body = json.loads(response.read())
        except (OSError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def processed(self) -> int:
        return sum(int((self._health(w) or {}).get("processed", 0)) for w in self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.proc.wait(30)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait(10)
            worker.log.close()
        self.workers = []


# -- the load generator's producer ------------------------------------------------


class Publisher:
    """Produces pre-encoded intents with the SDK's producer settings
    (:class:`streams.sdk.client.IntentPublisher`: idempotent, linger 5 ms)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.errors: list[str] = []
        self.producer = Producer(
            {
                **settings.kafka_config(),
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.max.bytes": MAX_MESSAGE_BYTES + 1024,
            }
        )

    def produce(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.topic, key=key, value=value, on_delivery=self._done)
                return
            except BufferError:
                self.producer.poll(0.01)

    def poll(self) -> None:
        self.producer.poll(0)

    def _done(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def flush(self, timeout: float = 30.0) -> None:
        left = self.producer.flush(timeout)
        if left or self.errors:
            raise BenchError(
                f"{left} intents undelivered, {len(self.errors)} failed: {self.errors[:3]}"
            )


# -- child processes ----------------------------------------------------------------


class _Child:
    """A spawned child process that talks over a pipe (commands in, data out)."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        self.conn, child_conn = _SPAWN.Pipe()
        self.proc = _SPAWN.Process(target=target, args=(child_conn, *args), daemon=True)
        self.proc.start()
        child_conn.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self.conn.poll(timeout):
            self.close()
            raise BenchError(f"{type(self).__name__} did not start within {timeout:.0f} s")
        try:
            message = self.conn.recv()
        except EOFError:
            message = "the process exited"
        if message != "ready":
            self.close()
            raise BenchError(f"{type(self).__name__} failed to start: {message}")

    def ask(self, command: str, timeout: float = 30.0) -> Any:
        self.conn.send(command)
        if not self.conn.poll(timeout):
            raise BenchError(f"{type(self).__name__} did not answer {command!r}")
        try:
            answer = self.conn.recv()
        except EOFError as exc:
            raise BenchError(f"{type(self).__name__} exited") from exc
        if isinstance(answer, str) and answer.startswith("error:"):
            raise BenchError(f"{type(self).__name__}: {answer}")
        return answer

    @property
    def pid(self) -> int:
        return int(self.proc.pid or 0)

    def close(self) -> None:
        try:
            self.conn.send("stop")
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class Collector(_Child):
    """Reads outcome topics (read_committed) from their beginning.

    ``topics`` maps each logical topic to the outcome code it stands for (0 approved,
    1 denied, 2 review, 3 rejected) and the index of the record's ``intent_id`` field
    (1 in an Approval or Decision, 0 in an Intent, -1 none). ``drain()`` returns the
    receipts since the last call; ``samples()`` up to 20 decoded non-approved records
    (their reasons explain an unexpected outcome mix).
    """

    GATE_TOPICS = {"approved": (0, 1), "denied": (1, 1), "review": (2, 1), "rejected": (3, -1)}

    def __init__(self, settings: Settings, topics: dict[str, tuple[int, int]]) -> None:
        super().__init__(
            _collect,
            settings.kafka_config(),
            {settings.topic(t): spec for t, spec in topics.items()},
        )
        self.wait_ready()

    def drain(self) -> list[Receipt]:
        receipts: list[Receipt] = self.ask("drain")
        return receipts

    def samples(self) -> list[dict[str, Any]]:
        samples: list[dict[str, Any]] = self.ask("samples")
        return samples


def _assign_all(consumer: Consumer, topics: Sequence[str], offset: int) -> None:
    deadline = time.monotonic() + 30
    metadata = consumer.list_topics(timeout=30)
    while not all(metadata.topics.get(t) and metadata.topics[t].partitions for t in topics):
        if time.monotonic() > deadline:  # a just-created topic takes a moment to show
            missing = [t for t in topics if not metadata.topics.get(t)]
            raise BenchError(f"topic {', '.join(missing) or topics[0]} does not exist")
        time.sleep(0.2)
        metadata = consumer.list_topics(timeout=30)
    assignment = []
    for topic in topics:
        for partition in metadata.topics[topic].partitions:
            assignment.append(TopicPartition(topic, partition, offset))
    consumer.assign(assignment)


def _collect(
    conn: multiprocessing.connection.Connection,
    kafka: dict[str, Any],
    topics: dict[str, tuple[int, int]],
) -> None:
    from streams.codec import DecodeError, default_codec

    try:
        consumer = Consumer(
            {
                **kafka,
                "group.id": f"trustplane-bench-collector-{os.getpid()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
                "fetch.max.bytes": MAX_MESSAGE_BYTES * 2,
            }
        )
        _assign_all(consumer, list(topics), -2)  # OFFSET_BEGINNING: the run's own topics
    except (KafkaException, BenchError) as exc:
        conn.send(f"error: {exc}")
        return
    conn.send("ready")
    codec = default_codec()
    receipts: list[Receipt] = []
    samples: list[dict[str, Any]] = []
    while True:
        # poll() returns as soon as a record is there; consume(n, timeout) would wait for
        # n records or the whole timeout, adding up to that timeout to every latency
        first = consumer.poll(0.02)
        arrived = [] if first is None else [first, *consumer.consume(1000, timeout=0)]
        for message in arrived:
            now = time.monotonic_ns()
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    receipts.append(("", now, -1))
                continue
            value = message.value() or b""
            code, field_index = topics[message.topic() or ""]
            if field_index < 0:  # a rejection carries no intent id
                receipts.append(("", now, code))
            else:
                try:
                    receipts.append((intent_id_of(value, field_index), now, code))
                except (IndexError, UnicodeDecodeError):
                    receipts.append(("", now, -1))
            if code in (1, 2, 3) and len(samples) < 20:
                try:
                    record = codec.decode(value)
                    samples.append(
                        {
                            "topic": OUTCOME_NAMES[code],
                            "intent_id": record.get("intent_id"),
                            "agent_id": record.get("agent_id"),
                            "action": record.get("action"),
                            "reasons": record.get("reasons") or record.get("reason"),
                        }
                    )
                except DecodeError as exc:
                    samples.append({"topic": OUTCOME_NAMES[code], "undecodable": exc.reason})
        while conn.poll():
            command = conn.recv()
            if command == "drain":
                conn.send(receipts)
                receipts = []
            elif command == "samples":
                conn.send(samples)
            else:
                consumer.close()
                return


# -- the raw baseline -----------------------------------------------------------------


class Baseline(_Child):
    """The no-work consume → produce loop in its own process (``mode``: plain | txn)."""

    def __init__(self, settings: Settings, mode: str, source: str, sink: str) -> None:
        if mode not in ("plain", "txn"):
            raise ValueError(f"baseline mode must be plain or txn, not {mode!r}")
        super().__init__(
            _baseline,
            settings.kafka_config(),
            mode,
            settings.topic(source),
            settings.topic(sink),
            f"{settings.group_id}-baseline-{mode}",
            settings.transaction_max_records,
            settings.transaction_max_ms,
        )
        self.wait_ready()


def _baseline(
    conn: multiprocessing.connection.Connection,
    kafka: dict[str, Any],
    mode: str,
    source: str,
    sink: str,
    group: str,
    max_records: int,
    max_ms: int,
) -> None:
    """The gate worker's consumer and producer settings and batching
    (:class:`streams.gate.worker.GateWorker`), with no gate: ``txn`` also commits one
    transaction per batch with the consumed offsets (the same Kafka work as the gate);
    ``plain`` produces each batch and auto-commits (the least a Python consume ->
    produce hop costs)."""
    transactional = mode == "txn"
    consumer = Consumer(
        {
            **kafka,
            "group.id": group,
            "enable.auto.commit": not transactional,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 10,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024,
            "fetch.max.bytes": MAX_MESSAGE_BYTES * 2,
        }
    )
    producer_config: dict[str, Any] = {**kafka, **LOOP_PRODUCER_TUNING}
    if transactional:
        producer_config["transactional.id"] = f"{group}-1"
    else:
        del producer_config["transaction.timeout.ms"]
    producer = Producer(producer_config)
    if transactional:
        producer.init_transactions(30)
    assigned: list[bool] = []
    consumer.subscribe([source], on_assign=lambda c, p: assigned.append(True))
    announced = False
    try:
        while True:
            if conn.poll():
                conn.recv()
                break
            # the gate worker's batching (streams.kafka.FirstThenReady): wait up to
            # max_ms for the first record, then take only what has already arrived
            batch: list[Any] = []
            first = consumer.poll(max_ms / 1000)
            if first is not None:
                messages = [first]
                while messages:
                    batch += [m for m in messages if m.error() is None]
                    room = max_records - len(batch)
                    messages = consumer.consume(room, timeout=0) if room > 0 else []
            if batch and transactional:
                producer.begin_transaction()
                for m in batch:
                    producer.produce(sink, key=m.key(), value=m.value())
                    producer.poll(0)
                producer.send_offsets_to_transaction(
                    consumer.position(consumer.assignment()),
                    consumer.consumer_group_metadata(),
                )
                producer.commit_transaction()
            elif batch:
                for m in batch:
                    producer.produce(sink, key=m.key(), value=m.value())
                producer.poll(0)
            if assigned and not announced:
                conn.send("ready")
                announced = True
    except KafkaException as exc:
        conn.send(f"error: {exc}")
    finally:
        producer.flush(10)
        consumer.close()
