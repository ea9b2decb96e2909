"""Per-agent state of the stateful layers, kept exactly-once with the decisions, and
trusted only when the gate itself wrote it.

Intents are keyed by agent id, so one agent's state lives with one ``intents``
partition. The worker keeps that state in memory and writes every agent it changed
to the compacted ``gate-state`` changelog topic (same partition number, key = agent
id) *inside the transaction* that writes the decisions and commits the offsets. On
assignment it rebuilds each partition's state from the committed changelog; after an
aborted transaction it rebuilds again, so in-memory state never runs ahead of what
Kafka committed. A worker restarted after SIGKILL therefore still knows every nonce,
sequence and baseline its predecessor committed. A warm standby
(``streams/gate/standby.py``) follows the changelog of every partition as it is
committed, so that its takeover reads only the tail.

Only the gate's own writes count
================================

Anyone who can write to ``gate-state`` could otherwise wipe an agent's replay memory
(one empty record and a restart, and a replayed intent is approved again). So every
record is sealed -- an HMAC-SHA256 with the gate state key over the partition, the agent
id and the body, and a count of the agent's writes in the body
(``streams/gate/seal.py`` has the format).

Restoring: the last record of an agent decides
===============================================

For each agent the last record on its partition decides. A record that is authentic,
readable and newer than the agent's earlier writes is its state. Anything else -- a
missing or wrong MAC, another format (including format 1, and JSON or not), an authentic
record a layer cannot load, a tombstone, an older write again -- makes the agent
*untrusted*: the worker logs an ``ALERT``, counts it (:attr:`AgentStates.untrusted_records`,
``on_untrusted``), never crashes on it, writes nothing for the agent, and puts a
:class:`~processors.layers.integrity.UntrustedState` in the agent's integrity slot. The
integrity layer then denies every intent of the agent with a reason that names the
record (partition, offset) -- across restarts too, since nothing newer is written. A
later genuine record (a worker that kept running wrote it) supersedes a forged one.

The gate never writes tombstones, so a tombstone is never genuine (a MAC on a deletion
could not be told from a replay of it: there is no state to count writes in).

The operator's way out is a signed ``agent.state.reset`` control command naming the
record (``processors/layers/integrity/resets.py``); on the agent's next intent the
integrity layer starts a fresh state that refuses every intent issued before the
command, and the worker writes it here, sealed.

What the seal cannot do: a genuine older record written again *and* compacted past its
newer one, or records hidden behind a transaction an intruder leaves open, are not
detectable here -- only the gate workers' principal may write ``gate-state`` (topic and
transactional-id ACLs). A tombstone, once ``delete.retention.ms`` passed and compaction
removed it with the agent's records, leaves the agent without state, so keep that above
``replay_retention_ms`` (then every forgotten intent is outside the replay window).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from processors.exceptions import TrustplaneError
from processors.layers.integrity import IntegrityCheck, UntrustedState
from processors.verdict import StatefulLayer
from streams import kafka, names
from streams.config import Settings
from streams.gate.seal import (
    FORMAT_VERSION,
    STATE_KEY_FILE,
    StateAuthenticationError,
    StateError,
    StateSeal,
    create_state_key,
    load_state_key,
    state_key_path,
)
from streams.kafka import Record

StateCodec = Any  # a StatefulLayer or anything with state_key / dump_state / load_state

__all__ = [
    "FORMAT_VERSION",
    "STATE_KEY_FILE",
    "AgentStates",
    "KafkaAgentStates",
    "StateAuthenticationError",
    "StateError",
    "StateSeal",
    "STATE_TOPIC",
    "create_state_key",
    "load_state_key",
    "read_state_body",
    "state_key_path",
]

log = logging.getLogger(__name__)

STATE_TOPIC = "gate-state"
_WRITES: Final = "_writes"
"""Reserved key in an agent's state dict: how many times the gate stored that state."""
_INTEGRITY: Final = IntegrityCheck.state_key

UntrustedHook = Callable[[UntrustedState], None]

STABLE_WAIT_S = 5.0
"""How long a restore waits for a transaction open on its partitions to end. A committed
one's markers land within milliseconds (seconds while a broker fails over); a dead
owner's batch that never added its offsets stays open until the coordinator aborts it
(``transaction.timeout.ms``, 30 s), and nothing of it can commit: not worth a longer
takeover."""


