"""Single use: stores that remember which approvals were claimed (step 7 of
:func:`processors.approval.verify.verify_approval`)."""

from __future__ import annotations

import heapq
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from processors.approval.exceptions import SeenStoreError

__all__ = ["SeenStore", "InMemorySeenStore", "SqliteSeenStore", "connect_durable"]


def connect_durable(path: Path, timeout_s: float) -> sqlite3.Connection:
    """A SQLite file for single-host state that must survive a crash: WAL, every commit
    on disk before it returns (``synchronous=FULL``), autocommit, usable from any thread
    (callers serialize with their own lock). Creates the folder. Raises OSError or
    sqlite3.Error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


@runtime_checkable
class SeenStore(Protocol):
    """Remembers which approvals were used. ``claim`` is atomic: True the first time an
    approval id is claimed, False ever after (at least until it expired)."""

    def claim(self, approval_id: str, expires_at_ms: int) -> bool: ...


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class InMemorySeenStore:
    """A SeenStore for one process. Entries are dropped ``grace_ms`` after their approval
    expired (by ``clock``, which must be the clock the verifier's ``now_ms`` comes from)."""

    def __init__(self, *, clock: Callable[[], int] = _wall_ms, grace_ms: int = 300_000) -> None:
        self._clock = clock
        self._grace_ms = grace_ms
        self._expiry: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def claim(self, approval_id: str, expires_at_ms: int) -> bool:
        with self._lock:
            horizon = self._clock() - self._grace_ms
            while self._heap and self._heap[0][0] <= horizon:
                _, old = heapq.heappop(self._heap)
                self._expiry.pop(old, None)
            if approval_id in self._expiry:
                return False
            self._expiry[approval_id] = expires_at_ms
            heapq.heappush(self._heap, (expires_at_ms, approval_id))
            return True


class SqliteSeenStore:
    """A durable SeenStore in a SQLite file: survives restarts, shared by the executor
    processes of one host (SQLite locking makes ``claim`` atomic across them).

    ``synchronous=FULL``: a claim is on disk before ``claim`` returns, so a crash or
    power loss cannot forget it (a forgotten claim would allow a second execution).
    """

    _PURGE_EVERY = 1000

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], int] = _wall_ms,
        grace_ms: int = 300_000,
        timeout_s: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._grace_ms = grace_ms
        self._lock = threading.Lock()
        self._claims = 0
        try:
            self._db = connect_durable(self.path, timeout_s)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS claimed_approvals ("
                " approval_id TEXT PRIMARY KEY,"
                " expires_at_ms INTEGER NOT NULL,"
                " claimed_at_ms INTEGER NOT NULL) WITHOUT ROWID"
            )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS claimed_approvals_expiry"
                " ON claimed_approvals (expires_at_ms)"
            )
            self._purge()
        except sqlite3.Error as exc:
            raise SeenStoreError(
                f"cannot open the seen-approvals store {self.path}: {exc}",
                hint="check the path is writable by the executor",
            ) from exc

    def __repr__(self) -> str:
        return f"SqliteSeenStore({str(self.path)!r})"

    def _purge(self) -> None:
        self._db.execute(
            "DELETE FROM claimed_approvals WHERE expires_at_ms <= ?",
            (self._clock() - self._grace_ms,),
        )

    def claim(self, approval_id: str, expires_at_ms: int) -> bool:
        with self._lock:
            try:
                self._claims += 1
                if self._claims % self._PURGE_EVERY == 0:
                    self._purge()
                cursor = self._db.execute(
                    "INSERT INTO claimed_approvals VALUES (?, ?, ?)"
                    " ON CONFLICT(approval_id) DO NOTHING",
                    (approval_id, expires_at_ms, self._clock()),
                )
            except sqlite3.Error as exc:
                raise SeenStoreError(
                    f"cannot record approval {approval_id} in {self.path}: {exc}",
                    hint="the approval was not executed; fix the store and redeliver it",
                ) from exc
            return cursor.rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteSeenStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
