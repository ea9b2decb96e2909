"""The control log's integrity: what a record must be to count, and per-signer histories."""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import rfc8785

from processors.control import (
    CONTROL_PAYLOAD_TYPE,
    LOG_APPEND_TIME,
    ChainLink,
    ControlCommandError,
    ControlHistoryError,
    ControlState,
    LogEntry,
    Signer,
    command_digest,
    command_signing_message,
    sign_command,
)
from processors.crypto.keys import KeyEntry, Keyset, SigningKey, generate_signing_key
from processors.layers.killswitch import KillSwitches
from streams.codec import default_codec
from tests.processors.control.test_control import AGENT_KEY, jwk

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20.000Z
OPERATOR = generate_signing_key("ops-alice")
BOB = generate_signing_key("ops-bob")
RETIRED = generate_signing_key("ops-old")
STRANGER = generate_signing_key("mallory")
GATE = generate_signing_key("gate-key-1")
CREATE_TIME = 1
CODEC = default_codec()


def operator_keys() -> Keyset:
    return Keyset(
        [
            KeyEntry(OPERATOR.kid, OPERATOR.public_key),
            KeyEntry(BOB.kid, BOB.public_key),
            KeyEntry(RETIRED.kid, RETIRED.public_key, retired_at_ms=T0 - 1000),
        ]
    )


def gate_keys() -> Keyset:
    return Keyset([KeyEntry(GATE.kid, GATE.public_key)])


SWITCHES: weakref.WeakKeyDictionary[ControlState, KillSwitches] = weakref.WeakKeyDictionary()


def new_state() -> ControlState:
    """A worker's control state, with the kill switch kinds installed."""
    state = ControlState(operator_keys(), gate_keys=gate_keys())
    SWITCHES[state] = KillSwitches()
    SWITCHES[state].install(state)
    return state


def digest_of(record: Mapping[str, Any]) -> str:
    link = None if record["sequence"] is None else ChainLink(record["sequence"], record["previous"])
    message = command_signing_message(
        payload=json.loads(record["payload"]),
        **{k: record[k] for k in ("command_id", "kind", "subject", "issued_by", "issued_at_ms")},
        key_id=record["key_id"],
        link=link,
    )
    return command_digest(message)


@dataclass
class Chain:
    """One signer's commands, chained like OperatorClient chains them."""

    key: SigningKey
    issued_by: str = "alice"
    link: ChainLink = field(default_factory=ChainLink.first)

    def sign(
        self,
        kind: str,
        payload: Mapping[str, Any],
        at: int = T0,
        *,
        subject: str | None = None,
        link: ChainLink | None = None,
    ) -> dict[str, Any]:
        record = sign_command(
            kind, subject, payload, self.key, self.issued_by, now_ms=at, link=link or self.link
        )
        if link is None:
            self.link = self.link.after(digest_of(record))
        return record


@dataclass
class Topic:
    """The control topic: records in order, stamped with the broker's append time."""

    entries: list[LogEntry] = field(default_factory=list)

    def append(
        self,
        record: Mapping[str, Any] | None,
        at: int = T0,
        *,
        key: bytes | None = None,
        value: bytes | None = None,
        timestamp_type: int = LOG_APPEND_TIME,
    ) -> LogEntry:
        """Append ``record`` (encoded and decoded as the follower does) under its subject
        (or ``key``); ``record=None`` appends ``value`` as is (None: a tombstone)."""
        offset = len(self.entries)
        if record is not None:
            key = record["subject"].encode() if key is None else key
            value = CODEC.encode("ControlCommand", record)
        if value is None:
            entry = LogEntry(offset, key, None, timestamp_type, at, tombstone=True)
        else:
            try:
                decoded = CODEC.decode(value, "ControlCommand")
                entry = LogEntry(offset, key, decoded, timestamp_type, at)
            except Exception as exc:  # noqa: BLE001 - the follower's DecodeError
                entry = LogEntry(offset, key, None, timestamp_type, at, decode_error=str(exc))
        self.entries.append(entry)
        return entry

    def replay(self, state: ControlState | None = None) -> ControlState:
        state = state or new_state()
        for entry in self.entries:
            state.apply_logged(entry)
        return state


