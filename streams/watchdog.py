"""A stalled decision loop ends its process, so that a standby or a supervisor takes over.

A transactional loop that stops cycling (a Kafka call that never returns while brokers
fail over, a deadlock) keeps its process alive and its locks held: a warm standby waits
forever, and a supervisor sees nothing wrong. Seen in a chaos run: a notary stopped
polling during a broker failover and held its log for minutes, logging nothing. The
watchdog notices a loop that has not begun a cycle for ``limit_s``, writes every
thread's stack to stderr (where to look next time), logs why, and ends the process.

A Kafka call given a timeout that librdkafka may not keep runs inside :meth:`bounded`:
past its own bound, a little above that timeout, the loop counts as stalled at once.
``send_offsets_to_transaction`` ignores its timeout and can wait forever when the
consumer group's coordinator was on a broker that died (confluentinc/librdkafka#5456,
#5511, open): a full chaos run's notary stood 180 s in it after a broker SIGKILL.

A process that was itself stopped (SIGSTOP, a paused VM) is not a stalled loop: the
watchdog's own checks stop too, and a gap in them resets the clock.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["EXIT_STALLED", "StallWatchdog", "exit_stalled"]

log = logging.getLogger(__name__)

EXIT_STALLED = 70
"""The exit status of a process whose loop stalled (EX_SOFTWARE)."""


def exit_stalled(name: str, stalled_s: float) -> None:
    """The services' reaction to a stall: every thread's stack, a critical log line, exit."""
    log.critical(
        "the %s loop has not cycled for %.0f s (a Kafka call that does not return, or a "
        "deadlock): exiting so that a standby or the supervisor takes over; the threads' "
        "stacks follow",
        name,
        stalled_s,
    )
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    logging.shutdown()
    os._exit(EXIT_STALLED)


class StallWatchdog:
    """Calls ``on_stall(name, seconds)`` once when :meth:`beat` was not called for
    ``limit_s`` while running (between :meth:`start` and :meth:`stop`)."""

    def __init__(
        self,
        name: str,
        limit_s: float,
        on_stall: Callable[[str, float], None],
        *,
        check_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.limit_s = limit_s
        self.on_stall = on_stall
        self.check_s = check_s
        self.clock = clock
        self._last = clock()
        self._call: tuple[str, float, float] | None = None
        """The bounded call in progress: (what, when it began, its bound in seconds)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self._last = self.clock()

    @contextlib.contextmanager
    def bounded(self, call: str, bound_s: float) -> Iterator[None]:
        """While the block runs, the loop counts as stalled once it has run ``bound_s``."""
        self._call = (call, self.clock(), bound_s)
        try:
            yield
        finally:
            self._call = None

    def start(self) -> None:
        self.beat()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name=f"{self.name}-watchdog")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.check_s * 5)

    def check(self, previous_check: float) -> bool:
        """One check; True when it called ``on_stall``."""
        now = self.clock()
        call = self._call
        if now - previous_check > max(5 * self.check_s, 5.0):
            self._last = now  # this process was stopped: its loop did not stall
            if call is not None:
                self._call = (call[0], now, call[2])
            return False
        if call is not None and now - call[1] > call[2]:
            log.critical(
                "the %s loop is stuck in %s, %.0f s past its %.0f s bound (librdkafka may "
                "not keep the call's timeout: confluentinc/librdkafka#5456)",
                self.name,
                call[0],
                now - call[1] - call[2],
                call[2],
            )
            self.on_stall(self.name, now - self._last)
            return True
        stalled = now - self._last
        if stalled > self.limit_s:
            self.on_stall(self.name, stalled)
            return True
        return False

    def _watch(self) -> None:
        previous = self.clock()
        while not self._stop.wait(self.check_s):
            if self.check(previous):
                return
            previous = self.clock()
