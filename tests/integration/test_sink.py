"""The lineage sink on the real broker: a real `sink` process writing an embedded chDB store.

Crash it between the ClickHouse write and the Kafka commit, SIGKILL it, restart it: the
stored rows equal the records produced, each once. A poison record goes to `rejected`
with a reason and the sink goes on. And end to end: a real gate worker's lineage (linked
by a real notary, read from lineage-log) and outcomes land in the store.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from processors.approval import ApprovalSigner, KeyringEntry, SigningKeyring
from processors.crypto.keys import generate_signing_key, public_jwk
from processors.enforcement import Enforcement, Outcome
from processors.intent import Intent
from processors.log.attest import sign_event
from processors.log.chain import link
from processors.records import approval_record, digest
from processors.verdict import Verdict
from sinks.base import QueryResult
from streams.codec import default_codec
from streams.config import PROJECT_ROOT, Settings
from streams.notary import NotaryService, ensure_notary_topics
from streams.sdk.client import IntentPublisher, OutcomeReader, new_intent
from streams.sink import SinkQueryClient
from streams.sink.sql_server import sql_token_file
from tests.processors.factories import intent_record

pytestmark = pytest.mark.broker

NOW = time.time_ns() // 1_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SinkProcess:
    """A real `python -m streams.cli.sql sink` process."""

    settings: Settings
    data_dir: Path
    log_path: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client(self) -> SinkQueryClient:
        return SinkQueryClient(
            f"http://127.0.0.1:{self.port}",
            timeout_s=30,
            token_file=sql_token_file(self.data_dir.parent),
        )

    def start(self, *extra: str, wait_ready: bool = True) -> SinkProcess:
        s = self.settings
        env = {
            **os.environ,
            "TRUSTPLANE_BOOTSTRAP_SERVERS": s.bootstrap_servers,
            "TRUSTPLANE_TOPIC_PREFIX": s.topic_prefix,
            "TRUSTPLANE_GROUP_ID": s.group_id,
            "TRUSTPLANE_WORKER_ID": s.worker_id,
            "TRUSTPLANE_PARTITIONS": str(s.partitions),
            "TRUSTPLANE_STATE_DIR": str(self.data_dir.parent),
            # the gate's published keys, to verify lineage and approvals with
            "TRUSTPLANE_KEYS_DIR": str(s.resolved_keys_dir),
        }
        command = [
            sys.executable,
            "-m",
            "streams.cli.sql",
            "sink",
            "--data-dir",
            str(self.data_dir),
            "--http-port",
            str(self.port),
            *extra,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT
            )
        if wait_ready:
            self.wait_ready()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"sink exited early ({self.proc.returncode}):\n{self.log()}")
            health = self.client.health(timeout_s=1)
            if health and health.get("ready"):
                return
            time.sleep(0.2)
        raise AssertionError(f"sink not ready in {timeout}s:\n{self.log()}")

    def health(self) -> dict[str, Any]:
        return self.client.health() or {}

    def count_of(self, table: str) -> int:
        return int(self.query(f"SELECT count() FROM {table}").rows[0][0])  # noqa: S608

    def query(self, sql: str) -> QueryResult:
        return self.client.query(sql)

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def sink_factory(tmp_path: Path) -> Iterator[Callable[[Settings], SinkProcess]]:
    sinks: list[SinkProcess] = []

    def make(settings: Settings) -> SinkProcess:
        trust_test_gate_key(settings)
        sink = SinkProcess(settings, tmp_path / "state" / "clickhouse", tmp_path / "sink.log")
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.stop()


def wait_for(check: Callable[[], bool], timeout: float, what: str, sink: SinkProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}:\n{sink.log()}")


@contextlib.contextmanager
def running_notary(settings: Settings, **options: Any) -> Iterator[NotaryService]:
    """A notary (in a thread) linking `lineage` into `lineage-log`, serving proofs."""
    service = NotaryService(settings, port=0, create_key=True, checkpoint_every_ms=200, **options)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, name="notary", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while service.url is None and not errors and time.monotonic() < deadline:
            time.sleep(0.1)
        assert service.url is not None, errors
        yield service
    finally:
        service.stop()
        thread.join(30)
    assert not errors, errors


# -- producing records the way the gate, the notary and executors do -----------------------

TEST_GATE_KEY = generate_signing_key()
"""Signs the crafted lineage and approvals; the sink trusts it beside the real gate's keys."""
TEST_SIGNER = ApprovalSigner(SigningKeyring([KeyringEntry(TEST_GATE_KEY)]))


