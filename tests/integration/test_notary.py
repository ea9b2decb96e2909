"""The notary on the real broker: lineage in, one linked log and signed checkpoints out,
proofs that verify; a notary SIGKILLed inside a transaction resumes with no gap and no
duplicate."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import IsolationLevel, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from processors.log.chain import ChainError, leaf_bytes, link, verify_chain
from processors.log.checkpoint import NoteVerifier, open_note, sign_note, verify_checkpoint
from processors.log.merkle import MerkleLog, ProofError
from processors.log.notary import InclusionProof, verify_event_against_checkpoint
from streams import kafka
from streams.cli.proof import NotaryClient, verify_consistency_answer, verify_inclusion_answer
from streams.codec import Codec, SchemaRegistry
from streams.config import PROJECT_ROOT, Settings
from streams.notary import (
    NotaryService,
    ensure_notary_topics,
    load_notary_signer,
    notary_vkey_path,
)
from tests.conftest import ServiceProcess, free_port, http_json
from tests.streams.notary.test_notary_service import (
    GATE_KEYS,
    ROTATED_GATE_KEY,
    gate_event,
    next_schema_dir,
)

pytestmark = pytest.mark.broker

SETTINGS_FIELDS = ("bootstrap_servers", "topic_prefix", "group_id", "worker_id", "partitions")


@pytest.fixture
def schema_dir(tmp_path: Path) -> Path:
    return next_schema_dir(tmp_path)


@pytest.fixture
def codec(schema_dir: Path) -> Codec:
    return Codec(SchemaRegistry.from_directory(schema_dir))


@pytest.fixture
def settings(settings_factory: Callable[..., Settings], tmp_path: Path) -> Settings:
    settings = settings_factory(state_dir=tmp_path / "state", keys_dir=tmp_path / "keys")
    # the test events are signed by the test gate's keys: publish those as the gate's JWKS
    jwks = GATE_KEYS.keyset.to_jwks()
    (settings.resolved_keys_dir / "approvals.jwks.json").write_text(json.dumps(jwks))
    return settings


def make_events(count: int) -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:6]
    return [gate_event(n, event_id=f"{tag}-{n:06d}") for n in range(count)]


def produce(
    settings: Settings, codec: Codec, events: list[dict[str, Any]], rate: float = 0
) -> None:
    """Publish lineage events keyed by agent id (so over every partition)."""
    producer = kafka.producer(settings, {"linger.ms": 5})
    started = time.monotonic()
    for n, event in enumerate(events):
        if rate:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.produce(
            settings.topic("lineage"),
            key=event["agent_id"].encode(),
            value=codec.encode("LineageEvent", event),
        )
        producer.poll(0)
    assert producer.flush(30) == 0


def read_partition(settings: Settings, name: str) -> list[tuple[bytes, bytes]]:
    """Every committed record of partition 0 of a topic: (key, value)."""
    consumer = kafka.consumer(
        settings, f"reader-{uuid.uuid4().hex[:6]}", {"enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(settings.topic(name), 0, 0)])
    records: list[tuple[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    return records
                raise AssertionError(message.error().str())
            records.append((message.key(), message.value()))
        raise AssertionError(f"reading {name} did not reach its end")
    finally:
        consumer.close()


def health(url: str) -> dict[str, Any] | None:
    document = http_json(f"{url}/healthz")
    return document if isinstance(document, dict) else None


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def audit(
    settings: Settings, codec: Codec, verifier: NoteVerifier, url: str, expected_ids: set[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Check the log as an outside auditor would; return (events, checkpoint notes)."""
    log_records = read_partition(settings, "lineage-log")
    events = [codec.decode(value, "LineageEvent") for _, value in log_records]
    # one record per event, keyed and indexed 0..n-1 in order: no gap, no duplicate
    assert [int(key) for key, _ in log_records] == list(range(len(events)))
    assert [e["log_index"] for e in events] == list(range(len(events)))
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was logged twice"
    assert set(ids) == expected_ids
    verify_chain(events)

    notes = [value.decode() for _, value in read_partition(settings, "checkpoints")]
    checkpoints = [verify_checkpoint(note, verifier, origin=verifier.name) for note in notes]
    sizes = [c.size for c in checkpoints]
    assert sizes == sorted(sizes) and sizes[-1] == len(events)
    # every checkpoint signs a prefix of this very log
    tree = MerkleLog()
    for event in events:
        tree.append(leaf_bytes(event))
    for checkpoint in checkpoints:
        assert tree.root(checkpoint.size) == checkpoint.root_hash
    # and the notary proves each one extends the one before
    client = NotaryClient(url)
    for (old, old_note), (new, new_note) in zip(
        zip(sizes, notes, strict=True), list(zip(sizes, notes, strict=True))[1:], strict=False
    ):
        answer = client.consistency(old, new)
        verify_consistency_answer(answer, verifier, old_note=old_note, new_note=new_note)
    return events, notes


