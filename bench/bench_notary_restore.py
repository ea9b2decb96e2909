"""Benchmark the notary's start-up: from its snapshot, or by replaying all of lineage-log.

    .venv/bin/python bench/bench_notary_restore.py [--sizes 10000,100000,500000]

In process, without Kafka. For each size the log is built through NotaryLog as the
service drives it (transactions of 1,000 events, a checkpoint every 1,000 events, a
snapshot save every 5,000) into an in-memory lineage-log, then restored both ways:

- replay: a new NotaryLog re-appends every record (``restore_record``) and the
  checkpoints (``restore_checkpoint``): what every start did before the snapshot;
- snapshot: ``SnapshotStore.load`` (read, SHA-256 of every file, signature of the
  manifest) and ``NotaryLog.resume``, then the checks the notary makes against the
  topics: the latest checkpoint note against the snapshot's root, the record of the last
  index against the snapshot's head.

Kafka's share of a restart (connecting, the watermarks, reading the latest note and the
records after the snapshot) is not in these figures: on the local broker it adds about
0.3-0.5 s whatever the size (tests/integration/test_notary.py prints real restarts).
Also printed: for the periodic saves (every 5,000 events), the writer thread's pause
(copying what committed, after a commit) and the saver thread's write (files, fsync,
signed manifest); the time to write a whole snapshot (after a full replay) and the
snapshot's size on disk.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_notary import unsigned_lineage_event  # noqa: E402
from processors.crypto.keys import generate_signing_key  # noqa: E402
from processors.log.checkpoint import NoteSigner  # noqa: E402
from streams.codec import Codec, default_codec  # noqa: E402
from streams.gatekeys import GateKeys  # noqa: E402
from streams.notary.log import LogRecord, NotaryLog  # noqa: E402
from streams.notary.snapshot import SnapshotStore  # noqa: E402

BATCH = 1000
SAVE_EVERY = 5000


class UncheckedGateKeys(GateKeys):
    """The bench's events carry a placeholder signature: restoring never checks it, and
    checking it at build time would only slow the build (bench_notary.py measures it)."""

    def __init__(self) -> None:
        pass

    def verify_event(self, event: Mapping[str, Any], *, at_ms: int | None = None) -> str:
        return str(event["signer"])


def new_store(folder: Path, signer: NoteSigner) -> SnapshotStore:
    return SnapshotStore(
        folder, signer=signer, log_topic="bench.lineage-log", checkpoint_topic="bench.checkpoints"
    )


def lineage_event(n: int) -> dict[str, Any]:
    """A LineageEvent the size of the gate's, with a placeholder signature."""
    event = unsigned_lineage_event(n)
    event["signer"] = "gate-key-1"
    event["signature"] = base64.b64encode(n.to_bytes(64, "big")).decode()
    return event