def agent(agent_id: str = "billing-agent") -> dict[str, Any]:
    return {"agent_id": agent_id, "keys": [jwk(AGENT_KEY)], "roles": ["payments"]}


GLOBAL = {"scope": "global", "target": "*", "reason": "incident 42"}


def estate() -> tuple[Topic, Chain]:
    """A genuine history: two agents registered, one revoked, one quarantined by a gate
    worker, the global kill switch engaged."""
    topic, ops = Topic(), Chain(OPERATOR)
    gate = Chain(GATE, issued_by="gate:w-1")
    topic.append(ops.sign("agent.register", agent(), T0))
    topic.append(ops.sign("agent.register", agent("support-bot"), T0 + 1), T0 + 1)
    topic.append(
        ops.sign("agent.revoke", {"agent_id": "billing-agent", "reason": "stolen"}, T0 + 2), T0 + 2
    )
    quarantine = {"agent_id": "support-bot", "reason": "integrity: attestation"}
    topic.append(gate.sign("agent.quarantine", quarantine, T0 + 3), T0 + 3)
    topic.append(
        ops.sign("killswitch.engage", GLOBAL, T0 + 4, subject="killswitch/global/*"), T0 + 4
    )
    return topic, ops


def in_force(state: ControlState) -> tuple[str, str, bool]:
    """The revocation, the quarantine and the global kill switch of :func:`estate`."""
    return (
        state.agents["billing-agent"].status,
        state.agents["support-bot"].status,
        SWITCHES[state].global_ is not None,
    )


def last_reason(state: ControlState, entry: LogEntry) -> str:
    result = state.apply_logged(entry)
    assert not result.applied
    return result.reason


# --- the signed body -------------------------------------------------------------------


def test_the_chain_link_is_inside_the_signed_body_and_the_digest_is_of_the_signed_bytes() -> None:
    previous = "sha256:" + "ab" * 32
    record = sign_command(
        "agent.suspend",
        None,
        {"agent_id": "billing-agent", "reason": "audit"},
        OPERATOR,
        "alice",
        now_ms=T0,
        command_id="c",
        link=ChainLink(7, previous),
    )
    body = rfc8785.dumps(
        {
            "command_id": "c",
            "kind": "agent.suspend",
            "subject": "billing-agent/status/suspension",
            "payload": {"agent_id": "billing-agent", "reason": "audit"},
            "issued_by": "alice",
            "issued_at_ms": T0,
            "key_id": "ops-alice",
            "sequence": 7,
            "previous": previous,
        }
    )
    type_ = CONTROL_PAYLOAD_TYPE.encode()
    message = b"DSSEv1 %d %b %d %b" % (len(type_), type_, len(body), body)
    OPERATOR.public_key.verify(record["signature"], message)  # raises if not
    assert (record["sequence"], record["previous"]) == (7, previous)
    assert digest_of(record) == "sha256:" + hashlib.sha256(message).hexdigest()
    first = sign_command("agent.register", None, agent(), OPERATOR, "a", T0, link=ChainLink.first())
    assert b'"previous":null,"sequence":0' in rfc8785.dumps(
        {"previous": first["previous"], "sequence": first["sequence"]}
    )


@pytest.mark.parametrize(
    ("link", "problem"),
    [
        (ChainLink(0, "sha256:" + "0" * 64), "sequence 0 has no previous command"),
        (ChainLink(1, None), "must name its previous command"),
        (ChainLink(1, "sha256:" + "A" * 64), "must name its previous command"),
        (ChainLink(-1, None), "sequence must be 0 to 2^53-1"),
        (ChainLink(2**53, "sha256:" + "0" * 64), "sequence must be 0 to 2^53-1"),
    ],
)
def test_malformed_links_cannot_be_signed(link: ChainLink, problem: str) -> None:
    assert link.problem() is not None and problem in link.problem()  # type: ignore[operator]
    with pytest.raises(ControlCommandError, match="bad chain link"):
        sign_command("agent.register", None, agent(), OPERATOR, "a", T0, link=link)


def test_a_genuine_history_replays_to_the_same_state() -> None:
    topic, _ = estate()
    state = topic.replay()
    assert not state.problems
    assert in_force(state) == ("revoked", "quarantined", True)
    assert state.commands_applied == 5 and state.commands_refused == 0
    assert state.log.history.heads == {
        Signer("operator", "ops-alice"): 3,
        Signer("gate", "gate:w-1"): 0,
    }