def trust_test_gate_key(settings: Settings) -> None:
    """Add TEST_GATE_KEY to the gate's published JWKS (the real gate's keys stay)."""
    path = settings.resolved_keys_dir / "approvals.jwks.json"
    jwks = json.loads(path.read_text()) if path.exists() else {"keys": []}
    test_jwk = public_jwk(TEST_GATE_KEY.public_key, TEST_GATE_KEY.kid)
    if all(k.get("kid") != TEST_GATE_KEY.kid for k in jwks["keys"]):
        jwks["keys"].append(test_jwk)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jwks))


def lineage_event(n: int) -> dict[str, Any]:
    event = {
        "event_id": f"ev-{n}",
        "intent_id": f"i-{n}",
        "agent_id": f"agent-{n % 5}",
        "stage": "enforcement",
        "event_type": "intent.approved",
        "status": "approved",
        "reasons": [],
        "attributes": {"topic": "approved"},
        "occurred_at_ms": NOW + n,
        "worker": "w",
        "verdicts": [
            {
                "layer": "allowlist",
                "status": "ALLOW",
                "reasons": [],
                "evidence": {},
                "duration_us": n % 97,
            }
        ],
        "signer": None,
        "signature": None,
    }
    return dict(sign_event(event, TEST_GATE_KEY))


@functools.cache
def linked_lineage(count: int) -> tuple[dict[str, Any], ...]:
    """``count`` lineage events linked as the notary writes them to lineage-log."""
    events: list[dict[str, Any]] = []
    head = None
    for n in range(count):
        event = link({**lineage_event(n), "log_index": n}, head)
        head = event["event_hash"]
        events.append(event)
    return tuple(events)


@functools.cache
def approval(n: int) -> dict[str, Any]:
    """A genuine approval record, signed by TEST_GATE_KEY over its own intent bytes."""
    intent = Intent.from_record(
        intent_record(
            intent_id=f"ia-{n}",
            agent_id=f"agent-{n % 5}",
            action="payments.transfer",
            resource=f"inv:{n}",
            issued_at_ms=NOW,
            expires_at_ms=NOW + 300_000,
        ),
        key=f"agent-{n % 5}".encode(),
    )
    intent_bytes = f"intent ia-{n}".encode()
    enforcement = Enforcement(Outcome.APPROVED, (), (Verdict.allow("allowlist"),))
    return approval_record(
        intent,
        enforcement,
        intent_digest=digest(intent_bytes),
        intent_bytes=intent_bytes,
        now_ms=NOW,
        worker="w",
        signer=TEST_SIGNER,
    )


def decision(n: int, outcome: str) -> dict[str, Any]:
    return {
        "decision_id": f"d-{outcome}-{n}",
        "intent_id": f"id-{outcome}-{n}",
        "agent_id": f"agent-{n % 5}",
        "outcome": outcome,
        "reasons": [f"reason {n % 3}"],
        "verdicts": [],
        "intent_digest": "sha256:" + "b" * 64,
        "decided_at_ms": NOW,
        "worker": "w",
    }


def rejection(n: int) -> dict[str, Any]:
    return {
        "rejection_id": f"rej-{n}",
        "source_topic": "intents",
        "source_partition": 0,
        "source_offset": n,
        "key": None,
        "value_sha256": "sha256:" + "c" * 64,
        "value_prefix": b"",
        "value_size": 0,
        "reason_code": "empty",
        "reason": "the record value is empty",
        "rejected_at_ms": NOW,
        "worker": "w",
    }


