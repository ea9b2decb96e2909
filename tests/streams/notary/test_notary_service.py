"""The notary service without Kafka: linking and producing, redelivery, refusing what a
gate did not sign, restore, the proof endpoint and the proof CLI (which must verify, not
believe)."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME
from typer.testing import CliRunner

from processors.crypto.keys import (
    KeyEntry,
    KeyFileError,
    Keyset,
    SigningKey,
    generate_signing_key,
)
from processors.exceptions import ConfigError
from processors.log.attest import sign_event, verify_event_signature
from processors.log.chain import ChainError, leaf_bytes, link, verify_chain, verify_event_hash
from processors.log.checkpoint import CheckpointError, NoteSigner, verify_checkpoint
from processors.log.merkle import MerkleLog, ProofError, leaf_hash
from processors.records import LineageEvent
from streams.cli.proof import (
    NotaryClient,
    ProofClientError,
    VerificationFailed,
    notary_command,
    proof_app,
    verify_consistency_answer,
    verify_inclusion_answer,
)
from streams.codec import Codec, SchemaRegistry, default_codec
from streams.config import PROJECT_ROOT, Settings
from streams.gatekeys import GateKeys
from streams.notary import (
    LogIntegrityError,
    LogRecord,
    NotaryHTTPServer,
    NotaryLog,
    NotaryService,
    ProofRequestError,
    handle_request,
    load_notary_signer,
    notary_vkey_path,
    require_log_index,
)
from streams.notary.log import CONFLICTING_EVENT_ID, Refusal

ORIGIN = "test.trustplane.local/lineage"
SCHEMAS = PROJECT_ROOT / "schemas"
NEXT_SCHEMA = SCHEMAS / "lineage_event.avsc.next"


def next_schema_dir(tmp: Path) -> Path:
    """schemas/ as it will be once the LineageEvent with log_index is installed: the
    current lineage_event.avsc becomes history/lineage_event.v0.avsc."""
    target = tmp / "schemas"
    if not NEXT_SCHEMA.exists():  # already installed
        shutil.copytree(SCHEMAS, target, ignore=shutil.ignore_patterns("sql"))
        return target
    (target / "history").mkdir(parents=True)
    for path in SCHEMAS.glob("*.avsc"):
        shutil.copy(path, target / path.name)
    for path in (SCHEMAS / "history").glob("*.avsc"):
        shutil.copy(path, target / "history" / path.name)
    shutil.copy(SCHEMAS / "lineage_event.avsc", target / "history" / "lineage_event.v0.avsc")
    shutil.copy(NEXT_SCHEMA, target / "lineage_event.avsc")
    return target


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> Codec:
    return Codec(SchemaRegistry.from_directory(next_schema_dir(tmp_path_factory.mktemp("s"))))


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, generate_signing_key())


GATE_KEY = generate_signing_key()
ROTATED_GATE_KEY = generate_signing_key()
"""The gate's keys: its JWKS holds both (the second one since a rotation)."""
STRANGER_KEY = generate_signing_key()
"""A key the gate never published."""
GATE_KEYS = GateKeys.of(
    Keyset(KeyEntry(key.kid, key.public_key) for key in (GATE_KEY, ROTATED_GATE_KEY))
)


def gate_event(n: int, *, key: SigningKey | None = GATE_KEY, **overrides: Any) -> dict[str, Any]:
    """A LineageEvent as a gate worker writes it: one per decided intent, its verdicts
    inside, signed with ``key`` (unsigned for None); no hashes, no log_index."""
    event: dict[str, Any] = {
        "event_id": f"event-{n:06d}",
        "intent_id": f"intent-{n}",
        "agent_id": f"agent-{n % 5}",
        "stage": "enforcement",
        "event_type": "intent.approved",
        "status": "approved",
        "reasons": [],
        "attributes": {"intent_digest": f"sha256:{n:064x}", "topic": "approved"},
        "occurred_at_ms": 1_700_000_000_000 + n,
        "worker": "gate-1",
        "verdicts": [
            {
                "layer": "freshness",
                "status": "ALLOW",
                "reasons": [],
                "evidence": {"expires_in_ms": str(300_000 - n)},
                "duration_us": 3 + n % 7,
            },
            {
                "layer": "authorization",
                "status": "ALLOW",
                "reasons": [f"reason {n}"],
                "evidence": {"policy": "permit-read"},
                "duration_us": 40 + n % 17,
            },
        ],
        "signer": None,
        "signature": None,
        "prev_hash": None,
        "event_hash": None,
        "log_index": None,
    }
    event.update(overrides)
    return dict(sign_event(event, key)) if key is not None else event


