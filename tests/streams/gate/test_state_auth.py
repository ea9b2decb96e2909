"""Only the gate's own writes count: the sealed gate-state format, the gate state key, and
what restore does with records it cannot trust (offline; the broker test is
tests/integration/test_gate_state_auth.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import struct
from pathlib import Path
from typing import Any

import pytest

from processors.control import ControlContext
from processors.enforcement import Outcome
from processors.exceptions import ConfigError, VerificationError
from processors.layers.integrity import (
    RESET_KIND,
    IntegrityCheck,
    IntegrityState,
    RuntimeRegistration,
    RuntimeRegistry,
    UntrustedState,
)
from processors.pipeline import Pipeline
from processors.verdict import GateState, Status
from streams.gate.seal import (
    StateAuthenticationError,
    StateError,
    StateSeal,
    create_state_key,
    load_state_key,
)
from streams.gate.state import AgentStates
from tests.processors.factories import DIGEST, make_intent

KEY = bytes(range(32))
T0 = 1_700_000_000_000


def seal() -> StateSeal:
    return StateSeal(KEY)


def integrity_layer() -> IntegrityCheck:
    registration = RuntimeRegistration(
        "rt-1", frozenset({DIGEST}), frozenset({DIGEST}), "prod", frozenset({"node-7"})
    )
    return IntegrityCheck(RuntimeRegistry([registration]))


def new_states(layer: IntegrityCheck | None = None, **kwargs: Any) -> AgentStates:
    return AgentStates([layer or integrity_layer()], seal=seal(), **kwargs)


def genuine(partition: int, agent: str, *intent_numbers: int, writes: int = 1) -> bytes:
    """A value the gate would write after seeing these intents of the agent."""
    layer = integrity_layer()
    states = AgentStates([layer], seal=seal())
    gate = GateState(now_ms=T0, agent=states.get(partition, agent))
    for n in intent_numbers:
        layer.observe(make_intent(intent_id=f"i-{n}", nonce=f"n-{n}", sequence=n), gate, "x")
    states.get(partition, agent)["_writes"] = writes
    return states.encode(partition, agent)


def first_intent_again() -> Any:
    return make_intent(intent_id="i-1", nonce="n-1", sequence=1)


# -- the sealed record ------------------------------------------------------------------


def test_the_seal_is_hmac_sha256_over_partition_key_and_body_as_documented():
    body = b'{"layers":{},"n":3}'
    value = seal().seal(7, "billing-agent", body)
    message = (
        b"trustplane gate-state v2\x00"
        + struct.pack(">II", 7, len(b"billing-agent"))
        + b"billing-agent"
        + body
    )
    expected = hmac.new(KEY, message, hashlib.sha256).hexdigest().encode()
    assert value == b"tpgs2 " + expected + b" " + body
    assert seal().open(7, "billing-agent", value) == body


@pytest.mark.parametrize(
    ("partition", "agent", "change", "fragment"),
    [
        (3, "billing-agent", None, "does not verify"),  # moved to another partition
        (7, "billing-agent2", None, "does not verify"),  # moved to another agent
        (7, "billing-agent", lambda v: v[:-2] + b"2}", "does not verify"),  # body changed
        (7, "billing-agent", lambda v: v[:10] + b"0" + v[11:], "does not verify"),  # MAC
        (7, "billing-agent", lambda v: v[:10] + b"\xff" + v[11:], "does not verify"),
        (7, "billing-agent", lambda v: b'{"v":1,"layers":{}}', "not a sealed gate-state record"),
        (7, "billing-agent", lambda v: b"", "not a sealed gate-state record"),
        (7, "billing-agent", lambda v: v[:70], "not a sealed gate-state record"),
        (7, "billing-agent", lambda v: v[:70] + b"x" + v[71:], "not a sealed gate-state record"),
    ],
)
def test_a_changed_or_moved_record_fails_authentication(partition, agent, change, fragment):
    value = seal().seal(7, "billing-agent", b'{"layers":{},"n":1}')
    if change is not None:
        value = change(value)
    with pytest.raises(StateAuthenticationError, match=fragment) as caught:
        seal().open(partition, agent, value)
    assert isinstance(caught.value, VerificationError) and isinstance(caught.value, StateError)
    assert caught.value.reason.startswith("failed authentication (")


def test_a_seal_takes_a_32_byte_key_only():
    with pytest.raises(ConfigError, match="32 bytes"):
        StateSeal(b"short")


# -- the key file -----------------------------------------------------------------------


def test_the_key_file_is_created_once_owner_only_and_never_overwritten(tmp_path: Path):
    path = tmp_path / "keys" / "gate-state.key"
    assert create_state_key(path) is True
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert len(text.strip()) == 64
    assert create_state_key(path) is False
    assert path.read_text() == text
    assert load_state_key(path) == bytes.fromhex(text.strip())


def test_a_bad_key_file_is_a_config_error_that_says_what_to_do(tmp_path: Path):
    path = tmp_path / "gate-state.key"
    with pytest.raises(ConfigError, match="no gate state key") as missing:
        load_state_key(path)
    assert "trustplane keys init" in missing.value.diagnostics()
    create_state_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by group or others") as shared:
        load_state_key(path)
    assert "chmod 600" in shared.value.diagnostics()
    path.chmod(0o600)
    path.write_text("not hex\n")
    with pytest.raises(ConfigError, match="not 64 lowercase hex"):
        load_state_key(path)


# -- restore: the last record of an agent decides ----------------------------------------


def restore(states: AgentStates, partition: int, *records: tuple[bytes | None, bytes | None]):
    states.begin_restore([partition])
    for offset, (key, value) in enumerate(records):
        states.restore_record(partition, key, value, offset)
    states.end_restore()


def assert_untrusted(states: AgentStates, agent: str, offset: int, fragment: str) -> None:
    reason = states.failed(2, agent)
    assert reason is not None, f"{agent} should be untrusted"
    assert f"gate-state partition 2 offset {offset} " in reason
    assert fragment in reason
    marker = states.get(2, agent)["integrity"]
    assert isinstance(marker, UntrustedState) and marker.reason == reason


def test_a_genuine_record_is_the_agents_state():
    states = new_states()
    restore(states, 2, (b"a", genuine(2, "a", 1, 2)))
    state = states.get(2, "a")["integrity"]
    assert isinstance(state, IntegrityState) and state.highest_sequence == 2
    assert states.failed(2, "a") is None and states.untrusted_records == 0


FORGERIES = {
    "empty state, format 1 (the reproduced attack)": (
        json.dumps({"v": 1, "layers": {}}).encode(),
        "failed authentication (it is not a sealed gate-state record",
    ),
    "not JSON": (b"\x00\xffjunk", "failed authentication (it is not a sealed gate-state record"),
    "a tombstone": (None, "is a tombstone (a deletion), which the gate never writes"),
    "format 2, another key": (
        StateSeal(bytes(32)).seal(2, "a", b'{"layers":{},"n":9}'),
        "failed authentication (its HMAC-SHA256 does not verify",
    ),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_last_record_makes_the_agent_fail_closed_and_nothing_is_written(forgery, caplog):
    value, fragment = FORGERIES[forgery]
    seen: list[UntrustedState] = []
    states = new_states(on_untrusted=seen.append)
    with caplog.at_level(logging.ERROR, logger="streams.gate.state"):
        restore(
            states,
            2,
            (b"a", genuine(2, "a", 1)),
            (b"b", genuine(2, "b", 1)),
            (b"a", value),
        )
    assert_untrusted(states, "a", 2, fragment)
    assert [m.agent_id for m in seen] == ["a"] and states.untrusted_records == 1
    assert [m.agent_id for m in states.untrusted()] == ["a"]
    assert any(r.message.startswith("ALERT: gate state of agent 'a'") for r in caplog.records)
    assert isinstance(states.get(2, "b")["integrity"], IntegrityState), "other agents unaffected"

    layer = states.layers["integrity"]
    verdict = layer.evaluate(first_intent_again(), GateState(T0 + 1, agent=states.get(2, "a")))
    assert verdict.status is Status.DENY and verdict.evidence["check"] == "state_untrusted"
    states.touched(2, "a")
    states.touched(2, "b")
    assert [(p, agent) for p, agent, _ in states.take_changes()] == [(2, "b")]
    with pytest.raises(StateError, match="not trusted and is never written"):
        states.encode(2, "a")
    assert states.failed(2, "a") is not None, "still untrusted after a batch"


def test_an_authentic_record_a_layer_cannot_read_fails_closed_too():
    body = json.dumps({"layers": {"integrity": {"version": 9}}, "n": 1}).encode()
    states = new_states()
    restore(states, 2, (b"a", seal().seal(2, "a", body)))
    assert_untrusted(states, "a", 0, "is authentic but this worker cannot read it")
    restore(states, 2, (b"a", seal().seal(2, "a", b"[1, 2]")))
    assert_untrusted(states, "a", 0, "is authentic but this worker cannot read it")


def test_an_older_genuine_record_written_again_is_a_rollback():
    old, new = genuine(2, "a", 1, writes=1), genuine(2, "a", 1, 2, writes=2)
    states = new_states()
    restore(states, 2, (b"a", old), (b"a", new), (b"a", old))
    assert_untrusted(states, "a", 2, "is an older write of the gate written again (write 1 after")


def test_a_later_genuine_write_supersedes_a_forged_record():
    """The worker kept running after the forgery and wrote the agent's state again."""
    states = new_states()
    restore(
        states,
        2,
        (b"a", genuine(2, "a", 1, writes=1)),
        (b"a", b"forged"),
        (b"a", genuine(2, "a", 1, 2, writes=2)),
    )
    assert states.failed(2, "a") is None
    assert states.get(2, "a")["integrity"].highest_sequence == 2
    assert states.untrusted_records == 1, "the forgery is still reported"


