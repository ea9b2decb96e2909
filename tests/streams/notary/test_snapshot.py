"""The notary's snapshot without Kafka: what it holds, how it is written (append-only,
committed state only, crash-safe), and that a damaged or foreign one is refused."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from processors.crypto.keys import generate_signing_key
from processors.log.checkpoint import NoteSigner, open_note, sign_note
from processors.log.notary import ConsistencyProof
from streams.codec import Codec, SchemaRegistry
from streams.notary import NotaryLog, SnapshotError
from streams.notary import snapshot as snapshot_module
from streams.notary.log import LogRecord
from streams.notary.snapshot import FORMAT, BackgroundSaver, Snapshot, SnapshotStore
from tests.streams.notary.test_notary_service import (
    GATE_KEYS,
    ORIGIN,
    Harness,
    encoded,
    gate_event,
    next_schema_dir,
)

LOG_TOPIC, CHECKPOINT_TOPIC = "t.lineage-log", "t.checkpoints"


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> Codec:
    return Codec(SchemaRegistry.from_directory(next_schema_dir(tmp_path_factory.mktemp("s"))))


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, generate_signing_key())


def new_store(folder: Path, signer: NoteSigner, **overrides: Any) -> SnapshotStore:
    values: dict[str, Any] = {
        "signer": signer,
        "log_topic": LOG_TOPIC,
        "checkpoint_topic": CHECKPOINT_TOPIC,
    }
    values.update(overrides)
    return SnapshotStore(folder, **values)


def resumed(
    signer: NoteSigner, codec: Codec, h: Harness, snapshot: Snapshot, **kwargs: Any
) -> NotaryLog:
    notary_log = NotaryLog(signer, codec, gate_keys=GATE_KEYS, fetch=h.topic.__getitem__, **kwargs)
    notary_log.resume(snapshot)
    notary_log.commit()
    return notary_log


def fill(h: Harness, batches: int, size: int = 7, start: int = 0) -> None:
    for b in range(batches):
        first = start + b * size
        h.batch(encoded([gate_event(n) for n in range(first, first + size)]), now_ms=first * 100)


def load(store: SnapshotStore) -> Snapshot:
    snapshot = store.load()
    assert snapshot is not None
    return snapshot


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and path.parent != folder
    }


def test_a_snapshot_holds_the_committed_log_and_the_log_goes_on_from_it(signer, codec, tmp_path):
    h = Harness(signer, codec, checkpoint_every_events=5)
    fill(h, 6)
    store = new_store(tmp_path, signer)
    report = store.save(h.log)
    assert report is not None and report.new_generation and report.size == 42

    back = resumed(signer, codec, h, load(new_store(tmp_path, signer)))
    assert (back.size, back.head) == (h.log.size, h.log.head)
    assert back.notary.log.root() == h.log.notary.log.root()
    assert back.latest() == h.log.latest()
    assert back.kept_checkpoints() == h.log.kept_checkpoints()
    for n in range(42):
        assert back.index_of(f"event-{n:06d}") == n
        assert back.inclusion(index=n) == h.log.inclusion(index=n)  # offsets too
    old, _ = h.log.kept_checkpoints()[1]
    assert back.consistency(old) == h.log.consistency(old)

    # it links the next events onto the head, and knows every id it holds
    assert back.append(encoded([gate_event(3)])[0], source="x") is None
    record = back.append(encoded([gate_event(42)])[0], source="x")
    assert isinstance(record, LogRecord) and record.index == 42
    assert codec.decode(record.value, "LineageEvent")["prev_hash"] == h.log.head
    h.log = back
    h.topic.write(back, [record])
    note = back.checkpoint_due(10**9)
    assert note is not None
    back.commit()
    proof = ConsistencyProof.from_json(back.consistency(old)["proof"])
    proof.verify(h.log.notary.log.root(old), back.notary.log.root())


def test_saves_append_what_committed_since(signer, codec, tmp_path):
    h = Harness(signer, codec, checkpoint_every_events=5)
    store = new_store(tmp_path, signer)
    assert store.save(h.log) is None  # an empty log: nothing to save
    before: dict[str, bytes] = {}
    for round_ in range(5):
        fill(h, 1, size=3 + round_, start=100 * round_)
        report = store.save(h.log)
        assert report is not None and report.events == 3 + round_
        assert report.new_generation == (round_ == 0)
        now = files(tmp_path)
        for name, data in before.items():
            assert now[name].startswith(data), f"{name} was rewritten, not appended to"
        before = now
    assert store.save(h.log) is None  # nothing new
    assert load(new_store(tmp_path, signer)).size == h.log.size == 25


def test_a_snapshot_holds_nothing_of_an_open_transaction(signer, codec, tmp_path):
    h = Harness(signer, codec)
    fill(h, 1)
    h.batch(encoded([gate_event(50)]), now_ms=10_000, commit=False)  # linked, not committed
    new_store(tmp_path, signer).save(h.log)
    snapshot = load(new_store(tmp_path, signer))
    assert snapshot.size == 7 and "event-000050" not in snapshot.ids
    assert snapshot.head == h.log.head != h.log.notary.head
    assert snapshot.tree.root() == h.log.notary.log.root(7)
    assert [size for size, _ in snapshot.checkpoints] == [7]


def test_what_a_crash_appended_after_the_manifest_is_ignored_then_cut_off(signer, codec, tmp_path):
    h = Harness(signer, codec)
    fill(h, 2)
    store = new_store(tmp_path, signer)
    store.save(h.log)
    leaf_file = next(tmp_path.glob("g*/tree.0"))
    with leaf_file.open("ab") as handle:  # appended, then the process died
        handle.write(b"\xff" * 100)
    assert load(new_store(tmp_path, signer)).size == 14
    fill(h, 1, start=14)
    store.save(h.log)
    assert leaf_file.stat().st_size == 21 * 32
    back = resumed(signer, codec, h, load(new_store(tmp_path, signer)))
    assert back.notary.log.root() == h.log.notary.log.root()


def _flip(path: Path, at: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-3])


def read_manifest(folder: Path, signer: NoteSigner) -> dict[str, Any]:
    text, _ = open_note((folder / "manifest.note").read_text(), [signer.verifier])
    return dict(json.loads(text))


def write_manifest(folder: Path, signer: NoteSigner, manifest: dict[str, Any]) -> None:
    """The manifest, signed by ``signer`` (what only the holder of the key can do)."""
    (folder / "manifest.note").write_text(sign_note(json.dumps(manifest) + "\n", signer))


def _manifest(folder: Path, signer: NoteSigner, **changes: Any) -> None:
    write_manifest(folder, signer, {**read_manifest(folder, signer), **changes})


def _unsigned_edit(folder: Path) -> None:
    path = folder / "manifest.note"
    path.write_text(path.read_text().replace('"size": 42', '"size": 41'))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda f, k: _flip(next(f.glob("g*/tree.0"))), "does not match the SHA-256"),
        (lambda f, k: _flip(next(f.glob("g*/tree.3"))), "does not match the SHA-256"),
        (lambda f, k: _flip(next(f.glob("g*/ids"))), "does not match the SHA-256"),
        (lambda f, k: _flip(next(f.glob("g*/offsets")), 0), "does not match the SHA-256"),
        (lambda f, k: _flip(next(f.glob("g*/checkpoints.0")), 9), "does not match the SHA-256"),
        (lambda f, k: _truncate(next(f.glob("g*/digests"))), "truncated"),
        (lambda f, k: next(f.glob("g*/ids")).unlink(), "cannot read the snapshot file"),
        (lambda f, k: (f / "manifest.note").write_text("{not json"), "not a note signed"),
        (lambda f, k: _unsigned_edit(f), "not a note signed by this notary's key"),
        (lambda f, k: write_manifest(f, k, []), "not a trustplane-notary-snapshot/1"),
        (lambda f, k: _manifest(f, k, format="other/2"), "not a trustplane-notary-snapshot/1"),
        (lambda f, k: _manifest(f, k, origin="elsewhere.example/log"), "of origin 'elsewhere"),
        (lambda f, k: _manifest(f, k, log_topic="u.lineage-log"), "of log_topic 'u.lineage-log'"),
        (lambda f, k: _manifest(f, k, size=41), "lists the files|holds|not of 41"),
        (lambda f, k: _manifest(f, k, head="sha256:" + "0" * 63), "its head"),
        (lambda f, k: _manifest(f, k, log_end=3), "log_end"),
        (lambda f, k: _manifest(f, k, generation="../x"), "no valid generation"),
        (lambda f, k: _manifest(f, k, files={}), "lists the files"),
    ],
    ids=[
        "leaf hash flipped",
        "subtree hash flipped",
        "event id flipped",
        "offset flipped",
        "note flipped",
        "digests truncated",
        "ids missing",
        "manifest not a note",
        "manifest edited without the key",
        "manifest not an object",
        "other format",
        "other origin",
        "other topic",
        "other size",
        "bad head",
        "bad log end",
        "bad generation",
        "no files",
    ],
)
def test_a_damaged_or_foreign_snapshot_is_refused(signer, codec, tmp_path, damage, match):
    h = Harness(signer, codec, checkpoint_every_events=5)
    fill(h, 6)
    new_store(tmp_path, signer).save(h.log)
    damage(tmp_path, signer)
    with pytest.raises(SnapshotError, match=match):
        new_store(tmp_path, signer).load()


def test_a_snapshot_of_another_key_is_refused(signer, codec, tmp_path):
    h = Harness(signer, codec)
    fill(h, 1)
    new_store(tmp_path, signer).save(h.log)
    other = NoteSigner(ORIGIN, generate_signing_key())
    with pytest.raises(SnapshotError, match="not a note signed by this notary's key"):
        new_store(tmp_path, other).load()
    assert new_store(tmp_path / "nothing", signer).load() is None  # none yet


def test_event_ids_with_line_feeds_and_backslashes_come_back_as_they_were(signer, codec, tmp_path):
    h = Harness(signer, codec)
    odd = ["plain", "two\nlines", "back\\slash", "\\n", "end\n", "", "ünï\u2028cödé"]
    h.batch(encoded([gate_event(n, event_id=i) for n, i in enumerate(odd)]), now_ms=0)
    new_store(tmp_path, signer).save(h.log)
    snapshot = load(new_store(tmp_path, signer))
    assert snapshot.ids == odd
    back = resumed(signer, codec, h, snapshot)
    assert [back.index_of(i) for i in odd] == list(range(len(odd)))


def test_notes_move_to_a_new_file_when_theirs_holds_twice_what_the_log_keeps(
    signer, codec, tmp_path
):
    h = Harness(signer, codec, checkpoint_every_events=1, max_checkpoints=3)
    store = new_store(tmp_path, signer, max_checkpoints=3)
    paths = set()
    for round_ in range(10):
        fill(h, 1, size=2, start=10 * round_)
        store.save(h.log)
        manifest = read_manifest(tmp_path, signer)
        paths.add(manifest["files"]["checkpoints"]["path"])
        snapshot = load(new_store(tmp_path, signer, max_checkpoints=3))
        assert 1 <= len(snapshot.checkpoints) <= 6
        assert snapshot.checkpoints[-1] == h.log.kept_checkpoints()[-1]
    assert len(paths) > 1
    assert sorted(p.name for p in tmp_path.glob("g*/checkpoints.*")) == [
        Path(sorted(paths)[-1]).name
    ]
    snapshot = load(new_store(tmp_path, signer, max_checkpoints=3))
    back = resumed(signer, codec, h, snapshot, max_checkpoints=3)
    assert back.kept_checkpoints() == h.log.kept_checkpoints()


def test_a_discarded_snapshot_is_replaced_by_a_new_generation(signer, codec, tmp_path):
    h = Harness(signer, codec)
    fill(h, 2)
    store = new_store(tmp_path, signer)
    store.save(h.log)
    store.discard()
    report = store.save(h.log)
    assert report is not None and report.new_generation and report.generation == "g000002"
    assert [p.name for p in tmp_path.glob("g*")] == ["g000002"]
    assert load(new_store(tmp_path, signer)).size == 14


def test_one_process_writes_a_folder(signer, tmp_path):
    first, second = new_store(tmp_path, signer), new_store(tmp_path, signer)
    assert first.lock() and first.lock()
    assert not second.lock()
    first.close()
    assert second.lock()
    second.close()


def test_a_failed_save_leaves_the_snapshot_before_it_whole(signer, codec, tmp_path, monkeypatch):
    h = Harness(signer, codec)
    fill(h, 2)
    store = new_store(tmp_path, signer)
    store.save(h.log)
    fill(h, 2, start=14)
    writes = {"n": 0}
    real_pwrite = os.pwrite

    def full_disk(fd: int, data: Any, offset: int) -> int:
        writes["n"] += 1
        if writes["n"] > 2:
            raise OSError(28, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(snapshot_module.os, "pwrite", full_disk)
    with pytest.raises(SnapshotError, match="No space left") as caught:
        store.save(h.log)
    assert "free space" in (caught.value.hint or "")
    assert load(new_store(tmp_path, signer)).size == 14
    monkeypatch.setattr(snapshot_module.os, "pwrite", real_pwrite)
    store = new_store(tmp_path, signer)
    load(store)
    store.save(h.log)
    back = resumed(signer, codec, h, load(new_store(tmp_path, signer)))
    assert back.notary.log.root() == h.log.notary.log.root() and back.size == 28


def test_the_manifest_is_json_of_the_published_format(signer, codec, tmp_path):
    h = Harness(signer, codec)
    fill(h, 1)
    new_store(tmp_path, signer).save(h.log)
    manifest = read_manifest(tmp_path, signer)
    assert manifest["format"] == FORMAT
    assert manifest["size"] == 7 and manifest["head"] == h.log.head
    assert manifest["log_end"] == h.log.offset_of(6) + 1
    assert sorted(manifest["files"]) == [
        "checkpoints",
        "digests",
        "ids",
        "offsets",
        "tree.0",
        "tree.1",
        "tree.2",
    ]
    assert manifest["files"]["offsets"]["bytes"] == 7 * 8


def test_the_saver_writes_on_its_own_thread_one_save_at_a_time(
    signer, codec, tmp_path, monkeypatch
):
    h = Harness(signer, codec)
    fill(h, 2)
    store = new_store(tmp_path, signer)
    saver = BackgroundSaver(store)
    release = threading.Event()
    real_write = store.write

    def slow_write(plan: Any) -> Any:
        release.wait(10)
        return real_write(plan)

    monkeypatch.setattr(store, "write", slow_write)
    assert saver.submit(h.log)  # the writer thread only copied what committed
    fill(h, 1, start=14)
    assert not saver.submit(h.log)  # still writing the first: skipped
    release.set()
    assert saver.wait(10)
    assert [r.size for r in saver.reports] == [14]
    assert saver.submit(h.log) and saver.wait(10)
    assert [r.size for r in saver.reports] == [14, 21]
    assert not saver.submit(h.log)  # nothing new

    def failing_write(plan: Any) -> Any:
        raise SnapshotError("disk on fire")

    monkeypatch.setattr(store, "write", failing_write)
    fill(h, 1, start=21)
    assert saver.submit(h.log) and saver.wait(10)
    assert saver.failures == 1  # logged; the notary goes on
    saver.close()
    assert not saver.submit(h.log)
    assert load(new_store(tmp_path, signer)).size == 21