def test_lineage_is_logged_once_in_order_checkpointed_and_proven(settings, codec, tmp_path):
    events = make_events(500)
    produce(settings, codec, events[:100])  # some before the notary starts, the rest while
    service = NotaryService(
        settings,
        codec=codec,
        port=0,
        create_key=True,
        checkpoint_every_events=120,
        checkpoint_every_ms=300,
        batch_max_records=100,
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: service.url is not None, 30, "the proof endpoint")
        produce(settings, codec, events[100:], rate=1000)
        url = service.url
        assert url is not None
        wait_for(
            lambda: (health(url) or {}).get("checkpoint_size") == len(events),
            30,
            "every event to be checkpointed",
        )
        verifier = NoteVerifier.from_vkey(notary_vkey_path(settings).read_text().strip())
        logged, notes = audit(settings, codec, verifier, url, {e["event_id"] for e in events})
        assert len(notes) >= 3, "checkpoints every 120 events"

        # every event's inclusion proof verifies against the latest checkpoint
        client = NotaryClient(url)
        for event in logged:
            answer = client.inclusion(event_id=event["event_id"])
            verified = verify_inclusion_answer(answer, verifier, event_id=event["event_id"])
            assert verified.event == event and verified.note == notes[-1]

        # a log record with one field changed no longer verifies
        answer = client.inclusion(index=42)
        proof = InclusionProof.from_json(answer["proof"])
        original = logged[42]
        edited = {**original, "status": "deny"}
        with pytest.raises(ChainError, match="has been altered"):
            verify_event_against_checkpoint(edited, 42, proof, notes[-1], verifier)
        rehashed = link(edited, original["prev_hash"])
        with pytest.raises(ProofError):
            verify_event_against_checkpoint(rehashed, 42, proof, notes[-1], verifier)
        with pytest.raises(ChainError):
            verify_chain([*logged[:42], rehashed, *logged[43:]])
    finally:
        service.stop()
        thread.join(30)
    assert not errors, errors


# -- kill and restart ------------------------------------------------------------------


def serve(config_path: str) -> None:
    """Entry point of the notary subprocess (the schema with log_index is not installed
    in schemas/ yet, so the process is given its codec here)."""
    config = json.loads(Path(config_path).read_text())
    values = dict(config["settings"])
    values["state_dir"] = Path(values["state_dir"])
    values["keys_dir"] = Path(values["keys_dir"])
    service = NotaryService(
        Settings(**values),
        codec=Codec(SchemaRegistry.from_directory(Path(config["schemas"]))),
        port=config["port"],
        create_key=True,
        checkpoint_every_events=200,
        checkpoint_every_ms=250,
    )
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    service.run()


@dataclass
class NotaryProcess(ServiceProcess):
    """A notary subprocess (see :func:`serve`) with its proof endpoint."""

    url: str = ""

    def status(self) -> dict[str, Any]:
        return health(self.url) or {}


