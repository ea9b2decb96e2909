"""One agent's anomaly state (:class:`AnomalyState`) and its JSON codec.

Bounded by the config's ``limits``. :meth:`AnomalyState.from_dict` rebuilds a state from
the changelog and trims it to the current limits; anything malformed is an
:class:`AnomalyStateError` naming the field.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from processors.exceptions import TrustplaneError
from processors.layers.anomaly.config import AnomalyConfig
from processors.layers.anomaly.features import MAX_TEXT
from processors.layers.anomaly.rules import TRANSFORMS
from processors.layers.anomaly.stats import robust_stats
from processors.layers.anomaly.table import kind_of

__all__ = [
    "AnomalyState",
    "AnomalyStateError",
    "NumericBaseline",
    "add_bounded",
    "numeric_key",
    "reservoir_draw",
]

_RECOMPUTE_EVERY: Final = 8
_STATE_VERSION: Final = 1


class AnomalyStateError(TrustplaneError):
    """A stored anomaly state does not have the expected shape (corrupt changelog)."""


@dataclass(slots=True)
class NumericBaseline:
    """A bounded, decaying reservoir of an agent's approved values, and its cached robust
    statistics.

    Until it is full every value enters. Then the ``seen``-th value replaces a random
    slot with probability ``size / min(seen, memory)``: older values fade out gradually
    (the reservoir remembers about ``memory`` values), so neither a burst of identical
    values nor a slow escalation takes it over in a few hundred intents, while it still
    follows genuine drift. The random draws come from a keyed hash of the intent id with
    the agent's secret salt: re-deciding the same intent gives the same state, and an
    agent cannot choose ids that always enter.
    """

    values: list[float] = field(default_factory=list)
    seen: int = 0
    median: float = 0.0
    scale: float = 1.0
    transform: str = "none"
    stale: int = 0

    def add(
        self, value: float, transform: str, *, size: int, memory: int, draw: tuple[float, int]
    ) -> None:
        self.seen += 1
        if len(self.values) < size:
            self.values.append(value)
        else:
            admit, slot = draw
            if admit >= size / min(self.seen, memory):
                return
            self.values[slot % len(self.values)] = value
        self.stale += 1
        if transform != self.transform or self.stale >= _RECOMPUTE_EVERY or len(self.values) <= 64:
            self.recompute(transform)

    def recompute(self, transform: str) -> None:
        self.median, self.scale = robust_stats(self.values, transform)
        self.transform = transform
        self.stale = 0

    def stats(self, transform: str) -> tuple[float, float]:
        if transform == self.transform and self.stale < _RECOMPUTE_EVERY:
            return self.median, self.scale
        return robust_stats(self.values, transform)


@dataclass(slots=True)
class AnomalyState:
    """One agent's anomaly state. Bounded by the config's ``limits``; JSON-safe via
    :meth:`to_dict` / :meth:`from_dict`."""

    salt: str = ""
    """Secret per-agent key of the reservoir's random draws (see NumericBaseline)."""
    first_ms: int | None = None
    observed: int = 0
    approved: int = 0
    known_actions: set[str] = field(default_factory=set)
    known_kinds: set[str] = field(default_factory=set)
    known_destinations: set[str] = field(default_factory=set)
    events: dict[str, list[int]] = field(default_factory=dict)
    """action -> sorted decision times within the rate/burst horizon"""
    fanout: dict[str, dict[str, int]] = field(default_factory=dict)
    """class -> resource -> last time touched, oldest first"""
    reads: dict[int, int] = field(default_factory=dict)
    """read-count bucket index -> reads"""
    numeric: dict[str, NumericBaseline] = field(default_factory=dict)
    """``action|param`` -> reservoir"""
    violations: list[int] = field(default_factory=list)

    def learning(self, now_ms: int, config: AnomalyConfig) -> bool:
        """True while the agent's baseline is still being learned (novelty not judged)."""
        return (
            self.first_ms is None
            or now_ms - self.first_ms < config.baseline_ms
            or self.approved < config.baseline_min_intents
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": _STATE_VERSION,
            "salt": self.salt,
            "first_ms": self.first_ms,
            "observed": self.observed,
            "approved": self.approved,
            "known_actions": sorted(self.known_actions),
            "known_kinds": sorted(self.known_kinds),
            "known_destinations": sorted(self.known_destinations),
            "events": {action: list(times) for action, times in self.events.items()},
            "fanout": {
                cls: [[resource, at] for resource, at in touched.items()]
                for cls, touched in self.fanout.items()
            },
            "reads": [[bucket, count] for bucket, count in self.reads.items()],
            "numeric": {
                key: {
                    "values": list(nb.values),
                    "seen": nb.seen,
                    "median": nb.median,
                    "scale": nb.scale,
                    "transform": nb.transform,
                    "stale": nb.stale,
                }
                for key, nb in self.numeric.items()
            },
            "violations": list(self.violations),
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, config: AnomalyConfig | None = None
    ) -> AnomalyState:
        """Rebuild a state from :meth:`to_dict` output, trimmed to ``config``'s limits.

        Raises :class:`AnomalyStateError` naming the field if the data is malformed.
        """
        config = config or AnomalyConfig()
        if not isinstance(data, Mapping):
            raise AnomalyStateError(f"anomaly state: expected an object, got {kind_of(data)}")
        version = data.get("v", _STATE_VERSION)
        if version != _STATE_VERSION:
            raise AnomalyStateError(
                f"anomaly state: version {version!r} is not supported (expected {_STATE_VERSION})",
                hint="the changelog was written by another trustplane version; reset the state",
            )
        first = data.get("first_ms")
        salt = data.get("salt", "")
        if not isinstance(salt, str):
            raise AnomalyStateError(f"anomaly state: salt: expected a string, got {kind_of(salt)}")
        state = cls(
            salt=salt,
            first_ms=None if first is None else _state_int(first, "first_ms"),
            observed=_state_int(data.get("observed", 0), "observed"),
            approved=_state_int(data.get("approved", 0), "approved"),
            known_actions=set(_state_strs(data.get("known_actions", []), "known_actions")),
            known_kinds=set(_state_strs(data.get("known_kinds", []), "known_kinds")),
            known_destinations=set(
                _state_strs(data.get("known_destinations", []), "known_destinations")
            ),
        )
        for name in ("known_actions", "known_kinds", "known_destinations"):
            known: set[str] = getattr(state, name)
            if len(known) > config.max_known:
                setattr(state, name, set(sorted(known)[: config.max_known]))
        events = _state_map(data.get("events", {}), "events")
        for action, times in events.items():
            ints = sorted(_state_ints(times, f"events.{action}"))
            if ints:
                state.events[str(action)] = ints[-config.max_window_events :]
        for cls_name, pairs in _state_map(data.get("fanout", {}), "fanout").items():
            touched: dict[str, int] = {}
            for pair in _state_pairs(pairs, f"fanout.{cls_name}"):
                touched[str(pair[0])] = _state_int(pair[1], f"fanout.{cls_name}")
            state.fanout[str(cls_name)] = dict(sorted(touched.items(), key=lambda kv: kv[1]))
        for pair in _state_pairs(data.get("reads", []), "reads"):
            state.reads[_state_int(pair[0], "reads")] = _state_int(pair[1], "reads")
        for key, raw in _state_map(data.get("numeric", {}), "numeric").items():
            where = f"numeric.{key}"
            entry = _state_map(raw, where)
            values = [
                _state_float(v, f"{where}.values")
                for v in _state_list(entry.get("values", []), f"{where}.values")
            ]
            transform = entry.get("transform", "none")
            if transform not in TRANSFORMS:
                raise AnomalyStateError(f"anomaly state: {where}.transform: {transform!r} unknown")
            nb = NumericBaseline(
                values[-config.reservoir_size :],
                seen=max(len(values), _state_int(entry.get("seen", 0), f"{where}.seen")),
                median=_state_float(entry.get("median", 0.0), f"{where}.median"),
                scale=_state_float(entry.get("scale", 1.0), f"{where}.scale"),
                transform=str(transform),
                stale=_state_int(entry.get("stale", 0), f"{where}.stale"),
            )
            if nb.scale <= 0 or len(values) > config.reservoir_size:
                nb.recompute(nb.transform)
            state.numeric[str(key)] = nb
        state.violations = sorted(_state_ints(data.get("violations", []), "violations"))[
            -max(config.quarantine_after, 1) :
        ]
        return state