class FakeTopic:
    """A lineage-log partition: offsets, with a commit marker after each transaction."""

    def __init__(self) -> None:
        self.values: dict[int, bytes] = {}
        self.next_offset = 0

    def __getitem__(self, offset: int) -> bytes:
        return self.values[offset]

    def write(self, notary_log: NotaryLog, records: list[LogRecord]) -> None:
        for record in records:
            self.values[self.next_offset] = record.value
            notary_log.delivered(record.index, self.next_offset)
            self.next_offset += 1
        self.next_offset += 1  # the transaction's commit marker


class Harness:
    """A NotaryLog driven the way NotaryService drives it, with a fake topic."""

    def __init__(self, signer: NoteSigner, codec: Codec, **kwargs: Any) -> None:
        self.topic = FakeTopic()
        kwargs.setdefault("gate_keys", GATE_KEYS)
        self.log = NotaryLog(signer, codec, fetch=self.topic.__getitem__, **kwargs)
        self.notes: list[str] = []
        self.refused: list[Refusal] = []
        self.source_offset = 0

    def batch(self, values: list[bytes | None], now_ms: int, *, commit: bool = True) -> list:
        records = []
        for value in values:
            self.source_offset += 1
            record = self.log.append(value, source=f"lineage/0@{self.source_offset}")
            if isinstance(record, Refusal):
                self.refused.append(record)
            elif record is not None:
                records.append(record)
        due = self.log.checkpoint_due(now_ms)
        if commit:
            self.topic.write(self.log, records)
            if due is not None:
                self.log.checkpoint_delivered(2 * len(self.notes))  # a note, a commit marker
                self.notes.append(due[1])
            self.log.commit()
        return records


def encoded(events: list[dict[str, Any]]) -> list[bytes | None]:
    # the gate's own codec (the notary reads with a codec of its own)
    return [default_codec().encode("LineageEvent", dict(e)) for e in events]


def decode_all(codec: Codec, topic: FakeTopic) -> list[dict[str, Any]]:
    return [codec.decode(topic.values[o], "LineageEvent") for o in sorted(topic.values)]


# -- linking and producing --------------------------------------------------------


def test_events_are_linked_indexed_and_logged_in_append_order(signer, codec):
    h = Harness(signer, codec, checkpoint_every_events=10_000, checkpoint_every_ms=10_000)
    records = h.batch(encoded([gate_event(n) for n in range(40)]), now_ms=0)

    assert [r.index for r in records] == list(range(40))
    assert [r.key for r in records] == [str(n).encode() for n in range(40)]
    events = decode_all(codec, h.topic)
    assert [e["log_index"] for e in events] == list(range(40))
    assert [e["event_id"] for e in events] == [f"event-{n:06d}" for n in range(40)]
    verify_chain(events)  # prev_hash/event_hash link them, log_index included
    tree = MerkleLog()
    for event in events:
        tree.append(leaf_bytes(event))
    assert tree.root() == h.log.notary.log.root()
    (note,) = h.notes  # the first growth is checkpointed at once
    assert verify_checkpoint(note, signer.verifier, origin=ORIGIN).size == 40


def test_log_index_is_covered_by_the_event_hash(signer, codec):
    h = Harness(signer, codec)
    h.batch(encoded([gate_event(n) for n in range(3)]), now_ms=0)
    event = decode_all(codec, h.topic)[1]
    moved = {**event, "log_index": 2}
    with pytest.raises(ChainError, match="has been altered"):
        verify_chain([moved], anchor=event["prev_hash"])


def test_a_redelivered_event_is_dropped_and_a_reused_id_with_other_content_is_refused(
    signer, codec
):
    h = Harness(signer, codec)
    first = gate_event(1)
    h.batch(encoded([first, gate_event(2)]), now_ms=0)
    again = h.batch(encoded([first]), now_ms=1)
    assert again == [] and h.log.duplicates == 1 and h.refused == []

    replayed = gate_event(1, occurred_at_ms=first["occurred_at_ms"] + 5000, status="deny")
    assert h.batch(encoded([replayed]), now_ms=2) == []
    (refusal,) = h.refused
    assert refusal.code == CONFLICTING_EVENT_ID
    assert "event-000001" in refusal.reason and "at index 0" in refusal.reason
    assert h.log.reused_ids == 1 and h.log.notary.size == 2
    assert h.log.index_of(first["event_id"]) == 0  # the first version stays the only one
    assert h.log.status()["reused_ids"] == 1


def test_the_same_event_signed_by_two_gate_workers_is_logged_once(signer, codec):
    h = Harness(signer, codec)
    by_one = gate_event(1)
    by_other = gate_event(1, key=ROTATED_GATE_KEY)  # another worker, another gate key
    assert by_one["signature"] != by_other["signature"]
    # in one transaction (the first still pending) and in a later one
    records = h.batch(encoded([by_one, by_other, gate_event(2)]), now_ms=0)
    assert [r.event_id for r in records] == ["event-000001", "event-000002"]
    assert h.batch(encoded([by_other, by_one]), now_ms=1) == []
    assert h.log.duplicates == 3 and h.log.reused_ids == 0 and h.refused == []
    (logged, _) = decode_all(codec, h.topic)
    assert logged["signature"] == by_one["signature"]  # the first delivery is the one logged


