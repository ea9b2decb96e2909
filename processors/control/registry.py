"""The agent registry as the decision layers read it: immutable records, built by
:class:`processors.control.ControlState` from signed operator commands.

An :class:`AgentRecord` is replaced as a whole when a command changes it (never
mutated in place), so a layer that holds one sees a consistent agent.

Key windows are half-open: a key signs from ``not_before_ms`` (inclusive) until
``not_after_ms`` (exclusive); ``None`` means no bound. A revoked key (``revoked_at_ms``
set) is refused at any time, also before its revocation time: revoking is what an
operator does when a key leaked, and the leak may predate the command.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from processors.timefmt import iso_ms  # re-exported: the layers import it from here

__all__ = [
    "AgentDirectory",
    "AgentStatus",
    "AGENT_STATUSES",
    "AgentKey",
    "AgentRecord",
    "IDENTIFIER_PATTERN",
    "RESERVED_AGENT_IDS",
    "is_identifier",
    "iso_ms",
]

AgentStatus = Literal["active", "suspended", "quarantined", "revoked"]
AGENT_STATUSES: tuple[AgentStatus, ...] = ("active", "suspended", "quarantined", "revoked")

IDENTIFIER_PATTERN = re.compile(r"[A-Za-z0-9._:@+=-]{1,256}")
"""What a registered agent id or key id may look like. No ``/`` and no white space, so
that control-command subjects (``<agent>``, ``<agent>/<kid>``,
``<agent>/status/<what>``) can never collide."""


RESERVED_AGENT_IDS = frozenset({"runtime", "killswitch", "review", "policy", "control", "agent"})
"""Agent ids that are the first segment of other layers' control subjects
(``runtime/<id>``, ``killswitch/<scope>/<target>``, ``review/<intent>``, ...): an agent
with such an id could collide with them on the compacted topic, so none may have one."""


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and IDENTIFIER_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class AgentKey:
    """One Ed25519 public key of an agent, parsed once when the agent is registered."""

    kid: str
    public_key: Ed25519PublicKey = field(repr=False, compare=False)
    not_before_ms: int | None = None
    not_after_ms: int | None = None
    revoked_at_ms: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at_ms is not None

    def window_problem(self, now_ms: int) -> str | None:
        """Why the key may not sign at ``now_ms`` (outside its window), or None."""
        if self.not_before_ms is not None and now_ms < self.not_before_ms:
            return (
                f"key {self.kid!r} is not valid before {iso_ms(self.not_before_ms)} "
                f"(now {iso_ms(now_ms)})"
            )
        if self.not_after_ms is not None and now_ms >= self.not_after_ms:
            return f"key {self.kid!r} expired at {iso_ms(self.not_after_ms)} (now {iso_ms(now_ms)})"
        return None


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """A registered agent: its keys, roles, where it may run, and its status.

    ``runtimes`` / ``environments`` empty means any. ``status`` is the most severe of
    what applies (revoked > quarantined > suspended > active); ``status_reason`` and
    ``status_since_ms`` describe that one.
    """

    agent_id: str
    keys: Mapping[str, AgentKey]
    roles: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    status: AgentStatus = "active"
    status_reason: str = ""
    status_since_ms: int | None = None
    registered_at_ms: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.keys, MappingProxyType):
            object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    @property
    def active(self) -> bool:
        return self.status == "active"


class AgentDirectory(Protocol):
    """Where the layers look agents up: :class:`processors.control.ControlState`."""

    @property
    def agents(self) -> Mapping[str, AgentRecord]: ...
