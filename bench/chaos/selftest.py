"""A checker that can fail: a small consistent dataset built with the project's own signing
code (approvals, signed lineage, linked log, signed checkpoints), and one corruption per
invariant that must make exactly that invariant fail.

``python -m bench.chaos --self-test`` prints the table; ``tests/bench/chaos/test_checker.py``
asserts it.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.check import Result, check, kafka_counts
from bench.chaos.model import (
    Anchors,
    Class,
    IntentRecord,
    LogRecord,
    Observed,
    OutcomeRecord,
    Planned,
    StateWrite,
)
from processors.approval import ApprovalSigner, LineagePosition
from processors.approval.keyring import KeyringEntry, SigningKeyring
from processors.crypto.keys import SigningKey, generate_signing_key
from processors.enforcement import Enforcement, Outcome
from processors.intent import Intent
from processors.lineage import LineageRecorder
from processors.log.attest import sign_event
from processors.log.chain import leaf_bytes, link
from processors.log.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from processors.log.merkle import MerkleLog
from processors.records import (
    SourcePosition,
    approval_record,
    decision_record,
    digest,
    rejection_record,
)
from processors.verdict import Verdict
from streams.codec import default_codec
from streams.sdk.client import new_intent

__all__ = ["Dataset", "consistent_dataset", "CORRUPTIONS", "run_self_test"]

TOPIC = "selftest.intents"
ORIGIN = "selftest.local/lineage"
WORKER = "selftest-worker"


@dataclass
class Dataset:
    """Planned records, what a run observed, the anchors, and the keys that signed it all
    (so a corruption can sign what a buggy gate or notary would)."""

    planned: list[Planned]
    observed: Observed
    anchors: Anchors
    signer: ApprovalSigner = field(repr=False)
    gate_key: SigningKey = field(repr=False)
    notary: NoteSigner = field(repr=False)
    intents: dict[str, Intent] = field(repr=False, default_factory=dict)

    def check(self) -> Result:
        return check(self.planned, self.observed, self.anchors)

    def resync_sink(self) -> None:
        """The store as a correct sink would hold it for the records as they now are."""
        self.observed.sink_counts = kafka_counts(self.observed)

    def approval(self, subject: str, *, review: bool = False) -> OutcomeRecord:
        """A genuine approval of ``subject``, signed by the dataset's gate key."""
        planned = self._planned(subject)
        intent = self.intents[subject]
        place = f"review:{digest(planned.value)}" if review else f"{TOPIC}/0@{subject}"
        record = approval_record(
            intent,
            Enforcement(Outcome.APPROVED, (), (Verdict.allow("policy", "permitted"),)),
            intent_digest=digest(planned.value),
            intent_bytes=planned.value,
            now_ms=_now_ms(),
            worker=WORKER,
            signer=self.signer,
            lineage=LineagePosition(
                LineageRecorder.decision_event_id(place, "review" if review else "enforcement")
            ),
        )
        return _approval(record)

    def decision(
        self, subject: str, outcome: Outcome, reason: str, *, review: bool = False
    ) -> OutcomeRecord:
        planned = self._planned(subject)
        verdict = Verdict.deny if outcome is Outcome.DENIED else Verdict.review
        record = decision_record(
            self.intents[subject],
            Enforcement(outcome, (reason,), (verdict("policy", reason),)),
            intent_digest=digest(planned.value),
            now_ms=_now_ms(),
            worker=WORKER,
            occurrence=f"review:{digest(planned.value)}" if review else f"{TOPIC}/0@{subject}",
        )
        return _decision(record, "denied" if outcome is Outcome.DENIED else "review")

    def relink_log(self, events: list[dict[str, Any]]) -> None:
        """Replace the log with ``events`` linked as a notary would, and re-sign
        checkpoints over it (every 3 entries and at the end)."""
        tree = MerkleLog()
        log: list[LogRecord] = []
        notes: list[str] = []
        previous: str | None = None
        for index, event in enumerate(events):
            linked = link({**event, "log_index": index}, previous)
            previous = linked["event_hash"]
            log.append(LogRecord(str(index).encode(), linked))
            tree.append(leaf_bytes(linked))
            if tree.size % 3 == 0 or index == len(events) - 1:
                notes.append(self.note(tree.size, tree.root()))
        self.observed.log = log
        self.observed.checkpoints = notes

    def note(self, size: int, root: bytes) -> str:
        return sign_checkpoint(Checkpoint(ORIGIN, size, root), self.notary)

    def _planned(self, subject: str) -> Planned:
        return next(p for p in self.planned if p.subject == subject)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _approval(record: dict[str, Any]) -> OutcomeRecord:
    statement = json.loads(base64.b64decode(json.loads(record["envelope"])["payload"]))
    lineage = statement["predicate"].get("lineage") or {}
    return OutcomeRecord(
        topic="approved",
        record_id=record["approval_id"],
        intent_id=record["intent_id"],
        agent_id=record["agent_id"],
        intent_digest=record["intent_digest"],
        outcome="APPROVED",
        envelope=record["envelope"],
        lineage_event_id=lineage.get("eventId"),
        issued_at_ms=record["issued_at_ms"],
    )