# --- (1)-(6): records that never count -------------------------------------------------


def test_the_reviewers_erasure_is_refused_and_a_later_replay_keeps_every_fact() -> None:
    """Two tombstones and one junk record under the right keys, and a genuine command
    copied under another key, erased a revocation, a quarantine and the global kill
    switch on the compacted topic. Now each is refused, and nothing is erased."""
    topic, _ = estate()
    genuine = topic.entries[0].record
    assert genuine is not None
    attacks = [
        topic.append(None, T0 + 10, key=b"billing-agent/status/revocation"),
        topic.append(None, T0 + 11, key=b"support-bot/status/quarantine"),
        topic.append(None, T0 + 12, key=b"killswitch/global/*", value=b"\xc3\x01junk"),
        topic.append(genuine, T0 + 13, key=b"killswitch/global/*"),
    ]
    state = topic.replay()
    assert in_force(state) == ("revoked", "quarantined", True)
    assert not state.problems, "refused records do not break any history"
    assert state.commands_refused == 4
    fresh = new_state()
    for entry in topic.entries[:5]:
        fresh.apply_logged(entry)
    reasons = [last_reason(fresh, entry) for entry in attacks]
    assert "a tombstone" in reasons[0] and "'billing-agent/status/revocation'" in reasons[0]
    assert "a tombstone" in reasons[1]
    assert "not a ControlCommand record under key 'killswitch/global/*'" in reasons[2]
    assert (
        "stored under key 'killswitch/global/*', but its subject is 'billing-agent'" in (reasons[3])
    )
    assert fresh.latest_applied()["killswitch/global/*"]["kind"] == "killswitch.engage"


def test_a_record_without_broker_append_time_is_refused_and_stops_the_workers() -> None:
    topic, ops = Topic(), Chain(OPERATOR)
    entry = topic.append(ops.sign("agent.register", agent()), timestamp_type=CREATE_TIME)
    state = new_state()
    reason = last_reason(state, entry)
    assert "no broker append time" in reason and "LogAppendTime" in reason
    assert [p.kind for p in state.problems] == ["untimed"]
    assert "message.timestamp.type=LogAppendTime" in state.problems[0].hint


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda r: {**r, "signature": None}, "not signed"),
        (lambda r: {**r, "sequence": None, "previous": None}, "does not verify"),
        (lambda r: {**r, "sequence": 1, "previous": "sha256:" + "0" * 64}, "does not verify"),
        (lambda r: {**r, "issued_by": "bob"}, "does not verify"),
    ],
    ids=["unsigned", "link stripped", "link changed", "issuer changed"],
)
def test_a_changed_record_is_refused(make: Any, reason: str) -> None:
    record = make(Chain(OPERATOR).sign("agent.register", agent()))
    state = new_state()
    assert reason in last_reason(state, Topic().append(record))
    assert not state.problems and not state.agents


def test_an_unchained_command_is_refused_in_the_log_but_applies_in_process() -> None:
    legacy = sign_command("agent.register", None, agent(), OPERATOR, "alice", now_ms=T0)
    state = new_state()
    reason = last_reason(state, Topic().append(legacy))
    assert "unchained" in reason and "operator key 'ops-alice'" in reason
    assert not state.problems
    assert new_state().apply(legacy, T0).applied, "tests and in-process tools still apply it"


def test_keys_are_judged_at_the_append_time() -> None:
    """A retired key signs a command dated inside its old window: refused, by every
    worker, whenever it reads it -- and it cannot break the key's old history."""
    topic, old = Topic(), Chain(RETIRED)
    history_before = old.sign("agent.register", agent(), T0 - 5000)
    topic.append(history_before, T0 - 5000)  # appended while the key was valid: it counts
    forged = old.sign("agent.revoke", {"agent_id": "billing-agent", "reason": "x"}, T0 - 2000)
    topic.append(forged, T0 + 60_000)  # the stolen key's command, appended now
    fork = old.sign(
        "agent.suspend",
        {"agent_id": "billing-agent", "reason": "x"},
        T0 - 1500,
        link=ChainLink.first(),
    )
    topic.append(fork, T0 + 60_001)  # a second sequence 0: would be a fork, if trusted
    state = topic.replay()
    assert state.agents["billing-agent"].status == "active"
    assert not state.problems, "a retired key cannot stop workers from starting"
    assert state.commands_refused == 2
    reason = state.apply_logged(topic.entries[1])
    assert "is not an operator key valid at 2023-11-14T22:14:20.000Z (when the broker" in (
        reason.reason
    )


