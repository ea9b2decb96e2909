"""Recognising a spawned server's process: gone, a zombie, reused, or still starting."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from streams.dev import process
from streams.dev.process import has_exited


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # noqa: S603
    yield proc
    proc.kill()
    proc.wait()


def test_a_live_process_that_is_ours_has_not_exited(sleeper: subprocess.Popen[bytes]) -> None:
    assert not has_exited(sleeper.pid, lambda pid: True)


def test_a_live_process_of_another_program_means_the_pid_was_reused(
    sleeper: subprocess.Popen[bytes],
) -> None:
    assert has_exited(sleeper.pid, lambda pid: False)


def test_an_empty_command_line_is_a_process_still_in_exec_not_one_that_exited(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in CI: Prometheus reported "exited while starting" with an empty log, because
    its command line was read between ``execve`` and the kernel filling it in."""
    monkeypatch.setattr(process, "command_line", lambda pid: [])
    assert not has_exited(sleeper.pid, lambda pid: False)


def test_a_zombie_has_exited(sleeper: subprocess.Popen[bytes]) -> None:
    sleeper.kill()
    os.waitid(os.P_PID, sleeper.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: a zombie
    assert has_exited(sleeper.pid, lambda pid: True)


def test_no_such_process_has_exited() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603
    proc.wait()
    assert has_exited(proc.pid, lambda pid: True)