def test_a_conflicting_event_in_the_same_transaction_is_refused(signer, codec):
    h = Harness(signer, codec)
    records = h.batch(encoded([gate_event(1), gate_event(1, status="deny")]), now_ms=0)
    assert [r.index for r in records] == [0]
    (refusal,) = h.refused
    assert refusal.code == CONFLICTING_EVENT_ID and "at index 0" in refusal.reason


def test_a_restored_log_still_knows_every_id(signer, codec):
    h = Harness(signer, codec)
    h.batch(encoded([gate_event(n) for n in range(5)]), now_ms=0)
    restored = restore(signer, codec, h)
    assert restored.append(encoded([gate_event(0, key=ROTATED_GATE_KEY)])[0], source="x") is None
    refused = restored.append(encoded([gate_event(3, status="deny")])[0], source="x")
    assert isinstance(refused, Refusal) and refused.code == CONFLICTING_EVENT_ID
    assert (restored.duplicates, restored.reused_ids, restored.repeated_ids) == (1, 1, 0)


def test_an_old_log_holding_an_id_twice_is_restored_and_proofs_by_id_give_the_first(signer, codec):
    # written before the notary logged one event per id: the same id at indexes 0 and 2
    h = Harness(signer, codec)
    h.batch(encoded([gate_event(1), gate_event(2)]), now_ms=0)
    twin = h.log.notary.append({**gate_event(1, status="deny"), "log_index": 2})[1]
    h.topic.write(h.log, [LogRecord(2, "twin", b"2", codec.encode("LineageEvent", twin))])
    h.notes.append(h.log.notary.checkpoint(1))
    h.log.commit()
    restored = restore(signer, codec, h)
    assert restored.size == 3 and restored.repeated_ids == 1
    assert restored.index_of("event-000001") == 0
    assert restored.append(encoded([gate_event(1)])[0], source="x") is None


def test_a_gate_event_keeps_exactly_the_lineage_event_fields(codec):
    event = gate_event(0)
    assert list(event) == [f.name for f in dataclasses.fields(LineageEvent)]
    assert codec.decode(codec.encode("LineageEvent", event), "LineageEvent") == event


def assert_nothing_logged(h: Harness) -> None:
    assert h.log.notary.size == 0 and h.topic.values == {}
    assert h.log.index_of("event-000001") is None
    assert h.log.reused_ids == 0 and h.log.duplicates == 0


def test_an_undecodable_lineage_record_is_refused_and_counted_not_logged(signer, codec):
    h = Harness(signer, codec)
    records = h.batch([b"\x00not avro", b""], now_ms=0)
    assert records == []
    assert [r.code for r in h.refused] == ["not_avro", "empty"]
    assert all(r.reason.startswith("not a LineageEvent: ") for r in h.refused)
    assert_nothing_logged(h)
    assert h.log.undecodable == 2 and h.log.unsigned == 0
    assert h.log.status()["undecodable"] == 2
    # nothing took a log position: the next gate event is leaf 0 and starts the chain
    (record,) = h.batch(encoded([gate_event(1)]), now_ms=1)
    assert record.index == 0
    assert codec.decode(record.value, "LineageEvent")["prev_hash"] is None


def _resigned_by_a_stranger_claiming_the_gate_key(event: dict[str, Any]) -> dict[str, Any]:
    impostor = SigningKey(STRANGER_KEY.private_key, GATE_KEY.kid)
    return dict(sign_event(dict(event), impostor))


def _altered_verdict(event: dict[str, Any]) -> dict[str, Any]:
    verdicts = [dict(v) for v in event["verdicts"]]
    verdicts[1] = {**verdicts[1], "evidence": {"policy": "permit-all"}}
    return {**event, "verdicts": verdicts}