def test_a_key_not_yet_valid_at_append_time_is_refused() -> None:
    early = generate_signing_key("ops-next")
    keys = Keyset([KeyEntry(early.kid, early.public_key, not_before_ms=T0 + 10_000)])
    state = ControlState(keys)
    entry = Topic().append(Chain(early).sign("agent.register", agent(), T0 + 20_000), T0)
    assert "is not an operator key valid at" in last_reason(state, entry)


# --- freshness by the append time --------------------------------------------------------


def test_a_command_dated_in_the_future_is_refused_for_ever_by_every_worker() -> None:
    topic, ops = Topic(), Chain(OPERATOR)
    topic.append(ops.sign("agent.register", agent(), T0))
    bomb = topic.append(
        ops.sign("agent.revoke", {"agent_id": "billing-agent", "reason": "x"}, T0 + 3_600_000),
        T0 + 1,
    )
    after = ops.sign("agent.suspend", {"agent_id": "billing-agent", "reason": "audit"}, T0 + 2)
    topic.append(after, T0 + 2)
    # the verdict depends on the append time only: a worker rebuilt a day later agrees
    for _ in range(2):
        state = new_state()
        results = [state.apply_logged(entry) for entry in topic.entries]
        assert [r.applied for r in results] == [True, False, True]
        assert "a command dated in the future is refused, for ever" in results[1].reason
        assert state.agents["billing-agent"].status == "suspended"
        assert not state.problems, "it still holds its place in the operator's history"
    assert bomb.timestamp_ms == T0 + 1


def test_a_command_held_back_is_refused() -> None:
    state = ControlState(operator_keys(), max_append_delay_ms=60_000)
    entry = Topic().append(Chain(OPERATOR).sign("agent.register", agent(), T0), T0 + 60_001)
    assert "before it was appended (2023-11-14T22:14:20.001Z)" in last_reason(state, entry)


# --- (7): histories ------------------------------------------------------------------------


def test_a_missing_command_is_a_gap_that_names_the_signer_and_the_sequence() -> None:
    topic, ops = Topic(), Chain(OPERATOR)
    topic.append(ops.sign("agent.register", agent(), T0))
    ops.sign("agent.revoke", {"agent_id": "billing-agent", "reason": "x"}, T0 + 1)  # erased
    topic.append(ops.sign("agent.register", agent("support-bot"), T0 + 2), T0 + 2)
    state = topic.replay()
    (problem,) = state.problems
    assert problem.kind == "gap" and problem.signer == Signer("operator", "ops-alice")
    assert problem.reason.startswith(
        "gap in the history of operator key 'ops-alice': sequence 1 missing; after "
        "sequence 0 (offset 0) comes sequence 2 at offset 1"
    )
    assert "retire key 'ops-alice'" in problem.hint and "2023-11-14T22:13:20.002Z" in problem.hint
    assert "support-bot" not in state.agents, "a command after a gap is not applied"
    error = ControlHistoryError(state.problems, topic="prod.control")
    assert "the history of prod.control is broken (1 problem(s))" in error.diagnostics()
    assert "sequence 1 missing" in error.diagnostics()


def test_a_history_whose_start_is_missing_is_a_gap() -> None:
    topic, ops = Topic(), Chain(OPERATOR)
    for n in range(3):
        ops.sign("agent.register", agent(f"a-{n}"), T0 + n)  # never appended
    topic.append(ops.sign("agent.register", agent(), T0 + 5), T0 + 5)
    (problem,) = topic.replay().problems
    assert "sequences 0-2 missing; its first command in the log is sequence 3 at offset 0" in (
        problem.reason
    )