def outcome(n: int) -> dict[str, Any]:
    return {
        "outcome_id": f"o-{n}",
        "approval_id": approval(n)["approval_id"],
        "intent_id": f"ia-{n}",
        "agent_id": f"agent-{n % 5}",
        "executor_id": "exec",
        "status": "EXECUTED",
        "detail": "",
        "reported_at_ms": NOW,
    }


WORKLOAD = {
    # logical topic: (record type, count, builder)
    "lineage-log": ("LineageEvent", 4000, lambda n: linked_lineage(4000)[n]),
    "approved": ("Approval", 600, approval),
    "denied": ("Decision", 400, lambda n: decision(n, "DENIED")),
    "review": ("Decision", 100, lambda n: decision(n, "REVIEW")),
    "rejected": ("Rejection", 100, rejection),
    "outcomes": ("Outcome", 300, outcome),
}
EXPECTED = {
    "lineage_events": 4000,
    "approvals": 600,
    "decisions": 500,
    "rejections": 100,
    "outcomes": 300,
}
ID_COLUMNS = {
    "lineage_events": "event_id",
    "approvals": "approval_id",
    "decisions": "decision_id",
    "rejections": "rejection_id",
    "outcomes": "outcome_id",
}


def produce(settings: Settings, messages: list[tuple[str, bytes | None, bytes]]) -> None:
    producer = Producer({**settings.kafka_config(), "enable.idempotence": True, "linger.ms": 5})
    for topic, key, value in messages:
        while True:
            try:
                producer.produce(settings.topic(topic), key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(30) == 0


def produce_workload(settings: Settings) -> None:
    ensure_notary_topics(settings)  # lineage-log: one partition, as the notary makes it
    codec = default_codec()
    messages: list[tuple[str, bytes | None, bytes]] = []
    for topic, (name, count, build) in WORKLOAD.items():
        for n in range(count):
            record = build(n)
            key = (record.get("agent_id") or "").encode() or None
            messages.append((topic, key, codec.encode(name, record)))
    produce(settings, messages)


def counts(sink: SinkProcess) -> dict[str, tuple[int, int]]:
    """Per table: (rows in the deduplicating view, distinct record ids)."""
    result = {}
    for table, id_column in ID_COLUMNS.items():
        sql = f"SELECT count(), uniqExact({id_column}) FROM {table}"  # noqa: S608 - constants
        row = sink.query(sql).rows[0]
        result[table] = (int(row[0]), int(row[1]))
    return result


def test_crash_between_write_and_commit_and_sigkill_lose_nothing_and_count_nothing_twice(
    settings_factory, sink_factory
):
    settings = settings_factory()
    produce_workload(settings)
    sink = sink_factory(settings)

    # 1. the sink writes two batches to ClickHouse and dies before committing the second
    sink.start("--batch-rows", "250", "--batch-ms", "100", "--fault-exit-after-flushes", "2")
    assert sink.wait_exit(60) == 3, sink.log()
    assert "fault injection" in sink.log()

    # 2. restarted, it re-reads the uncommitted batch (in other batch sizes, so the
    #    ClickHouse blocks differ and only the tables' keys can drop the duplicates);
    #    SIGKILL it while it works
    sink.start("--batch-rows", "333", "--batch-ms", "100")
    wait_for(lambda: sink.health().get("flushes", 0) >= 3, 60, "more writes", sink)
    sink.kill()

    # 3. restarted again, it finishes: every record once
    sink.start("--batch-rows", "333", "--batch-ms", "100")
    want = {table: (n, n) for table, n in EXPECTED.items()}
    wait_for(lambda: counts(sink) == want, 90, f"counts {want}", sink)
    time.sleep(2)  # anything still arriving would be a duplicate
    assert counts(sink) == want

    raw = sink.query("SELECT count() FROM lineage_log").rows[0][0]
    assert raw >= EXPECTED["lineage_events"]
    per_hour = sink.query(
        "SELECT sum(decisions) FROM (SELECT count() AS decisions FROM intent_decisions)"
    )
    assert per_hour.rows[0][0] == 600 + 500
    unauthorized = sink.query(
        "SELECT count() FROM outcomes WHERE approval_id NOT IN (SELECT approval_id FROM approvals)"
    )
    assert unauthorized.rows[0][0] == 0
    assert sink.proc is not None and sink.proc.poll() is None


def run_sql_cli(sink: SinkProcess, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    from typer.testing import CliRunner

    import streams.cli.sql as sql_cli

    @dataclass(frozen=True)
    class WithSink(Settings):  # the fields streams/config.py is to get
        sink_http_port: int = 0

    settings = WithSink(state_dir=sink.data_dir.parent, sink_http_port=sink.port)
    monkeypatch.setattr(sql_cli, "_settings", lambda: settings)
    return CliRunner().invoke(sql_cli.app, ["sql", *args])


def test_a_poison_record_goes_to_rejected_with_a_reason_and_the_sink_goes_on(
    settings_factory, sink_factory, monkeypatch
):
    settings = settings_factory()
    codec = default_codec()
    sink = sink_factory(settings).start("--batch-rows", "50", "--batch-ms", "100")
    intent = new_intent("billing-agent", "invoices.read", "inv:1", sequence=1)
    first, second = linked_lineage(2)
    produce(
        settings,
        [
            ("lineage-log", b"0", codec.encode("LineageEvent", first)),
            ("lineage-log", b"agent-1", b"\x00not avro at all"),
            ("lineage-log", b"billing-agent", codec.encode("Intent", intent)),
            (
                "outcomes",
                b"agent-1",
                codec.encode("Outcome", {**outcome(1), "reported_at_ms": 10**17}),
            ),
            ("lineage-log", b"1", codec.encode("LineageEvent", second)),
        ],
    )

    rejected: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    with OutcomeReader(settings, ("rejected",)) as reader:
        while len(rejected) < 3 and time.monotonic() < deadline:
            rejected += [r.record for r in reader.read(timeout=1.0) if r.record]
    by_code = {r["reason_code"]: r for r in rejected}
    assert sorted(by_code) == ["invalid_field", "not_avro", "wrong_record_type"], rejected
    assert len(rejected) == 3
    assert by_code["not_avro"]["source_topic"] == settings.topic("lineage-log")
    assert "c3 01" in by_code["not_avro"]["reason"]
    assert "Intent" in by_code["wrong_record_type"]["reason"]
    assert by_code["invalid_field"]["source_topic"] == settings.topic("outcomes")
    assert all(r["worker"] == f"sink-{settings.worker_id}" for r in rejected)
    assert all(
        r["reason"].startswith("the lineage sink cannot store this record") for r in rejected
    )

    # the sink survived, stored the good records, and stores its own rejections too
    wait_for(
        lambda: sink.query("SELECT count() FROM rejections").rows[0][0] == 3, 60, "rejections", sink
    )
    assert sink.query("SELECT count() FROM lineage_events").rows[0][0] == 2
    assert sink.query("SELECT count() FROM outcomes").rows[0][0] == 0
    assert sink.proc is not None and sink.proc.poll() is None
    health = sink.health()
    assert health["poison"] == 3

    # `trustplane sql` goes through the running sink's endpoint (the folder is locked)
    done = run_sql_cli(
        sink, monkeypatch, "SELECT reason_code FROM rejections ORDER BY 1", "-f", "csv"
    )
    assert done.exit_code == 0, done.output
    assert done.stdout.split() == ["reason_code", "invalid_field", "not_avro", "wrong_record_type"]
    done = run_sql_cli(sink, monkeypatch, "DELETE FROM rejections_raw WHERE 1")
    assert done.exception is not None and "DELETE" in str(done.exception)
    metrics = _get(f"http://127.0.0.1:{sink.port}/metrics")
    assert 'trustplane_sink_poison_total{reason_code="not_avro"} 1.0' in metrics


def test_a_real_gate_workers_lineage_and_outcomes_land_in_the_store(
    settings_factory, worker_factory, sink_factory
):
    from streams.dev.estate import setup_estate

    bulk = Path(__file__).parent / "data" / "anomaly-bulk.toml"
    settings = settings_factory(anomaly_config_path=bulk)
    estate = setup_estate(settings)
    plan = [
        ("billing-agent", "invoices.read", "invoice:{n}"),  # permitted by the example bundle
        ("support-bot", "payments.transfer", "acct:ACME-{n}"),  # no policy permits it
    ]
    with IntentPublisher(settings) as publisher:
        for n in range(200):
            agent, action, resource = plan[n % 2]
            publisher.publish(estate.intent(agent, action, resource.format(n=n)))
        publisher.publish_raw(b"billing-agent", b"garbage")
    with running_notary(settings):
        worker_factory(settings).start()
        sink = sink_factory(settings).start("--batch-ms", "200")

        def decided() -> bool:
            row = sink.query("SELECT count() FROM intent_decisions").rows[0][0]
            return bool(row == 200)

        wait_for(decided, 90, "200 decisions", sink)
        # the store says what the outcome topics say, whatever the gate decided
        with OutcomeReader(settings, ("approved", "denied", "review")) as reader:
            on_topics = collections.Counter(
                (r.record["agent_id"], r.topic.upper())
                for r in reader.read(timeout=3.0)
                if r.record
            )
        stored_outcomes = sink.query(
            "SELECT agent_id, outcome, count() FROM intent_decisions GROUP BY agent_id, outcome"
        ).rows
        assert {(agent, outcome): n for agent, outcome, n in stored_outcomes} == dict(on_topics)
        assert sum(on_topics.values()) == 200
        assert on_topics[("support-bot", "DENIED")] == 100, "no policy permits support payments"
        assert on_topics[("billing-agent", "APPROVED")] > 0

        # every linked lineage record (lineage-log) is in the store, once, with its hashes
        with OutcomeReader(settings, ("lineage-log",)) as reader:
            on_topic = {r.record["event_id"] for r in reader.read(timeout=3.0) if r.record}
        wait_for(
            lambda: sink.query("SELECT count() FROM lineage_events").rows[0][0] == len(on_topic),
            60,
            f"{len(on_topic)} lineage events",
            sink,
        )
        stored = sink.query("SELECT event_id FROM lineage_events").column("event_id")
        assert sorted(stored) == sorted(on_topic)
        unlinked = sink.query(
            "SELECT count() FROM lineage_events WHERE event_hash IS NULL OR log_index IS NULL "
            "OR (prev_hash IS NULL AND log_index != 0)"
        )
        assert unlinked.rows[0][0] == 0
        latency = sink.query("SELECT count() FROM intent_latency WHERE layers_us >= 0")
        assert latency.rows[0][0] == 200
        denied = sink.query("SELECT count() FROM decisions WHERE outcome = 'DENIED'").rows[0][0]
        assert (
            denied == on_topics[("support-bot", "DENIED")] + on_topics[("billing-agent", "DENIED")]
        )
        wait_for(
            lambda: sink.query("SELECT count() FROM rejections").rows[0][0] == 1,
            30,
            "the rejection",
            sink,
        )


def test_intents_land_with_their_parameters_and_join_their_decisions_by_digest(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[[Settings], Any],
    sink_factory: Callable[[Settings], SinkProcess],
) -> None:
    """The sink stores every intent the gate decides on, keyed to its approval or denial
    and its lineage by the digest of the exact record; a record on `intents` that does not
    decode is the gate's to reject: the sink counts it, skips it and goes on."""
    from streams.dev.estate import setup_estate

    bulk = Path(__file__).parent / "data" / "anomaly-bulk.toml"
    settings = settings_factory(anomaly_config_path=bulk)
    estate = setup_estate(settings)
    published: dict[str, dict[str, Any]] = {}
    with IntentPublisher(settings) as publisher:
        for n in range(20):
            if n == 10:  # in the middle, so later intents show the sink went on
                publisher.publish_raw(b"billing-agent", b"\x00not an intent")
            if n % 2:
                intent = estate.intent(
                    "billing-agent",
                    "payments.transfer",
                    f"acct:ACME-{n}",
                    amount=100.0 + n,
                    currency="EUR",
                    memo=f"invoice {n}",
                )
            else:
                intent = estate.intent(
                    "support-bot", "payments.transfer", f"acct:ACME-{n}", amount=n + 0.5
                )
            publisher.publish(intent)
            published[intent["intent_id"]] = intent
    with running_notary(settings):
        worker_factory(settings).start()
        sink = sink_factory(settings).start("--batch-ms", "200")

        def stored() -> bool:
            decided = sink.query("SELECT count() FROM intent_decisions").rows[0][0]
            return bool(sink.count_of("intents") == 20 and decided == 20)

        wait_for(stored, 90, "20 intents and their decisions", sink)
        rows = sink.query(
            "SELECT intent_id, agent_id, action, parameters_json, environment, sequence, "
            "intent_digest, record_b64 FROM intents"
        ).dicts()
        assert {r["intent_id"] for r in rows} == set(published)
        for row in rows:
            intent = published[row["intent_id"]]
            assert (row["agent_id"], row["action"]) == (intent["agent_id"], intent["action"])
            assert json.loads(row["parameters_json"]) == intent["parameters"]
            assert row["environment"] == intent["runtime"]["environment"]
            assert row["sequence"] == intent["sequence"]
            assert row["intent_digest"] == digest(base64.b64decode(row["record_b64"]))

        # each intent's digest is its decision's: approvals, decisions, lineage
        joined = sink.query(
            "SELECT i.intent_id, a.intent_digest = i.intent_digest AS approval, "
            "d.intent_digest = i.intent_digest AS decision, "
            "l.attributes['intent_digest'] = i.intent_digest AS lineage "
            "FROM intents AS i "
            "LEFT JOIN approvals AS a ON a.intent_id = i.intent_id "
            "LEFT JOIN decisions AS d ON d.intent_id = i.intent_id "
            "LEFT JOIN (SELECT intent_id, attributes FROM lineage_events "
            "  WHERE stage = 'enforcement') AS l ON l.intent_id = i.intent_id"
        ).dicts()
        assert len(joined) == 20
        for row in joined:
            assert (row["approval"] or row["decision"]) and row["lineage"], row
        by_digest = sink.query(
            "SELECT count() FROM approvals AS a "
            "INNER JOIN intents AS i ON i.intent_digest = a.intent_digest"
        ).rows[0][0]
        assert by_digest == sink.count_of("approvals") > 0
        denied = sink.query(
            "SELECT count() FROM decisions AS d "
            "INNER JOIN intents AS i ON i.intent_digest = d.intent_digest "
            "WHERE i.agent_id = 'support-bot'"
        ).rows[0][0]
        assert denied == 10, "no policy permits support payments"

        # the undecodable record: the gate rejected it (once), the sink skipped it
        wait_for(lambda: sink.count_of("rejections") == 1, 30, "the gate's rejection", sink)
        rejection = sink.query("SELECT worker, reason_code FROM rejections").dicts()[0]
        assert rejection["reason_code"] == "not_avro"
        assert not rejection["worker"].startswith("sink-")
        health = sink.health()
        assert (health["skipped"], health["poison"]) == (1, 0)
        metrics = _get(f"http://127.0.0.1:{sink.port}/metrics")
        skipped = [
            line
            for line in metrics.splitlines()
            if line.startswith("trustplane_sink_skipped_total{")
            and 'topic="intents"' in line
            and 'reason_code="not_avro"' in line
        ]
        assert [line.rsplit(" ", 1)[1] for line in skipped] == ["1.0"], metrics
        assert sink.proc is not None and sink.proc.poll() is None


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        return response.read().decode()