def test_a_record_without_an_agent_id_is_reported_and_ignored(caplog):
    states = new_states()
    with caplog.at_level(logging.ERROR, logger="streams.gate.state"):
        restore(states, 2, (b"\xff\xfe", b"x"), (None, b"y"), (b"a", genuine(2, "a", 1)))
    assert states.untrusted_records == 2 and states.untrusted() == []
    assert states.failed(2, "a") is None
    assert sum("which is no agent id" in r.message for r in caplog.records) == 2


def test_a_failing_metric_hook_does_not_stop_the_restore():
    def broken(marker: UntrustedState) -> None:
        raise RuntimeError("boom")

    states = new_states(on_untrusted=broken)
    restore(states, 2, (b"a", b"x"), (b"b", genuine(2, "b", 1)))
    assert states.failed(2, "a") is not None and states.failed(2, "b") is None


def test_restoring_again_and_dropping_forget_the_failure():
    states = new_states()
    restore(states, 2, (b"a", b"x"))
    states.drop([2])
    assert states.failed(2, "a") is None and states.untrusted() == []
    restore(states, 2, (b"a", b"x"))
    restore(states, 2, (b"a", genuine(2, "a", 1)))
    assert states.failed(2, "a") is None


def test_the_write_count_advances_with_every_write_and_survives_a_restore():
    states = new_states()
    for _ in range(3):
        states.get(2, "a")
        states.touched(2, "a")
        ((_, _, value),) = states.take_changes()
    assert json.loads(value[71:])["n"] == 3
    again = new_states()
    restore(again, 2, (b"a", value))
    again.touched(2, "a")
    ((_, _, value),) = again.take_changes()
    assert json.loads(value[71:])["n"] == 4


