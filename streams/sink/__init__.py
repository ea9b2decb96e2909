"""The Kafka -> ClickHouse lineage sink, and the read-only SQL endpoint beside it.

``trustplane sink`` reads ``lineage``, ``approved``, ``denied``, ``review``,
``rejected`` and ``outcomes`` (consumer group ``<group_id>-sink``, ``read_committed``,
no auto-commit), decodes each record with the codec, maps it to a row
(:func:`sinks.clickhouse.map_record`) and buffers it. Every ``sink_batch_rows`` records
or ``sink_batch_ms`` milliseconds it writes the rows to ClickHouse and only then commits
the consumed offsets. A crash between the two redelivers the batch, and the tables absorb
the duplicates (ReplacingMergeTree on the record id, insert deduplication tokens, FINAL
views): at-least-once into an idempotent store, so every record is counted exactly once.

A record that does not decode, or decodes to something that cannot be a row, is a
poison record: it goes to ``rejected`` as a Rejection with the reason (which the sink
then stores like any rejection), and the sink goes on. Rejections and offsets are
committed in one Kafka transaction (``transactional.id`` ``<group_id>-sink-<worker_id>``)
after the ClickHouse write, so a ``read_committed`` reader sees each poison record
rejected once, and a restarted sink fences its predecessor.

The embedded chDB folder can be open in one process only, so the sink serves SQL on
``127.0.0.1:<sink_http_port>`` (``POST /sql``, read-only: the SQL guard, then a
``readonly=1`` connection), plus ``/healthz``, ``/metrics`` and ``/queries``.
``trustplane sql`` and the console query through it; with a ClickHouse URL they query
the server directly.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from processors.exceptions import TrustplaneError
from processors.records import SourcePosition, rejection_record
from sinks.base import (
    MappingError,
    ParamValue,
    QueryError,
    QueryResult,
    Sink,
    SinkError,
    SinkUnavailableError,
)
from sinks.clickhouse import (
    TOPIC_RECORDS,
    ClickHouseSink,
    checkpoint_from_note,
    map_record,
    named_queries,
)
from sinks.sql_guard import SqlGuardError, SqlSyntaxError
from streams.codec import Codec, DecodeError, default_codec
from streams.config import Settings
from streams.kafka import close_loop, rewind_to_committed, start_transactions
from streams.notary import ensure_notary_topics
from streams.topics import MAX_MESSAGE_BYTES, ensure_topics

__all__ = [
    "SINK_TOPICS",
    "SinkConfig",
    "SinkMetrics",
    "SinkRunner",
    "SinkRunError",
    "QueryServer",
    "SinkQueryClient",
    "QueryTarget",
    "build_sink",
    "open_query_target",
    "run_sink",
]

log = logging.getLogger(__name__)

SINK_TOPICS = ("lineage", "approved", "denied", "review", "rejected", "outcomes", "checkpoints")
"""``checkpoints`` carries the notary's signed notes (text, not Avro)."""
"""Logical topics the sink reads."""

MAX_REQUEST_BYTES = 1 << 20


class SinkRunError(TrustplaneError):
    """The sink cannot go on (fenced by a newer sink, broker unreachable, port taken, …)."""