@pytest.fixture
def notary_process(settings, schema_dir, tmp_path, service_factory) -> NotaryProcess:
    port = free_port()
    config = tmp_path / "notary.json"
    values = {name: getattr(settings, name) for name in SETTINGS_FIELDS}
    values["state_dir"] = str(settings.state_dir)
    values["keys_dir"] = str(settings.resolved_keys_dir)
    config.write_text(json.dumps({"settings": values, "schemas": str(schema_dir), "port": port}))
    url = f"http://127.0.0.1:{port}"
    process = service_factory(
        "notary",
        [
            sys.executable,
            "-c",
            "import sys; from tests.integration.test_notary import serve; serve(sys.argv[1])",
            str(config),
        ],
        {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        ready=lambda: health(url) is not None,
        cls=NotaryProcess,
        url=url,
    )
    assert isinstance(process, NotaryProcess)
    return process


def open_transaction(admin: AdminClient, tp: TopicPartition) -> bool:
    """Whether lineage-log has records of a transaction that is not committed yet."""
    ends = {}
    for level in (IsolationLevel.READ_UNCOMMITTED, IsolationLevel.READ_COMMITTED):
        futures = admin.list_offsets({tp: OffsetSpec.latest()}, isolation_level=level)
        ends[level] = futures[tp].result().offset
    return ends[IsolationLevel.READ_UNCOMMITTED] > ends[IsolationLevel.READ_COMMITTED]


def test_a_notary_killed_mid_transaction_resumes_without_gap_or_duplicate(
    settings, codec, notary_process
):
    events = make_events(4000)
    producer = threading.Thread(target=produce, args=(settings, codec, events, 800), daemon=True)
    notary = notary_process.start(timeout=30)
    producer.start()
    admin = kafka.admin(settings)
    tp = TopicPartition(settings.topic("lineage-log"), 0)

    # kill the notary while a transaction of linked events is open; retry a few times,
    # since a transaction is open only for some milliseconds of each batch
    killed_inside, attempts = False, 0
    while attempts < 6 and not killed_inside:
        attempts += 1
        wait_for(lambda: notary.status().get("size", 0) > 0, 30, "progress")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not open_transaction(admin, tp):
            pass
        notary.kill()
        killed_inside = open_transaction(admin, tp)  # still open: nobody committed it
        notary.start(timeout=30)
    assert killed_inside, "no kill landed inside a transaction"
    before = notary.status()["size"]
    print(f"killed inside a transaction at attempt {attempts}; restored {before} events")
    assert 0 < before < len(events), "the kill landed mid-stream"

    producer.join(30)
    try:
        wait_for(lambda: notary.status().get("checkpoint_size") == len(events), 40, "all")
    except AssertionError:
        raise AssertionError(
            f"not every event was logged and checkpointed after the restart: "
            f"{notary.status()}\n{notary.log()}"
        ) from None
    verifier = NoteVerifier.from_vkey(notary_vkey_path(settings).read_text().strip())
    logged, notes = audit(settings, codec, verifier, notary.url, {e["event_id"] for e in events})
    assert notary.status()["duplicates"] == 0

    client = NotaryClient(notary.url)
    for index in (0, before - 1, before, before + 1, len(logged) - 1):
        answer = client.inclusion(index=index)
        verify_inclusion_answer(answer, verifier, index=index)


# -- one event per id, and restarting from the snapshot ---------------------------------


class InProcessNotary:
    """A NotaryService on a thread, started and stopped (cleanly) as often as needed."""

    def __init__(self, settings: Settings, codec: Codec, **options: Any) -> None:
        self.settings, self.codec = settings, codec
        self.options = {
            "port": 0,
            "create_key": True,
            "checkpoint_every_events": 150,
            "checkpoint_every_ms": 300,
            "batch_max_records": 100,
            **options,
        }
        self.service: NotaryService | None = None
        self.thread: threading.Thread | None = None
        self.errors: list[BaseException] = []
        self.started_in = 0.0

    def start(self) -> InProcessNotary:
        service = NotaryService(self.settings, codec=self.codec, **self.options)
        self.service = service

        def run() -> None:
            try:
                service.run()
            except BaseException as exc:  # noqa: BLE001 - reported by stop()
                self.errors.append(exc)

        started = time.monotonic()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        wait_for(lambda: service.url is not None and self.status() != {}, 60, "the notary")
        self.started_in = time.monotonic() - started
        return self

    @property
    def url(self) -> str:
        assert self.service is not None and self.service.url is not None
        return self.service.url

    def status(self) -> dict[str, Any]:
        assert self.service is not None
        return (health(self.service.url) or {}) if self.service.url else {}

    def wait_checkpointed(self, size: int) -> None:
        wait_for(lambda: self.status().get("checkpoint_size") == size, 40, f"size {size}")

    def stop(self) -> None:
        assert self.service is not None and self.thread is not None
        self.service.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the notary did not stop"
        assert not self.errors, self.errors


def read_topic(settings: Settings, name: str) -> list[tuple[bytes | None, bytes]]:
    """Every committed record of every partition of a topic."""
    consumer = kafka.consumer(
        settings, f"reader-{uuid.uuid4().hex[:6]}", {"enable.partition.eof": True}
    )
    topic = settings.topic(name)
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    records: list[tuple[bytes | None, bytes]] = []
    ended: set[int] = set()
    try:
        deadline = time.monotonic() + 30
        while len(ended) < len(partitions) and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition())
                    continue
                raise AssertionError(message.error().str())
            records.append((message.key(), message.value()))
        assert len(ended) == len(partitions), f"reading {name} did not reach its end"
        return records
    finally:
        consumer.close()


