"""Reading one table of a parsed (TOML or JSON) config, with exact error messages.

:class:`Table` checks a table's keys against the allowed ones and reads typed values
(integers with a minimum, finite numbers, booleans, choices, pattern lists); every
problem is a :class:`~processors.exceptions.ConfigError` naming the source and the key
path (``class[0].rate.max``), so the operator knows which line to fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from processors.exceptions import ConfigError
from processors.layers.anomaly.rules import RESPONSES

__all__ = ["Table", "kind_of"]


class Table:
    """One table of the config being read, with its key path for error messages."""

    def __init__(self, data: object, path: str, source: str, allowed: Iterable[str]) -> None:
        where = path or "top level"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: {where}: expected a table, got {kind_of(data)}")
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
            f"got {kind_of(value)} {str(value)[:60]!r}"
        )

    def get(self, key: str) -> object | None:
        return self.data.get(key)

    def sub(self, key: str, allowed: Iterable[str]) -> Table:
        value = self.data.get(key)
        return Table(
            {} if value is None else value, self._join(self.path, key), self.source, allowed
        )

    def feature(self, key: str, allowed: Iterable[str]) -> Table | None:
        value = self.data.get(key)
        if value is None:
            return None
        return Table(value, self._join(self.path, key), self.source, allowed)

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


def kind_of(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"a {type(value).__name__}"