def test_spilled_states_keep_the_failure(tmp_path: Path):
    states = new_states(spill_dir=tmp_path / "rocks", max_cached=1)
    restore(states, 2, (b"a", genuine(2, "a", 1)), (b"b", b"forged"), (b"c", genuine(2, "c", 1)))
    for agent in ("a", "c", "a", "c"):
        states.get(2, agent)
        states.touched(2, agent)
        states.touched(2, "b")
        states.take_changes()
    assert states.failed(2, "b") is not None
    assert isinstance(states.get(2, "a")["integrity"], IntegrityState)
    assert [name for name, _ in states.agents(2)] == ["a", "c"]
    states._db.close()


# -- the operator's reset -----------------------------------------------------------------


def test_after_an_operator_reset_the_agent_is_trusted_and_written_again():
    layer = integrity_layer()
    states = new_states(layer)
    restore(states, 2, (b"a", genuine(2, "a", 1)), (b"a", b"{}"))
    pipeline = Pipeline([layer], observe_after=None)

    def decide(intent: Any, now: int) -> Outcome:
        gate = GateState(now_ms=now, agent=states.get(2, "a"))
        outcome = pipeline.decide(intent, gate).outcome
        states.touched(2, "a")
        return outcome

    assert decide(first_intent_again(), T0 + 10) is Outcome.DENIED
    assert states.take_changes() == []

    context = ControlContext("c1", RESET_KIND, "a/status/gate-state", "alice", T0 + 20, "op", 0)
    refusal = layer.registry.resets.handle(
        {"agent_id": "a", "partition": 2, "offset": 1, "reason": "forged by a test"}, context
    )
    assert refusal is None
    assert decide(first_intent_again(), T0 + 30) is Outcome.DENIED, "issued before the reset"
    fresh = make_intent(
        agent_id="a", intent_id="i-2", nonce="n-2", sequence=2, issued_at_ms=T0 + 25
    )
    assert decide(fresh, T0 + 40) is Outcome.APPROVED
    ((partition, agent, value),) = states.take_changes()
    assert (partition, agent) == (2, "a") and states.failed(2, "a") is None
    assert json.loads(value[71:])["n"] == 2, "counts on from the last genuine write"

    restarted = new_states(integrity_layer())
    restore(restarted, 2, (b"a", genuine(2, "a", 1)), (b"a", b"{}"), (b"a", value))
    state = restarted.get(2, "a")["integrity"]
    assert isinstance(state, IntegrityState) and state.not_before_ms == T0 + 20
    assert state.id_seen_at("i-2") == T0 + 40
