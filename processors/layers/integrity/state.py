"""One agent's integrity state (:class:`IntegrityState`): the intent ids and nonces seen
and the highest accepted sequence, bounded, with its JSON form.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Final

from processors.exceptions import TrustplaneError
from processors.layers.integrity.values import kind_of

__all__ = ["IntegrityState", "IntegrityStateError", "MAX_SEQUENCE"]

MAX_SEQUENCE: Final = 2**63 - 1
"""The largest sequence an Avro ``long`` can carry."""
_STATE_VERSION = 1


class IntegrityStateError(TrustplaneError):
    """Stored or in-memory integrity state is malformed; the worker must fail closed."""


class _Seen:
    """One remembered intent: its id, its nonce, and when the gate saw it."""

    __slots__ = ("intent_id", "nonce", "seen_at_ms")

    def __init__(self, intent_id: str, nonce: str, seen_at_ms: int) -> None:
        self.intent_id = intent_id
        self.nonce = nonce
        self.seen_at_ms = seen_at_ms


class IntegrityState:
    """One agent's integrity state: the ids/nonces seen and the highest sequence.

    Entries are kept in the order they were seen; each id and nonce points at the latest
    entry that holds it, so a lookup is one dict access and forgetting the oldest entry
    is O(1). ``to_dict``/``from_dict`` use only JSON types::

        {"version": 1, "highest_sequence": 41 | null,
         "entries": [[intent_id, nonce, seen_at_ms], ...]}   # oldest first
    """

    __slots__ = ("highest_sequence", "_entries", "_by_id", "_by_nonce")

    def __init__(self, highest_sequence: int | None = None) -> None:
        self.highest_sequence = highest_sequence
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

    def remember(self, intent_id: str, nonce: str, seen_at_ms: int) -> None:
        """Remember an intent. An exact repeat (id and nonce both known) adds nothing, so
        a flood of replays cannot push real entries out."""
        if intent_id in self._by_id and nonce in self._by_nonce:
            return
        entry = _Seen(intent_id, nonce, seen_at_ms)
        self._entries.append(entry)
        self._by_id[intent_id] = entry
        self._by_nonce[nonce] = entry

    def prune(self, now_ms: int, retention_ms: int, max_remembered: int) -> int:
        """Forget entries seen more than ``retention_ms`` before ``now_ms`` and the oldest
        beyond ``max_remembered``; return how many were forgotten. Amortized O(1) per
        remembered entry: each is forgotten once. (If the gate's clock went backwards, an
        expired entry behind a newer one waits its turn; lookups ignore it meanwhile.)"""
        cutoff = now_ms - retention_ms
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
            "entries": [[e.intent_id, e.nonce, e.seen_at_ms] for e in self._entries],
        }

    @classmethod
    def from_dict(cls, data: object) -> IntegrityState:
        """Rebuild from :meth:`to_dict` output; anything else is an IntegrityStateError."""
        if not isinstance(data, Mapping):
            raise _state_error(f"expected an object, got {kind_of(data)}")
        if set(data) != {"version", "highest_sequence", "entries"}:
            raise _state_error(
                f"expected the fields entries, highest_sequence, version; got "
                f"{', '.join(sorted(str(k) for k in data)) or 'none'}"
            )
        if data["version"] != _STATE_VERSION or type(data["version"]) is not int:
            raise _state_error(
                f"version {data['version']!r} is not supported (this worker reads "
                f"version {_STATE_VERSION})"
            )
        highest = data["highest_sequence"]
        if highest is not None and (type(highest) is not int or not 0 <= highest <= MAX_SEQUENCE):
            raise _state_error(f"highest_sequence {highest!r} is not null or 0..2^63-1")
        raw = data["entries"]
        if not isinstance(raw, list):
            raise _state_error(f"entries must be a list, got {kind_of(raw)}")
        state = cls(highest)
        for index, item in enumerate(raw):
            if (
                not isinstance(item, list | tuple)
                or len(item) != 3
                or not isinstance(item[0], str)
                or not isinstance(item[1], str)
                or type(item[2]) is not int
            ):
                raise _state_error(
                    f"entries[{index}] is {str(item)[:80]}, not [intent_id, nonce, seen_at_ms]"
                )
            entry = _Seen(item[0], item[1], item[2])
            state._entries.append(entry)
            state._by_id[entry.intent_id] = entry
            state._by_nonce[entry.nonce] = entry
        return state


def _state_error(problem: str) -> IntegrityStateError:
    return IntegrityStateError(
        f"stored integrity state is malformed: {problem}",
        hint="the worker denies this agent's intents until the state is repaired or reset "
        "(a reset forgets remembered ids and the sequence)",
    )