def _decision(record: dict[str, Any], topic: str) -> OutcomeRecord:
    return OutcomeRecord(
        topic=topic,
        record_id=record["decision_id"],
        intent_id=record["intent_id"],
        agent_id=record["agent_id"],
        intent_digest=record["intent_digest"],
        outcome=record["outcome"],
        reasons=tuple(record["reasons"]),
        issued_at_ms=record["decided_at_ms"],
    )


# (class, kind, review answer) of the dataset's intents, in publish order
_SHAPE: tuple[tuple[Class, str, str | None], ...] = (
    (Class.GOOD, "good", None),
    (Class.GOOD, "good", None),
    (Class.MUST_DENY, "policy", None),
    (Class.GOOD, "good", None),
    (Class.MUST_DENY, "unregistered", None),
    (Class.REVIEW, "refund", "approve"),
    (Class.REVIEW, "refund", "deny"),
    (Class.REVIEW, "refund", None),
    (Class.MUST_DENY, "quarantined", None),
    (Class.GOOD, "good", None),
)


def consistent_dataset() -> Dataset:
    """A run in which every invariant holds."""
    codec = default_codec()
    gate_key = generate_signing_key("selftest-gate")
    keyring = SigningKeyring([KeyringEntry(gate_key)])
    agent_key = generate_signing_key("selftest-agent")
    notary = NoteSigner(ORIGIN, generate_signing_key())
    planned: list[Planned] = []
    intents: dict[str, Intent] = {}
    observed = Observed(TOPIC, [], [], [], [], [])
    dataset = Dataset(
        planned,
        observed,
        Anchors(keyring.jwks(), notary.vkey),
        ApprovalSigner(keyring),
        gate_key,
        notary,
        intents,
    )
    for n, (cls, kind, answer) in enumerate(_SHAPE):
        record = new_intent(
            "selftest-agent",
            "invoices.read",
            f"invoice:{n}",
            sequence=n + 1,
            key_id=agent_key.kid,
            sign_with=agent_key,
            ttl_s=3600,
        )
        value = codec.encode("Intent", record)
        subject = str(record["intent_id"])
        planned.append(
            Planned(subject, "selftest-agent", cls, kind, b"selftest-agent", value, answer)
        )
        intents[subject] = Intent.from_record(record, key=b"selftest-agent")
        observed.intents.append(IntentRecord(0, n, digest(value), subject, "selftest-agent"))
    garbage = b"\x00not an intent"
    planned.append(Planned("garbage-0", "", Class.GARBAGE, "garbage", b"x", garbage))
    observed.intents.append(IntentRecord(0, len(_SHAPE), digest(garbage), None))

    recorder = LineageRecorder(WORKER)
    events: list[dict[str, Any]] = []
    for item in planned[: len(_SHAPE)]:
        if item.cls is Class.GOOD:
            outcomes = [dataset.approval(item.subject)]
        elif item.cls is Class.MUST_DENY:
            outcomes = [dataset.decision(item.subject, Outcome.DENIED, "policy: forbidden")]
        else:
            outcomes = [dataset.decision(item.subject, Outcome.REVIEW, "policy: held")]
            if item.answer == "approve":
                outcomes.append(dataset.approval(item.subject, review=True))
            elif item.answer == "deny":
                outcomes.append(
                    dataset.decision(item.subject, Outcome.DENIED, "review: denied", review=True)
                )
        observed.outcomes += outcomes
        for outcome in outcomes:
            events.append(
                recorder.event(
                    subject=outcome.record_id,
                    stage="enforcement",
                    event_type="intent.decided",
                    status=outcome.topic,
                    now_ms=_now_ms(),
                    intent_id=item.subject,
                    agent_id=item.agent_id,
                )
            )
    position = SourcePosition(TOPIC, 0, len(_SHAPE))
    rejection = rejection_record(
        position, b"x", garbage, code="not_avro", reason="not Avro", now_ms=_now_ms(), worker=WORKER
    )
    observed.outcomes.append(
        OutcomeRecord(
            topic="rejected",
            record_id=rejection["rejection_id"],
            intent_id=None,
            agent_id="",
            outcome="REJECTED",
            reasons=(rejection["reason"],),
            source=(TOPIC, 0, len(_SHAPE)),
        )
    )
    events.append(recorder.rejected(position, "not_avro", "not Avro", digest(garbage), _now_ms()))
    for event in events:
        sign_event(event, gate_key)
    observed.lineage_ids = [e["event_id"] for e in events]
    dataset.relink_log(events)
    dataset.resync_sink()
    # the agent's state written once per decided batch, on its partition, counts rising
    observed.state_writes = [
        StateWrite(0, offset, "selftest-agent", offset + 1) for offset in range(len(_SHAPE))
    ]
    return dataset