@pytest.mark.parametrize(
    "make",
    [
        lambda: gate_event(1, key=None),
        lambda: {**gate_event(1), "signature": None},
        lambda: {**gate_event(1), "signer": None},
        lambda: {**gate_event(1), "signature": "%%% not base64 %%%"},
        lambda: {**gate_event(1), "signature": base64.b64encode(b"\x00" * 64).decode()},
        lambda: gate_event(1, key=STRANGER_KEY),
        lambda: _resigned_by_a_stranger_claiming_the_gate_key(gate_event(1)),
        lambda: {**gate_event(1), "status": "denied", "event_type": "intent.denied"},
        lambda: {**gate_event(1), "reasons": ["approved by a person"]},
        lambda: {**gate_event(1), "attributes": {"topic": "approved"}},
        lambda: _altered_verdict(gate_event(1)),
        lambda: {**gate_event(1), "verdicts": gate_event(1)["verdicts"][:1]},
        lambda: {**gate_event(1), "agent_id": "agent-4"},
        lambda: {**gate_event(1), "signer": ROTATED_GATE_KEY.kid},
    ],
    ids=[
        "unsigned",
        "signer without signature",
        "signature without signer",
        "signature not base64",
        "signature of zeros",
        "signed by a key not in the gate keyset",
        "stranger key claiming the gate key id",
        "outcome altered after signing",
        "reasons altered after signing",
        "attributes altered after signing",
        "a verdict's evidence altered after signing",
        "a verdict dropped after signing",
        "agent altered after signing",
        "signer swapped for another gate key",
    ],
)
def test_an_event_no_gate_key_vouches_for_is_refused_and_counted_not_logged(signer, codec, make):
    h = Harness(signer, codec)
    records = h.batch(encoded([make()]), now_ms=0)
    assert records == []
    (refusal,) = h.refused
    assert refusal.code == "unsigned_lineage"
    assert "event-000001" in refusal.reason
    assert_nothing_logged(h)
    assert h.log.unsigned == 1 and h.log.undecodable == 0
    assert json.loads(handle_request(h.log, signer.vkey, "/healthz")[2])["unsigned"] == 1
    assert h.log.checkpoint_due(0) is None  # nothing to checkpoint
    # the refused record left no trace: the gate's own event with that id is logged as new
    (record,) = h.batch(encoded([gate_event(1)]), now_ms=1)
    assert record.index == 0 and h.log.reused_ids == 0 and h.log.unsigned == 1


def test_events_signed_by_any_key_of_the_gate_keyset_are_logged(signer, codec):
    h = Harness(signer, codec)
    events = [gate_event(1), gate_event(2, key=ROTATED_GATE_KEY)]
    records = h.batch(encoded(events), now_ms=0)
    assert [r.index for r in records] == [0, 1] and h.refused == []
    logged = decode_all(codec, h.topic)
    assert [e["signer"] for e in logged] == [GATE_KEY.kid, ROTATED_GATE_KEY.kid]


def test_a_signed_event_is_logged_and_its_leaf_and_hash_cover_signer_and_signature(signer, codec):
    h = Harness(signer, codec, checkpoint_every_events=1)
    sent = gate_event(1)
    (record,) = h.batch(encoded([sent]), now_ms=0)
    (logged,) = decode_all(codec, h.topic)
    # logged as sent, plus the notary's three members; the gate's signature still holds
    assert {
        k: v for k, v in logged.items() if k not in ("prev_hash", "event_hash", "log_index")
    } == {k: v for k, v in sent.items() if k not in ("prev_hash", "event_hash", "log_index")}
    assert verify_event_signature(logged, GATE_KEYS.keyset) == GATE_KEY.kid
    verify_event_hash(logged)
    leaf = leaf_bytes(logged)
    assert h.log.notary.log.leaf_hash(record.index) == leaf_hash(leaf)
    assert f'"signer":"{GATE_KEY.kid}"'.encode() in leaf
    assert f'"signature":"{logged["signature"]}"'.encode() in leaf

    resigned = dict(sign_event(dict(logged), ROTATED_GATE_KEY))  # another valid gate key
    for changed in (
        resigned,
        {**logged, "signature": resigned["signature"]},
        {**logged, "signer": ROTATED_GATE_KEY.kid},
        {**logged, "signer": None, "signature": None},
    ):
        with pytest.raises(ChainError, match="has been altered"):
            verify_event_hash(changed)
        relinked = link(changed, logged["prev_hash"])
        assert leaf_hash(leaf_bytes(relinked)) != h.log.notary.log.leaf_hash(record.index)

    # the inclusion proof is of the signed event: a signature swapped in does not verify
    answer = h.log.inclusion(index=record.index)
    assert answer["event"]["signature"] == logged["signature"]
    verify_inclusion_answer(answer, signer.verifier, index=record.index)
    swapped = {
        **answer,
        "event": link(
            {**answer["event"], "signer": resigned["signer"], "signature": resigned["signature"]},
            None,
        ),
    }
    with pytest.raises(ProofError):
        verify_inclusion_answer(swapped, signer.verifier, index=record.index)


class FakeMessage:
    """What NotaryService reads of a consumed ``lineage`` record."""

    def __init__(self, offset: int, value: bytes | None, key: bytes | None = b"agent-1") -> None:
        self._offset, self._value, self._key = offset, value, key

    def topic(self) -> str:
        return "t.lineage"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (TIMESTAMP_LOG_APPEND_TIME, 1_700_000_000_500)


