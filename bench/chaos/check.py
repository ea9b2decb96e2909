"""The chaos suite's checker: what the run planned and observed in, every invariant's count
and examples out. Pure (no Kafka, no clock), so :mod:`bench.chaos.selftest` can feed it
corrupted data and show each invariant failing.

The invariants (a subject is a planned intent, or a planned garbage record by its
position on ``intents``):

``lost``
    subjects with no first outcome (a record on approved/denied/review/rejected that is
    not the answer to a review).
``duplicated``
    first outcomes beyond one per subject, plus review answers beyond one per held subject
    and answers for subjects that were never held.
``wrongly_approved``
    subjects with an approval that must not have one: a must-deny or garbage subject, a
    review subject approved without being held, or approved though the suite answered
    deny or did not answer.
``good_denied``
    good subjects whose first outcome is ``denied`` (a goal: nothing good is denied
    because the machine was busy; the reasons are in the details).
``approvals_unverified``
    approvals that fail the public verifier (:func:`processors.approval.verify_approval`)
    with the gate's JWKS, at their own issue time, against the exact bytes the suite
    published for that intent (the subject digest), or whose ids differ from the record's.
``sink_mismatch``
    the sum over the sink's tables of |rows in ClickHouse - distinct records on Kafka|,
    each table keyed as the sink keys it.
``notary_excess``
    ``lineage-log`` entries beyond one per distinct event id committed on ``lineage``:
    an event logged twice, or an event that was never on ``lineage`` (invented).
``notary_missing``
    distinct ``lineage`` event ids that are not in ``lineage-log``.
``checkpoints_inconsistent``
    checkpoints whose note does not verify with the pinned notary key, whose tree size
    is smaller than the one before (a rollback), or whose root is not the RFC 9162 root
    of the first ``size`` entries of ``lineage-log`` as read (recomputed here): so all of
    them are prefixes of one log, and each is consistent with every earlier one.
``state_untrusted``
    committed ``gate-state`` records that would make a worker distrust the agent: one
    whose write count is not above the agent's previous one on its partition (a restore
    that missed a committed batch and wrote a count again, a rolled-back or replayed
    state), or one that does not open with the gate state key (forged, a tombstone).
``log_broken``
    ``lineage-log`` positions whose record key or ``log_index`` is not the position,
    whose event was altered (its ``event_hash``), whose ``prev_hash`` is not the previous
    entry's ``event_hash``, or whose gate signature does not verify with the gate's JWKS.

Identity: ``len(lineage-log) - distinct lineage ids = notary_excess - notary_missing``.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.model import (
    SINK_TABLES,
    Anchors,
    Class,
    IntentRecord,
    LogRecord,
    Observed,
    OutcomeRecord,
    Planned,
)
from processors.approval import verify_approval
from processors.crypto.keys import Keyset
from processors.exceptions import TrustplaneError
from processors.lineage import LineageRecorder
from processors.log.attest import verify_event_signature
from processors.log.chain import leaf_bytes, verify_event_hash
from processors.log.checkpoint import Checkpoint, NoteVerifier, verify_checkpoint
from processors.log.merkle import MerkleLog
from processors.records import derived_id, digest
from sinks.clickhouse import checkpoint_from_note

__all__ = [
    "INVARIANTS",
    "HARD",
    "GOALS",
    "Finding",
    "Result",
    "check",
    "is_resolution",
    "kafka_counts",
]

INVARIANTS = (
    "lost",
    "duplicated",
    "wrongly_approved",
    "good_denied",
    "sink_mismatch",
    "notary_excess",
    "notary_missing",
    "approvals_unverified",
    "checkpoints_inconsistent",
    "log_broken",
    "state_untrusted",
)
GOALS = ("good_denied",)
"""Invariants that are goals of the gate under load rather than correctness: reported,
not failed on."""
HARD = tuple(name for name in INVARIANTS if name not in GOALS)

MAX_EXAMPLES = 10


@dataclass
class Finding:
    """One invariant: how many violations, and a few of them spelt out."""

    name: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str, count: int = 1) -> None:
        self.count += count
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)


@dataclass
class Result:
    findings: dict[str, Finding]
    details: dict[str, Any] = field(default_factory=dict)
    """Counts that explain the findings (outcome mix, reasons, per-table counts, ...)."""

    def count(self, name: str) -> int:
        return self.findings[name].count

    def failing(self, names: Iterable[str] = INVARIANTS) -> set[str]:
        return {name for name in names if self.findings[name].count}

    @property
    def ok(self) -> bool:
        """Every hard invariant holds."""
        return not self.failing(HARD)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "invariants": {
                name: {"count": f.count, "examples": f.examples}
                for name, f in self.findings.items()
            },
            "details": self.details,
        }


def check(planned: Sequence[Planned], observed: Observed, anchors: Anchors) -> Result:
    """Judge one run (see the module docstring for each invariant)."""
    result = Result({name: Finding(name) for name in INVARIANTS})
    by_subject = {p.subject: p for p in planned}
    _check_outcomes(planned, observed, result)
    _check_approvals(by_subject, observed.outcomes, anchors, result.findings)
    _check_sink(observed, result)
    _check_notary(observed, result)
    _check_log(observed.log, anchors, result.findings["log_broken"])
    _check_checkpoints(observed.log, observed.checkpoints, anchors, result)
    _check_state(observed, result)
    return result


# -- outcomes ---------------------------------------------------------------------------


def is_resolution(record: OutcomeRecord) -> bool:
    """Whether an approved/denied record answers a review rather than decides an intent
    first: its id (a denial) or the decision event it names (an approval) is the one the
    gate derives for a resolved review (``streams/gate/gate.py``, ``_resolve``)."""
    subject = f"review:{record.intent_digest}"
    if record.topic == "denied":
        expected = derived_id("decision", record.intent_id, record.intent_digest, subject)
        return record.record_id == expected
    if record.topic == "approved":
        return record.lineage_event_id == LineageRecorder.decision_event_id(subject, "review")
    return False


def _subjects_by_position(
    planned: Sequence[Planned], intents: Sequence[IntentRecord]
) -> dict[tuple[int, int], str]:
    """Where each subject sits on ``intents``: intents by id, garbage by its bytes."""
    garbage = {digest(p.value): p.subject for p in planned if p.cls is Class.GARBAGE}
    where: dict[tuple[int, int], str] = {}
    for record in intents:
        subject = record.intent_id or garbage.get(record.value_sha256)
        if subject is not None:
            where[(record.partition, record.offset)] = subject
    return where


def _check_outcomes(planned: Sequence[Planned], observed: Observed, result: Result) -> None:
    findings = result.findings
    where = _subjects_by_position(planned, observed.intents)
    known = {p.subject for p in planned}
    first: dict[str, list[OutcomeRecord]] = collections.defaultdict(list)
    answers: dict[str, list[OutcomeRecord]] = collections.defaultdict(list)
    refusals: collections.Counter[str] = collections.Counter()
    unknown: list[str] = []
    for record in observed.outcomes:
        if record.topic == "rejected":
            source = record.source
            if source is None or source[0] != observed.intents_topic:
                refusals[source[0] if source else "?"] += 1  # the notary's, the sink's
                continue
            subject: str | None = where.get((source[1], source[2]))
        else:
            subject = record.intent_id
        if subject is None or subject not in known:
            unknown.append(f"{record.topic} {record.record_id} for {subject or '?'}")
            continue
        (answers if is_resolution(record) else first)[subject].append(record)

    mix: collections.Counter[str] = collections.Counter()
    good_reasons: collections.Counter[str] = collections.Counter()
    informational: dict[str, Finding] = {
        name: Finding(name)
        for name in (
            "good_held",
            "good_rejected",
            "unexpected",
            "denied_by_another_layer",
            "review_unresolved",
        )
    }
    for item in planned:
        decided = first.get(item.subject, [])
        answered = answers.get(item.subject, [])
        what = f"{item.subject} ({item.cls.value}/{item.kind}, {item.agent_id})"
        topics = [r.topic for r in decided]
        mix[f"{item.cls.value}->{topics[0] if topics else 'none'}"] += 1
        if not decided:
            findings["lost"].add(what)
        if len(decided) > 1:
            findings["duplicated"].add(f"{what}: {', '.join(topics)}", len(decided) - 1)
        held = "review" in topics
        if answered and not held:
            findings["duplicated"].add(f"{what}: answered but never held", len(answered))
        elif len(answered) > 1:
            findings["duplicated"].add(f"{what}: answered {len(answered)} times", len(answered) - 1)
        approved = [r for r in (*decided, *answered) if r.topic == "approved"]
        if approved and _must_not_be_approved(item, decided):
            findings["wrongly_approved"].add(f"{what}: {', '.join(r.record_id for r in approved)}")
        _judge_class(item, what, decided, answered, findings, informational, good_reasons)
    result.details.update(
        {
            "outcome_mix": dict(sorted(mix.items())),
            "good_denied_reasons": dict(good_reasons.most_common(20)),
            "refusals_by_source": dict(refusals),
            "undecodable": dict(observed.undecodable),
            "unknown_outcomes": {"count": len(unknown), "examples": unknown[:MAX_EXAMPLES]},
            **{
                name: {"count": f.count, "examples": f.examples}
                for name, f in informational.items()
            },
        }
    )


def _must_not_be_approved(item: Planned, decided: Sequence[OutcomeRecord]) -> bool:
    if item.cls in (Class.MUST_DENY, Class.GARBAGE):
        return True
    if item.cls is Class.REVIEW:
        held = any(r.topic == "review" for r in decided)
        return not held or item.answer != "approve"
    return False


def _judge_class(
    item: Planned,
    what: str,
    decided: Sequence[OutcomeRecord],
    answered: Sequence[OutcomeRecord],
    findings: Mapping[str, Finding],
    informational: Mapping[str, Finding],
    good_reasons: collections.Counter[str],
) -> None:
    """The class-specific expectations beyond ``wrongly_approved``."""
    if not decided:
        return
    head = decided[0]
    if item.cls is Class.GOOD:
        if head.topic == "denied":
            reason = "; ".join(head.reasons) or "(no reason)"
            findings["good_denied"].add(f"{what}: {reason}")
            good_reasons[reason[:160]] += 1
        elif head.topic == "review":
            informational["good_held"].add(f"{what}: {'; '.join(head.reasons)}")
        elif head.topic == "rejected":
            informational["good_rejected"].add(f"{what}: {'; '.join(head.reasons)}")
    elif item.cls is Class.MUST_DENY and head.topic not in ("denied", "approved"):
        informational["unexpected"].add(f"{what}: first outcome {head.topic}, expected denied")
    elif item.cls is Class.MUST_DENY and head.topic == "denied" and item.layer:
        if not any(reason.startswith(f"{item.layer}:") for reason in head.reasons):
            reasons = "; ".join(head.reasons)
            informational["denied_by_another_layer"].add(f"{what}: {reasons}")
    elif item.cls is Class.REVIEW:
        if head.topic not in ("review", "approved"):
            reasons = "; ".join(head.reasons)
            informational["unexpected"].add(f"{what}: first outcome {head.topic}: {reasons}")
        elif head.topic == "review" and item.answer is not None and not answered:
            informational["review_unresolved"].add(f"{what}: answered {item.answer}, still held")
    elif item.cls is Class.GARBAGE and head.topic != "rejected":
        informational["unexpected"].add(f"{what}: first outcome {head.topic}, expected rejected")


# -- approvals ------------------------------------------------------------------------


def _check_approvals(
    by_subject: Mapping[str, Planned],
    outcomes: Sequence[OutcomeRecord],
    anchors: Anchors,
    findings: Mapping[str, Finding],
) -> None:
    finding = findings["approvals_unverified"]
    keyset = Keyset.from_jwks(anchors.gate_jwks, source="the gate's JWKS")
    for record in outcomes:
        if record.topic != "approved":
            continue
        planned = by_subject.get(record.intent_id or "")
        if planned is None or record.envelope is None:
            finding.add(f"{record.record_id}: no intent bytes for {record.intent_id!r}")
            continue
        try:
            verified = verify_approval(
                record.envelope, keyset, record.issued_at_ms, intent=planned.value
            )
        except TrustplaneError as exc:
            finding.add(f"{record.record_id} ({record.intent_id}): {exc.reason}")
            continue
        if (verified.intent_id, verified.approval_id) != (record.intent_id, record.record_id):
            finding.add(
                f"{record.record_id}: the envelope approves {verified.approval_id} for "
                f"{verified.intent_id}, the record says {record.record_id} for {record.intent_id}"
            )


# -- the sink -------------------------------------------------------------------------


def kafka_counts(observed: Observed) -> dict[str, int]:
    """Distinct records per sink table, keyed as the table keys its rows (its
    ReplacingMergeTree ``ORDER BY``, ``schemas/sql/``)."""

    def topic(name: str) -> list[OutcomeRecord]:
        return [r for r in observed.outcomes if r.topic == name]

    checkpoints = set()
    for note in observed.checkpoints:
        try:
            row = checkpoint_from_note(note, 0)
        except TrustplaneError:
            continue
        checkpoints.add((row["origin"], row["tree_size"]))
    decisions = [*topic("denied"), *topic("review")]
    return {
        "intents": len({(r.partition, r.offset) for r in observed.intents if r.intent_id}),
        "approvals": len({(r.agent_id, r.record_id) for r in topic("approved")}),
        "decisions": len({(r.agent_id, r.record_id, r.outcome) for r in decisions}),
        "rejections": len(
            {(r.source[0] if r.source else "", r.record_id) for r in topic("rejected")}
        ),
        "outcomes": len(set(observed.outcome_ids)),
        "lineage_events": len({r.event.get("log_index") for r in observed.log}),
        "checkpoints": len(checkpoints),
    }


def _check_sink(observed: Observed, result: Result) -> None:
    finding = result.findings["sink_mismatch"]
    kafka = kafka_counts(observed)
    store = observed.sink_counts
    if store is None:
        finding.add("the sink's store was not asked")
        return
    tables = {}
    for table in SINK_TABLES:
        rows = store.get(table)
        tables[table] = {"clickhouse": rows, "kafka": kafka[table]}
        if rows is None:
            finding.add(f"{table}: not counted in ClickHouse")
        elif rows != kafka[table]:
            finding.add(
                f"{table}: {rows} rows in ClickHouse, {kafka[table]} on Kafka",
                abs(rows - kafka[table]),
            )
    result.details["sink_tables"] = tables


# -- the notary -------------------------------------------------------------------------


def _check_notary(observed: Observed, result: Result) -> None:
    lineage = set(observed.lineage_ids)
    logged = [str(r.event.get("event_id")) for r in observed.log]
    excess = result.findings["notary_excess"]
    counts = collections.Counter(logged)
    for event_id, n in counts.items():
        if event_id not in lineage:
            excess.add(f"{event_id}: logged {n} time(s), never on lineage", n)
        elif n > 1:
            excess.add(f"{event_id}: logged {n} times", n - 1)
    missing = result.findings["notary_missing"]
    for event_id in sorted(lineage - set(logged)):
        missing.add(f"{event_id}: on lineage, not in lineage-log")
    result.details["notary"] = {
        "lineage_records": len(observed.lineage_ids),
        "lineage_distinct": len(lineage),
        "log_entries": len(logged),
        "checkpoints": len(observed.checkpoints),
    }


def _check_log(log: Sequence[LogRecord], anchors: Anchors, finding: Finding) -> None:
    keyset = Keyset.from_jwks(anchors.gate_jwks, source="the gate's JWKS")
    previous: str | None = None
    for position, record in enumerate(log):
        event = record.event
        problems = []
        if record.key != str(position).encode():
            problems.append(f"record key {record.key!r}")
        if event.get("log_index") != position:
            problems.append(f"log_index {event.get('log_index')!r}")
        try:
            verify_event_hash(event, position=position)
        except TrustplaneError as exc:
            problems.append(exc.reason)
        if event.get("prev_hash") != previous:
            problems.append("prev_hash is not the previous entry's event_hash")
        try:
            verify_event_signature(event, keyset)
        except TrustplaneError as exc:
            problems.append(exc.reason)
        if problems:
            finding.add(f"position {position} ({event.get('event_id')}): {'; '.join(problems)}")
        hash_ = event.get("event_hash")
        previous = hash_ if isinstance(hash_, str) else None


def _leaf(event: Mapping[str, Any]) -> bytes:
    try:
        return leaf_bytes(event)
    except TrustplaneError:  # no valid event_hash: a leaf no checkpoint can match
        return hashlib.sha256(repr(sorted(event.items())).encode()).digest()


def _check_checkpoints(
    log: Sequence[LogRecord], notes: Sequence[str], anchors: Anchors, result: Result
) -> None:
    finding = result.findings["checkpoints_inconsistent"]
    verifier = NoteVerifier.from_vkey(anchors.notary_vkey)
    tree = MerkleLog()
    for record in log:
        tree.append(_leaf(record.event))
    previous: Checkpoint | None = None
    for n, note in enumerate(notes):
        try:
            checkpoint = verify_checkpoint(note, verifier, origin=verifier.name)
        except TrustplaneError as exc:
            finding.add(f"checkpoint #{n}: {exc.reason}")
            continue
        where = f"checkpoint #{n} (size {checkpoint.size})"
        if previous is not None and checkpoint.size < previous.size:
            finding.add(f"{where}: smaller than the one before it ({previous.size}): a rollback")
        elif checkpoint.size > tree.size:
            finding.add(f"{where}: covers more than the {tree.size} entries of lineage-log")
        elif tree.root(checkpoint.size) != checkpoint.root_hash:
            finding.add(f"{where}: its root is not the root of the log's first entries")
        if previous is None or checkpoint.size >= previous.size:
            previous = checkpoint
    result.details["checkpoints"] = {
        "count": len(notes),
        "largest": previous.size if previous else 0,
        "log_entries": tree.size,
    }


# -- the agents' state -----------------------------------------------------------------


def _check_state(observed: Observed, result: Result) -> None:
    finding = result.findings["state_untrusted"]
    if observed.state_writes is None:
        finding.add("the agents' state changelog was not read")
        return
    # (partition, agent) -> (write count, offset) of its last record that counted
    last: dict[tuple[int, str], tuple[int, int]] = {}
    for write in sorted(observed.state_writes, key=lambda w: (w.partition, w.offset)):
        where = f"gate-state/{write.partition}@{write.offset} ({write.agent_id})"
        if write.writes is None:
            finding.add(f"{where}: {write.problem}")
            continue
        previous = last.get((write.partition, write.agent_id))
        if previous is not None and write.writes <= previous[0]:
            finding.add(
                f"{where}: write {write.writes} after write {previous[0]} at offset {previous[1]}"
            )
            continue
        last[(write.partition, write.agent_id)] = (write.writes, write.offset)
    result.details["state"] = {
        "records": len(observed.state_writes),
        "agents": len(last),
    }