# -- corruptions: one per invariant --------------------------------------------------------


def _subject(data: Dataset, cls: Class, kind: str | None = None) -> str:
    return next(p.subject for p in data.planned if p.cls is cls and kind in (None, p.kind))


def _replace(data: Dataset, subject: str, topic: str, new: OutcomeRecord) -> None:
    outcomes = data.observed.outcomes
    index = next(i for i, r in enumerate(outcomes) if r.intent_id == subject and r.topic == topic)
    outcomes[index] = new
    data.resync_sink()


def drop_an_outcome(data: Dataset) -> None:
    subject = _subject(data, Class.GOOD)
    data.observed.outcomes = [r for r in data.observed.outcomes if r.intent_id != subject]
    data.resync_sink()


def duplicate_an_outcome(data: Dataset) -> None:
    subject = _subject(data, Class.MUST_DENY)
    record = next(r for r in data.observed.outcomes if r.intent_id == subject)
    data.observed.outcomes.append(record)


def approve_a_must_deny(data: Dataset) -> None:
    subject = _subject(data, Class.MUST_DENY, "policy")
    _replace(data, subject, "denied", data.approval(subject))


def deny_a_good_one(data: Dataset) -> None:
    subject = _subject(data, Class.GOOD)
    _replace(data, subject, "approved", data.decision(subject, Outcome.DENIED, "anomaly: burst"))


def alter_an_approval_byte(data: Dataset) -> None:
    outcomes = data.observed.outcomes
    index = next(i for i, r in enumerate(outcomes) if r.topic == "approved")
    envelope = json.loads(outcomes[index].envelope or b"{}")
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[payload.index(b"invoice:") + len(b"invoice:")] ^= 0x01  # invoice:0 -> invoice:1
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    outcomes[index] = dataclasses.replace(outcomes[index], envelope=json.dumps(envelope).encode())


