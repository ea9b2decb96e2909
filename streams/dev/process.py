"""The plumbing of a server the project starts natively (the local Kafka broker, the
local Prometheus): start it detached, recognise it by its command line, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from processors.exceptions import TrustplaneError

__all__ = ["command_line", "has_exited", "read_text", "spawn_detached", "stop_process", "tail"]

# Started with ``python -I -c``: starts the server in its own session and exits at once,
# so the server is never a child of the caller (no zombie, no "still running" warning).
_DETACH = """\
import subprocess, sys
with open(sys.argv[1], "ab") as log:
    server = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log,
                              stderr=log, start_new_session=True)
print(server.pid)
"""


def spawn_detached(
    command: Sequence[str],
    log_path: Path,
    *,
    cwd: Path,
    timeout: float,
    error: type[TrustplaneError],
    what: str,
    hint: str,
) -> int:
    """Start ``command`` in its own session, logging to ``log_path`` (the previous log
    kept as ``.1``); return its pid, or raise ``error`` naming ``what`` failed to start."""
    if log_path.exists():
        log_path.replace(log_path.with_name(log_path.name + ".1"))
    result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
        [sys.executable, "-I", "-c", _DETACH, str(log_path), *command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip().isdigit():
        raise error(f"could not start {what}:\n{tail(result.stderr)}", hint=hint)
    return int(result.stdout)


def command_line(pid: int) -> list[str]:
    """The arguments of live process ``pid`` (empty when there is none, or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg for arg in raw.decode(errors="replace").split("\0") if arg]


def has_exited(pid: int, is_ours: Callable[[int], bool]) -> bool:
    """Whether a server this code spawned is gone: no such process, a zombie, or its pid
    taken by another program. One whose command line is still empty has not exited: the
    spawn returns once ``execve`` has begun, and the kernel fills in the new command line
    a moment later (long enough, on a loaded machine, to be read in between)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return True
    return bool(command_line(pid)) and not is_ours(pid)


def stop_process(
    pid: int,
    is_ours: Callable[[int], bool],
    *,
    timeout: float,
    kill_wait: float,
    error: type[TrustplaneError],
    what: str,
) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s; return once ``is_ours(pid)`` is false."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, kill_wait)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not is_ours(pid):
                return
            time.sleep(0.1)
    raise error(f"{what} process {pid} survived SIGKILL")


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def tail(text: str, lines: int = 20) -> str:
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(f"  | {line}" for line in kept) or "  | (no output)"
