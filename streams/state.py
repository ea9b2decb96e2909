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
import time
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from processors.exceptions import TrustplaneError
from processors.verdict import StatefulLayer
from streams.config import Settings

StateCodec = Any  # a StatefulLayer or anything with state_key / dump_state / load_state

__all__ = ["AgentStates", "KafkaAgentStates", "StateError", "STATE_TOPIC"]

log = logging.getLogger(__name__)

STATE_TOPIC = "gate-state"
FORMAT_VERSION = 1


class StateError(TrustplaneError):
    """Agent state could not be restored or saved."""


class AgentStates:
    """In-memory per-agent state (what tests and the offline evaluation use)."""

    def __init__(self, layers: Sequence[StatefulLayer | StateCodec] = ()) -> None:
        self.layers = {layer.state_key: layer for layer in layers}
        self._states: dict[int, dict[str, dict[str, Any]]] = {}
        self._dirty: set[tuple[int, str]] = set()

    def get(self, partition: int, agent_id: str) -> dict[str, Any]:
        agents = self._states.setdefault(partition, {})
        state = agents.get(agent_id)
        if state is None:
            state = agents[agent_id] = {}
        return state

    def agents(self, partition: int) -> list[tuple[str, dict[str, Any]]]:
        return list(self._states.get(partition, {}).items())

    def touched(self, partition: int, agent_id: str) -> None:
        self._dirty.add((partition, agent_id))

    def dirty(self) -> list[tuple[int, str]]:
        return sorted(self._dirty)

    def clear_dirty(self) -> None:
        self._dirty.clear()

    def drop(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._states.pop(partition, None)
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

    def __init__(self, settings: Settings, layers: Sequence[StatefulLayer | StateCodec]) -> None:
        super().__init__(layers)
        self.topic = settings.topic(STATE_TOPIC)
        self._consumer = Consumer(
            {
                **settings.kafka_config(),
                "group.id": f"{settings.group_id}-state-restore",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )

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
                key = (message.key() or b"").decode()
                if message.value() is None:
                    self._states[partition].pop(key, None)
                else:
                    self.load(partition, key, message.value())  # type: ignore[arg-type]
                count += 1
        self._consumer.unassign()
        return count

    def write(self, producer: Producer) -> int:
        """Produce every changed agent's state into the producer's open transaction."""
        written = 0
        for partition, agent_id in self.dirty():
            producer.produce(
                self.topic,
                key=agent_id.encode(),
                value=self.encode(partition, agent_id),
                partition=partition,
            )
            written += 1
        self.clear_dirty()
        return written

    def close(self) -> None:
        self._consumer.close()
