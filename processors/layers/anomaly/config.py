"""The validated anomaly configuration (``policies/anomaly.toml``): :class:`AnomalyConfig`.

Loading checks every key and type (unknown keys and wrong types name their key path) and
cross-checks thresholds against the state bounds (``limits``), so a config the bounded
state could never honour is refused at start. :meth:`AnomalyConfig.lookup` maps an
action to its class (first matching ``[[class]]``, else ``default``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Final

from processors.exceptions import ConfigError
from processors.layers.anomaly.rules import (
    BUILTIN_DEFAULT,
    DIRECTIONS,
    TRANSFORMS,
    ActionClass,
    DeviationRule,
    ExfiltrationRule,
    Flag,
    Limit,
)
from processors.layers.anomaly.table import Table, kind_of
from processors.layers.anomaly.windows import READ_BUCKETS

__all__ = ["AnomalyConfig", "DEFAULT_CONFIG_PATH", "Lookup"]

DEFAULT_CONFIG_PATH: Final = Path(__file__).resolve().parents[3] / "policies" / "anomaly.toml"
_LOOKUP_CACHE: Final = 4096


@dataclass(frozen=True, slots=True)
class Lookup:
    cls: ActionClass
    is_read: bool
    is_export: bool


@dataclass(frozen=True)
class AnomalyConfig:
    """Validated anomaly configuration. Build with :meth:`from_mapping` / :meth:`from_file`."""

    default: ActionClass = field(default_factory=lambda: BUILTIN_DEFAULT)
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
    _cache: dict[str, Lookup] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        _cross_check(self, self.source)

    # -- lookup ---------------------------------------------------------------

    def lookup(self, action: str) -> Lookup:
        """The action's class (first matching class, else ``default``) and read/export kind."""
        hit = self._cache.get(action)
        if hit is not None:
            return hit
        cls = next(
            (c for c in self.classes if any(fnmatchcase(action, p) for p in c.actions)),
            self.default,
        )
        hit = Lookup(
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
        top = Table(data, "", source, _TOP_KEYS)
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
            BUILTIN_DEFAULT,
            name="default",
        )
        classes: list[ActionClass] = []
        raw_classes = top.get("class")
        if raw_classes is not None:
            if not isinstance(raw_classes, list):
                raise ConfigError(
                    f"{source}: class: expected a list of tables ([[class]]), "
                    f"got {kind_of(raw_classes)}"
                )
            names: set[str] = {"default"}
            for index, raw in enumerate(raw_classes):
                path = f"class[{index}]"
                table = Table(raw, path, source, _CLASS_KEYS | {"name", "actions"})
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
            exfil_window_ms=exfil.integer("window_ms", base.exfil_window_ms, minimum=READ_BUCKETS),
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
    table = Table(data, path, source, keys)
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
                f"{source}: {dev_path}: expected a table of parameter rules, got {kind_of(raw_dev)}"
            )
        rules: dict[str, DeviationRule] = {}
        for param, raw_rule in raw_dev.items():
            rule = Table(
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
                transform=rule.choice("transform", TRANSFORMS, "log"),
                direction=rule.choice("direction", DIRECTIONS, "both"),
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