# -- configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class SinkConfig:
    """The sink's settings. Read from :class:`Settings` where it has them (see
    :meth:`from_settings`), else these defaults."""

    data_dir: Path
    """The embedded chDB folder (``<state_dir>/clickhouse``)."""
    clickhouse_url: str = ""
    """A ClickHouse server (``http://user:pass@host:8123/db``); empty: embedded chDB."""
    http_host: str = "127.0.0.1"
    http_port: int = 6068
    """Port of the sink's SQL/health endpoint; 0 disables it."""
    batch_rows: int = 20_000
    """Records per ClickHouse write (and Kafka commit) at most. ClickHouse likes few, big
    inserts (each insert is a part to merge): 20,000 rows keeps ~65k rows/s on chDB."""
    batch_ms: int = 1000
    """A batch is written at least this often while records arrive."""
    query_timeout_s: int = 60
    max_result_rows: int = 100_000

    def __post_init__(self) -> None:
        if self.batch_rows < 1 or self.batch_ms < 1:
            raise SinkRunError("sink_batch_rows and sink_batch_ms must be >= 1")
        if not 0 <= self.http_port <= 65535:
            raise SinkRunError(f"sink_http_port must be 0..65535, got {self.http_port}")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> SinkConfig:
        """Settings fields ``clickhouse_url``, ``clickhouse_dir``, ``sink_http_port``,
        ``sink_batch_rows``, ``sink_batch_ms``, ``sink_query_timeout_s`` when present;
        ``overrides`` (e.g. from CLI options, None = not given) win."""
        data_dir = getattr(settings, "clickhouse_dir", None) or settings.state_dir / "clickhouse"
        values: dict[str, Any] = {
            "data_dir": Path(data_dir),
            "clickhouse_url": str(getattr(settings, "clickhouse_url", "") or ""),
            "http_port": int(getattr(settings, "sink_http_port", cls.http_port)),
            "batch_rows": int(getattr(settings, "sink_batch_rows", cls.batch_rows)),
            "batch_ms": int(getattr(settings, "sink_batch_ms", cls.batch_ms)),
            "query_timeout_s": int(getattr(settings, "sink_query_timeout_s", cls.query_timeout_s)),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["data_dir"] = Path(values["data_dir"])
        return cls(**values)

    @property
    def endpoint(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"


def build_sink(config: SinkConfig) -> ClickHouseSink:
    """The ClickHouse sink the config names (not set up yet)."""
    common: dict[str, Any] = {
        "query_timeout_s": config.query_timeout_s,
        "max_result_rows": config.max_result_rows,
    }
    if config.clickhouse_url:
        return ClickHouseSink(url=config.clickhouse_url, **common)
    return ClickHouseSink(path=config.data_dir, **common)


# -- metrics ----------------------------------------------------------------------


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "trustplane_sink_records_total", "Records read, by topic.", ["topic"], registry=r
        )
        self.rows = Counter(
            "trustplane_sink_rows_total",
            "Rows written to ClickHouse, by table.",
            ["table"],
            registry=r,
        )
        self.poison = Counter(
            "trustplane_sink_poison_total",
            "Records sent to rejected instead of stored, by reason code.",
            ["reason_code"],
            registry=r,
        )
        self.flushes = Counter(
            "trustplane_sink_flushes_total", "ClickHouse writes, by result.", ["result"], registry=r
        )
        self.flush_seconds = Histogram(
            "trustplane_sink_flush_seconds",
            "Time to write one batch to ClickHouse.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.commits = Counter(
            "trustplane_sink_commits_total",
            "Kafka offset commits, by result.",
            ["result"],
            registry=r,
        )
        self.assigned = Gauge(
            "trustplane_sink_assigned_partitions", "Partitions this sink owns.", registry=r
        )


# -- the Kafka loop ---------------------------------------------------------------


def _subscription_tag(topics: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(topics)).encode()).hexdigest()[:8]


