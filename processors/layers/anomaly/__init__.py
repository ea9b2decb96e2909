"""Behavioural anomaly layer: does this intent look like what this agent normally does?

Per agent, with bounded, JSON-safe state (kept in the gate's changelog), the layer
watches eight features:

``rate`` / ``burst``
    how many intents of the same action in a sliding window (60 s / 1 s by default);
``novel_action`` / ``novel_resource_kind`` / ``novel_destination``
    an action, resource kind (``acct`` in ``acct:42``) or destination never approved for
    the agent; judged only once its baseline period is over (``baseline.period_ms`` of
    history *and* ``baseline.min_intents`` approved intents);
``deviation``
    a numeric parameter (``amount``) far from the agent's rolling robust baseline: the
    robust z-score ``(x - median) / scale`` (scale: 1.4826 * MAD, or the inter-decile
    range when many values are equal) over a bounded, decaying reservoir of the agent's
    approved values (per action, optionally on a log scale), judged after
    ``min_samples`` values and reported in the evidence;
``fanout``
    distinct resources touched by one action class in a window;
``exfiltration``
    an export (configured action patterns) to a destination never approved for the agent
    after at least ``min_reads`` reads (configured patterns) in a window;

plus ``quarantine``: after ``quarantine.after`` anomaly violations of the same agent
within ``quarantine.window_ms``, the response escalates to quarantine.

Thresholds and responses (``review``, ``deny``, ``quarantine``) are set per action
class, matched with ``fnmatch`` patterns on the action (first match wins, then the
``default`` class), in a validated config (``policies/anomaly.toml``).

What learns from what (the poisoning rule): activity features (rate, burst, fan-out, the
read counter) count every intent the gate decided, denied ones included, so a denied loop
keeps looking like a loop. Baselines (known actions, kinds, destinations and numeric
reservoirs) learn only from *approved* intents, so an attacker cannot train the baseline
with intents the gate refused; and an approved value far from the median (beyond the
rule's ``learn_max_z``, default half of ``max_z``) is not learned either, so a slow
escalation cannot drag the baseline up. An intent held for review and later approved by
an operator is learned only if the gate calls :meth:`AnomalyCheck.learn` for it.

Every REVIEW or DENY of this layer is an anomaly violation of the agent (counted for the
quarantine escalation); a verdict whose response is ``quarantine`` carries
``quarantine_scope="agent"`` and the gate turns it into a quarantine event.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import tomllib
from bisect import bisect_right, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Final

from processors.exceptions import ConfigError, TrustplaneError
from processors.intent import Intent
from processors.verdict import GateState, Status, Verdict

__all__ = [
    "AnomalyCheck",
    "AnomalyConfig",
    "AnomalyState",
    "AnomalyStateError",
    "ActionClass",
    "Limit",
    "Flag",
    "DeviationRule",
    "ExfiltrationRule",
    "NumericBaseline",
    "DEFAULT_CONFIG_PATH",
    "FEATURES",
    "RESPONSES",
    "resource_kind",
]

LAYER: Final = "anomaly"
STATE_KEY: Final = "anomaly"
DEFAULT_CONFIG_PATH: Final = Path(__file__).resolve().parents[3] / "policies" / "anomaly.toml"

RESPONSES: Final = ("review", "deny", "quarantine")
"""Anomaly responses, least to most severe."""
_SEVERITY: Final = {name: rank for rank, name in enumerate(RESPONSES)}

FEATURES: Final = (
    "rate",
    "burst",
    "novel_action",
    "novel_resource_kind",
    "novel_destination",
    "deviation",
    "fanout",
    "exfiltration",
    "quarantine",
)

_TRANSFORMS: Final = ("log", "none")
_DIRECTIONS: Final = ("above", "below", "both")
_MAD_TO_SIGMA: Final = 1.4826
_MEANAD_TO_SIGMA: Final = 1.2533
_IDR_TO_SIGMA: Final = 2.5631
_RECOMPUTE_EVERY: Final = 8
_CLAMP: Final = 1e300
_MAX_TEXT: Final = 256
_READ_BUCKETS: Final = 60
_SWEEP_EVERY: Final = 32
_STATE_VERSION: Final = 1
_LOOKUP_CACHE: Final = 4096


class AnomalyStateError(TrustplaneError):
    """A stored anomaly state does not have the expected shape (corrupt changelog)."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class Limit:
    """A count threshold: more than ``max`` in the window triggers ``response``."""

    max: int
    response: str = "review"


@dataclass(frozen=True, slots=True)
class Flag:
    """A feature without a threshold (novelty): it triggers ``response``."""

    response: str = "review"


@dataclass(frozen=True, slots=True)
class DeviationRule:
    """Robust z-score threshold of one numeric parameter."""

    max_z: float
    min_samples: int = 30
    transform: str = "log"
    direction: str = "both"
    response: str = "review"
    min_scale: float = 0.0
    """Floor of the robust scale, in transformed units (0.25 on a log scale: a robust
    sigma is never taken as less than about 28 %), so a baseline that happens to be
    nearly constant does not turn every ordinary variation into an anomaly."""
    learn_max_z: float | None = None
    """Approved values further than this from the median (robust z; default
    ``max_z / 2``) do not enter the reservoir: an approved-but-unusual value does not
    widen the baseline, so a slow escalation cannot drag it upwards."""

    @property
    def learn_limit(self) -> float:
        return self.learn_max_z if self.learn_max_z is not None else self.max_z / 2