def test_a_subset_of_a_genuine_history_is_detected() -> None:
    """Re-producing only some of the genuine records (a fresh topic, the kill switch and
    the revocation left out) breaks the operator's history."""
    topic, _ = estate()
    subset = Topic()
    for entry in topic.entries:
        if entry.record is not None and entry.record["kind"] not in ("agent.revoke",):
            subset.append(entry.record, entry.timestamp_ms)
    problems = subset.replay().problems
    assert [p.kind for p in problems] == ["gap"]
    assert "sequence 2 missing" in problems[0].reason


def test_two_commands_in_the_same_place_are_a_fork() -> None:
    topic, ops = Topic(), Chain(OPERATOR)
    topic.append(ops.sign("agent.register", agent(), T0))
    place = ops.link
    topic.append(ops.sign("agent.suspend", {"agent_id": "billing-agent", "reason": "a"}, T0 + 1))
    other = ops.sign(
        "agent.quarantine", {"agent_id": "billing-agent", "reason": "b"}, T0 + 2, link=place
    )
    topic.append(other, T0 + 2)
    (problem,) = topic.replay().problems
    assert problem.kind == "fork"
    assert "sequence 1 at offset 2" in problem.reason
    assert "claims a place already taken by sequence 1 (offset 1)" in problem.reason


def test_a_command_naming_another_predecessor_is_a_fork() -> None:
    topic, ops = Topic(), Chain(OPERATOR)
    topic.append(ops.sign("agent.register", agent(), T0))
    wrong = ChainLink(1, "sha256:" + "0" * 64)
    topic.append(
        ops.sign("agent.suspend", {"agent_id": "billing-agent", "reason": "a"}, link=wrong)
    )
    (problem,) = topic.replay().problems
    assert problem.kind == "fork" and f"names {wrong.previous} as its previous" in problem.reason


def test_an_exact_copy_appended_again_is_a_harmless_replay() -> None:
    topic, ops = Topic(), Chain(OPERATOR)
    topic.append(ops.sign("agent.register", agent(), T0))
    release = ops.sign("agent.release", {"agent_id": "billing-agent"}, T0 + 1)
    topic.append(release, T0 + 1)
    topic.append(ops.sign("agent.quarantine", {"agent_id": "billing-agent", "reason": "x"}, T0 + 2))
    replayed = topic.append(release, T0 + 3)
    state = new_state()
    for entry in topic.entries[:-1]:
        state.apply_logged(entry)
    reason = last_reason(state, replayed)
    assert "a replay: this exact command (sequence 1 of operator key 'ops-alice')" in reason
    assert state.agents["billing-agent"].status == "quarantined" and not state.problems


def test_histories_are_per_signer() -> None:
    """Two operator keys and two gate workers interleave; each history is whole."""
    topic = Topic()
    alice, bob = Chain(OPERATOR), Chain(BOB, issued_by="bob")
    gate_1, gate_2 = Chain(GATE, "gate:w-1"), Chain(GATE, "gate:w-2")
    topic.append(alice.sign("agent.register", agent(), T0))
    topic.append(bob.sign("agent.register", agent("support-bot"), T0 + 1), T0 + 1)
    topic.append(
        gate_2.sign("agent.quarantine", {"agent_id": "support-bot", "reason": "x"}, T0 + 2), T0 + 2
    )
    topic.append(
        gate_1.sign("agent.quarantine", {"agent_id": "billing-agent", "reason": "y"}, T0 + 3),
        T0 + 3,
    )
    topic.append(alice.sign("agent.release", {"agent_id": "billing-agent"}, T0 + 4), T0 + 4)
    state = topic.replay()
    assert not state.problems and state.commands_refused == 0
    assert state.log.history.heads == {
        Signer("operator", "ops-alice"): 1,
        Signer("operator", "ops-bob"): 0,
        Signer("gate", "gate:w-1"): 0,
        Signer("gate", "gate:w-2"): 0,
    }


def test_a_gate_key_chains_only_the_kinds_a_gate_may_sign() -> None:
    gate = Chain(GATE, "gate:w-1")
    entry = Topic().append(gate.sign("agent.release", {"agent_id": "billing-agent"}))
    state = new_state()
    assert "is not an operator key valid" in last_reason(state, entry)
    assert not state.log.history.heads


# --- issuing here, reading back ------------------------------------------------------------


