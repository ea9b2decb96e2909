"""The worker id's lock: one holder per host, released by the kernel when its holder
dies, waited on by a standby that can be stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.gate import standby as standby_module
from streams.gate.standby import StandbyError, WorkerLock


@pytest.fixture(autouse=True)
def _released(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every lock a test took is released at its end."""
    made: list[WorkerLock] = []
    original = standby_module.WorkerLock.__init__

    def remember(self: WorkerLock, *args: object) -> None:
        original(self, *args)  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.setattr(standby_module.WorkerLock, "__init__", remember)
    yield
    for lock in made:
        lock.release()


def test_the_first_process_holds_the_lock_and_a_second_does_not(tmp_path: Path) -> None:
    first, second = WorkerLock(tmp_path, "w1"), WorkerLock(tmp_path, "w1")
    assert first.try_acquire()
    assert first.held
    assert not second.try_acquire()
    assert not second.held
    assert second.holder() == os.getpid()
    assert WorkerLock(tmp_path, "w2").try_acquire()  # another worker id: another lock


def test_a_released_lock_is_taken_by_the_next_one(tmp_path: Path) -> None:
    first, second = WorkerLock(tmp_path, "w1"), WorkerLock(tmp_path, "w1")
    assert first.try_acquire()
    first.release()
    assert not first.held
    assert second.try_acquire()


def test_the_lock_of_a_killed_process_is_free_at_once(tmp_path: Path) -> None:
    holder = subprocess.Popen(  # noqa: S603 - our interpreter, a fixed script
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from streams.gate.standby import WorkerLock
                lock = WorkerLock(Path({str(tmp_path)!r}), "w1")
                assert lock.try_acquire()
                print("held", flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        standby = WorkerLock(tmp_path, "w1")
        assert not standby.try_acquire()
        assert standby.holder() == holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert standby.try_acquire()  # no timeout to wait out: the kernel released it
        assert standby.holder() == os.getpid()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_standby_stops_waiting_when_told_to(tmp_path: Path) -> None:
    assert WorkerLock(tmp_path, "w1").try_acquire()
    standby = WorkerLock(tmp_path, "w1")
    waited: list[float] = []
    assert not standby.wait(lambda: len(waited) >= 3, waited.append, poll_s=0.01)
    assert waited == [0.01, 0.01, 0.01]  # it followed the control topic in between


def test_a_standby_takes_the_lock_once_it_is_released(tmp_path: Path) -> None:
    active = WorkerLock(tmp_path, "w1")
    assert active.try_acquire()
    standby = WorkerLock(tmp_path, "w1")
    assert standby.wait(lambda: False, lambda _s: active.release(), poll_s=0.01)
    assert standby.held


def test_an_unwritable_state_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(StandbyError, match="cannot open the worker lock") as caught:
        WorkerLock(blocked, "w1").try_acquire()
    assert "TRUSTPLANE_STATE_DIR" in (caught.value.hint or "")