@dataclass(frozen=True, slots=True)
class ExfiltrationRule:
    """At least ``min_reads`` reads in the window, then an export to a new destination."""

    min_reads: int
    response: str = "deny"


@dataclass(frozen=True, slots=True)
class ActionClass:
    """Thresholds and responses for the actions matching ``actions`` (``None``: feature off)."""

    name: str
    actions: tuple[str, ...] = ()
    rate: Limit | None = None
    burst: Limit | None = None
    fanout: Limit | None = None
    novel_action: Flag | None = None
    novel_resource_kind: Flag | None = None
    novel_destination: Flag | None = None
    deviation: Mapping[str, DeviationRule] = field(default_factory=dict)
    exfiltration: ExfiltrationRule | None = None


_BUILTIN_DEFAULT: Final = ActionClass(
    name="default",
    rate=Limit(60, "review"),
    burst=Limit(10, "deny"),
    fanout=Limit(500, "review"),
    novel_action=Flag("review"),
    novel_resource_kind=Flag("review"),
)


@dataclass(frozen=True, slots=True)
class _Lookup:
    cls: ActionClass
    is_read: bool
    is_export: bool


@dataclass(frozen=True)
class AnomalyConfig:
    """Validated anomaly configuration. Build with :meth:`from_mapping` / :meth:`from_file`."""

    default: ActionClass = field(default_factory=lambda: _BUILTIN_DEFAULT)
    classes: tuple[ActionClass, ...] = ()
    baseline_ms: int = 86_400_000
    baseline_min_intents: int = 10
    rate_window_ms: int = 60_000
    burst_window_ms: int = 1_000
    fanout_window_ms: int = 3_600_000
    exfil_window_ms: int = 21_600_000
    read_actions: tuple[str, ...] = ("*.read", "*.query", "*.list", "*.get", "*.search")
    export_actions: tuple[str, ...] = ("*.export", "*.upload", "storage.put", "http.post")
    destination_params: tuple[str, ...] = ("destination", "bucket", "url", "endpoint")
    quarantine_after: int = 5
    quarantine_window_ms: int = 600_000
    max_tracked_actions: int = 64
    max_known: int = 512
    reservoir_size: int = 128
    reservoir_memory: int = 1024
    max_window_events: int = 1024
    source: str = field(default="anomaly config", repr=False, compare=False)
    """Where the config came from (error messages name it)."""
    _cache: dict[str, _Lookup] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        _cross_check(self, self.source)

    # -- lookup ---------------------------------------------------------------

    def lookup(self, action: str) -> _Lookup:
        """The action's class (first matching class, else ``default``) and read/export kind."""
        hit = self._cache.get(action)
        if hit is not None:
            return hit
        cls = next(
            (c for c in self.classes if any(fnmatchcase(action, p) for p in c.actions)),
            self.default,
        )
        hit = _Lookup(
            cls,
            any(fnmatchcase(action, p) for p in self.read_actions),
            any(fnmatchcase(action, p) for p in self.export_actions),
        )
        if len(self._cache) >= _LOOKUP_CACHE:
            self._cache.clear()
        self._cache[action] = hit
        return hit

    def class_for(self, action: str) -> ActionClass:
        return self.lookup(action).cls

    # -- loading --------------------------------------------------------------

    @classmethod
    def from_file(cls, path: Path | str) -> AnomalyConfig:
        """Load a ``.toml`` or ``.json`` anomaly config; any problem is a ConfigError."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(
                f"anomaly config {path} does not exist",
                hint=f"pass an existing file, or start from {DEFAULT_CONFIG_PATH}",
            ) from exc
        except OSError as exc:
            raise ConfigError(f"anomaly config {path} cannot be read: {exc}") from exc
        suffix = path.suffix.lower()
        try:
            if suffix == ".toml":
                data: object = tomllib.loads(text)
            elif suffix == ".json":
                data = json.loads(text)
            else:
                raise ConfigError(
                    f"anomaly config {path}: unknown format {suffix or '(no suffix)'!r}",
                    hint="use a .toml or .json file",
                )
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"anomaly config {path} is not valid {suffix[1:]}: {exc}") from exc
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: object, *, source: str = "anomaly config") -> AnomalyConfig:
        """Validate a parsed config. Unknown keys and wrong types name their key path."""
        top = _Table(data, "", source, _TOP_KEYS)
        baseline = top.sub("baseline", {"period_ms", "min_intents"})
        windows = top.sub("windows", {"rate_ms", "burst_ms", "fanout_ms"})
        exfil = top.sub(
            "exfiltration", {"window_ms", "read_actions", "export_actions", "destination_params"}
        )
        quarantine = top.sub("quarantine", {"after", "window_ms"})
        limits = top.sub(
            "limits",
            {
                "max_tracked_actions",
                "max_known",
                "reservoir_size",
                "reservoir_memory",
                "max_window_events",
            },
        )
        base = cls()
        default_data = top.get("default")
        default = _parse_class(
            default_data if default_data is not None else {},
            "default",
            source,
            _BUILTIN_DEFAULT,
            name="default",
        )
        classes: list[ActionClass] = []
        raw_classes = top.get("class")
        if raw_classes is not None:
            if not isinstance(raw_classes, list):
                raise ConfigError(
                    f"{source}: class: expected a list of tables ([[class]]), "
                    f"got {_kind(raw_classes)}"
                )
            names: set[str] = {"default"}
            for index, raw in enumerate(raw_classes):
                path = f"class[{index}]"
                table = _Table(raw, path, source, _CLASS_KEYS | {"name", "actions"})
                name = table.text("name", required=True)
                if name in names:
                    raise ConfigError(f"{source}: {path}.name: class {name!r} is defined twice")
                names.add(name)
                actions = table.patterns("actions", required=True)
                classes.append(_parse_class(raw, path, source, default, name, actions))
        return cls(
            default=default,
            classes=tuple(classes),
            baseline_ms=baseline.integer("period_ms", base.baseline_ms, minimum=0),
            baseline_min_intents=baseline.integer(
                "min_intents", base.baseline_min_intents, minimum=0
            ),
            rate_window_ms=windows.integer("rate_ms", base.rate_window_ms, minimum=1),
            burst_window_ms=windows.integer("burst_ms", base.burst_window_ms, minimum=1),
            fanout_window_ms=windows.integer("fanout_ms", base.fanout_window_ms, minimum=1),
            exfil_window_ms=exfil.integer("window_ms", base.exfil_window_ms, minimum=_READ_BUCKETS),
            read_actions=exfil.patterns("read_actions", default=base.read_actions),
            export_actions=exfil.patterns("export_actions", default=base.export_actions),
            destination_params=exfil.patterns(
                "destination_params", default=base.destination_params
            ),
            quarantine_after=quarantine.integer("after", base.quarantine_after, minimum=0),
            quarantine_window_ms=quarantine.integer(
                "window_ms", base.quarantine_window_ms, minimum=1
            ),
            max_tracked_actions=limits.integer(
                "max_tracked_actions", base.max_tracked_actions, minimum=1
            ),
            max_known=limits.integer("max_known", base.max_known, minimum=1),
            reservoir_size=limits.integer("reservoir_size", base.reservoir_size, minimum=3),
            reservoir_memory=limits.integer("reservoir_memory", base.reservoir_memory, minimum=3),
            max_window_events=limits.integer(
                "max_window_events", base.max_window_events, minimum=2
            ),
            source=source,
        )

    @classmethod
    def default_file(cls) -> AnomalyConfig:
        """The shipped estate defaults, ``policies/anomaly.toml``."""
        return cls.from_file(DEFAULT_CONFIG_PATH)

    def all_classes(self) -> tuple[ActionClass, ...]:
        return (*self.classes, self.default)


_TOP_KEYS: Final = frozenset(
    {"description", "baseline", "windows", "exfiltration", "quarantine", "limits", "default"}
    | {"class"}
)
_CLASS_KEYS: Final = frozenset(
    {
        "description",
        "rate",
        "burst",
        "fanout",
        "novel_action",
        "novel_resource_kind",
        "novel_destination",
        "deviation",
        "exfiltration",
    }
)


def _cross_check(config: AnomalyConfig, source: str) -> None:
    """Thresholds the bounded state could never reach are configuration errors."""
    if config.reservoir_memory < config.reservoir_size:
        raise ConfigError(
            f"{source}: limits.reservoir_memory ({config.reservoir_memory}) must be at least "
            f"limits.reservoir_size ({config.reservoir_size})"
        )
    for index, cls in enumerate(config.all_classes()):
        path = "default" if cls.name == "default" else f"class[{index}] ({cls.name})"
        for feature in ("rate", "burst"):
            limit: Limit | None = getattr(cls, feature)
            if limit is not None and limit.max >= config.max_window_events:
                raise ConfigError(
                    f"{source}: {path}.{feature}.max ({limit.max}) must be below "
                    f"limits.max_window_events ({config.max_window_events})",
                    hint="raise limits.max_window_events or lower the threshold",
                )
        for param, rule in cls.deviation.items():
            if rule.min_samples > config.reservoir_size:
                raise ConfigError(
                    f"{source}: {path}.deviation.{param}.min_samples ({rule.min_samples}) "
                    f"exceeds limits.reservoir_size ({config.reservoir_size})",
                    hint="lower min_samples or raise limits.reservoir_size",
                )
        if cls.exfiltration is not None and not config.export_actions:
            raise ConfigError(
                f"{source}: {path}.exfiltration is set but exfiltration.export_actions is empty"
            )


def _parse_class(
    data: object,
    path: str,
    source: str,
    base: ActionClass,
    name: str,
    actions: tuple[str, ...] = (),
) -> ActionClass:
    keys = _CLASS_KEYS | ({"name", "actions"} if path != "default" else set())
    table = _Table(data, path, source, keys)
    changes: dict[str, Any] = {"name": name, "actions": actions}
    for feature in ("rate", "burst", "fanout"):
        sub = table.feature(feature, {"max", "response", "enabled"})
        if sub is not None:
            changes[feature] = (
                Limit(sub.integer("max", None, minimum=1), sub.response())
                if sub.flag("enabled", True)
                else None
            )
    for feature in ("novel_action", "novel_resource_kind", "novel_destination"):
        sub = table.feature(feature, {"response", "enabled"})
        if sub is not None:
            changes[feature] = Flag(sub.response()) if sub.flag("enabled", True) else None
    exfil = table.feature("exfiltration", {"min_reads", "response", "enabled"})
    if exfil is not None:
        changes["exfiltration"] = (
            ExfiltrationRule(exfil.integer("min_reads", None, minimum=1), exfil.response("deny"))
            if exfil.flag("enabled", True)
            else None
        )
    raw_dev = table.get("deviation")
    if raw_dev is not None:
        dev_path = f"{path}.deviation"
        if not isinstance(raw_dev, Mapping):
            raise ConfigError(
                f"{source}: {dev_path}: expected a table of parameter rules, got {_kind(raw_dev)}"
            )
        rules: dict[str, DeviationRule] = {}
        for param, raw_rule in raw_dev.items():
            rule = _Table(
                raw_rule,
                f"{dev_path}.{param}",
                source,
                {
                    "max_z",
                    "min_samples",
                    "transform",
                    "direction",
                    "response",
                    "min_scale",
                    "learn_max_z",
                    "enabled",
                },
            )
            if not rule.flag("enabled", True):
                continue
            rules[str(param)] = DeviationRule(
                max_z=rule.number("max_z", positive=True),
                min_samples=rule.integer("min_samples", 30, minimum=3),
                transform=rule.choice("transform", _TRANSFORMS, "log"),
                direction=rule.choice("direction", _DIRECTIONS, "both"),
                response=rule.response(),
                min_scale=rule.number("min_scale", positive=False, default=0.0),
                learn_max_z=(
                    rule.number("learn_max_z", positive=True)
                    if rule.get("learn_max_z") is not None
                    else None
                ),
            )
        changes["deviation"] = rules
    return replace(base, **changes)


class _Table:
    """One table of the config being read, with its key path for error messages."""

    def __init__(self, data: object, path: str, source: str, allowed: Iterable[str]) -> None:
        where = path or "top level"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: {where}: expected a table, got {_kind(data)}")
        allowed = frozenset(allowed)
        for key in data:
            if key not in allowed:
                raise ConfigError(
                    f"{source}: {self._join(path, str(key))}: unknown key "
                    f"(expected one of: {', '.join(sorted(allowed))})"
                )
        self.data: Mapping[str, object] = data
        self.path = path
        self.source = source

    @staticmethod
    def _join(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def _error(self, key: str, expected: str, value: object) -> ConfigError:
        return ConfigError(
            f"{self.source}: {self._join(self.path, key)}: expected {expected}, "
            f"got {_kind(value)} {str(value)[:60]!r}"
        )

    def get(self, key: str) -> object | None:
        return self.data.get(key)

    def sub(self, key: str, allowed: Iterable[str]) -> _Table:
        value = self.data.get(key)
        return _Table(
            {} if value is None else value, self._join(self.path, key), self.source, allowed
        )

    def feature(self, key: str, allowed: Iterable[str]) -> _Table | None:
        value = self.data.get(key)
        if value is None:
            return None
        return _Table(value, self._join(self.path, key), self.source, allowed)

    def integer(self, key: str, default: int | None, *, minimum: int) -> int:
        value = self.data.get(key, default)
        if value is None:
            raise ConfigError(f"{self.source}: {self._join(self.path, key)}: missing (required)")
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._error(key, f"an integer >= {minimum}", value)
        return value

    def number(self, key: str, *, positive: bool, default: float | None = None) -> float:
        """A finite number, > 0 if ``positive`` else >= 0."""
        value = self.data.get(key, default)
        if value is None:
            raise ConfigError(f"{self.source}: {self._join(self.path, key)}: missing (required)")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
            or (positive and value == 0)
        ):
            raise self._error(key, f"a finite number {'> 0' if positive else '>= 0'}", value)
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self._error(key, "true or false", value)
        return value

    def text(self, key: str, *, required: bool = False) -> str:
        value = self.data.get(key)
        if value is None and required:
            raise ConfigError(f"{self.source}: {self._join(self.path, key)}: missing (required)")
        if not isinstance(value, str) or not value.strip():
            raise self._error(key, "a non-empty string", value)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or value not in choices:
            raise self._error(key, f"one of {', '.join(map(repr, choices))}", value)
        return value

    def response(self, default: str = "review") -> str:
        return self.choice("response", RESPONSES, default)

    def patterns(
        self, key: str, *, default: tuple[str, ...] = (), required: bool = False
    ) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            if required:
                raise ConfigError(
                    f"{self.source}: {self._join(self.path, key)}: missing (required)"
                )
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._error(key, "a list of non-empty strings", value)
        if required and not value:
            raise self._error(key, "a non-empty list of patterns", value)
        return tuple(value)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"a {type(value).__name__}"


# --------------------------------------------------------------------------- state


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
        self.median, self.scale = _robust_stats(self.values, transform)
        self.transform = transform
        self.stale = 0

    def stats(self, transform: str) -> tuple[float, float]:
        if transform == self.transform and self.stale < _RECOMPUTE_EVERY:
            return self.median, self.scale
        return _robust_stats(self.values, transform)


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
            raise AnomalyStateError(f"anomaly state: expected an object, got {_kind(data)}")
        version = data.get("v", _STATE_VERSION)
        if version != _STATE_VERSION:
            raise AnomalyStateError(
                f"anomaly state: version {version!r} is not supported (expected {_STATE_VERSION})",
                hint="the changelog was written by another trustplane version; reset the state",
            )
        first = data.get("first_ms")
        salt = data.get("salt", "")
        if not isinstance(salt, str):
            raise AnomalyStateError(f"anomaly state: salt: expected a string, got {_kind(salt)}")
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
            if transform not in _TRANSFORMS:
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
        raise AnomalyStateError(f"anomaly state: {where}: expected a list, got {_kind(value)}")
    return value


def _state_map(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AnomalyStateError(f"anomaly state: {where}: expected an object, got {_kind(value)}")
    return value


def _state_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnomalyStateError(f"anomaly state: {where}: expected an integer, got {_kind(value)}")
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


# --------------------------------------------------------------------------- the layer


@dataclass(slots=True)
class _Finding:
    feature: str
    reason: str
    response: str
    evidence: dict[str, str]


class AnomalyCheck:
    """The behavioural anomaly layer (a :class:`~processors.verdict.StatefulLayer`).

    ``evaluate`` only reads the agent's state and returns ALLOW, REVIEW (response
    ``review``) or DENY (``deny``, ``quarantine``). ``observe`` updates the state after
    the decision. Neither raises on odd parameter values: a feature it cannot judge is
    skipped with a note in the evidence.
    """

    name = LAYER
    state_key = STATE_KEY

    def __init__(self, config: AnomalyConfig | None = None, *, seed: int | None = None) -> None:
        """``seed`` makes the per-agent salts deterministic (offline evaluation, tests);
        without it every new agent state gets a random salt."""
        self.config = config or AnomalyConfig()
        self._memo: tuple[str, int, int, bool] | None = None
        self._seed = seed
        self._states_made = 0

    # -- StatefulLayer state handling -------------------------------------------

    def new_state(self) -> AnomalyState:
        if self._seed is None:
            return AnomalyState(salt=secrets.token_hex(16))
        self._states_made += 1
        text = f"{self._seed}:{self._states_made}".encode()
        return AnomalyState(salt=hashlib.sha256(text).hexdigest()[:32])

    def load_state(self, data: Mapping[str, Any]) -> AnomalyState:
        loaded = AnomalyState.from_dict(data, config=self.config)
        if not loaded.salt:
            loaded.salt = self.new_state().salt
        return loaded

    def dump_state(self, layer_state: Any) -> dict[str, Any]:
        if not isinstance(layer_state, AnomalyState):
            raise AnomalyStateError(
                f"anomaly state: expected an AnomalyState, got {type(layer_state).__name__}"
            )
        return layer_state.to_dict()

    def _state(self, state: GateState, *, attach: bool) -> AnomalyState:
        current = state.agent.get(self.state_key)
        if isinstance(current, AnomalyState):
            return current
        if isinstance(current, Mapping):
            loaded = self.load_state(current)
        else:
            loaded = self.new_state() if attach else AnomalyState()
        if attach:
            state.agent[self.state_key] = loaded
        return loaded

    # -- evaluate ---------------------------------------------------------------

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        agent_state = self._state(state, attach=False)
        now = state.now_ms
        look = self.config.lookup(intent.action)
        findings, evidence, notes = self._assess(intent, agent_state, look, now)
        if findings:
            findings.extend(self._escalation(intent, agent_state, now))
        self._memo = (intent.intent_id, now, id(agent_state), bool(findings))
        evidence["class"] = look.cls.name
        learning = agent_state.learning(now, self.config)
        evidence["baseline"] = "learning" if learning else "active"
        if notes:
            evidence["notes"] = "; ".join(notes)
        if not findings:
            reason = "no anomaly"
            if learning:
                reason += (
                    f"; learning the baseline ({agent_state.approved}/"
                    f"{self.config.baseline_min_intents} approved intents, "
                    f"{_hours(self._elapsed(agent_state, now))}/"
                    f"{_hours(self.config.baseline_ms)} h)"
                )
            return Verdict(LAYER, Status.ALLOW, (reason, *notes), evidence)
        response = max((f.response for f in findings), key=_SEVERITY.__getitem__)
        for finding in findings:
            evidence.update(finding.evidence)
            evidence[f"{finding.feature}.response"] = finding.response
        evidence["anomaly"] = ",".join(dict.fromkeys(f.feature for f in findings))
        evidence["response"] = response
        if response == "quarantine":
            evidence["quarantine_scope"] = "agent"
        status = Status.REVIEW if response == "review" else Status.DENY
        return Verdict(LAYER, status, tuple(f.reason for f in findings), evidence)

    def _elapsed(self, agent_state: AnomalyState, now: int) -> int:
        return 0 if agent_state.first_ms is None else max(0, now - agent_state.first_ms)

    def _assess(
        self, intent: Intent, st: AnomalyState, look: _Lookup, now: int
    ) -> tuple[list[_Finding], dict[str, str], list[str]]:
        cfg = self.config
        cls = look.cls
        action = intent.action
        findings: list[_Finding] = []
        evidence: dict[str, str] = {}
        notes: list[str] = []

        times = st.events.get(action)
        if cls.rate is not None:
            n = _count_after(times, now - cfg.rate_window_ms) + 1
            if n > cls.rate.max:
                findings.append(
                    _threshold(
                        "rate",
                        f"rate: {_n(n, cfg)} {action} in {_secs(cfg.rate_window_ms)} s "
                        f"> {cls.rate.max}",
                        n,
                        cls.rate,
                    )
                )
        if cls.burst is not None:
            n = _count_after(times, now - cfg.burst_window_ms) + 1
            if n > cls.burst.max:
                findings.append(
                    _threshold(
                        "burst",
                        f"burst: {_n(n, cfg)} {action} in {_secs(cfg.burst_window_ms)} s "
                        f"> {cls.burst.max}",
                        n,
                        cls.burst,
                    )
                )
        if cls.fanout is not None:
            n = _distinct_after(
                st.fanout.get(cls.name), intent.resource, now - cfg.fanout_window_ms
            )
            if n > cls.fanout.max:
                findings.append(
                    _threshold(
                        "fanout",
                        f"fanout: {n} distinct resources for {cls.name} actions in "
                        f"{_secs(cfg.fanout_window_ms)} s > {cls.fanout.max}",
                        n,
                        cls.fanout,
                    )
                )

        for param, rule in cls.deviation.items():
            finding = self._deviation(intent, st, param, rule, evidence, notes)
            if finding is not None:
                findings.append(finding)

        if st.learning(now, cfg):
            return findings, evidence, notes

        agent = intent.agent_id
        if cls.novel_action is not None and action not in st.known_actions:
            findings.append(
                _flag(
                    "novel_action",
                    f"novel action: {agent!r} never had {action!r} approved "
                    f"({len(st.known_actions)} known actions)",
                    action,
                    cls.novel_action,
                )
            )
        if cls.novel_resource_kind is not None:
            kind = resource_kind(intent.resource)
            if kind not in st.known_kinds:
                findings.append(
                    _flag(
                        "novel_resource_kind",
                        f"novel resource kind: {agent!r} never had a {kind!r} resource "
                        f"approved ({_short(intent.resource)!r})",
                        kind,
                        cls.novel_resource_kind,
                    )
                )
        destination = self.destination(intent, look)
        new_destination = destination is not None and destination not in st.known_destinations
        if cls.novel_destination is not None and destination is not None and new_destination:
            findings.append(
                _flag(
                    "novel_destination",
                    f"novel destination: {agent!r} never had {_short(destination)!r} approved",
                    destination,
                    cls.novel_destination,
                )
            )
        if cls.exfiltration is not None and look.is_export and new_destination:
            reads = _reads_after(st.reads, now, cfg.exfil_window_ms)
            if reads >= cls.exfiltration.min_reads:
                findings.append(
                    _Finding(
                        "exfiltration",
                        f"exfiltration: {reads} reads in the last "
                        f"{_secs(cfg.exfil_window_ms)} s, then {action} to new destination "
                        f"{_short(destination or '')!r} (>= {cls.exfiltration.min_reads} reads)",
                        cls.exfiltration.response,
                        {
                            "exfiltration.value": str(reads),
                            "exfiltration.threshold": str(cls.exfiltration.min_reads),
                            "exfiltration.destination": _short(destination or ""),
                        },
                    )
                )
        return findings, evidence, notes

    def _deviation(
        self,
        intent: Intent,
        st: AnomalyState,
        param: str,
        rule: DeviationRule,
        evidence: dict[str, str],
        notes: list[str],
    ) -> _Finding | None:
        if param not in intent.parameters:
            return None
        value, why = _number(intent.parameters[param])
        if value is None:
            notes.append(f"deviation.{param} skipped: {why}")
            return None
        baseline = st.numeric.get(_numeric_key(intent.action, param))
        samples = 0 if baseline is None else len(baseline.values)
        if baseline is None or samples < rule.min_samples:
            evidence[f"deviation.{param}.samples"] = str(samples)
            return None
        z, median = _robust_z(baseline, value, rule)
        evidence[f"deviation.{param}.z"] = f"{z:.2f}"
        over = (rule.direction in ("above", "both") and z > rule.max_z) or (
            rule.direction in ("below", "both") and z < -rule.max_z
        )
        if not over:
            return None
        typical = _untransform(median, rule.transform)
        side = "above" if z > 0 else "below"
        return _Finding(
            "deviation",
            f"deviation: {param} {value:g} is {abs(z):.1f} robust z {side} the baseline median "
            f"{typical:.6g} (n={samples}, {rule.transform} scale) > {rule.max_z:g}",
            rule.response,
            {
                "deviation.param": param,
                "deviation.observed": f"{value:g}",
                "deviation.value": f"{z:.2f}",
                "deviation.threshold": f"{rule.max_z:g}",
                "deviation.median": f"{typical:.6g}",
                "deviation.samples": str(samples),
            },
        )

    def _escalation(self, intent: Intent, st: AnomalyState, now: int) -> list[_Finding]:
        after = self.config.quarantine_after
        if after <= 0:
            return []
        window = self.config.quarantine_window_ms
        count = _count_after(st.violations, now - window) + 1
        if count < after:
            return []
        return [
            _Finding(
                "quarantine",
                f"quarantine: {count} anomaly violations by {intent.agent_id!r} within "
                f"{_secs(window)} s (quarantine after {after})",
                "quarantine",
                {"quarantine.value": str(count), "quarantine.threshold": str(after)},
            )
        ]

    def destination(self, intent: Intent, look: _Lookup | None = None) -> str | None:
        """Where the intent sends data: the first configured destination parameter that is a
        non-empty string, else (for export actions) the resource."""
        for param in self.config.destination_params:
            value = intent.parameters.get(param)
            if isinstance(value, str) and value:
                return value[:_MAX_TEXT]
        look = look or self.config.lookup(intent.action)
        return intent.resource[:_MAX_TEXT] if look.is_export else None

    # -- observe ------------------------------------------------------------------

    def observe(self, intent: Intent, state: GateState, outcome: str) -> None:
        """Update the agent's features after the decision (see the module doc for what
        learns from which outcomes)."""
        cfg = self.config
        st = self._state(state, attach=True)
        now = state.now_ms
        look = cfg.lookup(intent.action)
        if st.first_ms is None:
            st.first_ms = now
        st.observed += 1

        # activity: every decided intent, denied ones included
        self._record_event(st, intent.action, now)
        if look.cls.fanout is not None:
            touched = st.fanout.setdefault(look.cls.name, {})
            touched.pop(intent.resource, None)
            touched[intent.resource] = now
            _drop_before(touched, now - cfg.fanout_window_ms, 2 * look.cls.fanout.max + 1)
        if look.is_read:
            bucket_ms = cfg.exfil_window_ms // _READ_BUCKETS
            bucket = now // bucket_ms
            st.reads[bucket] = st.reads.get(bucket, 0) + 1
            if len(st.reads) > _READ_BUCKETS + 1:
                _prune_reads(st.reads, now, cfg.exfil_window_ms)

        memo = self._memo
        if memo is not None and memo[:3] == (intent.intent_id, now, id(st)) and memo[3]:
            st.violations.append(now)
            keep = max(cfg.quarantine_after, 1)
            if len(st.violations) > keep:
                del st.violations[:-keep]
        self._memo = None

        if outcome == "approved":
            self.learn(st, intent, look)
        if st.observed % _SWEEP_EVERY == 0:
            self._sweep(st, now)

    def learn(
        self,
        st: AnomalyState,
        intent: Intent,
        look: _Lookup | None = None,
        *,
        force: bool = False,
    ) -> None:
        """Add an approved intent to the agent's baselines (``observe`` does it for
        approvals; the gate should call it for an intent an operator approved after
        review). Bounded: full known-sets stop growing. A numeric value beyond its rule's
        ``learn_limit`` is not learned unless ``force`` (an operator declaring it normal)."""
        cfg = self.config
        look = look or cfg.lookup(intent.action)
        st.approved += 1
        _add_bounded(st.known_actions, intent.action, cfg.max_known)
        _add_bounded(st.known_kinds, resource_kind(intent.resource), cfg.max_known)
        destination = self.destination(intent, look)
        if destination is not None:
            _add_bounded(st.known_destinations, destination, cfg.max_known)
        for param, rule in look.cls.deviation.items():
            value, _ = _number(intent.parameters.get(param))
            if value is None:
                continue
            key = _numeric_key(intent.action, param)
            baseline = st.numeric.get(key)
            if baseline is None:
                if len(st.numeric) >= cfg.max_tracked_actions:
                    continue
                baseline = st.numeric[key] = NumericBaseline(transform=rule.transform)
            elif (
                not force
                and len(baseline.values) >= rule.min_samples
                and abs(_robust_z(baseline, value, rule)[0]) > rule.learn_limit
            ):
                continue
            baseline.add(
                value,
                rule.transform,
                size=cfg.reservoir_size,
                memory=cfg.reservoir_memory,
                draw=_draw(st.salt, intent.intent_id, param),
            )

    def _record_event(self, st: AnomalyState, action: str, now: int) -> None:
        cfg = self.config
        horizon = now - max(cfg.rate_window_ms, cfg.burst_window_ms)
        times = st.events.get(action)
        if times is None:
            if len(st.events) >= cfg.max_tracked_actions:
                self._sweep(st, now)
                if len(st.events) >= cfg.max_tracked_actions:
                    oldest = min(st.events, key=lambda a: st.events[a][-1])
                    del st.events[oldest]
            times = st.events[action] = []
        cut = bisect_right(times, horizon)
        if cut:
            del times[:cut]
        if not times or now >= times[-1]:
            times.append(now)
        else:
            insort(times, now)
        if len(times) > cfg.max_window_events:
            del times[: len(times) - cfg.max_window_events]

    def _sweep(self, st: AnomalyState, now: int) -> None:
        """Drop expired activity of every action and class (bounded, amortized)."""
        cfg = self.config
        horizon = now - max(cfg.rate_window_ms, cfg.burst_window_ms)
        for action in list(st.events):
            times = st.events[action]
            cut = bisect_right(times, horizon)
            if cut:
                del times[:cut]
            if not times:
                del st.events[action]
        classes = {c.name: c for c in cfg.all_classes() if c.fanout is not None}
        for name in list(st.fanout):
            cls = classes.get(name)
            if cls is None or cls.fanout is None:
                del st.fanout[name]
                continue
            _drop_before(st.fanout[name], now - cfg.fanout_window_ms, 2 * cls.fanout.max + 1)
            if not st.fanout[name]:
                del st.fanout[name]
        _prune_reads(st.reads, now, cfg.exfil_window_ms)
        cut = bisect_right(st.violations, now - cfg.quarantine_window_ms)
        if cut:
            del st.violations[:cut]


# --------------------------------------------------------------------------- helpers


def resource_kind(resource: str) -> str:
    """The kind of a resource: the text before its first ``:`` or ``/`` (``acct:42`` ->
    ``acct``, ``s3://b/k`` -> ``s3``); ``(none)`` if it has no such prefix."""
    for index, char in enumerate(resource[:_MAX_TEXT]):
        if char in ":/":
            return resource[:index] or "(none)"
    return "(none)"


def _draw(salt: str, intent_id: str, param: str) -> tuple[float, int]:
    """Two pseudo-random numbers keyed by the agent's salt: [0, 1) and a slot index."""
    digest = hashlib.blake2b(
        f"{intent_id}|{param}".encode(), key=salt.encode()[:64], digest_size=16
    ).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:], "big")