class SinkRunner:
    """Kafka -> :class:`Sink`, committing offsets only after the sink has the rows."""

    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        config: SinkConfig,
        *,
        codec: Codec | None = None,
        metrics: SinkMetrics | None = None,
        fault_exit_after_flushes: int | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.config = config
        self.codec = codec or default_codec()
        self.metrics = metrics or SinkMetrics()
        self.fault_exit_after_flushes = fault_exit_after_flushes
        worker = settings.resolved_worker_id()
        self.sink_id = f"sink-{worker}"
        self.group_id = f"{settings.group_id}-sink"
        self._logical = {settings.topic(name): name for name in SINK_TOPICS}
        self._rejected_topic = settings.topic("rejected")
        self._stop = threading.Event()
        self._generation = 0
        self._backoff = 0.0
        self.ready = threading.Event()
        self.flushes = 0
        self.records = 0
        self.rows = 0
        self.poison = 0
        self.last_commit_ms = 0
        self.last_error: str | None = None
        base = settings.kafka_config()
        self.consumer = Consumer(
            {
                **base,
                "group.id": self.group_id,
                # a static member that rejoins gets its cached assignment back, even with
                # a new subscription: name the subscription so a change makes a new member
                "group.instance.id": f"{self.group_id}-{worker}-{_subscription_tag(self._logical)}",
                "client.id": f"trustplane-{self.sink_id}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024,
                "fetch.max.bytes": MAX_MESSAGE_BYTES * 2,
            }
        )
        self.producer = Producer(
            {
                **base,
                "transactional.id": f"{self.group_id}-{worker}",
                "client.id": f"trustplane-{self.sink_id}",
                "transaction.timeout.ms": 60000,
                "linger.ms": 5,
                "message.max.bytes": MAX_MESSAGE_BYTES + 1024,
            }
        )

    def stop(self) -> None:
        """Finish the batch in hand (write, commit), then return from :meth:`run`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def health(self) -> dict[str, Any]:
        return {
            "ready": self.ready.is_set(),
            "sink": self.sink_id,
            "group": self.group_id,
            "records": self.records,
            "rows": self.rows,
            "poison": self.poison,
            "flushes": self.flushes,
            "last_commit_ms": self.last_commit_ms,
            "last_error": self.last_error,
        }

    def run(self) -> None:
        """Run until :meth:`stop`; raise :class:`SinkRunError` when the sink cannot go on."""
        start_transactions(self.producer, SinkRunError)
        self.consumer.subscribe(
            list(self._logical), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        try:
            while not self._stop.is_set():
                self._cycle()
        finally:
            self.close()

    def close(self) -> None:
        close_loop(self.consumer, self.producer)

    # -- one batch

    def _cycle(self) -> None:
        generation = self._generation
        messages = self._poll_batch()
        if not messages:
            return
        if generation != self._generation:
            # partitions moved while we read: what we hold may not be ours any more
            self._rewind()
            return
        try:
            self.producer.begin_transaction()
            tables: collections.Counter[str] = collections.Counter()
            for message in messages:
                table = self._handle(message)
                if table:
                    tables[table] += 1
        except KafkaException as exc:
            self.sink.discard()
            self._recover(exc)
            return
        if not self._write(len(messages)):
            return
        for table, count in tables.items():
            self.metrics.rows.labels(table).inc(count)
        self.rows += sum(tables.values())
        self.records += len(messages)
        if (
            self.fault_exit_after_flushes is not None
            and self.flushes >= self.fault_exit_after_flushes
        ):
            # test hook: die like SIGKILL between the ClickHouse write and the Kafka commit
            log.error("fault injection: exiting after flush %d, before the commit", self.flushes)
            os._exit(3)
        try:
            offsets = [
                tp for tp in self.consumer.position(self.consumer.assignment()) if tp.offset >= 0
            ]
            self.producer.send_offsets_to_transaction(
                offsets, self.consumer.consumer_group_metadata()
            )
            self.producer.commit_transaction()
        except KafkaException as exc:
            self._recover(exc)
            return
        self.metrics.commits.labels("committed").inc()
        self.last_commit_ms = time.time_ns() // 1_000_000

    def _write(self, count: int) -> bool:
        """Flush the sink; on failure abort, rewind, back off, and say so."""
        started = time.perf_counter()
        try:
            self.sink.flush()
        except SinkError as exc:
            self.metrics.flushes.labels("failed").inc()
            self.last_error = exc.reason
            self._backoff = min(max(self._backoff * 2, 0.5), 30.0)
            log.error(
                "writing %d records to ClickHouse failed, retrying in %.1f s: %s",
                count,
                self._backoff,
                exc.diagnostics(),
            )
            self.sink.discard()
            self._abort()
            self._rewind()
            self._stop.wait(self._backoff)
            return False
        self.metrics.flushes.labels("ok").inc()
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        self.flushes += 1
        self._backoff = 0.0
        self.last_error = None
        return True

    def _poll_batch(self) -> list[Message]:
        batch: list[Message] = []
        deadline: float | None = None
        limit = self.config.batch_rows
        while len(batch) < limit and not self._stop.is_set():
            timeout = 0.5 if deadline is None else deadline - time.monotonic()
            if timeout <= 0:
                break
            messages = self.consumer.consume(min(limit - len(batch), 10_000), timeout=timeout)
            for message in messages:
                error = message.error()
                if error is None:
                    batch.append(message)
                elif error.fatal():
                    raise SinkRunError(f"consumer failed: {error.str()}")
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer: %s", error.str())
            if batch and deadline is None:
                deadline = time.monotonic() + self.config.batch_ms / 1000
            if not messages and not batch:
                break
        return batch

    def _handle(self, message: Message) -> str | None:
        """Buffer the message's row; return its table, or None for a poison record."""
        raw_topic = message.topic() or ""
        topic = self._logical.get(raw_topic, raw_topic)
        self.metrics.records.labels(topic).inc()
        value = message.value() or b""
        partition = message.partition() or 0
        offset = message.offset() or 0
        expected = TOPIC_RECORDS.get(topic, ("", ""))[0] or None
        try:
            if topic == "checkpoints":
                _, timestamp_ms = message.timestamp()
                self.sink.add("checkpoints", checkpoint_from_note(value, timestamp_ms))
                return "checkpoints"
            record = self.codec.decode(value, expected)
            table, row = map_record(topic, record, partition=partition, offset=offset)
            self.sink.add(table, row)
        except (DecodeError, MappingError) as exc:
            self._reject(message, raw_topic, partition, offset, exc.code, exc.reason)
            return None
        except Exception as exc:  # noqa: BLE001 - a mapping bug must not stall the sink forever
            log.exception("unexpected error storing %s/%d@%d", raw_topic, partition, offset)
            self._reject(
                message,
                raw_topic,
                partition,
                offset,
                "internal_error",
                f"{type(exc).__name__}: {exc}",
            )
            return None
        return table

    def _reject(
        self, message: Message, topic: str, partition: int, offset: int, code: str, reason: str
    ) -> None:
        record = rejection_record(
            SourcePosition(topic, partition, offset),
            message.key(),
            message.value(),
            code=code,
            reason=f"the lineage sink cannot store this record: {reason}",
            now_ms=time.time_ns() // 1_000_000,
            worker=self.sink_id,
        )
        log.warning("poison record %s/%d@%d (%s): %s", topic, partition, offset, code, reason)
        self.producer.produce(
            self._rejected_topic, key=message.key(), value=self.codec.encode("Rejection", record)
        )
        self.producer.poll(0)
        self.metrics.poison.labels(code).inc()
        self.poison += 1

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(30)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.fatal():
                raise SinkRunError(f"fatal transaction error: {error.str()}") from exc
            log.debug("abort: %s", exc)

    def _recover(self, exc: KafkaException) -> None:
        error = exc.args[0] if exc.args else None
        self.metrics.commits.labels("aborted").inc()
        if isinstance(error, KafkaError) and error.fatal():
            raise SinkRunError(
                f"fenced or fatal transaction error: {error.str()}",
                hint="another sink with the same worker id took over; give each sink its own "
                "TRUSTPLANE_WORKER_ID",
            ) from exc
        log.warning("commit failed, re-reading the batch (the store drops the duplicates): %s", exc)
        self._abort()
        self._rewind()

    def _rewind(self) -> None:
        rewind_to_committed(self.consumer)

    # -- rebalance

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %d partitions", len(partitions))
        self._generation += 1
        self.metrics.assigned.set(len(partitions))
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %d partitions", len(partitions))
        self._generation += 1
        self.metrics.assigned.set(0)