def snapshot_folder(settings: Settings) -> Path:
    return settings.state_dir / "notary" / settings.topic("lineage-log")


def test_an_event_is_logged_once_whatever_the_workers_and_restarts(settings, codec):
    events = make_events(300)
    # a second gate worker signs the same events with its own gate key
    resigned = [gate_event(0, key=ROTATED_GATE_KEY, **unsigned(e)) for e in events]
    notary = InProcessNotary(settings, codec).start()
    produce(settings, codec, [e for pair in zip(events, resigned, strict=True) for e in pair])
    notary.wait_checkpointed(300)
    # the same id with other content: refused, not logged
    conflicting = gate_event(0, **{**unsigned(events[7]), "status": "deny"})
    produce(settings, codec, [conflicting])
    wait_for(lambda: notary.status().get("reused_ids") == 1, 30, "the conflict")
    assert notary.status()["duplicates"] == 300
    notary.stop()

    # restarted (from its snapshot): the ids logged before the restart are still known
    notary.start()
    assert notary.status()["restored"]["from"] == "snapshot"
    later = make_events(50)
    produce(settings, codec, [*resigned[:100], *later, *events[200:], conflicting])
    notary.wait_checkpointed(350)
    wait_for(lambda: notary.status().get("reused_ids") == 1, 30, "the second conflict")
    status = notary.status()
    assert (status["size"], status["duplicates"]) == (350, 200)
    verifier = NoteVerifier.from_vkey(notary_vkey_path(settings).read_text().strip())
    expected = {e["event_id"] for e in events + later}
    logged, _ = audit(settings, codec, verifier, notary.url, expected)
    (first,) = [e for e in logged if e["event_id"] == events[7]["event_id"]]
    assert first["status"] == events[7]["status"]  # the first version, the only one
    notary.stop()

    rejections = [codec.decode(value, "Rejection") for _, value in read_topic(settings, "rejected")]
    assert [r["reason_code"] for r in rejections] == ["conflicting_event_id"] * 2
    for rejection in rejections:
        assert events[7]["event_id"] in rejection["reason"]
        assert f"at index {first['log_index']} " in rejection["reason"]


def unsigned(event: dict[str, Any]) -> dict[str, Any]:
    """The event's fields a gate signs (to sign them again)."""
    return {k: v for k, v in event.items() if k not in ("signer", "signature")}


