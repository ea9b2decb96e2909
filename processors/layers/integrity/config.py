"""Settings of the integrity layer: :class:`IntegrityConfig`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from processors.exceptions import ConfigError
from processors.layers.integrity.values import kind_of

__all__ = ["IntegrityConfig", "QuarantineScope"]

QuarantineScope = Literal["agent", "runtime"]
_SCOPES: tuple[QuarantineScope, ...] = ("agent", "runtime")

_MAX_REMEMBERED_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class IntegrityConfig:
    """Settings of the integrity layer.

    ``replay_retention_ms`` (default 24 h): how long an intent id / nonce is remembered.
    Keep it longer than the longest intent lifetime (``expires_at_ms - issued_at_ms``)
    agents use; intents issued longer ago than this are denied (they can no longer be
    checked for replay).

    ``max_remembered`` (default 10,000): ids/nonces remembered per agent; the oldest are
    forgotten first. It bounds the state kept per agent: about 90 bytes of JSON per entry
    with UUID ids and nonces, so 10,000 entries are about 0.9 MB -- close to Kafka's
    default 1 MB record limit if the worker stores the whole state as one record.

    ``sequence_gap_tolerance`` (default 100): how many sequence numbers may be skipped
    (intents an agent built but never published) before a gap is a violation.

    ``quarantine_scope`` (default ``"agent"``): what a violation quarantines. An agent's
    key may be stolen and used from elsewhere -- from a runtime that attests correctly or
    claims to be another one -- so quarantining the *agent* stops every use of the
    identity, wherever it comes from. ``"runtime"`` contains a compromised host but lets a
    stolen key keep acting from other runtimes; choose it only where runtimes are shared by
    many agents and the key is bound to its runtime by other means.
    """

    replay_retention_ms: int = 24 * 60 * 60 * 1000
    max_remembered: int = 10_000
    sequence_gap_tolerance: int = 100
    quarantine_scope: QuarantineScope = "agent"

    def __post_init__(self) -> None:
        _check_int("replay_retention_ms", self.replay_retention_ms, minimum=1)
        _check_int("max_remembered", self.max_remembered, minimum=1, maximum=_MAX_REMEMBERED_LIMIT)
        _check_int("sequence_gap_tolerance", self.sequence_gap_tolerance, minimum=0)
        if self.quarantine_scope not in _SCOPES:
            raise ConfigError(
                f"integrity.quarantine_scope must be 'agent' or 'runtime', got "
                f"{self.quarantine_scope!r}",
                hint="'agent' (the default) stops every use of a stolen key",
            )

    @classmethod
    def from_mapping(cls, data: object, *, source: str = "integrity") -> IntegrityConfig:
        """Build from a settings table; unknown keys and wrong types are a ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a table of settings, got {kind_of(data)}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(unknown)}",
                hint=f"known settings: {', '.join(sorted(known))}",
            )
        for name in ("replay_retention_ms", "max_remembered", "sequence_gap_tolerance"):
            if name in data and (type(data[name]) is not int):
                raise ConfigError(
                    f"{source}.{name} must be an integer, got {kind_of(data[name])}",
                )
        if "quarantine_scope" in data and not isinstance(data["quarantine_scope"], str):
            raise ConfigError(
                f"{source}.quarantine_scope must be 'agent' or 'runtime', got "
                f"{kind_of(data['quarantine_scope'])}"
            )
        try:
            return cls(**{str(k): v for k, v in data.items()})
        except ConfigError as exc:
            raise ConfigError(
                exc.reason.replace("integrity.", f"{source}.", 1), hint=exc.hint
            ) from None


def _check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> None:
    if type(value) is not int:
        raise ConfigError(f"integrity.{name} must be an integer, got {kind_of(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"integrity.{name} must be {bound}, got {value}")