def _numeric_key(action: str, param: str) -> str:
    return f"{action}|{param}"


def _count_after(times: list[int] | None, cutoff: int) -> int:
    """How many of the sorted ``times`` are later than ``cutoff``."""
    if not times:
        return 0
    return len(times) - bisect_right(times, cutoff)


def _distinct_after(touched: dict[str, int] | None, resource: str, cutoff: int) -> int:
    """Distinct resources touched after ``cutoff``, counting ``resource`` now."""
    if not touched:
        return 1
    expired = 0
    for at in touched.values():  # oldest first; observe keeps the expired prefix short
        if at > cutoff:
            break
        expired += 1
    live = len(touched) - expired
    last = touched.get(resource)
    return live + (0 if last is not None and last > cutoff else 1)


def _drop_before(touched: dict[str, int], cutoff: int, cap: int) -> None:
    while touched:
        first = next(iter(touched))
        if touched[first] > cutoff and len(touched) <= cap:
            break
        del touched[first]


def _reads_after(reads: dict[int, int], now: int, window_ms: int) -> int:
    bucket_ms = window_ms // _READ_BUCKETS
    first = (now - window_ms) // bucket_ms
    return sum(count for bucket, count in reads.items() if bucket > first)


def _prune_reads(reads: dict[int, int], now: int, window_ms: int) -> None:
    first = (now - window_ms) // (window_ms // _READ_BUCKETS)
    for bucket in [b for b in reads if b <= first]:
        del reads[bucket]