def test_a_gate_quarantine_is_applied_at_once_and_confirmed_when_read_back() -> None:
    topic, ops = Topic(), Chain(OPERATOR)
    topic.append(ops.sign("agent.register", agent(), T0))
    state = topic.replay()
    payload = {"agent_id": "billing-agent", "reason": "integrity: attestation"}
    record, result = state.issue("agent.quarantine", None, payload, GATE, "gate:w-1", T0 + 5)
    assert record is not None and result.applied
    assert (record["sequence"], record["previous"]) == (0, None)
    assert state.agents["billing-agent"].status == "quarantined"
    second, _ = state.issue(
        "agent.quarantine", None, {**payload, "reason": "again"}, GATE, "gate:w-1", T0 + 6
    )
    assert second is not None and second["sequence"] == 1
    assert second["previous"] == digest_of(record)

    read_back = [topic.append(record, T0 + 7), topic.append(second, T0 + 8)]
    applied, refused = state.commands_applied, state.commands_refused
    echoes = [state.apply_logged(entry) for entry in read_back]
    for echo in echoes:
        assert echo.applied and echo.confirmed, echo.reason
    assert (state.commands_applied, state.commands_refused) == (applied, refused)
    assert state.latest_applied()["billing-agent/status/quarantine"]["offset"] == 2

    # every other worker (and a restart) applies them as any command, and reports them
    # in the same words (their lineage is one event, whichever worker records it)
    other = new_state()
    results = {entry.offset: other.apply_logged(entry) for entry in topic.entries}
    assert other.agents["billing-agent"].status == "quarantined" and not other.problems
    for entry, echo in zip(read_back, echoes, strict=True):
        assert results[entry.offset].applied
        assert results[entry.offset].reason == echo.reason
    again = state.apply_logged(topic.append(record, T0 + 9))
    assert not again.applied and "a replay" in again.reason


def test_a_refused_issue_publishes_nothing_and_keeps_the_place() -> None:
    state = new_state()
    record, result = state.issue(
        "agent.quarantine", None, {"agent_id": "billing-agent"}, GATE, "gate:w-1", T0
    )
    assert record is None and not result.applied and "lacks reason" in result.reason
    ok, _ = state.issue(
        "agent.quarantine", None, {"agent_id": "billing-agent", "reason": "x"}, GATE, "gate:w-1", T0
    )
    assert ok is not None and ok["sequence"] == 0
    stranger, refused = state.issue(
        "agent.quarantine", None, {"agent_id": "a", "reason": "x"}, STRANGER, "gate:w-1", T0
    )
    assert stranger is None and "is not an operator key valid" in refused.reason


def test_a_foreign_command_in_a_history_issued_here_is_a_fork() -> None:
    """Someone else with the gate key writes as this worker: the histories disagree."""
    state = new_state()
    mine, _ = state.issue(
        "agent.quarantine", None, {"agent_id": "a-1", "reason": "x"}, GATE, "gate:w-1", T0
    )
    foreign = Chain(GATE, "gate:w-1").sign("agent.quarantine", {"agent_id": "a-2", "reason": "y"})
    reason = last_reason(state, Topic().append(foreign))
    assert "fork in the history of gate worker 'gate:w-1'" in reason
    assert [p.kind for p in state.problems] == ["fork"] and mine is not None


# --- the /control view ----------------------------------------------------------------------


def test_latest_applied_shows_only_applied_commands() -> None:
    topic, ops = Topic(), Chain(OPERATOR)
    topic.append(ops.sign("agent.register", agent(), T0))
    forged = Chain(STRANGER).sign("agent.revoke", {"agent_id": "billing-agent", "reason": "x"})
    topic.append(forged, T0 + 1)
    topic.append(None, T0 + 2, key=b"billing-agent")
    state = topic.replay()
    latest = state.latest_applied()
    assert set(latest) == {"billing-agent"}
    entry = latest["billing-agent"]
    assert entry["kind"] == "agent.register" and entry["signer"] == "operator key 'ops-alice'"
    assert (entry["sequence"], entry["offset"], entry["applied_at_ms"]) == (0, 0, T0)
    summary = state.snapshot_summary()["history"]
    assert summary == {"signers": {"operator key 'ops-alice'": 0}, "problems": []}
    json.dumps(latest)
