"""The run's figures: one line for people and CI, and a JSON file with everything."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.chaos.check import INVARIANTS, Result

__all__ = ["GOAL_RECOVERY_S", "figures_line", "goals", "write_report"]

GOAL_RECOVERY_S = 3.0
"""Outcomes resume within 3 s of a worker SIGKILL; the notary serves within 3 s of a restart."""


def _seconds(value: object) -> str:
    return f"{value:.2f}s" if isinstance(value, int | float) else "n/a"


def figures_line(result: Result, recovery: Mapping[str, Mapping[str, Any]]) -> str:
    """``lost=0 duplicated=0 ... worker_recovery_p50=1.20s max=2.90s notary_recovery_...``"""
    parts = [f"{name}={result.count(name)}" for name in INVARIANTS]
    for name in ("worker", "notary"):
        figures = recovery.get(name, {})
        parts.append(
            f"{name}_recovery_p50={_seconds(figures.get('p50'))} max={_seconds(figures.get('max'))}"
        )
    return " ".join(parts)


def goals(result: Result, recovery: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's goals, each with its target, what was measured and whether it is met."""

    def within(name: str) -> dict[str, Any]:
        figures = recovery.get(name, {})
        worst, never = figures.get("max"), figures.get("never", 0)
        met = None if worst is None else bool(worst <= GOAL_RECOVERY_S and not never)
        return {
            "target": f"<= {GOAL_RECOVERY_S:g} s",
            "measured": worst,
            "never": never,
            "met": met,
        }

    return {
        "worker_recovery": within("worker"),
        "notary_recovery": within("notary"),
        "no_good_intent_denied": {
            "target": 0,
            "measured": result.count("good_denied"),
            "met": result.count("good_denied") == 0,
        },
    }


def write_report(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