# -- the SQL endpoint -------------------------------------------------------------


class QueryTarget(Protocol):
    """Anything ``trustplane sql`` can ask: the sink's endpoint, a sink, a server."""

    @property
    def description(self) -> str: ...

    def query(
        self,
        sql: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        readonly: bool = True,
    ) -> QueryResult: ...

    def close(self) -> None: ...


def _error_document(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, TrustplaneError):
        return {
            "error": {
                "type": type(exc).__name__,
                "reason": exc.reason,
                "hint": exc.hint,
                "code": getattr(exc, "code", 0) if isinstance(exc, QueryError) else 0,
            }
        }
    return {"error": {"type": type(exc).__name__, "reason": str(exc), "hint": None, "code": 0}}


class QueryServer:
    """Read-only SQL over HTTP on loopback, for the process that owns the store.

    ``POST /sql`` with ``{"sql": "...", "params": {...}}`` (``Content-Type:
    application/json``, so browsers must preflight and cannot post from a web page)
    answers ``{"columns", "types", "rows", "elapsed_ms"}`` or ``{"error": {...}}`` with
    status 400 (refused or failed query) or 503 (store unavailable).
    """

    def __init__(
        self,
        sink: Sink,
        host: str,
        port: int,
        *,
        health: Callable[[], dict[str, Any]] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.sink = sink
        self.health = health or (lambda: {"ready": True})
        self.registry = registry
        handler = self._handler_class()
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise SinkRunError(
                f"cannot serve SQL on {host}:{port}: {exc.strerror or exc}",
                hint="another sink may be running; or choose a free port with "
                "TRUSTPLANE_SINK_HTTP_PORT (0 disables the endpoint)",
            ) from exc
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> QueryServer:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="sink-sql-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(10)
            self._thread = None
        self.server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "trustplane-sink"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                log.debug("sql endpoint: " + format, *args)

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, document: Any) -> None:
                self._send(status, json.dumps(document).encode(), "application/json")

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                if self.path == "/healthz":
                    self._json(200, outer.health())
                elif self.path == "/metrics" and outer.registry is not None:
                    self._send(200, generate_latest(outer.registry), "text/plain; version=0.0.4")
                elif self.path == "/queries":
                    self._json(
                        200,
                        [
                            {"name": q.name, "title": q.title, "description": q.description}
                            for q in named_queries().values()
                        ],
                    )
                else:
                    self._json(404, {"error": {"type": "NotFound", "reason": self.path}})

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                if self.path != "/sql":
                    self._json(404, {"error": {"type": "NotFound", "reason": self.path}})
                    return
                if (self.headers.get("Content-Type") or "").split(";")[0] != "application/json":
                    self._json(
                        415,
                        {"error": {"type": "UnsupportedMediaType", "reason": "send JSON"}},
                    )
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 < length <= MAX_REQUEST_BYTES:
                    self._json(413, {"error": {"type": "BadRequest", "reason": "body size"}})
                    return
                try:
                    request = json.loads(self.rfile.read(length))
                    sql = request["sql"]
                    params = request.get("params") or {}
                    if not isinstance(sql, str) or not isinstance(params, dict):
                        raise TypeError("sql must be text and params an object")
                except (ValueError, KeyError, TypeError) as exc:
                    self._json(400, {"error": {"type": "BadRequest", "reason": str(exc)}})
                    return
                try:
                    result = outer.sink.query(sql, params)
                except (SqlGuardError, QueryError) as exc:
                    self._json(400, _error_document(exc))
                    return
                except SinkError as exc:
                    self._json(503, _error_document(exc))
                    return
                except Exception as exc:  # noqa: BLE001 - answer, log, keep serving
                    log.exception("sql endpoint failed")
                    self._json(500, _error_document(exc))
                    return
                self._json(200, result.to_json())

        return Handler


