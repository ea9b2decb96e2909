"""An exclusive lock on a file (``flock``), held while this process keeps the file open:
the kernel releases it when the process ends, however it ends (SIGKILL included). The
holder writes its pid in the file, for whoever waits to say whom it waits for.

Used for one worker id's deciding process (:mod:`streams.gate.standby`) and for the
notary's snapshot folder (:mod:`streams.notary.snapshot`); a second process of either
waits on it as a warm standby.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from processors.exceptions import TrustplaneError

__all__ = ["POLL_S", "FileLock"]

POLL_S = 0.1
"""How often a waiting process tries the lock."""


class FileLock:
    """The lock file ``path``. ``error(exc)`` is what to raise when it cannot be opened
    (its folder is created with ``folder_mode``)."""

    def __init__(
        self,
        path: Path,
        error: Callable[[OSError], TrustplaneError],
        *,
        folder_mode: int = 0o777,
    ) -> None:
        self.path = path
        self.error = error
        self.folder_mode = folder_mode
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free (and write this pid in it); True if held now."""
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=self.folder_mode)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self.error(exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:  # no locking here (some network file systems)
            os.close(fd)
            raise self.error(exc) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
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
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