def test_a_restart_continues_from_the_snapshot_and_keeps_linking(settings, codec):
    events = make_events(1200)
    notary = InProcessNotary(settings, codec).start()
    assert notary.status()["restored"]["from"] == "replay"  # the first start: no snapshot
    produce(settings, codec, events[:1000])
    notary.wait_checkpointed(1000)
    before = notary.status()
    old_note = NotaryClient(notary.url).checkpoint()
    old_root = verify_checkpoint(old_note, _verifier(settings)).root_hash
    notary.stop()
    assert (snapshot_folder(settings) / "manifest.note").exists()

    notary.start()
    restored = notary.status()["restored"]
    print(f"restarted in {notary.started_in:.2f} s: {restored}")
    assert restored["from"] == "snapshot" and restored["replayed"] == 0
    startup = notary.status()["startup"]
    assert list(startup["phases"])[1:] == ["broker", "topics", "transactions", "serving"]
    assert startup["ready_after_s"] == pytest.approx(sum(startup["phases"].values()), abs=0.01)
    assert notary.status()["size"] == before["size"] == 1000
    assert NotaryClient(notary.url).checkpoint() == old_note  # same size, root, signature

    produce(settings, codec, events[1000:])
    notary.wait_checkpointed(1200)
    client = NotaryClient(notary.url)
    new_note = client.checkpoint()
    answer = client.consistency(1000, 1200)
    verify_consistency_answer(answer, _verifier(settings), old_note=old_note, new_note=new_note)
    logged, _ = audit(
        settings, codec, _verifier(settings), notary.url, {e["event_id"] for e in events}
    )
    assert logged[1000]["prev_hash"] == logged[999]["event_hash"]  # chained onto the head
    tree = MerkleLog()
    for event in logged[:1000]:
        tree.append(leaf_bytes(event))
    assert tree.root() == old_root
    notary.stop()


def _verifier(settings: Settings) -> NoteVerifier:
    return NoteVerifier.from_vkey(notary_vkey_path(settings).read_text().strip())


def _flip_a_leaf(settings: Settings) -> None:
    path = next(snapshot_folder(settings).glob("g*/tree.0"))
    data = bytearray(path.read_bytes())
    data[100] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate_the_offsets(settings: Settings) -> None:
    path = next(snapshot_folder(settings).glob("g*/offsets"))
    path.write_bytes(path.read_bytes()[:-8])


def _edit_without_the_key(settings: Settings) -> None:
    path = snapshot_folder(settings) / "manifest.note"
    path.write_text(path.read_text().replace('"size": 500', '"size": 499'))