_ERROR_TYPES: dict[str, type[TrustplaneError]] = {
    "SqlGuardError": SqlGuardError,
    "SqlSyntaxError": SqlSyntaxError,
    "QueryError": QueryError,
    "MigrationError": SinkError,
    "SinkUnavailableError": SinkUnavailableError,
}


class SinkQueryClient:
    """Query the sink's endpoint; errors come back as the sink raised them."""

    def __init__(self, endpoint: str, *, timeout_s: float = 90.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout_s = timeout_s
        self.description = f"the lineage sink at {self.endpoint}"

    def health(self, timeout_s: float = 2.0) -> dict[str, Any] | None:
        """The sink's /healthz document, or None when nothing answers."""
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own loopback endpoint
                f"{self.endpoint}/healthz", timeout=timeout_s
            ) as response:
                document = json.loads(response.read())
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    def query(
        self,
        sql: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        readonly: bool = True,
    ) -> QueryResult:
        if not readonly:
            raise SqlGuardError(
                "the sink's SQL endpoint only reads",
                hint="writes need a ClickHouse server (clickhouse_url) and `trustplane sql "
                "--write`; the embedded store is written by the sink only",
            )
        body = json.dumps({"sql": sql, "params": dict(params or {})}).encode()
        request = urllib.request.Request(  # noqa: S310 - our own loopback endpoint
            f"{self.endpoint}/sql",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return QueryResult.from_json(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            raise _error_from(exc.code, raw) from None
        except (OSError, ValueError) as exc:
            raise SinkUnavailableError(
                f"the lineage sink at {self.endpoint} does not answer: {exc}",
                hint="is `trustplane sink` running? its port is TRUSTPLANE_SINK_HTTP_PORT",
            ) from exc

    def close(self) -> None:
        return None


def _error_from(status: int, raw: bytes) -> TrustplaneError:
    try:
        error = json.loads(raw)["error"]
        kind = _ERROR_TYPES.get(str(error.get("type")), SinkError)
        reason = str(error.get("reason"))
        hint = error.get("hint")
    except (ValueError, KeyError, TypeError, AttributeError):
        return SinkError(f"the lineage sink answered HTTP {status}: {raw[:200]!r}")
    if kind is QueryError:
        return QueryError(reason, code=int(error.get("code") or 0), hint=hint)
    return kind(reason, hint=hint)


def open_query_target(config: SinkConfig) -> QueryTarget:
    """Where ``trustplane sql`` sends its queries.

    A ClickHouse URL: the server, directly. Else the running sink's endpoint; if no sink
    answers, the chDB folder opened read-only in this process (chDB's lock guarantees
    it is not open anywhere else; if it is, the error says by whom).
    """
    if config.clickhouse_url:
        sink = build_sink(config)
        sink.setup(migrate=False)
        return sink
    client = SinkQueryClient(config.endpoint, timeout_s=config.query_timeout_s + 30)
    if config.http_port and client.health() is not None:
        return client
    sink = build_sink(config)
    try:
        sink.setup(migrate=False)
    except SinkUnavailableError as exc:
        if "in use" in exc.reason:
            raise SinkUnavailableError(
                f"{exc.reason}, but no sink answers at {config.endpoint}",
                hint="query the process that owns the folder; if it is `trustplane sink`, give "
                "both the same TRUSTPLANE_SINK_HTTP_PORT",
            ) from exc
        raise
    return sink


# -- running it -------------------------------------------------------------------


@dataclass
class RunningSink:
    """What :func:`run_sink` started, for callers that want to look inside."""

    runner: SinkRunner
    sink: ClickHouseSink
    server: QueryServer | None = None
    notes: list[str] = field(default_factory=list)


def run_sink(
    settings: Settings,
    config: SinkConfig,
    *,
    on_start: Callable[[RunningSink], None] | None = None,
    fault_exit_after_flushes: int | None = None,
) -> None:
    """Set up the store (migrations), serve SQL, and run the Kafka loop until stopped.

    ``on_start`` gets the :class:`RunningSink` once everything is up (call
    ``running.runner.stop()`` from a signal handler to stop).
    """
    ensure_topics(settings, SINK_TOPICS)
    ensure_notary_topics(settings)  # checkpoints: one partition, kept forever
    sink = build_sink(config)
    sink.setup()
    server: QueryServer | None = None
    try:
        metrics = SinkMetrics()
        runner = SinkRunner(
            settings,
            sink,
            config,
            metrics=metrics,
            fault_exit_after_flushes=fault_exit_after_flushes,
        )
        running = RunningSink(runner, sink)
        if sink.applied:
            running.notes.append(f"applied migrations {', '.join(sink.applied)}")
        if config.http_port:
            server = QueryServer(
                sink,
                config.http_host,
                config.http_port,
                health=lambda: {**runner.health(), "store": sink.description},
                registry=metrics.registry,
            ).start()
            running.server = server
        if on_start is not None:
            on_start(running)
        runner.run()
    finally:
        if server is not None:
            server.stop()
        sink.close()
