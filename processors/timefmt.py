"""Epoch milliseconds as ISO 8601 UTC text, for reasons and summaries people read.

Two precisions, both load-bearing, so two names:

- :func:`iso_ms` -- milliseconds (``2023-11-14T22:13:20.000Z``): decision reasons of the
  layers and the control state (``/healthz`` ``last_command_at``), where two events a few
  milliseconds apart must read differently;
- :func:`iso_seconds` -- whole seconds (``2030-01-01T00:00:00Z``): policy bundle times
  (created, expires), which operators write by hand and the ``policy`` CLI prints.

Neither raises: a time outside what :mod:`datetime` can show reads as
``"<ms> ms since the epoch"``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

__all__ = ["iso_ms", "iso_seconds"]


def iso_ms(ms: int | None) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC (``2023-11-14T22:13:20.000Z``);
    ``None`` is ``"an unknown time"``."""
    if ms is None:
        return "an unknown time"
    return _iso(ms, "milliseconds")


def iso_seconds(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC to the second
    (``2030-01-01T00:00:00Z``)."""
    return _iso(ms, "seconds")


def _iso(ms: int, timespec: Literal["seconds", "milliseconds"]) -> str:
    try:
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms since the epoch"
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")
