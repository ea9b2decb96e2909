"""Per-agent state of the stateful layers, kept exactly-once with the decisions.

Intents are keyed by agent id, so one agent's state lives with one ``intents``
partition. The worker keeps that state in memory and writes every agent it changed
to the compacted ``gate-state`` changelog topic (same partition number, key = agent
id) *inside the transaction* that writes the decisions and commits the offsets. On
assignment it rebuilds each partition's state from the committed changelog; after an
aborted transaction it rebuilds again, so in-memory state never runs ahead of what
Kafka committed. A worker restarted after SIGKILL therefore still knows every nonce,
sequence and baseline its predecessor committed.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from processors.exceptions import TrustplaneError
from processors.verdict import StatefulLayer
from streams import kafka
from streams.config import Settings
from streams.kafka import Record

StateCodec = Any  # a StatefulLayer or anything with state_key / dump_state / load_state

__all__ = ["AgentStates", "KafkaAgentStates", "StateError", "STATE_TOPIC"]

log = logging.getLogger(__name__)

STATE_TOPIC = "gate-state"
FORMAT_VERSION = 1


class StateError(TrustplaneError):
    """Agent state could not be restored or saved."""


class AgentStates:
    """In-memory per-agent state (what tests and the offline evaluation use)."""

    def __init__(
        self,
        layers: Sequence[StatefulLayer | StateCodec] = (),
        *,
        spill_dir: Path | None = None,
        max_cached: int = 10_000,
    ) -> None:
        """``spill_dir``: keep at most ``max_cached`` agents decoded in memory and the
        rest, encoded, in a local RocksDB there (``rocksdict``), for estates whose state
        outgrows memory. RocksDB is only a cache of the changelog, rebuilt from it."""
        self.layers = {layer.state_key: layer for layer in layers}
        self._states: dict[int, dict[str, dict[str, Any]]] = {}
        self._dirty: set[tuple[int, str]] = set()
        self._db: Any = None
        self.max_cached = max_cached
        self._recent: OrderedDict[tuple[int, str], None] = OrderedDict()
        if spill_dir is not None:
            from rocksdict import Rdict

            shutil.rmtree(spill_dir, ignore_errors=True)  # a cache: rebuilt on assignment
            spill_dir.mkdir(parents=True, exist_ok=True)
            self._db = Rdict(str(spill_dir))

    def get(self, partition: int, agent_id: str) -> dict[str, Any]:
        agents = self._states.setdefault(partition, {})
        state = agents.get(agent_id)
        if state is None and self._db is not None:
            stored = self._db.get(_spill_key(partition, agent_id))
            if stored is not None:
                self.load(partition, agent_id, stored)
                state = agents[agent_id]
        if state is None:
            state = agents[agent_id] = {}
        if self._db is not None:
            self._recent[(partition, agent_id)] = None
            self._recent.move_to_end((partition, agent_id))
        return state

    def agents(self, partition: int) -> list[tuple[str, dict[str, Any]]]:
        names = set(self._states.get(partition, {}))
        if self._db is not None:
            prefix = _spill_key(partition, "")
            for key in self._db.keys(from_key=prefix):
                if not key.startswith(prefix):
                    break
                names.add(key[len(prefix) :].decode())
        return [(name, self.get(partition, name)) for name in sorted(names)]

    def spill(self) -> None:
        """Store the changed agents in RocksDB; evict the least recently used beyond
        ``max_cached`` from memory (call after their state was written to Kafka)."""
        if self._db is None:
            return
        for partition, agent_id in self._dirty:
            self._db[_spill_key(partition, agent_id)] = self.encode(partition, agent_id)
        while len(self._recent) > self.max_cached:  # all of them are in RocksDB now
            (partition, agent_id), _ = self._recent.popitem(last=False)
            self._states.get(partition, {}).pop(agent_id, None)

    def _restored(self, partition: int, agent_id: str, value: bytes | None) -> None:
        if self._db is None:
            if value is None:
                self._states.setdefault(partition, {}).pop(agent_id, None)
            else:
                self.load(partition, agent_id, value)
            return
        key = _spill_key(partition, agent_id)
        if value is None:
            self._db.delete(key)
        else:
            self.load(partition, agent_id, value)  # checks it is readable, then spills it
            self._db[key] = value
            self._states[partition].pop(agent_id, None)

    def touched(self, partition: int, agent_id: str) -> None:
        self._dirty.add((partition, agent_id))

    def dirty(self) -> list[tuple[int, str]]:
        return sorted(self._dirty)

    def clear_dirty(self) -> None:
        self._dirty.clear()

    def drop(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._states.pop(partition, None)
            if self._db is not None:
                prefix = _spill_key(partition, "")
                stale = []
                for key in self._db.keys(from_key=prefix):
                    if not key.startswith(prefix):
                        break
                    stale.append(key)
                for key in stale:
                    self._db.delete(key)
                self._recent = OrderedDict((k, None) for k in self._recent if k[0] != partition)
        self._dirty = {d for d in self._dirty if d[0] in self._states}

    def encode(self, partition: int, agent_id: str) -> bytes:
        state = self._states.get(partition, {}).get(agent_id, {})
        body = {
            "v": FORMAT_VERSION,
            "layers": {
                key: self.layers[key].dump_state(value)
                for key, value in state.items()
                if key in self.layers
            },
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    def load(self, partition: int, agent_id: str, value: bytes) -> None:
        try:
            body = json.loads(value)
            if body.get("v") != FORMAT_VERSION:
                raise ValueError(f"state format {body.get('v')!r}, expected {FORMAT_VERSION}")
            state = {
                key: self.layers[key].load_state(data)
                for key, data in body["layers"].items()
                if key in self.layers
            }
        except Exception as exc:  # noqa: BLE001 - any unreadable state is a typed error
            raise StateError(
                f"state of agent {agent_id!r} (partition {partition}) is unreadable: {exc}",
                hint="the worker will not decide for this partition; inspect the gate-state topic",
            ) from exc
        self._states.setdefault(partition, {})[agent_id] = state


class KafkaAgentStates(AgentStates):
    """AgentStates backed by the ``gate-state`` changelog topic."""

    def __init__(
        self,
        settings: Settings,
        layers: Sequence[StatefulLayer | StateCodec],
        *,
        spill_dir: Path | None = None,
        max_cached: int = 10_000,
    ) -> None:
        super().__init__(layers, spill_dir=spill_dir, max_cached=max_cached)
        self.topic = settings.topic(STATE_TOPIC)
        self._consumer = kafka.consumer(settings, f"{settings.group_id}-state-restore")

    def restore(self, partitions: Iterable[int], timeout: float = 60.0) -> int:
        """Rebuild the state of these partitions from the committed changelog."""
        partitions = sorted(set(partitions))
        self.drop(partitions)
        count = 0
        started = time.monotonic()
        for partition in partitions:
            self._states[partition] = {}
            tp = TopicPartition(self.topic, partition)
            low, high = self._consumer.get_watermark_offsets(tp, timeout=timeout)
            if high <= low:
                continue
            self._consumer.assign([TopicPartition(self.topic, partition, low)])
            position, idle = low, 0
            # the end may be a commit/abort marker, never delivered: stop when idle
            while position < high and idle < 2:
                if time.monotonic() - started > timeout:
                    raise StateError(f"restoring {self.topic}/{partition} took over {timeout} s")
                message = self._consumer.poll(0.5)
                if message is None:
                    (now_at,) = self._consumer.position([TopicPartition(self.topic, partition)])
                    position = max(position, now_at.offset)
                    idle += 1
                    continue
                idle = 0
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise StateError(f"restoring {self.topic}/{partition}: {error.str()}")
                    break
                position = (message.offset() or 0) + 1
                self._restored(partition, (message.key() or b"").decode(), message.value())
                count += 1
        self._consumer.unassign()
        return count

    def changes(self) -> list[Record]:
        """A record of every changed agent's state, for the batch's transaction (and the
        changes are no longer pending)."""
        records = [
            Record(self.topic, agent_id.encode(), self.encode(partition, agent_id), partition)
            for partition, agent_id in self.dirty()
        ]
        self.spill()
        self.clear_dirty()
        return records

    def close(self) -> None:
        self._consumer.close()
        if self._db is not None:
            self._db.close()


def _spill_key(partition: int, agent_id: str) -> bytes:
    return f"{partition:05d}/{agent_id}".encode()
