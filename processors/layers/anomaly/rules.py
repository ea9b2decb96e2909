"""The anomaly rules: thresholds and responses per action class (no loading here).

An :class:`ActionClass` names the actions it covers (``fnmatch`` patterns) and, per
feature, a :class:`Limit` (count thresholds), a :class:`Flag` (novelty), a
:class:`DeviationRule` per numeric parameter or an :class:`ExfiltrationRule`; ``None``
turns the feature off for the class. :mod:`.config` reads them from the config file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "ActionClass",
    "BUILTIN_DEFAULT",
    "DIRECTIONS",
    "DeviationRule",
    "ExfiltrationRule",
    "FEATURES",
    "Flag",
    "Limit",
    "RESPONSES",
    "SEVERITY",
    "TRANSFORMS",
]

RESPONSES: Final = ("review", "deny", "quarantine")
"""Anomaly responses, least to most severe."""
SEVERITY: Final = {name: rank for rank, name in enumerate(RESPONSES)}

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

TRANSFORMS: Final = ("log", "none")
DIRECTIONS: Final = ("above", "below", "both")


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


BUILTIN_DEFAULT: Final = ActionClass(
    name="default",
    rate=Limit(60, "review"),
    burst=Limit(10, "deny"),
    fanout=Limit(500, "review"),
    novel_action=Flag("review"),
    novel_resource_kind=Flag("review"),
)
