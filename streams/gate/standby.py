"""One deciding process per worker id on a host; any other one stands by, warm.

A second ``trustplane worker`` with the same ``TRUSTPLANE_WORKER_ID`` and state folder (and
its own web port) starts as far as it can without touching the gate's consumer group or
transactions: it loads the policies and keys, connects, follows the ``control`` topic,
and waits on the worker id's lock file. When the deciding process ends, a crash included
(the kernel releases a dead process's lock), the standby takes the lock within
:data:`POLL_S` and takes over: its transactional producer, under the same
``transactional.id``, fences the dead one and aborts its open transaction; its static
group membership, under the same ``group.instance.id``, takes back the same partitions
without waiting for a session timeout or a rebalance.

The lock is for liveness only, never for safety: two processes with one worker id that
do not share the lock (other hosts, other state folders) are still kept apart by Kafka's
fencing; the older one is fenced and stops.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from processors.exceptions import TrustplaneError

__all__ = ["POLL_S", "StandbyError", "WorkerLock"]

log = logging.getLogger(__name__)

POLL_S = 0.1
"""How often a standby tries the lock (and follows the control topic in between)."""


class StandbyError(TrustplaneError):
    """The worker id's lock file cannot be opened."""


class WorkerLock:
    """The lock file ``<state dir>/gate-worker/<worker id>.lock``, holding the pid of the
    process that decides for the worker id."""

    def __init__(self, state_dir: Path, worker_id: str) -> None:
        self.path = state_dir / "gate-worker" / f"{worker_id}.lock"
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free (and write this pid in it); True if held now."""
        if self._file is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")  # noqa: SIM115 - kept open while the lock is held
        except OSError as exc:
            raise StandbyError(
                f"cannot open the worker lock {self.path}: {exc.strerror}",
                hint="the worker's state folder (TRUSTPLANE_STATE_DIR) must be writable",
            ) from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    def holder(self) -> int | None:
        """The pid written by the process holding the lock (None if unknown)."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def wait(
        self,
        stopping: Callable[[], bool],
        between: Callable[[float], object],
        poll_s: float = POLL_S,
    ) -> bool:
        """Block until the lock is held (True) or ``stopping()`` (False), calling
        ``between(poll_s)`` between tries (it waits about that long)."""
        while not self.try_acquire():
            if stopping():
                return False
            between(poll_s)
        return True

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