def test_the_service_sends_refused_records_to_rejected_and_logs_the_rest(signer, codec):
    # the batch hook alone (no Kafka): a NotaryService with only what _link uses
    service = NotaryService.__new__(NotaryService)
    settings = Settings(topic_prefix="t.")
    service.topics = {
        name: settings.topic(name) for name in ("lineage", "lineage-log", "checkpoints", "rejected")
    }
    service.codec = codec
    service.origin = ORIGIN
    h = Harness(signer, codec)
    service.log = h.log
    unsigned = encoded([gate_event(1, key=None)])[0]
    messages = [
        FakeMessage(10, b"\x00not avro"),
        FakeMessage(11, unsigned),
        FakeMessage(12, encoded([gate_event(2)])[0]),
    ]
    records = service._link(messages)  # type: ignore[arg-type]
    assert records is not None
    rejected = [r for r in records if r.topic == "t.rejected"]
    logged = [r for r in records if r.topic == "t.lineage-log"]
    assert len(rejected) == 2 and len(logged) == 1
    assert [r.topic for r in records].count("t.checkpoints") == 1  # the first growth
    rejections = [codec.decode(r.value or b"", "Rejection") for r in rejected]
    assert [(r["reason_code"], r["source_offset"]) for r in rejections] == [
        ("not_avro", 10),
        ("unsigned_lineage", 11),
    ]
    for rejection, message in zip(rejections, messages, strict=False):
        assert (rejection["source_topic"], rejection["source_partition"]) == ("t.lineage", 2)
        assert rejection["worker"] == "notary" and rejection["key"] == b"agent-1"
        assert rejection["value_size"] == len(message.value() or b"")
    assert codec.decode(logged[0].value or b"", "LineageEvent")["event_id"] == "event-000002"
    assert h.log.status()["unsigned"] == 1 and h.log.status()["undecodable"] == 1


def test_the_schema_without_log_index_is_refused_with_a_hint(tmp_path):
    schema = json.loads(NEXT_SCHEMA.read_text() if NEXT_SCHEMA.exists() else "{}") or json.loads(
        (SCHEMAS / "lineage_event.avsc").read_text()
    )
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "log_index"]
    (tmp_path / "lineage_event.avsc").write_text(json.dumps(schema))
    old = Codec(SchemaRegistry.from_directory(tmp_path))
    with pytest.raises(ConfigError, match="no log_index field") as caught:
        require_log_index(old)
    assert "lineage_event.avsc" in (caught.value.hint or "")


# -- committed state only -----------------------------------------------------------


def test_nothing_is_served_before_its_transaction_commits(signer, codec):
    h = Harness(signer, codec)
    h.batch(encoded([gate_event(n) for n in range(5)]), now_ms=0, commit=False)
    assert h.log.latest() is None
    with pytest.raises(ProofRequestError, match="not in the log") as caught:
        h.log.inclusion(event_id="event-000001")
    assert caught.value.status == 404


def test_proofs_verify_against_the_latest_checkpoint(signer, codec):
    h = Harness(signer, codec, checkpoint_every_events=7, checkpoint_every_ms=60_000)
    for start in range(0, 30, 5):
        h.batch(encoded([gate_event(n) for n in range(start, start + 5)]), now_ms=start)
    latest_size = h.log.latest()[0]
    sizes = [verify_checkpoint(n, signer.verifier).size for n in h.notes]
    assert sizes == sorted(sizes) and sizes[-1] == latest_size

    for index in range(latest_size):
        answer = h.log.inclusion(index=index)
        verified = verify_inclusion_answer(answer, signer.verifier, index=index)
        assert verified.checkpoint.size == latest_size
    # events after the last checkpoint are not proven yet
    if latest_size < 30:
        with pytest.raises(ProofRequestError, match="not covered") as caught:
            h.log.inclusion(index=29)
        assert caught.value.status == 503

    for old, new in zip(sizes, sizes[1:], strict=False):
        answer = h.log.consistency(old, new)
        verify_consistency_answer(answer, signer.verifier)


def test_checkpoints_are_signed_on_schedule_even_without_new_events(signer, codec):
    h = Harness(signer, codec, checkpoint_every_events=1000, checkpoint_every_ms=1000)
    h.batch(encoded([gate_event(0)]), now_ms=0)  # first growth: checkpoint now
    h.batch(encoded([gate_event(1)]), now_ms=10)  # too soon
    assert h.log.latest()[0] == 1
    h.batch([], now_ms=1010)  # idle, a second later: the pending event is checkpointed
    assert h.log.latest()[0] == 2 and len(h.notes) == 2


# -- restore ------------------------------------------------------------------------