def drop_a_sink_row(data: Dataset) -> None:
    assert data.observed.sink_counts is not None  # noqa: S101 - consistent_dataset() sets it
    data.observed.sink_counts["approvals"] -= 1


def log_an_event_twice(data: Dataset) -> None:
    events = [copy.deepcopy(r.event) for r in data.observed.log]
    data.relink_log([*events, copy.deepcopy(events[3])])
    data.resync_sink()


def invent_an_event(data: Dataset) -> None:
    events = [copy.deepcopy(r.event) for r in data.observed.log]
    invented = {**events[0], "event_id": "event-invented-by-the-notary"}
    sign_event(invented, data.gate_key)
    data.relink_log([*events, invented])
    data.resync_sink()


def leave_an_event_out(data: Dataset) -> None:
    events = [copy.deepcopy(r.event) for r in data.observed.log]
    data.relink_log(events[:-1])
    data.resync_sink()


def fork_a_checkpoint(data: Dataset) -> None:
    events = [copy.deepcopy(r.event) for r in data.observed.log]
    other = MerkleLog()
    for event in [*events[:-1], {**events[-1], "status": "forked"}]:
        other.append(leaf_bytes(link(event, event.get("prev_hash"))))
    data.observed.checkpoints.append(data.note(other.size, other.root()))
    data.resync_sink()


def alter_a_logged_event(data: Dataset) -> None:
    """An event changed after the gate signed it, then linked and checkpointed as if
    nothing happened: only its gate signature gives it away."""
    events = [copy.deepcopy(r.event) for r in data.observed.log]
    events[2]["status"] = "approved"
    data.relink_log(events)
    data.resync_sink()


def write_a_state_count_again(data: Dataset) -> None:
    # a restore that missed the previous owner's last batch: its next write repeats a count
    writes = data.observed.state_writes
    assert writes is not None  # noqa: S101 - consistent_dataset() sets it
    last = writes[-1]
    writes.append(dataclasses.replace(last, offset=last.offset + 1))


CORRUPTIONS: dict[str, tuple[str, Callable[[Dataset], None]]] = {
    "drop an outcome": ("lost", drop_an_outcome),
    "duplicate an outcome": ("duplicated", duplicate_an_outcome),
    "approve a must-deny intent": ("wrongly_approved", approve_a_must_deny),
    "deny a good intent": ("good_denied", deny_a_good_one),
    "alter an approval byte": ("approvals_unverified", alter_an_approval_byte),
    "drop a sink row": ("sink_mismatch", drop_a_sink_row),
    "log an event twice": ("notary_excess", log_an_event_twice),
    "log an invented event": ("notary_excess", invent_an_event),
    "leave an event out of the log": ("notary_missing", leave_an_event_out),
    "fork a checkpoint": ("checkpoints_inconsistent", fork_a_checkpoint),
    "alter a logged event": ("log_broken", alter_a_logged_event),
    "write an agent's state count again": ("state_untrusted", write_a_state_count_again),
}
"""What to do to a consistent dataset -> (the invariant that must fail, how)."""


def run_self_test(out: Callable[[str], None] = print) -> bool:
    """Check the consistent dataset, then each corruption; True if each invariant fails
    exactly where it should."""
    ok = True
    clean = consistent_dataset().check()
    failing = sorted(clean.failing())
    ok &= not failing
    out(
        f"{'consistent dataset':<34} fails: {', '.join(failing) or 'nothing':<26} expected: nothing"
    )
    for name, (invariant, corrupt) in CORRUPTIONS.items():
        data = consistent_dataset()
        corrupt(data)
        failing = sorted(data.check().failing())
        good = failing == [invariant]
        ok &= good
        out(
            f"{name:<34} fails: {', '.join(failing) or 'nothing':<26} expected: {invariant}"
            f"{'' if good else '   <-- WRONG'}"
        )
    return ok