def _add_bounded(known: set[str], value: str, limit: int) -> None:
    if len(known) < limit:
        known.add(value[:_MAX_TEXT])


def _number(raw: object) -> tuple[float | None, str]:
    """A parameter value as a float, or None and why it cannot be judged."""
    if raw is None:
        return None, "absent"
    if isinstance(raw, bool):
        return None, f"{raw} is a boolean, not a number"
    if isinstance(raw, int):
        if abs(raw) >= _CLAMP:
            return (_CLAMP if raw > 0 else -_CLAMP), ""  # no float(raw): it overflows
        return float(raw), ""
    if isinstance(raw, float):
        if not math.isfinite(raw):
            return None, f"{raw} is not a finite number"
        return max(-_CLAMP, min(_CLAMP, raw)), ""
    if isinstance(raw, str):
        return None, f"{_short(raw, 40)!r} is a string, not a number"
    return None, f"a {type(raw).__name__} is not a number"


def _robust_z(baseline: NumericBaseline, value: float, rule: DeviationRule) -> tuple[float, float]:
    """(robust z-score of ``value``, baseline median), in the rule's transformed units."""
    median, scale = baseline.stats(rule.transform)
    return (_transform(value, rule.transform) - median) / max(scale, rule.min_scale), median


def _transform(value: float, transform: str) -> float:
    if transform == "log":
        return math.copysign(math.log1p(abs(value)), value)
    return value