def restore(signer, codec, h: Harness, **kwargs: Any) -> NotaryLog:
    kwargs.setdefault("gate_keys", GATE_KEYS)
    restored = NotaryLog(signer, codec, fetch=h.topic.__getitem__, **kwargs)
    for offset in sorted(h.topic.values):
        restored.restore_record(offset, h.topic.values[offset])
    for n, note in enumerate(h.notes):
        restored.restore_checkpoint(n, note.encode())
    restored.commit()
    return restored


def test_restore_rebuilds_the_log_and_continues_the_chain(signer, codec):
    h = Harness(signer, codec, checkpoint_every_events=4)
    h.batch(encoded([gate_event(n) for n in range(10)]), now_ms=0)
    h.batch(encoded([gate_event(n) for n in range(10, 13)]), now_ms=5000)
    restored = restore(signer, codec, h)
    assert restored.notary.log.root() == h.log.notary.log.root()
    assert restored.notary.head == h.log.notary.head
    assert restored.latest() == h.log.latest()
    assert restored.index_of("event-000011") == 11
    assert restored.head == h.log.head

    # a redelivery of a restored event is still recognized
    assert restored.append(encoded([gate_event(12)])[0], source="x") is None
    record = restored.append(encoded([gate_event(13)])[0], source="x")
    assert isinstance(record, LogRecord) and record.index == 13
    linked = codec.decode(record.value, "LineageEvent")
    assert linked["prev_hash"] == h.log.notary.head
    # the checkpoint of the restored size is not signed a second time
    assert restored.checkpoint_due(10_000) == (14, restored.notary.latest_checkpoint)


def test_restore_at_a_checkpointed_size_does_not_sign_it_again(signer, codec):
    h = Harness(signer, codec)
    h.batch(encoded([gate_event(n) for n in range(3)]), now_ms=0)
    restored = restore(signer, codec, h)
    assert restored.checkpoint_due(0) is None


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (lambda e: {**e, "status": "deny"}, "altered"),
        (lambda e: link({**e, "status": "deny"}, e["prev_hash"]), "does not follow|altered"),
        (lambda e: {**e, "log_index": 99}, "holds log index 99"),
    ],
    ids=["field changed", "field changed and rehashed", "index changed"],
)
def test_restore_refuses_a_tampered_log(signer, codec, tamper, match):
    h = Harness(signer, codec)
    h.batch(encoded([gate_event(n) for n in range(6)]), now_ms=0)
    offset = sorted(h.topic.values)[3]
    event = codec.decode(h.topic.values[offset], "LineageEvent")
    h.topic.values[offset] = codec.encode("LineageEvent", tamper(event))
    with pytest.raises((LogIntegrityError, ChainError), match=match):
        restore(signer, codec, h)


def test_restore_refuses_a_gap(signer, codec):
    h = Harness(signer, codec)
    h.batch(encoded([gate_event(n) for n in range(6)]), now_ms=0)
    del h.topic.values[sorted(h.topic.values)[2]]
    with pytest.raises(LogIntegrityError, match="holds log index 3, expected 2"):
        restore(signer, codec, h)


def test_restore_refuses_checkpoints_of_another_key_or_another_log(signer, codec):
    h = Harness(signer, codec)
    h.batch(encoded([gate_event(n) for n in range(4)]), now_ms=0)
    other = Harness(NoteSigner(ORIGIN, generate_signing_key()), codec)
    other.batch(encoded([gate_event(n) for n in range(4)]), now_ms=0)
    h.notes = other.notes
    with pytest.raises(LogIntegrityError, match="signed by this notary's key"):
        restore(signer, codec, h)

    forked = Harness(signer, codec)
    forked.batch(encoded([gate_event(n, status="x") for n in range(4)]), now_ms=0)
    h.notes = forked.notes
    with pytest.raises(LogIntegrityError, match="does not match the log rebuilt"):
        restore(signer, codec, h)


# -- keys -----------------------------------------------------------------------------


def test_the_signing_key_is_created_only_when_allowed(tmp_path):
    remote = Settings(bootstrap_servers="kafka:9092", keys_dir=tmp_path / "keys")
    with pytest.raises(KeyFileError, match="does not exist") as caught:
        load_notary_signer(remote)
    assert "--create-key" in (caught.value.hint or "")
    signer = load_notary_signer(remote, create=True)
    assert signer.name == "trustplane.local/lineage"
    assert notary_vkey_path(remote).read_text() == signer.vkey + "\n"
    again = load_notary_signer(remote)
    assert again.vkey == signer.vkey
    local = Settings(keys_dir=tmp_path / "local-keys")  # no bootstrap: the local broker
    assert load_notary_signer(local, "example.com/log").name == "example.com/log"


def test_a_bad_origin_is_a_config_error(tmp_path):
    settings = Settings(keys_dir=tmp_path)
    with pytest.raises(ConfigError, match="notary origin"):
        load_notary_signer(settings, "has space/log", create=True)