# -- per-agent state ---------------------------------------------------------------------


class AgentStates:
    """Per-agent state in memory (what tests and the offline evaluation use), sealed when
    encoded; :class:`KafkaAgentStates` adds the changelog topic."""

    def __init__(
        self,
        layers: Sequence[StatefulLayer | StateCodec] = (),
        *,
        seal: StateSeal | None = None,
        spill_dir: Path | None = None,
        max_cached: int = 10_000,
        on_untrusted: UntrustedHook | None = None,
    ) -> None:
        """``seal``: the gate state key (default: a random one, for state that never
        leaves the process). ``spill_dir``: keep at most ``max_cached`` agents decoded
        in memory and the rest, sealed, in a local RocksDB there (``rocksdict``), for
        estates whose state outgrows memory. RocksDB is only a cache of the changelog,
        rebuilt from it. ``on_untrusted`` is called with every record restore could not
        trust (e.g. to count it in a metric)."""
        self.layers = {layer.state_key: layer for layer in layers}
        self.seal = seal or StateSeal.ephemeral()
        self.on_untrusted = on_untrusted
        self.untrusted_records = 0
        self._states: dict[int, dict[str, dict[str, Any]]] = {}
        self._failed: dict[tuple[int, str], dict[str, Any]] = {}
        self._writes_seen: dict[tuple[int, str], int] = {}
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
        if self._failed:
            untrusted = self._failed.get((partition, agent_id))
            if untrusted is not None:
                return untrusted
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

    def failed(self, partition: int, agent_id: str) -> str | None:
        """Why this agent's stored state is not trusted (None: it is, or it was reset)."""
        marker = self._failed.get((partition, agent_id), {}).get(_INTEGRITY)
        return marker.reason if isinstance(marker, UntrustedState) else None

    def untrusted(self) -> list[UntrustedState]:
        """The agents whose stored state is not trusted, waiting for an operator."""
        return [
            state[_INTEGRITY]
            for _, state in sorted(self._failed.items())
            if isinstance(state.get(_INTEGRITY), UntrustedState)
        ]

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
            if (partition, agent_id) not in self._failed:
                self._db[_spill_key(partition, agent_id)] = self.encode(partition, agent_id)
        while len(self._recent) > self.max_cached:  # all of them are in RocksDB now
            (partition, agent_id), _ = self._recent.popitem(last=False)
            self._states.get(partition, {}).pop(agent_id, None)

    # -- restoring ---------------------------------------------------------------------

    def begin_restore(self, partitions: Iterable[int]) -> None:
        """Forget these partitions' state: the records fed to :meth:`restore_record`
        next rebuild it."""
        partitions = sorted(set(partitions))
        self.drop(partitions)
        for partition in partitions:
            self._states[partition] = {}

    def restore_record(
        self, partition: int, key: bytes | None, value: bytes | None, offset: int
    ) -> None:
        """Apply one ``gate-state`` record, oldest first. Never raises for what the
        record holds: a record it cannot trust makes its agent untrusted (see the module
        doc), a record with no agent id as key is reported and skipped."""
        # (1) the key names an agent
        try:
            agent_id = (key or b"").decode()
        except UnicodeDecodeError:
            agent_id = ""
        if not agent_id:
            self.untrusted_records += 1
            log.error(
                "ALERT: gate-state partition %d offset %d has key %r, which is no agent id; "
                "the gate never writes such a record (ignored)",
                partition,
                offset,
                (key or b"")[:64],
            )
            return
        # (2) a value: the gate never deletes an agent's state
        if value is None:
            self._distrust(
                partition,
                agent_id,
                offset,
                "is a tombstone (a deletion), which the gate never writes",
            )
            return
        # (3) sealed by this gate for this partition and agent, and readable
        try:
            state = self._decode(partition, agent_id, value)
        except StateError as exc:
            self._distrust(partition, agent_id, offset, exc.reason)
            return
        # (4) newer than every earlier write of the agent on this partition
        writes = state[_WRITES]
        last = self._writes_seen.get((partition, agent_id))
        if last is not None and writes <= last:
            self._distrust(
                partition,
                agent_id,
                offset,
                f"is an older write of the gate written again (write {writes} after write "
                f"{last}: a replayed or rolled-back state record)",
            )
            return
        self._writes_seen[(partition, agent_id)] = writes
        self._failed.pop((partition, agent_id), None)
        if self._db is None:
            self._states.setdefault(partition, {})[agent_id] = state
        else:
            self._db[_spill_key(partition, agent_id)] = bytes(value)
            self._states.setdefault(partition, {}).pop(agent_id, None)

    def end_restore(self) -> None:
        self._writes_seen.clear()

    def _distrust(self, partition: int, agent_id: str, offset: int, problem: str) -> None:
        marker = UntrustedState(agent_id, partition, offset, problem)
        # the stand-in state the gate sees: the integrity layer denies while it is there
        self._failed[(partition, agent_id)] = {
            _INTEGRITY: marker,
            _WRITES: self._writes_seen.get((partition, agent_id), 0),
        }
        self._states.get(partition, {}).pop(agent_id, None)
        if self._db is not None:
            self._db.delete(_spill_key(partition, agent_id))
        self.untrusted_records += 1
        log.error("ALERT: %s", marker.reason)
        if self.on_untrusted is not None:
            try:
                self.on_untrusted(marker)
            except Exception:  # noqa: BLE001 - a metric hook must not stop the restore
                log.exception("the on_untrusted hook failed")

    # -- changes -----------------------------------------------------------------------

    def touched(self, partition: int, agent_id: str) -> None:
        self._dirty.add((partition, agent_id))

    def dirty(self) -> list[tuple[int, str]]:
        return sorted(self._dirty)

    def clear_dirty(self) -> None:
        self._dirty.clear()

    def take_changes(self) -> list[tuple[int, str, bytes]]:
        """(partition, agent id, sealed value) of every changed agent, each with its
        write count advanced; then they are spilled and no longer pending. An untrusted
        agent is never written -- unless an operator reset it since (its integrity state
        is a real one again), and then it is trusted from here on."""
        changes = []
        for partition, agent_id in self.dirty():
            if (partition, agent_id) in self._failed and not self._lift(partition, agent_id):
                continue
            state = self.get(partition, agent_id)
            state[_WRITES] = int(state.get(_WRITES, 0)) + 1
            changes.append((partition, agent_id, self.encode(partition, agent_id)))
        self.spill()
        self.clear_dirty()
        return changes

    def _lift(self, partition: int, agent_id: str) -> bool:
        state = self._failed[(partition, agent_id)]
        if isinstance(state.get(_INTEGRITY), UntrustedState):
            return False
        del self._failed[(partition, agent_id)]
        self._states.setdefault(partition, {})[agent_id] = state
        log.warning(
            "gate state of agent %r (partition %d) was reset by an operator: it starts "
            "afresh and is written, sealed",
            agent_id,
            partition,
        )
        return True

    def drop(self, partitions: Iterable[int]) -> None:
        partitions = set(partitions)
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
        self._failed = {k: v for k, v in self._failed.items() if k[0] not in partitions}
        self._writes_seen = {k: v for k, v in self._writes_seen.items() if k[0] not in partitions}
        self._dirty = {d for d in self._dirty if d[0] in self._states or d in self._failed}

    # -- the record format ---------------------------------------------------------------

    def encode(self, partition: int, agent_id: str) -> bytes:
        """The agent's state as a sealed ``gate-state`` value (format 2)."""
        if (partition, agent_id) in self._failed:
            raise StateError(
                f"the state of agent {agent_id!r} (partition {partition}) is not trusted and "
                "is never written",
                hint="an operator resets it with an agent.state.reset command",
            )
        state = self._states.get(partition, {}).get(agent_id, {})
        body = {
            "layers": {
                key: self.layers[key].dump_state(value)
                for key, value in state.items()
                if key in self.layers
            },
            "n": int(state.get(_WRITES, 0)),
        }
        text = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        return self.seal.seal(partition, agent_id, text)

    def load(self, partition: int, agent_id: str, value: bytes) -> None:
        """Open and decode a sealed value as this agent's state; StateError (or its
        StateAuthenticationError) when it is not the gate's own or is unreadable."""
        self._states.setdefault(partition, {})[agent_id] = self._decode(partition, agent_id, value)

    def _decode(self, partition: int, agent_id: str, value: bytes) -> dict[str, Any]:
        body = self.seal.open(partition, agent_id, value)
        try:
            writes, layers = read_state_body(body)
            state = {
                key: self.layers[key].load_state(data)
                for key, data in layers.items()
                if key in self.layers
            }
        except Exception as exc:  # noqa: BLE001 - any unreadable state is a typed error
            detail = exc.reason if isinstance(exc, TrustplaneError) else str(exc)
            raise StateError(
                f"is authentic but this worker cannot read it ({type(exc).__name__}: "
                f"{detail[:300]})"
            ) from exc
        state[_WRITES] = writes
        return state


