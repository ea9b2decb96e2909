"""The stall watchdog: a loop that stops cycling ends its process; a stopped process
(SIGSTOP) is not a stalled loop."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from streams.watchdog import EXIT_STALLED, StallWatchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_loop_that_beats_is_never_called_stalled() -> None:
    clock, stalls = Clock(), []
    dog = StallWatchdog("worker", 10.0, lambda n, s: stalls.append((n, s)), clock=clock)
    for _ in range(30):
        previous = clock.now
        clock.now += 1.0
        dog.beat()
        assert not dog.check(previous)
    assert stalls == []


def test_a_loop_that_stops_beating_is_called_stalled_once_past_the_limit() -> None:
    clock, stalls = Clock(), []
    dog = StallWatchdog("notary", 10.0, lambda n, s: stalls.append((n, s)), clock=clock)
    dog.beat()
    for _ in range(10):
        previous = clock.now
        clock.now += 1.0
        assert not dog.check(previous)
    previous = clock.now
    clock.now += 1.0
    assert dog.check(previous)
    assert stalls == [("notary", 11.0)]


def test_a_process_that_was_stopped_is_not_a_stalled_loop() -> None:
    clock, stalls = Clock(), []
    dog = StallWatchdog("worker", 10.0, lambda n, s: stalls.append((n, s)), clock=clock)
    dog.beat()
    previous = clock.now
    clock.now += 600.0  # SIGSTOP for ten minutes: the checks stopped too
    assert not dog.check(previous)
    previous = clock.now
    clock.now += 1.0
    assert not dog.check(previous)
    assert stalls == []


def test_the_thread_calls_it_when_nothing_beats() -> None:
    called = threading.Event()
    dog = StallWatchdog("sink", 0.2, lambda n, s: called.set(), check_s=0.05)
    dog.start()
    try:
        assert called.wait(5)
    finally:
        dog.stop()


def test_a_stalled_loop_ends_its_process_with_the_threads_stacks() -> None:
    script = textwrap.dedent(
        """
        import threading, time
        from streams.watchdog import StallWatchdog, exit_stalled
        StallWatchdog("worker", 0.3, exit_stalled, check_s=0.05).start()
        threading.Event().wait(30)  # a loop that never cycles again
        """
    )
    done = subprocess.run(  # noqa: S603 - our interpreter, a fixed script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == EXIT_STALLED
    assert "the worker loop has not cycled" in done.stderr
    assert "Thread" in done.stderr and "File" in done.stderr  # faulthandler's stacks


def test_a_call_past_its_bound_is_a_stall_long_before_the_loop_limit() -> None:
    clock, stalls = Clock(), []
    dog = StallWatchdog("notary", 180.0, lambda n, s: stalls.append((n, s)), clock=clock)
    dog.beat()
    with dog.bounded("send_offsets_to_transaction", 15.0):
        results = []
        for _ in range(16):
            previous = clock.now
            clock.now += 1.0
            results.append(dog.check(previous))
    assert results == [False] * 15 + [True]
    assert stalls == [("notary", 16.0)]


def test_a_bound_ends_with_its_call_and_a_stopped_process_restarts_it() -> None:
    clock, stalls = Clock(), []
    dog = StallWatchdog("worker", 180.0, lambda n, s: stalls.append((n, s)), clock=clock)
    with dog.bounded("commit_transaction", 10.0):
        previous = clock.now
        clock.now += 600.0  # SIGSTOP in the middle of the call
        assert not dog.check(previous)
        for _ in range(9):
            previous = clock.now
            clock.now += 1.0
            assert not dog.check(previous)
    for _ in range(60):  # the call returned: only the loop's own limit counts again
        previous = clock.now
        clock.now += 1.0
        assert not dog.check(previous)
    assert stalls == []
