"""Where a service's start-up time goes, measured from the moment its process was created.

A restarted worker or notary is judged by how soon it decides or serves again. The
timeline marks each phase of the start (imports, waiting for the broker, fencing the
predecessor's transaction, restoring state, ...) with the process's age, so that a slow
restart can be read off ``/healthz`` and the start-up log line instead of guessed at.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

__all__ = ["StartupTimeline", "process_age_s"]

log = logging.getLogger(__name__)


def process_age_s() -> float | None:
    """Seconds since this process was created (Linux ``/proc``); None where unknown."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as uptime:
            up = float(uptime.read().split()[0])
        # field 22 (starttime) is the 20th after the ")" that closes the command name
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, up - started)


class StartupTimeline:
    """Phases of one start, each with the process's age when it ended (seconds).

    The first mark also records what came before it: the interpreter's start and the
    imports (``process`` in :meth:`phases`)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._lock = threading.Lock()
        age = process_age_s()
        # without /proc, ages count from this object's creation
        self._origin = time.monotonic() - (age if age is not None else 0.0)
        self._marks: list[tuple[str, float]] = [("process", age if age is not None else 0.0)]
        self.done: float | None = None
        """The process's age when :meth:`finish` was called."""

    def _age(self) -> float:
        return time.monotonic() - self._origin

    def mark(self, phase: str) -> None:
        """``phase`` ended now."""
        with self._lock:
            if self.done is None:
                self._marks.append((phase, self._age()))

    def finish(self, what: str) -> None:
        """The service is doing its job (``what``: "deciding", "serving"); log the
        timeline once."""
        with self._lock:
            if self.done is not None:
                return
            self.done = self._age()
            self._marks.append((what, self.done))
            parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in self.phases().items())
        log.info(
            "%s %s %.2f s after its process started (%s)", self.service, what, self.done, parts
        )

    def phases(self) -> dict[str, float]:
        """Each phase's own duration in seconds, in order."""
        durations: dict[str, float] = {}
        before = 0.0
        for name, at in self._marks:
            durations[name] = round(at - before, 3)
            before = at
        return durations

    def summary(self) -> dict[str, Any]:
        """For ``/healthz``: ``{"pid": ..., "ready_after_s": ..., "phases": {...}}`` (the
        pid tells a standby's answer from the one it took over from, on the same port)."""
        with self._lock:
            return {
                "pid": os.getpid(),
                "ready_after_s": None if self.done is None else round(self.done, 3),
                "phases": self.phases(),
            }
