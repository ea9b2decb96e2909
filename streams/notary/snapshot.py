"""The notary's snapshot: its committed state on disk, so that a restart continues from it
instead of replaying all of ``lineage-log``.

Layout of ``<state_dir>/notary/<lineage-log topic>/``::

    manifest.note       what the snapshot holds (below); replaced atomically
    lock                locked (flock) by the notary that writes here
    g000001/            one generation of data files, each only ever appended to:
      tree.<h>          level h of the RFC 9162 Merkle tree: the 32-byte hashes of its
                        perfect subtrees of 2**h leaves, left to right (tree.0: leaf hashes)
      offsets           the lineage-log offset of each log index (int64, little-endian)
      digests           the content digest of each log index (16 bytes)
      ids               the event_id of each log index, UTF-8, one per line (a backslash
                        and a line feed inside an id are written as \\\\ and \\n)
      checkpoints.<k>   the checkpoint notes kept: a 4-byte big-endian length, then the
                        C2SP signed note

``manifest.note`` is a C2SP signed note (https://c2sp.org/signed-note) signed by the
notary's key, whose text is the manifest as JSON::

    {"format": "trustplane-notary-snapshot/1", "origin": …, "vkey": …,
     "log_topic": …, "checkpoint_topic": …, "generation": "g000001",
     "size": N, "head": "sha256:…", "log_end": …, "checkpoints_end": …,
     "files": {"tree.0": {"path": "g000001/tree.0", "bytes": …, "sha256": "…"}, …}}

The snapshot holds ``size`` events, the last of which has the ``event_hash`` ``head``;
``log_end`` is the ``lineage-log`` offset just after the last event's record and
``checkpoints_end`` the ``checkpoints`` offset just after the last note kept. Only the
first ``bytes`` of a file belong to the snapshot, and their SHA-256 must match: the
signature vouches for the manifest, the manifest for every byte of the files.

Saving appends what the log committed since the last save, fsyncs the files, then
replaces the manifest (temporary file, fsync, rename, fsync of the folder): a crash at any
moment leaves the previous snapshot whole, and the next save cuts off what was appended
after it. A new generation is written when there is no usable snapshot; the notes move to
a new file when theirs holds twice as many as the log keeps.
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from processors.log.chain import ChainError, check_hash_text
from processors.log.checkpoint import NoteError, NoteSigner, open_note, sign_note
from processors.log.merkle import MerkleError, MerkleLog
from streams.config import Settings
from streams.filelock import FileLock
from streams.notary.exceptions import SnapshotError

__all__ = [
    "FORMAT",
    "DIGEST_SIZE",
    "Snapshot",
    "SnapshotSource",
    "SnapshotStore",
    "StateDelta",
    "SavePlan",
    "SaveReport",
    "BackgroundSaver",
    "snapshot_dir",
]

log = logging.getLogger(__name__)

FORMAT = "trustplane-notary-snapshot/1"
DIGEST_SIZE = 16
"""Bytes of an event's content digest."""
MANIFEST = "manifest.note"
_LENGTH = struct.Struct(">I")
_GENERATION = re.compile(r"g[0-9]{6}")
_PATH = re.compile(r"g[0-9]{6}/(tree\.[0-9]{1,2}|offsets|digests|ids|checkpoints\.[0-9]+)")
_LITTLE = sys.byteorder == "little"
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def snapshot_dir(settings: Settings, log_topic: str) -> Path:
    """Where the notary of ``log_topic`` keeps its snapshot."""
    return settings.state_dir / "notary" / log_topic


@dataclass(frozen=True, slots=True)
class StateDelta:
    """What a notary log committed beyond ``old_size`` events and beyond its checkpoint
    of ``old_size``'s save (see ``NotaryLog.state_since``)."""

    old_size: int
    size: int
    head: str | None
    subtrees: list[bytes]
    """Per Merkle level, the subtrees completed from ``old_size`` to ``size``."""
    offsets: bytes
    """int64 little-endian, one per new event."""
    digests: bytes
    ids: list[str]
    checkpoints: list[tuple[int, str]]
    """(size, note) of the checkpoints committed since, oldest first."""
    log_end: int
    checkpoints_end: int