# -- HTTP endpoint and proof CLI --------------------------------------------------------


def test_requests_are_answered_from_committed_state(signer, codec):
    assert handle_request(None, signer.vkey, "/vkey")[2].decode().strip() == signer.vkey
    assert handle_request(None, signer.vkey, "/checkpoint")[0] == 503  # restoring
    h = Harness(signer, codec)
    assert handle_request(h.log, signer.vkey, "/checkpoint")[0] == 503  # nothing yet
    h.batch(encoded([gate_event(n) for n in range(3)]), now_ms=0)
    status, kind, body = handle_request(h.log, signer.vkey, "/checkpoint")
    assert (status, kind) == (200, "text/plain; charset=utf-8") and body.decode() == h.notes[-1]
    assert json.loads(handle_request(h.log, signer.vkey, "/healthz")[2])["size"] == 3
    for target, status in [
        ("/proof/inclusion?index=abc", 400),
        ("/proof/inclusion", 400),
        ("/proof/inclusion?index=7", 404),
        ("/proof/inclusion?event_id=nope", 404),
        ("/proof/consistency?old=0", 400),
        ("/proof/consistency?old=1&new=9", 404),
        ("/nothing", 404),
    ]:
        got, _, body = handle_request(h.log, signer.vkey, target)
        assert got == status, (target, body)
        assert json.loads(body)["error"]


class Served:
    """A NotaryLog behind the real HTTP server; ``tamper`` edits inclusion answers."""

    def __init__(self, h: Harness, signer: NoteSigner) -> None:
        self.h = h
        self.tamper: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.checkpoint_override: str | None = None
        outer = self

        class Source:
            def __getattr__(self, name: str) -> Any:
                return getattr(outer.h.log, name)

            def inclusion(self, **kwargs: Any) -> dict[str, Any]:
                answer = outer.h.log.inclusion(**kwargs)
                return outer.tamper(answer) if outer.tamper else answer

            def latest(self) -> Any:
                if outer.checkpoint_override:
                    return (0, outer.checkpoint_override)
                return outer.h.log.latest()

        self.server = NotaryHTTPServer(lambda: Source(), signer.vkey, "127.0.0.1", 0).start()  # type: ignore[arg-type, return-value]


@pytest.fixture
def served(signer, codec) -> Iterator[Served]:
    h = Harness(signer, codec, checkpoint_every_events=10)
    h.batch(encoded([gate_event(n) for n in range(10)]), now_ms=0)
    h.batch(encoded([gate_event(n) for n in range(10, 25)]), now_ms=1)
    s = Served(h, signer)
    yield s
    s.server.close()


@pytest.fixture
def cli(tmp_path, monkeypatch, signer) -> Callable[..., Any]:
    monkeypatch.setenv("TRUSTPLANE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TRUSTPLANE_KEYS_DIR", str(tmp_path / "keys"))
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "notary.vkey").write_text(signer.vkey + "\n")
    # the gate's published keys, as `trustplane keys init` writes them
    (tmp_path / "keys" / "approvals.jwks.json").write_text(json.dumps(GATE_KEYS.keyset.to_jwks()))
    app = typer.Typer()
    app.add_typer(proof_app)
    app.command("notary")(notary_command)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, list(args))

    return run


def test_proof_cli_verifies_an_event_by_id_and_by_index(served, cli):
    url = served.server.url
    result = cli("proof", "event-000004", "--url", url)
    assert result.exit_code == 0, result.output
    assert "verified ✓" in result.output and "log index   4" in result.output
    assert GATE_KEY.kid in result.output  # who signed it
    assert "size 25" in result.output
    result = cli("proof", "--index", "24", "--url", url)
    assert result.exit_code == 0, result.output
    assert '"event_id": "event-000024"' in result.output


def test_proof_cli_fails_on_an_event_no_published_gate_key_signed(served, cli, tmp_path):
    strangers = Keyset([KeyEntry(STRANGER_KEY.kid, STRANGER_KEY.public_key)])
    (tmp_path / "keys" / "approvals.jwks.json").write_text(json.dumps(strangers.to_jwks()))
    result = cli("proof", "event-000004", "--url", served.server.url)
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    assert "verification FAILED" in output
    assert f"signed by {GATE_KEY.kid!r}: no key with id" in output