class Built:
    """A log of ``size`` events: its lineage-log and checkpoints, and its snapshot."""

    def __init__(self, size: int, codec: Codec, signer: NoteSigner, folder: Path) -> None:
        self.codec, self.signer, self.folder = codec, signer, folder
        self.records: dict[int, bytes] = {}
        self.notes: list[tuple[int, bytes]] = []
        self.pauses: list[float] = []
        self.writes: list[float] = []
        notary_log = self.new_log()
        store = new_store(folder, signer)
        offset = note_offset = 0
        started = time.perf_counter()
        for first in range(0, size, BATCH):
            count = min(BATCH, size - first)
            records = [
                notary_log.append(codec.encode("LineageEvent", lineage_event(n)), source="bench")
                for n in range(first, first + count)
            ]
            due = notary_log.checkpoint_due(first)
            for record in records:
                assert isinstance(record, LogRecord)  # noqa: S101 - every event is new
                self.records[offset] = record.value
                notary_log.delivered(record.index, offset)
                offset += 1
            offset += 1  # the transaction's commit marker
            if due is not None:
                self.notes.append((note_offset, due[1].encode()))
                notary_log.checkpoint_delivered(note_offset)
                note_offset += 2
            notary_log.commit()
            if notary_log.size - store.size >= SAVE_EVERY:
                plan = store.prepare(notary_log)  # the writer thread's part
                assert plan is not None  # noqa: S101 - events were committed
                report = store.write(plan)  # the saver thread's
                self.pauses.append(report.copy_seconds)
                self.writes.append(report.seconds)
        store.save(notary_log)  # at the clean stop
        self.build_s = time.perf_counter() - started
        self.log = notary_log

    def new_log(self) -> NotaryLog:
        return NotaryLog(
            self.signer,
            self.codec,
            gate_keys=UncheckedGateKeys(),
            checkpoint_every_events=BATCH,
            checkpoint_every_ms=10**9,
            fetch=self.records.__getitem__,
        )

    @staticmethod
    def timed_save(store: SnapshotStore, notary_log: NotaryLog) -> float:
        started = time.perf_counter()
        store.save(notary_log)
        return time.perf_counter() - started

    def replay(self) -> tuple[NotaryLog, float]:
        started = time.perf_counter()
        notary_log = self.new_log()
        for offset, value in self.records.items():
            notary_log.restore_record(offset, value)
        for offset, note in self.notes:
            notary_log.restore_checkpoint(offset, note)
        notary_log.commit()
        return notary_log, time.perf_counter() - started

    def resume(self) -> tuple[NotaryLog, float, float]:
        """(log, seconds, of which reading the snapshot)."""
        started = time.perf_counter()
        snapshot = new_store(self.folder, self.signer).load()
        assert snapshot is not None  # noqa: S101 - written by the build
        loaded = time.perf_counter() - started
        notary_log = self.new_log()
        notary_log.resume(snapshot)
        offset, note = self.notes[-1]
        notary_log.restore_checkpoint(offset, note)
        last = self.codec.decode(self.records[snapshot.offsets[-1]], "LineageEvent")
        assert last["event_hash"] == snapshot.head  # noqa: S101 - the spot check
        notary_log.commit()
        return notary_log, time.perf_counter() - started, loaded


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="log sizes, comma-separated")
    args = parser.parse_args()
    codec = default_codec()
    signer = NoteSigner("bench.trustplane.example/lineage", generate_signing_key())
    print(
        f"{'events':>9}  {'build s':>8}  {'replay s':>8}  {'snapshot s':>10} "
        f"{'(read)':>7}  {'speed-up':>8}  {'MB':>6}  {'full save s':>11}  "
        f"{'pause p50/max ms':>16}  {'write p50/max ms':>16}"
    )
    for size in (int(text) for text in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="notary-restore-") as tmp:
            built = Built(size, codec, signer, Path(tmp) / "snapshot")
            replayed, replay_s = built.replay()
            resumed, resume_s, read_s = built.resume()
            for restored in (replayed, resumed):
                assert restored.notary.log.root() == built.log.notary.log.root()  # noqa: S101
                assert restored.head == built.log.head  # noqa: S101
                assert restored.latest() == built.log.latest()  # noqa: S101
            whole = new_store(Path(tmp) / "whole", signer)
            full_s = Built.timed_save(whole, resumed)
            pauses, writes = built.pauses or [0.0], built.writes or [0.0]
            print(
                f"{size:>9,}  {built.build_s:>8.1f}  {replay_s:>8.2f}  {resume_s:>10.3f} "
                f"{read_s:>7.3f}  {replay_s / resume_s:>7.0f}x  "
                f"{folder_bytes(built.folder) / 1e6:>6.1f}  {full_s:>11.3f}  "
                f"{statistics.median(pauses) * 1e3:>8.2f}/{max(pauses) * 1e3:<7.2f}  "
                f"{statistics.median(writes) * 1e3:>8.1f}/{max(writes) * 1e3:<7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
