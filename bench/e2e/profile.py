"""Sampling profile of a running worker with py-spy (no change to the worker).

``py-spy record --format raw`` writes collapsed stacks (``thread (tid): name;frame;...
count``); :func:`summarize` turns them into the functions with the most *own* samples
(the leaf frame: where the time is spent, C extensions included in their caller) and
the most *inclusive* samples (on the stack at all), per thread and overall.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["PySpy", "summarize", "py_spy_path"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy_path() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class PySpy:
    """``py-spy record`` of one process while a phase runs (``--nonblocking``: the
    target is never paused, so the measured throughput is barely disturbed; py-spy
    itself takes CPU on a 2-core machine, so the profiled run is not one of the
    reported throughput figures)."""

    def __init__(self, pid: int, output: Path, *, rate: float = 200.0, idle: bool = False) -> None:
        self.pid = pid
        self.output = output
        self.rate = rate
        self.idle = idle
        """With idle samples: where the threads spend their *wall* time (waits included);
        without: where they spend CPU."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None

    def start(self) -> None:
        exe = py_spy_path()
        if exe is None:
            self.error = "py-spy is not installed (pip install py-spy)"
            return
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(  # noqa: S603 - py-spy from the venv
            [
                exe,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(int(self.rate)),
                "--format",
                "raw",
                "--threads",
                "--nonblocking",
                "--output",
                str(self.output),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> dict[str, Any]:
        if self.proc is None:
            return {"error": self.error or "py-spy did not start"}
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        text = out.decode(errors="replace")
        if not self.output.exists():
            return {"error": f"py-spy wrote no profile: {text.strip()[-500:]}"}
        summary = summarize(self.output.read_text())
        summary["file"] = str(self.output)
        summary["view"] = "wall (idle samples included)" if self.idle else "on-CPU samples"
        summary["py_spy"] = text.strip().splitlines()[-3:] if text.strip() else []
        return summary


def _function(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    short = "/".join(Path(path).parts[-2:]) if "/" in path else path
    return f"{match.group('func')} ({short})"


def summarize(raw: str, top: int = 20) -> dict[str, Any]:
    """Own and inclusive sample shares of the functions in a py-spy raw profile."""
    own: dict[str, Counter[str]] = {}
    inclusive: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        name = thread.split(":", 1)[1].strip() if ":" in thread else thread
        functions = [_function(f) for f in frames[1:]] or ["(no python frame)"]
        totals[name] += count
        own.setdefault(name, Counter())[functions[-1]] += count
        seen = set(functions)
        bucket = inclusive.setdefault(name, Counter())
        for function in seen:
            bucket[function] += count
    all_samples = sum(totals.values())
    threads = {}
    for name, total in totals.most_common():
        threads[name] = {
            "samples": total,
            "share": total / all_samples if all_samples else 0.0,
            "top_own": [(f, n / total) for f, n in own[name].most_common(top)],
            "top_inclusive": [(f, n / total) for f, n in inclusive[name].most_common(top)],
        }
    return {"samples": all_samples, "threads": threads}