def test_proof_cli_verifies_consistency_and_the_latest_checkpoint(served, cli):
    url = served.server.url
    result = cli("proof", "--consistency", "10", "25", "--url", url)
    assert result.exit_code == 0, result.output
    assert "the log of size 25 extends the log of size 10" in result.output
    result = cli("checkpoint", "--url", url)
    assert result.exit_code == 0, result.output
    assert "first checkpoint seen from this log" in result.output
    assert result.output.startswith(ORIGIN + "\n25\n")


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (lambda a: {**a, "event": {**a["event"], "status": "deny"}}, "has been altered"),
        (
            lambda a: {
                **a,
                "event": link({**a["event"], "status": "deny"}, a["event"]["prev_hash"]),
            },
            "ProofError",
        ),
        (lambda a: {**a, "index": 5, "proof": {**a["proof"], "leaf_index": 5}}, "log_index is 4"),
        (lambda a: {**a, "event": {**a["event"], "event_id": "event-000009"}}, "returned event"),
        (lambda a: {**a, "proof": {**a["proof"], "inclusion_path": []}}, "ProofError"),
        (lambda a: {**a, "checkpoint": a["checkpoint"].replace("25", "26", 1)}, "NoteError"),
        (lambda a: {**a, "proof": "ok"}, "no valid 'proof'"),
    ],
    ids=["event edited", "event rehashed", "index", "other event", "path", "note", "claims ok"],
)
def test_proof_cli_fails_on_a_lying_notary(served, cli, tamper, match):
    served.tamper = tamper
    result = cli("proof", "event-000004", "--url", served.server.url)
    assert result.exit_code == 1, result.output
    assert "verification FAILED" in result.output
    assert match in result.output.replace("\n", " ")


def test_proof_cli_needs_the_right_verifier_key(served, cli, tmp_path):
    other = NoteSigner(ORIGIN, generate_signing_key())
    result = cli("proof", "event-000001", "--url", served.server.url, "--vkey", other.vkey)
    assert result.exit_code == 1 and "no signature by a trusted key" in result.output
    result = cli("proof", "event-000001", "--url", served.server.url, "--vkey", "/nope.vkey")
    assert result.exit_code != 0
    assert "no notary verifier key at /nope.vkey" in str(result.exception)


def test_proof_cli_catches_a_rolled_back_log(served, cli, signer, codec):
    assert cli("checkpoint", "--url", served.server.url).exit_code == 0  # remembers size 25
    # the notary now serves an older, unrelated log of 12 events under the same key
    forked = Harness(signer, codec)
    forked.batch(encoded([gate_event(n, status="rewritten") for n in range(12)]), now_ms=0)
    served.h = forked
    result = cli("checkpoint", "--url", served.server.url)
    assert result.exit_code == 1, result.output
    assert "rolled back or rewritten" in result.output
    # the same log grown further is fine
    grown = Harness(signer, codec, checkpoint_every_events=10)
    grown.batch(encoded([gate_event(n) for n in range(10)]), now_ms=0)
    grown.batch(encoded([gate_event(n) for n in range(10, 25)]), now_ms=1)
    grown.batch(encoded([gate_event(n) for n in range(25, 40)]), now_ms=2)
    served.h = grown
    result = cli("checkpoint", "--url", served.server.url)
    assert result.exit_code == 0, result.output
    assert "consistent with the checkpoint remembered (size 25)" in result.output


def test_proof_cli_reports_an_unreachable_notary(cli):
    result = cli("checkpoint", "--url", "http://127.0.0.1:9")
    assert result.exit_code != 0
    assert "cannot reach the notary" in str(result.exception)


def test_an_answer_must_be_about_the_question(served, signer):
    answer = NotaryClient(served.server.url).inclusion(index=3)
    verify_inclusion_answer(answer, signer.verifier, index=3)
    with pytest.raises(VerificationFailed, match="asked for log index 2"):
        verify_inclusion_answer(answer, signer.verifier, index=2)
    with pytest.raises(VerificationFailed, match="asked for event other"):
        verify_inclusion_answer(answer, signer.verifier, event_id="other")
    with pytest.raises(ProofError, match="no valid 'event'"):
        verify_inclusion_answer({**answer, "event": None}, signer.verifier)
    with pytest.raises(CheckpointError, match="expected 'elsewhere.example/log'"):
        verify_inclusion_answer(answer, signer.verifier, origin="elsewhere.example/log")


def test_the_client_waits_while_an_event_is_not_checkpointed_yet(signer, codec):
    h = Harness(signer, codec, checkpoint_every_events=1000, checkpoint_every_ms=1000)
    h.batch(encoded([gate_event(0)]), now_ms=0)
    h.batch(encoded([gate_event(1)]), now_ms=1)  # committed, not checkpointed
    server = NotaryHTTPServer(lambda: h.log, signer.vkey, "127.0.0.1", 0).start()
    try:
        with pytest.raises(ProofClientError, match="answered 503.*not covered"):
            NotaryClient(server.url).inclusion(index=1)
        timer = threading.Timer(0.6, lambda: h.batch([], now_ms=2000))
        timer.start()
        answer = NotaryClient(server.url, wait=5).inclusion(index=1)
        timer.join()
        assert verify_inclusion_answer(answer, signer.verifier, index=1).checkpoint.size == 2
    finally:
        server.close()
