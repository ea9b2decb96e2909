"""One agent's integrity state (:class:`IntegrityState`): the intents seen (id, nonce,
fingerprint) and the highest accepted sequence, bounded, with its JSON form; and
:class:`UntrustedState`, what stands in for it when the stored state was not trusted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from processors.exceptions import TrustplaneError
from processors.layers.integrity.resets import RESET_KIND
from processors.layers.integrity.values import kind_of

__all__ = ["IntegrityState", "IntegrityStateError", "MAX_SEQUENCE", "UntrustedState"]

MAX_SEQUENCE: Final = 2**63 - 1
"""The largest sequence an Avro ``long`` can carry."""
_STATE_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_V1_FIELDS = frozenset({"version", "highest_sequence", "entries"})
_V2_FIELDS = _V1_FIELDS | {"not_before_ms"}


class IntegrityStateError(TrustplaneError):
    """Stored or in-memory integrity state is malformed; the worker must fail closed."""


class _Seen:
    """One remembered intent: its id, its nonce, its fingerprint (None: not known), and
    when the gate saw it."""

    __slots__ = ("intent_id", "nonce", "fingerprint", "seen_at_ms")

    def __init__(
        self, intent_id: str, nonce: str, seen_at_ms: int, fingerprint: str | None
    ) -> None:
        self.intent_id = intent_id
        self.nonce = nonce
        self.seen_at_ms = seen_at_ms
        self.fingerprint = fingerprint

    def same_intent(self, intent_id: str, nonce: str, fingerprint: str | None) -> bool:
        """The same id and nonce, and the same fingerprint where both are known."""
        return (
            self.intent_id == intent_id
            and self.nonce == nonce
            and (self.fingerprint is None or fingerprint is None or self.fingerprint == fingerprint)
        )


class IntegrityState:
    """One agent's integrity state: the intents seen and the highest sequence.

    Entries are kept in the order they were seen; each id and nonce points at the latest
    entry that holds it, so a lookup is one dict access and forgetting the oldest entry
    is O(1). ``not_before_ms`` is set when an operator reset the agent's state (after the
    stored state failed authentication): intents issued before it cannot be checked for
    replay, so they are refused; it is dropped once the replay retention has passed it.
    ``to_dict``/``from_dict`` use only JSON types::

        {"version": 2, "highest_sequence": 41 | null, "not_before_ms": int | null,
         "entries": [[intent_id, nonce, seen_at_ms, fingerprint | null], ...]}  # oldest first

    (version 1, without ``not_before_ms`` and fingerprints, is still read.)
    """

    __slots__ = ("highest_sequence", "not_before_ms", "_entries", "_by_id", "_by_nonce")

    def __init__(
        self, highest_sequence: int | None = None, *, not_before_ms: int | None = None
    ) -> None:
        self.highest_sequence = highest_sequence
        self.not_before_ms = not_before_ms
        self._entries: deque[_Seen] = deque()
        self._by_id: dict[str, _Seen] = {}
        self._by_nonce: dict[str, _Seen] = {}

    def __len__(self) -> int:
        """How many intents are remembered."""
        return len(self._entries)

    def id_seen_at(self, intent_id: str) -> int | None:
        """When the gate last saw this intent id (if it still remembers it)."""
        entry = self._by_id.get(intent_id)
        return None if entry is None else entry.seen_at_ms

    def nonce_used(self, nonce: str) -> tuple[str, int] | None:
        """(intent id, seen at) of the latest intent that used this nonce, if remembered."""
        entry = self._by_nonce.get(nonce)
        return None if entry is None else (entry.intent_id, entry.seen_at_ms)

    def duplicate_seen_at(self, intent_id: str, nonce: str, fingerprint: str | None) -> int | None:
        """When the gate saw this very intent (same id, nonce and fingerprint), if it
        remembers it; None for a new intent, or a different one reusing the id or nonce."""
        entry = self._by_id.get(intent_id)
        if entry is None or not entry.same_intent(intent_id, nonce, fingerprint):
            entry = self._by_nonce.get(nonce)
            if entry is None or not entry.same_intent(intent_id, nonce, fingerprint):
                return None
        return entry.seen_at_ms

    def remember(
        self, intent_id: str, nonce: str, seen_at_ms: int, fingerprint: str | None = None
    ) -> None:
        """Remember an intent. A repeat (id and nonce both known) adds nothing, so a
        flood of replays cannot push real entries out."""
        if intent_id in self._by_id and nonce in self._by_nonce:
            return
        entry = _Seen(intent_id, nonce, seen_at_ms, fingerprint)
        self._entries.append(entry)
        self._by_id[intent_id] = entry
        self._by_nonce[nonce] = entry

    def prune(self, now_ms: int, retention_ms: int, max_remembered: int) -> int:
        """Forget entries seen more than ``retention_ms`` before ``now_ms`` and the oldest
        beyond ``max_remembered``; return how many were forgotten. Amortized O(1) per
        remembered entry: each is forgotten once. (If the gate's clock went backwards, an
        expired entry behind a newer one waits its turn; lookups ignore it meanwhile.)
        A reset's ``not_before_ms`` older than the retention is dropped too: the replay
        window refuses what it refused."""
        cutoff = now_ms - retention_ms
        if self.not_before_ms is not None and self.not_before_ms < cutoff:
            self.not_before_ms = None
        entries = self._entries
        dropped = 0
        while entries and (len(entries) > max_remembered or entries[0].seen_at_ms < cutoff):
            self._forget(entries.popleft())
            dropped += 1
        return dropped

    def trim(self, max_remembered: int) -> int:
        """Forget the oldest entries beyond ``max_remembered``; return how many."""
        dropped = 0
        while len(self._entries) > max_remembered:
            self._forget(self._entries.popleft())
            dropped += 1
        return dropped

    def _forget(self, entry: _Seen) -> None:
        if self._by_id.get(entry.intent_id) is entry:
            del self._by_id[entry.intent_id]
        if self._by_nonce.get(entry.nonce) is entry:
            del self._by_nonce[entry.nonce]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "highest_sequence": self.highest_sequence,
            "not_before_ms": self.not_before_ms,
            "entries": [[e.intent_id, e.nonce, e.seen_at_ms, e.fingerprint] for e in self._entries],
        }

    @classmethod
    def from_dict(cls, data: object) -> IntegrityState:
        """Rebuild from :meth:`to_dict` output; anything else is an IntegrityStateError."""
        if not isinstance(data, Mapping):
            raise _state_error(f"expected an object, got {kind_of(data)}")
        version = data.get("version")
        if type(version) is not int or version not in _READABLE_VERSIONS:
            raise _state_error(
                f"version {version!r} is not supported (this worker reads versions "
                f"{', '.join(map(str, _READABLE_VERSIONS))})"
            )
        fields = _V1_FIELDS if version == 1 else _V2_FIELDS
        if set(data) != fields:
            raise _state_error(
                f"expected the fields {', '.join(sorted(fields))}; got "
                f"{', '.join(sorted(str(k) for k in data)) or 'none'}"
            )
        highest = data["highest_sequence"]
        if highest is not None and (type(highest) is not int or not 0 <= highest <= MAX_SEQUENCE):
            raise _state_error(f"highest_sequence {highest!r} is not null or 0..2^63-1")
        not_before = data.get("not_before_ms")
        if not_before is not None and type(not_before) is not int:
            raise _state_error(f"not_before_ms {not_before!r} is not null or an integer")
        raw = data["entries"]
        if not isinstance(raw, list):
            raise _state_error(f"entries must be a list, got {kind_of(raw)}")
        width = 3 if version == 1 else 4
        state = cls(highest, not_before_ms=not_before)
        for index, item in enumerate(raw):
            if (
                not isinstance(item, list | tuple)
                or len(item) != width
                or not isinstance(item[0], str)
                or not isinstance(item[1], str)
                or type(item[2]) is not int
                or (width == 4 and item[3] is not None and not isinstance(item[3], str))
            ):
                shape = "[intent_id, nonce, seen_at_ms" + (", fingerprint]" if width == 4 else "]")
                raise _state_error(f"entries[{index}] is {str(item)[:80]}, not {shape}")
            entry = _Seen(item[0], item[1], item[2], item[3] if width == 4 else None)
            state._entries.append(entry)
            state._by_id[entry.intent_id] = entry
            state._by_nonce[entry.nonce] = entry
        return state


@dataclass(frozen=True, slots=True)
class UntrustedState:
    """Stands in for an agent's integrity state when the worker could not trust what it
    restored for the agent (``streams/gate/state.py``): a record on ``gate-state`` that
    failed authentication, was unreadable, a tombstone, or an older write replayed.

    The agent's replay memory is then unknown, so the integrity layer denies every intent
    of the agent with :attr:`reason` until an operator resets the state with a signed
    ``agent.state.reset`` command naming this ``partition`` and ``offset`` (see
    :mod:`processors.layers.integrity.resets`). It is never stored.
    """

    agent_id: str
    partition: int
    offset: int
    problem: str
    """What is wrong with the record, as a predicate: "failed authentication (...)",
    "is a tombstone ...", "is an older write of the gate replayed ...", ..."""

    @property
    def reason(self) -> str:
        return (
            f"gate state of agent {self.agent_id!r} is not trusted: the record at gate-state "
            f"partition {self.partition} offset {self.offset} {self.problem}; its replay "
            "memory is unknown, so every intent of this agent is denied until an operator, "
            "having checked who wrote that record, resets it with a signed "
            f"{RESET_KIND} command: `trustplane agents reset-state {self.agent_id} "
            f"--partition {self.partition} --offset {self.offset} --reason ...` (intents "
            "issued before the reset stay refused)"
        )


def _state_error(problem: str) -> IntegrityStateError:
    return IntegrityStateError(
        f"stored integrity state is malformed: {problem}",
        hint="the worker denies this agent's intents until the state is repaired or reset "
        "(a reset forgets remembered ids and the sequence)",
    )
