"""Per-agent state: in memory, and spilled to RocksDB when it outgrows memory."""

import json
from typing import Any

import pytest

from streams.gate.state import AgentStates, StateAuthenticationError, StateSeal


class Counter:
    """A minimal stateful layer codec: counts intents per agent."""

    name = "counter"
    state_key = "count"

    def new_state(self) -> dict[str, int]:
        return {"n": 0}

    def dump_state(self, layer_state: Any) -> dict[str, Any]:
        return dict(layer_state)

    def load_state(self, data: Any) -> dict[str, int]:
        return {"n": int(data["n"])}


def bump(states: AgentStates, partition: int, agent: str) -> None:
    state = states.get(partition, agent)
    state.setdefault("count", {"n": 0})["n"] += 1
    states.touched(partition, agent)


def test_in_memory_state_round_trips_through_its_sealed_encoding():
    seal = StateSeal.ephemeral()
    states = AgentStates([Counter()], seal=seal)
    bump(states, 0, "a")
    value = states.encode(0, "a")
    assert value.startswith(b"tpgs2 ") and value[70:71] == b" "
    assert json.loads(value[71:]) == {"layers": {"count": {"n": 1}}, "n": 0}
    other = AgentStates([Counter()], seal=seal)
    other.load(0, "a", value)
    assert other.get(0, "a")["count"] == {"n": 1}
    with pytest.raises(StateAuthenticationError, match="does not verify"):
        AgentStates([Counter()]).load(0, "a", value)  # another key


def test_spilled_state_keeps_few_agents_in_memory_and_loses_none(tmp_path):
    states = AgentStates([Counter()], spill_dir=tmp_path / "rocks", max_cached=2)
    for _round in range(3):
        for agent in ("a", "b", "c", "d", "e"):
            bump(states, 1, agent)
        states.spill()
        states.clear_dirty()
        assert len(states._states[1]) <= 2, "only the most recent agents stay decoded"
    assert {name: s["count"]["n"] for name, s in states.agents(1)} == dict.fromkeys("abcde", 3)
    states.drop([1])
    assert states.agents(1) == []
    states._db.close()
