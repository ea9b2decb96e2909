"""The agent's intent sequence numbers, durable across restarts.

The gate's integrity layer wants each agent's ``sequence`` to grow by small steps (a
regression is a replay, a jump beyond ``sequence_gap_tolerance`` a violation), so a guard
that restarts must go on where it stopped. One SQLite row per agent id; taking the next
number is one ``BEGIN IMMEDIATE`` transaction, so the guards of one host that share the
file (the processes of one agent) never hand out a number twice.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from processors.approval.seen import connect_durable
from processors.exceptions import ConfigError

__all__ = ["SequenceStore"]


class SequenceStore:
    def __init__(self, path: Path | str, *, timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = connect_durable(self.path, timeout_s)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS sequences (agent_id TEXT PRIMARY KEY, last INTEGER)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"cannot open the guard's sequence store {self.path}: {exc}",
                hint="the guard keeps its state in a folder it may write (state_dir)",
            ) from exc

    def next(self, agent_id: str) -> int:
        """The agent's next sequence number (1 for an agent this store has not seen)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT last FROM sequences WHERE agent_id = ?", (agent_id,)
                ).fetchone()
                value = (row[0] if row else 0) + 1
                self._db.execute(
                    "INSERT INTO sequences (agent_id, last) VALUES (?, ?) "
                    "ON CONFLICT(agent_id) DO UPDATE SET last = excluded.last",
                    (agent_id, value),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return int(value)

    def close(self) -> None:
        with self._lock:
            self._db.close()