def _resign(settings: Settings, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the manifest and sign it again with the notary's key."""
    signer = load_notary_signer(settings, create=False)
    path = snapshot_folder(settings) / "manifest.note"
    text, _ = open_note(path.read_text(), [signer.verifier])
    manifest = json.loads(text)
    change(manifest)
    path.write_text(sign_note(json.dumps(manifest) + "\n", signer))


def _another_origin(settings: Settings) -> None:
    _resign(settings, lambda manifest: manifest.update(origin="other.example/log"))


def _another_frontier(settings: Settings) -> None:
    """Checksums and signature hold, but a subtree the root folds is not the signed one."""
    path = next(snapshot_folder(settings).glob("g*/tree.2"))  # 500 = ... + 4: [496, 500)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))

    def change(manifest: dict[str, Any]) -> None:
        manifest["files"]["tree.2"]["sha256"] = hashlib.sha256(data).hexdigest()

    _resign(settings, change)


def _another_head(settings: Settings) -> None:
    _resign(settings, lambda manifest: manifest.update(head="sha256:" + "ab" * 32))


def test_a_damaged_snapshot_is_set_aside_and_the_log_replayed(settings, codec, caplog):
    events = make_events(600)
    notary = InProcessNotary(settings, codec).start()
    produce(settings, codec, events[:500])
    notary.wait_checkpointed(500)
    expected_note = NotaryClient(notary.url).checkpoint()
    notary.stop()

    for damage, why in [
        (_flip_a_leaf, "does not match the SHA-256"),
        (_truncate_the_offsets, "truncated"),
        (_edit_without_the_key, "not a note signed by this notary's key"),
        (_another_origin, "of origin 'other.example/log'"),
        (_another_frontier, "(size 500) does not match the log"),
        (_another_head, "the snapshot's last event is index 499"),
    ]:
        damage(settings)
        caplog.clear()
        notary.start()
        restored = notary.status()["restored"]
        assert restored["from"] == "replay" and restored["replayed"] == 500, damage.__name__
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any(why in w and "replaying all of" in w for w in warnings), (why, warnings)
        assert NotaryClient(notary.url).checkpoint() == expected_note
        notary.stop()
        notary.start()  # the replay wrote a new snapshot
        assert notary.status()["restored"]["from"] == "snapshot", damage.__name__
        notary.stop()

    notary.start()
    produce(settings, codec, events[500:])
    notary.wait_checkpointed(600)
    audit(settings, codec, _verifier(settings), notary.url, {e["event_id"] for e in events})
    notary.stop()


def test_a_snapshot_ahead_of_the_topics_is_refused(settings, codec, caplog):
    notary = InProcessNotary(settings, codec).start()
    produce(settings, codec, make_events(200))
    notary.wait_checkpointed(200)
    notary.stop()

    # the log topics are deleted and created again, empty: the snapshot is of a log
    # that is no more
    admin = kafka.admin(settings)
    topics = [settings.topic("lineage-log"), settings.topic("checkpoints")]
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        future.result()
    wait_for(lambda: not set(topics) & set(admin.list_topics(timeout=10).topics), 30, "deletion")
    ensure_notary_topics(settings)  # as the operator (the notary's role may create none)
    caplog.clear()
    notary.start()
    assert notary.status()["restored"]["from"] == "replay"
    assert notary.status()["size"] == 0
    assert any("ahead of the topic" in r.getMessage() for r in caplog.records)
    events = make_events(30)
    produce(settings, codec, events)
    notary.wait_checkpointed(30)
    audit(settings, codec, _verifier(settings), notary.url, {e["event_id"] for e in events})
    notary.stop()
    notary.start()
    assert notary.status()["restored"]["from"] == "snapshot"
    assert notary.status()["size"] == 30
    notary.stop()


# -- a warm standby -----------------------------------------------------------------------


def test_a_standby_notary_serves_nothing_then_takes_over_from_a_killed_one(
    settings, codec, notary_process, service_factory
):
    events = make_events(300)
    notary = notary_process.start(timeout=30)
    standby = service_factory(
        "notary-standby",
        notary.command,
        notary.env,
        ready=lambda: "stands by" in standby.log(),
        cls=NotaryProcess,
        url=notary.url,  # the same port: the standby binds it only when it takes over
    )
    standby.start(timeout=30)
    produce(settings, codec, events[:150])
    wait_for(lambda: notary.status().get("checkpoint_size") == 150, 30, "the first half")
    assert "taking over" not in standby.log()

    notary.kill()
    killed = time.monotonic()
    wait_for(lambda: standby.status() != {}, 30, "the standby to serve")
    print(f"the standby served {time.monotonic() - killed:.2f} s after the kill")
    assert "taking over" in standby.log()
    phases = list(standby.status()["startup"]["phases"])
    assert phases[phases.index("standby") :] == ["standby", "transactions", "serving"]

    produce(settings, codec, events[150:])
    wait_for(lambda: standby.status().get("checkpoint_size") == 300, 30, "every event")
    verifier = NoteVerifier.from_vkey(notary_vkey_path(settings).read_text().strip())
    audit(settings, codec, verifier, standby.url, {e["event_id"] for e in events})
    assert standby.status()["duplicates"] == 0