class SnapshotSource(Protocol):
    """The committed state of a log, as a snapshot needs it (a NotaryLog)."""

    def state_since(self, size: int, checkpoint_size: int) -> StateDelta: ...

    def kept_checkpoints(self) -> list[tuple[int, str]]: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot read back: what a NotaryLog needs to continue (``NotaryLog.resume``)."""

    size: int
    head: str | None
    tree: MerkleLog
    offsets: array.array[int]
    digests: bytearray
    ids: list[str]
    checkpoints: list[tuple[int, str]]
    log_end: int
    checkpoints_end: int


@dataclass(frozen=True, slots=True)
class SavePlan:
    """What a save appends to each file (see :meth:`SnapshotStore.prepare`)."""

    delta: StateDelta
    new_generation: bool
    appends: dict[str, bytes]
    notes_total: int
    compact: bool
    """The notes go to a new file, all of them."""
    copy_seconds: float


@dataclass(frozen=True, slots=True)
class SaveReport:
    """What one save wrote, and how long it took."""

    events: int
    size: int
    bytes: int
    copy_seconds: float
    """Copying what committed (in the writer thread)."""
    seconds: float
    """Writing it (files, fsync, manifest)."""
    generation: str
    new_generation: bool


class BackgroundSaver:
    """Writes snapshots on a thread of its own, so that the writer thread only copies
    what committed (:meth:`submit`). One save at a time: one asked for while another is
    being written is skipped, and the next one covers it. A failed save is logged (at
    most once a minute) and the notary goes on."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self.reports: list[SaveReport] = []
        """The last saves (up to 100), for tests and benchmarks."""
        self.failures = 0
        self._changed = threading.Condition()
        self._plan: SavePlan | None = None
        self._closed = False
        self._warned_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="notary-snapshot", daemon=True)
        self._thread.start()

    def submit(self, source: SnapshotSource) -> bool:
        """Start saving what ``source`` committed since the last save; False when a save
        is still being written, or nothing is new."""
        with self._changed:
            if self._plan is not None or self._closed:
                return False
            self._plan = self.store.prepare(source)
            self._changed.notify_all()
            return self._plan is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no save is being written; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._plan is None, timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Finish the save being written, then stop the thread."""
        self.wait(timeout)
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._plan is not None or self._closed)
                plan = self._plan
            if plan is None:
                return
            try:
                self._write(plan)
            finally:
                with self._changed:
                    self._plan = None
                    self._changed.notify_all()

    def _write(self, plan: SavePlan) -> None:
        try:
            report = self.store.write(plan)
        except SnapshotError as exc:
            self.failures += 1
            now = time.monotonic()
            if self._warned_at is None or now - self._warned_at > 60:
                self._warned_at = now
                log.warning("%s", exc.diagnostics())
            return
        except Exception:  # noqa: BLE001 - a snapshot must never stop the notary
            self.failures += 1
            log.exception("writing the notary's snapshot failed")
            return
        self.reports = [*self.reports[-99:], report]
        if report.new_generation or report.seconds > 0.5:
            log.info(
                "notary snapshot %s: %d events (%d new, %d bytes) written in %.3f s",
                report.generation,
                report.size,
                report.events,
                report.bytes,
                report.seconds,
            )


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...

    def copy(self) -> _Hasher: ...


@dataclass(slots=True)
class _File:
    path: str
    """Relative to the snapshot folder."""
    size: int = 0
    hasher: _Hasher = field(default_factory=hashlib.sha256)


class SnapshotStore:
    """Reads and writes the notary's snapshot in ``directory`` (see the module docstring).

    ``load`` reads it back (None when there is none; SnapshotError when it is unusable);
    ``save`` appends what the log committed since the snapshot loaded or last saved, or
    writes a new generation when there is none. Call :meth:`lock` first: one process
    writes a folder.
    """

    def __init__(
        self,
        directory: Path,
        *,
        signer: NoteSigner,
        log_topic: str,
        checkpoint_topic: str,
        max_checkpoints: int = 100_000,
    ) -> None:
        self.directory = directory
        self.signer = signer
        self.identity = {
            "origin": signer.name,
            "vkey": signer.vkey,
            "log_topic": log_topic,
            "checkpoint_topic": checkpoint_topic,
        }
        self.max_checkpoints = max_checkpoints

        def error(exc: OSError) -> SnapshotError:
            return SnapshotError(
                f"cannot open the snapshot folder {directory}: {exc}",
                hint="check the permissions of the state folder (TRUSTPLANE_STATE_DIR)",
            )

        self.lock_file = FileLock(directory / "lock", error, folder_mode=0o700)
        """The folder's lock: one notary per log on this host (a second one waits on it)."""
        self._generation: str | None = None
        self._files: dict[str, _File] = {}
        self._size = 0
        self._checkpoint_size = -1
        self._notes = 0

    @property
    def size(self) -> int:
        """Events in the snapshot last loaded or saved (0: none)."""
        return self._size

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    # -- the folder's lock ---------------------------------------------------------

    def lock(self) -> bool:
        """Lock the folder for this process; False when another process holds it."""
        return self.lock_file.try_acquire()

    def close(self) -> None:
        self.lock_file.release()

    def discard(self) -> None:
        """Forget the snapshot loaded: the next save writes a new generation."""
        self._generation = None
        self._files = {}
        self._size = 0
        self._checkpoint_size = -1
        self._notes = 0

    # -- reading -------------------------------------------------------------------

    def load(self) -> Snapshot | None:
        """The snapshot in the folder, None if there is none; SnapshotError if it is
        corrupt, truncated, or of another log, key or topics."""
        self.discard()
        try:
            raw = self.manifest_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SnapshotError(f"cannot read {self.manifest_path}: {exc}") from exc
        manifest = self._manifest(raw)
        size = _uint(manifest, "size")
        head = manifest.get("head")
        try:
            if size or head is not None:
                check_hash_text(head, "its head")
        except ChainError as exc:
            raise SnapshotError(f"{self.manifest_path}: {exc.reason}") from exc
        files = manifest.get("files")
        height = max(1, size.bit_length())
        roles = [f"tree.{level}" for level in range(height)]
        roles += ["offsets", "digests", "ids", "checkpoints"]
        if not isinstance(files, dict) or sorted(files) != sorted(roles):
            raise SnapshotError(
                f"{self.manifest_path} lists the files {sorted(files or [])}, a snapshot of "
                f"{size} events has {sorted(roles)}"
            )
        entries: dict[str, _File] = {}
        data: dict[str, bytearray] = {}
        for role in roles:
            entries[role], data[role] = self._read(role, files[role])
        try:
            tree = MerkleLog.from_levels([data[f"tree.{h}"] for h in range(height)], size)
        except MerkleError as exc:
            raise SnapshotError(f"{self.directory}: {exc.reason}") from exc
        offsets = array.array("q")
        if len(data["offsets"]) != 8 * size or len(data["digests"]) != DIGEST_SIZE * size:
            raise SnapshotError(
                f"{self.directory}: the offsets or the digests are not of {size} events"
            )
        offsets.frombytes(data["offsets"])
        if not _LITTLE:
            offsets.byteswap()
        ids = _decode_ids(data["ids"], self.directory)
        if len(ids) != size:
            raise SnapshotError(f"{self.directory}: {len(ids)} event ids for {size} events")
        notes = _decode_notes(data["checkpoints"], self.directory)
        log_end = _uint(manifest, "log_end")
        checkpoints_end = _uint(manifest, "checkpoints_end")
        if log_end != (offsets[-1] + 1 if size else 0):
            raise SnapshotError(f"{self.manifest_path}: log_end does not follow the last offset")
        if any(note_size > size for note_size, _ in notes) or (not notes) != (checkpoints_end == 0):
            raise SnapshotError(f"{self.manifest_path}: the checkpoints do not fit the log")
        self._generation = str(manifest["generation"])
        self._files = entries
        self._size = size
        self._checkpoint_size = notes[-1][0] if notes else -1
        self._notes = len(notes)
        return Snapshot(
            size=size,
            head=head,
            tree=tree,
            offsets=offsets,
            digests=data["digests"],
            ids=ids,
            checkpoints=notes,
            log_end=log_end,
            checkpoints_end=checkpoints_end,
        )

    def _manifest(self, raw: bytes) -> dict[str, Any]:
        where = self.manifest_path
        try:
            text, _ = open_note(raw, [self.signer.verifier])
        except NoteError as exc:
            raise SnapshotError(
                f"{where} is not a note signed by this notary's key ({self.signer.vkey}): "
                f"{exc.reason}"
            ) from exc
        try:
            manifest = json.loads(text)
        except ValueError as exc:
            raise SnapshotError(f"{where} is not JSON: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise SnapshotError(f"{where} is not a {FORMAT} manifest")
        for name, expected in self.identity.items():
            if manifest.get(name) != expected:
                raise SnapshotError(
                    f"{where} is a snapshot of {name} {manifest.get(name)!r}, not of this "
                    f"notary's {expected!r}"
                )
        if not isinstance(manifest.get("generation"), str) or not _GENERATION.fullmatch(
            manifest["generation"]
        ):
            raise SnapshotError(f"{where} names no valid generation")
        return manifest

    def _read(self, role: str, entry: object) -> tuple[_File, bytearray]:
        if not isinstance(entry, dict):
            raise SnapshotError(f"{self.manifest_path}: file {role} is not described")
        path, size, digest = entry.get("path"), entry.get("bytes"), entry.get("sha256")
        if (
            not isinstance(path, str)
            or not _PATH.fullmatch(path)
            or isinstance(size, bool)
            or not isinstance(size, int)
            or size < 0
            or not isinstance(digest, str)
        ):
            raise SnapshotError(f"{self.manifest_path}: file {role} is not described")
        full = self.directory / path
        data = bytearray(size)
        try:
            with full.open("rb") as handle:
                read = handle.readinto(data)
        except OSError as exc:
            raise SnapshotError(f"cannot read the snapshot file {full}: {exc}") from exc
        if read != size:
            raise SnapshotError(
                f"the snapshot file {full} holds {read} bytes, its manifest says {size}: "
                "it was truncated"
            )
        hasher = hashlib.sha256(data)
        if hasher.hexdigest() != digest:
            raise SnapshotError(
                f"the snapshot file {full} does not match the SHA-256 in its manifest: it is "
                "corrupt"
            )
        return _File(path, size, hasher), data

    # -- writing -------------------------------------------------------------------

    def save(self, source: SnapshotSource) -> SaveReport | None:
        """Append what ``source`` committed since the last save (or write a new
        generation); None when there is nothing new. Raises SnapshotError when the files
        cannot be written (the previous snapshot stays whole)."""
        plan = self.prepare(source)
        return None if plan is None else self.write(plan)

    def prepare(self, source: SnapshotSource) -> SavePlan | None:
        """What the next save appends, copied from ``source`` (no I/O: the writer thread
        calls it, then hands the plan to :meth:`write`); None when nothing is new."""
        started = time.perf_counter()
        new_generation = self._generation is None
        old_size = 0 if new_generation else self._size
        delta = source.state_since(old_size, -1 if new_generation else self._checkpoint_size)
        if delta.size == old_size and not delta.checkpoints:
            return None
        appends: dict[str, bytes] = {}
        for level, hashes in enumerate(delta.subtrees):
            appends[f"tree.{level}"] = hashes
        appends["offsets"] = delta.offsets
        appends["digests"] = delta.digests
        appends["ids"] = _encode_ids(delta.ids)
        notes = delta.checkpoints
        notes_total = len(notes) if new_generation else self._notes + len(notes)
        compact = not new_generation and notes_total > 2 * self.max_checkpoints
        if compact:
            notes = source.kept_checkpoints()
            notes_total = len(notes)
        appends["checkpoints"] = b"".join(_LENGTH.pack(len(b)) + b for b in _encoded(notes))
        return SavePlan(
            delta, new_generation, appends, notes_total, compact, time.perf_counter() - started
        )

    def write(self, plan: SavePlan) -> SaveReport:
        """Write a plan of :meth:`prepare` (any thread, one save at a time)."""
        started = time.perf_counter()
        delta = plan.delta
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            if plan.new_generation:
                generation = self._next_generation()
            else:
                generation = str(self._generation)
            files = {} if plan.new_generation else dict(self._files)
            replaced: str | None = None
            if plan.compact:
                replaced = files["checkpoints"].path
                number = int(replaced.rsplit(".", 1)[1]) + 1
                files["checkpoints"] = _File(f"{generation}/checkpoints.{number}")
            written = 0
            (self.directory / generation).mkdir(parents=True, exist_ok=True, mode=0o700)
            for role, data in plan.appends.items():
                entry = files.get(role)
                if entry is None:
                    name = "checkpoints.0" if role == "checkpoints" else role
                    entry = _File(f"{generation}/{name}")
                elif not data:
                    continue
                files[role] = self._append(entry, data)
                written += len(data)
            self._write_manifest(generation, delta, files)
        except OSError as exc:
            raise SnapshotError(
                f"cannot write the notary's snapshot in {self.directory}: {exc}",
                hint="check the free space and permissions of the state folder; the notary "
                "goes on, and replays lineage-log at its next start if it must",
            ) from exc
        self._generation = generation
        self._files = files
        self._size = delta.size
        if delta.checkpoints:
            self._checkpoint_size = delta.checkpoints[-1][0]
        self._notes = plan.notes_total
        self._clean(generation, replaced)
        return SaveReport(
            events=delta.size - delta.old_size,
            size=delta.size,
            bytes=written,
            copy_seconds=plan.copy_seconds,
            seconds=time.perf_counter() - started,
            generation=generation,
            new_generation=plan.new_generation,
        )

    def _append(self, entry: _File, data: bytes) -> _File:
        """``entry``'s file with ``data`` appended after its ``size`` bytes, on disk."""
        fd = os.open(self.directory / entry.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, entry.size)  # what a crash appended after the last save
            view = memoryview(data)
            position = entry.size
            while view:
                done = os.pwrite(fd, view, position)
                view, position = view[done:], position + done
            os.fsync(fd)
        finally:
            os.close(fd)
        hasher = entry.hasher.copy()
        hasher.update(data)
        return _File(entry.path, entry.size + len(data), hasher)

    def _write_manifest(self, generation: str, delta: StateDelta, files: dict[str, _File]) -> None:
        manifest = {
            "format": FORMAT,
            **self.identity,
            "generation": generation,
            "size": delta.size,
            "head": delta.head,
            "log_end": delta.log_end,
            "checkpoints_end": delta.checkpoints_end,
            "files": {
                role: {"path": entry.path, "bytes": entry.size, "sha256": entry.hasher.hexdigest()}
                for role, entry in files.items()
            },
        }
        note = sign_note(json.dumps(manifest, indent=1) + "\n", self.signer)
        temporary = self.directory / f"{MANIFEST}.tmp"
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(note)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.manifest_path)
        folder = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def _next_generation(self) -> str:
        numbers = [
            int(path.name[1:])
            for path in self.directory.iterdir()
            if path.is_dir() and _GENERATION.fullmatch(path.name)
        ]
        return f"g{max(numbers, default=0) + 1:06d}"

    def _clean(self, generation: str, replaced: str | None) -> None:
        """Remove older generations and a replaced notes file (after the manifest moved)."""
        try:
            if replaced is not None:
                (self.directory / replaced).unlink(missing_ok=True)
            for path in self.directory.iterdir():
                if path.is_dir() and _GENERATION.fullmatch(path.name) and path.name != generation:
                    shutil.rmtree(path)
        except OSError as exc:
            log.warning("cannot remove an old snapshot file in %s: %s", self.directory, exc)