def _untransform(value: float, transform: str) -> float:
    if transform == "log":
        return math.copysign(math.expm1(min(abs(value), 700.0)), value)
    return value


def _robust_stats(values: Iterable[float], transform: str) -> tuple[float, float]:
    """Median and robust scale of the transformed values.

    The scale is the larger of 1.4826 * MAD and the 10-90 % inter-decile range / 2.5631
    (both estimate sigma for normal data). The MAD alone collapses when many values are
    identical (a flood of equal page sizes, say) and would then flag every ordinary
    variation; the inter-decile range keeps the spread of the rest. When both are 0 the
    mean absolute deviation (* 1.2533) is used, and the result is floored at 1 % of
    |median|."""
    xs = sorted(_transform(v, transform) for v in values)
    if not xs:
        return 0.0, 1.0
    median = _median(xs)
    deviations = sorted(abs(x - median) for x in xs)
    last = len(xs) - 1
    decile_spread = (xs[int(0.9 * last)] - xs[int(0.1 * last)]) / _IDR_TO_SIGMA
    spread = max(_MAD_TO_SIGMA * _median(deviations), decile_spread)
    if spread == 0.0:  # most values are equal: fall back to the mean absolute deviation
        spread = _MEANAD_TO_SIGMA * sum(deviations) / len(deviations)
    return median, max(spread, 0.01 * abs(median), 1e-9)


def _median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    mid = n // 2
    if n % 2:
        return sorted_values[mid]
    return (sorted_values[mid - 1] + sorted_values[mid]) / 2


def _threshold(feature: str, reason: str, value: int, limit: Limit) -> _Finding:
    return _Finding(
        feature,
        reason,
        limit.response,
        {f"{feature}.value": str(value), f"{feature}.threshold": str(limit.max)},
    )


def _flag(feature: str, reason: str, value: str, flag: Flag) -> _Finding:
    return _Finding(
        feature,
        reason,
        flag.response,
        {f"{feature}.value": _short(value), f"{feature}.threshold": "known to the baseline"},
    )


def _n(n: int, config: AnomalyConfig) -> str:
    """A window count; at the state bound the true count may be higher."""
    return f">={n}" if n > config.max_window_events else str(n)


def _secs(ms: int) -> str:
    return f"{ms / 1000:g}"


def _hours(ms: int) -> str:
    return f"{ms / 3_600_000:.1f}".rstrip("0").rstrip(".")


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