def _state_list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise AnomalyStateError(f"anomaly state: {where}: expected a list, got {kind_of(value)}")
    return value


def _state_map(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AnomalyStateError(f"anomaly state: {where}: expected an object, got {kind_of(value)}")
    return value


def _state_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnomalyStateError(
            f"anomaly state: {where}: expected an integer, got {kind_of(value)}"
        )
    return value


def _state_float(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AnomalyStateError(f"anomaly state: {where}: expected a finite number")
    return float(value)


def _state_ints(value: object, where: str) -> list[int]:
    return [_state_int(v, where) for v in _state_list(value, where)]


def _state_strs(value: object, where: str) -> list[str]:
    items = _state_list(value, where)
    if not all(isinstance(v, str) for v in items):
        raise AnomalyStateError(f"anomaly state: {where}: expected a list of strings")
    return items


def _state_pairs(value: object, where: str) -> list[list[Any]]:
    items = _state_list(value, where)
    for item in items:
        if not isinstance(item, list) or len(item) != 2:
            raise AnomalyStateError(f"anomaly state: {where}: expected [key, value] pairs")
    return items


def reservoir_draw(salt: str, intent_id: str, param: str) -> tuple[float, int]:
    """Two pseudo-random numbers keyed by the agent's salt: [0, 1) and a slot index."""
    digest = hashlib.blake2b(
        f"{intent_id}|{param}".encode(), key=salt.encode()[:64], digest_size=16
    ).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:], "big")


def numeric_key(action: str, param: str) -> str:
    return f"{action}|{param}"


def add_bounded(known: set[str], value: str, limit: int) -> None:
    if len(known) < limit:
        known.add(value[:MAX_TEXT])