def _uint(manifest: dict[str, Any], name: str) -> int:
    value = manifest.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SnapshotError(f"the snapshot manifest's {name!r} is not a non-negative integer")
    return value


def _encoded(notes: Iterable[tuple[int, str]]) -> list[bytes]:
    return [note.encode() for _, note in notes]


def _encode_ids(ids: list[str]) -> bytes:
    if not ids:
        return b""
    text = "\n".join(ids)
    if "\\" in text or text.count("\n") != len(ids) - 1:
        text = "\n".join(i.replace("\\", "\\\\").replace("\n", "\\n") for i in ids)
    return (text + "\n").encode("utf-8", "surrogatepass")


def _unescape(match: re.Match[str]) -> str:
    return "\n" if match.group(1) == "n" else match.group(1)


def _decode_ids(data: bytes | bytearray, where: Path) -> list[str]:
    try:
        text = data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"{where}: the event ids are not UTF-8") from exc
    if not text:
        return []
    if not text.endswith("\n"):
        raise SnapshotError(f"{where}: the last event id is cut off")
    ids = text.split("\n")
    ids.pop()
    if "\\" in text:
        ids = [_ESCAPED.sub(_unescape, i) if "\\" in i else i for i in ids]
    return ids


def _decode_notes(data: bytes | bytearray, where: Path) -> list[tuple[int, str]]:
    notes: list[tuple[int, str]] = []
    position, end = 0, len(data)
    try:
        while position < end:
            (length,) = _LENGTH.unpack_from(data, position)
            position += _LENGTH.size
            if position + length > end:
                raise ValueError("cut off")
            note = bytes(data[position : position + length]).decode()
            position += length
            text_size = note.split("\n", 2)[1]
            if not text_size.isdigit():
                raise ValueError(f"no tree size in {note[:80]!r}")
            notes.append((int(text_size), note))
    except (struct.error, ValueError, IndexError) as exc:
        raise SnapshotError(f"{where}: the checkpoint notes are unreadable ({exc})") from exc
    return notes