def read_state_body(body: bytes) -> tuple[int, dict[str, Any]]:
    """The write count and the layers' data of an opened state record's body; ValueError
    when it is not ``{"n": <count>, "layers": {...}}``."""
    document = json.loads(body)
    if not isinstance(document, dict) or set(document) != {"layers", "n"}:
        raise ValueError("expected a JSON object with layers and n")
    writes, layers = document["n"], document["layers"]
    if type(writes) is not int or writes < 0:
        raise ValueError(f"n is {writes!r}, not a write count")
    if not isinstance(layers, dict):
        raise ValueError("layers is not an object")
    return writes, layers


class KafkaAgentStates(AgentStates):
    """AgentStates backed by the ``gate-state`` changelog topic, sealed with the gate
    state key of ``settings`` (unless ``seal`` is given)."""

    def __init__(
        self,
        settings: Settings,
        layers: Sequence[StatefulLayer | StateCodec],
        *,
        seal: StateSeal | None = None,
        spill_dir: Path | None = None,
        max_cached: int = 10_000,
        on_untrusted: UntrustedHook | None = None,
    ) -> None:
        super().__init__(
            layers,
            seal=seal or StateSeal.from_settings(settings),
            spill_dir=spill_dir,
            max_cached=max_cached,
            on_untrusted=on_untrusted,
        )
        if _INTEGRITY not in self.layers:
            log.warning(
                "no %r layer: an agent whose stored state is not trusted is not denied by "
                "a layer (the gate must ask AgentStates.failed)",
                _INTEGRITY,
            )
        self.topic = settings.topic(STATE_TOPIC)
        self._consumer = kafka.consumer(
            settings,
            names.gate_state_restore(settings),
            # the end of a partition is reported (an empty fetch answers at once), so a
            # restore waits for no timeout: it is on the path of every takeover
            {"enable.partition.eof": True, "fetch.wait.max.ms": 10},
        )
        # asks for each partition's high watermark (a read_committed consumer is told the
        # last stable offset): the two differ while a transaction is open there
        self._ends = kafka.consumer(
            settings, names.gate_state_restore(settings), {"isolation.level": "read_uncommitted"}
        )
        self._followed: set[int] | None = None

    def follow(self, timeout: float = 0.05) -> int:
        """Apply the committed changelog records that arrived, for every partition (a
        standby's warm state: its takeover's :meth:`restore` then reads only the tail).
        The first call starts every partition from its beginning. Return how many were
        applied."""
        if self._followed is None:
            metadata = self._consumer.list_topics(self.topic, timeout=30)
            topic = metadata.topics.get(self.topic)
            if topic is None or topic.error is not None or not topic.partitions:
                return 0  # not created yet: the next call asks again
            partitions = sorted(topic.partitions)
            self.begin_restore(partitions)
            self._consumer.assign(
                [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions]
            )
            self._followed = set(partitions)
        count = 0
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self._consumer.poll(left)
            if message is None:
                break
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("following %s: %s", self.topic, error.str())
                continue
            offset = message.offset() or 0
            self.restore_record(message.partition() or 0, message.key(), message.value(), offset)
            count += 1
        return count

    def restore(self, partitions: Iterable[int], timeout: float = 60.0) -> int:
        """Rebuild the state of these partitions from the committed changelog, reading
        them together, each up to its end -- from where :meth:`follow` got to, for a
        partition it followed, else from the beginning. Following ends here. Fails
        (:class:`StateError`) when nothing more is read for ``timeout`` seconds."""
        partitions = sorted(set(partitions))
        followed = self._followed or set()
        self._followed = None
        starts = self._positions([p for p in partitions if p in followed])
        self.drop(followed - set(partitions))
        self.begin_restore(p for p in partitions if p not in starts)
        deadline = time.monotonic() + timeout
        try:
            ends = {}
            for partition, (low, high) in self._stable_ends(partitions, deadline).items():
                start = max(low, starts.get(partition, low))
                if high > start:
                    ends[partition] = (start, high)
            return self._read_to_ends(ends, timeout)
        finally:
            self.end_restore()
            self._consumer.unassign()

    def _stable_ends(self, partitions: list[int], deadline: float) -> dict[int, tuple[int, int]]:
        """(low, end) of each partition to restore: its last stable offset, once no
        transaction is open on it any more (the last stable offset reached the high
        watermark), or after ``STABLE_WAIT_S``. A transaction open there may be its
        previous owner's last batch, whose offsets committed a moment ago (the caller
        waited for them): its writes must be in the state, or this worker, which never
        decides that batch again, repeats a write count."""
        until = min(deadline, time.monotonic() + STABLE_WAIT_S)
        ends: dict[int, tuple[int, int]] = {}
        highs: dict[int, int] = {}
        waiting = set(partitions)
        while True:
            for partition in sorted(waiting):
                tp = TopicPartition(self.topic, partition)
                # retried while a broker fails over: a restore runs on every takeover
                left = max(1.0, deadline - time.monotonic())
                low, stable = kafka.watermark_offsets(self._consumer, tp, timeout=left)
                _, high = kafka.watermark_offsets(self._ends, tp, timeout=left)
                ends[partition], highs[partition] = (low, stable), high
                if stable >= high:
                    waiting.discard(partition)
            if not waiting:
                return ends
            if time.monotonic() >= until:
                for partition in sorted(waiting):
                    log.warning(
                        "a transaction is still open on %s/%d after %.0f s: restoring to its "
                        "last stable offset %d (high watermark %d); if it commits, its "
                        "writes are missing here and the agents it wrote are distrusted",
                        self.topic,
                        partition,
                        STABLE_WAIT_S,
                        ends[partition][1],
                        highs[partition],
                    )
                return ends
            time.sleep(0.05)

    def _positions(self, partitions: list[int]) -> dict[int, int]:
        """The next offset :meth:`follow` would read, per partition that has one."""
        if not partitions:
            return {}
        positions = self._consumer.position([TopicPartition(self.topic, p) for p in partitions])
        return {tp.partition: tp.offset for tp in positions if tp.offset >= 0}

    def _read_to_ends(self, ends: dict[int, tuple[int, int]], timeout: float) -> int:
        """Apply every record of the partitions in ``ends`` (partition -> (low, high));
        fail after ``timeout`` seconds without a record (a long changelog on a busy
        machine takes long: only reading nothing is a failure)."""
        if not ends:
            return 0
        self._consumer.assign([TopicPartition(self.topic, p, low) for p, (low, _) in ends.items()])
        pending, count = set(ends), 0
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise StateError(
                    f"restoring {self.topic}: no record of partitions {sorted(pending)} "
                    f"for {timeout} s ({count} read; ends {[ends[p][1] for p in sorted(pending)]})"
                )
            message = self._consumer.poll(0.1)
            if message is None:
                # the end may be a commit marker, never delivered: the position passes it
                positions = self._consumer.position(
                    [TopicPartition(self.topic, p) for p in sorted(pending)]
                )
                pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition][1]}
                continue
            deadline = time.monotonic() + timeout
            partition = message.partition() or 0
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise StateError(f"restoring {self.topic}/{partition}: {error.str()}")
                pending.discard(partition)
                continue
            offset = message.offset() or 0
            self.restore_record(partition, message.key(), message.value(), offset)
            count += 1
            if offset + 1 >= ends[partition][1]:
                pending.discard(partition)
        return count

    def changes(self) -> list[Record]:
        """A record of every changed agent's state, for the batch's transaction (and the
        changes are no longer pending)."""
        return [
            Record(self.topic, agent_id.encode(), value, partition)
            for partition, agent_id, value in self.take_changes()
        ]

    def close(self) -> None:
        self._consumer.close()
        self._ends.close()
        if self._db is not None:
            self._db.close()


def _spill_key(partition: int, agent_id: str) -> bytes:
    return f"{partition:05d}/{agent_id}".encode()
