"""What-if replay: recorded intents against a draft bundle, before it is published."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from processors.layers.eligibility import LAYER as ELIGIBILITY
from processors.layers.freshness import LAYER as FRESHNESS
from processors.layers.identity import LAYER as IDENTITY
from processors.layers.integrity import IntegrityCheck
from processors.layers.killswitch import LAYER as KILLSWITCH
from processors.layers.policy import (
    MAX_REPLAY,
    Effect,
    PolicyBundle,
    PolicyBundleError,
    PolicyClass,
    PolicyEngine,
    PolicyRequest,
    RecordedIntent,
    WhatIfError,
    compile_bundle,
    compile_draft,
    recorded_policy_ids,
    replay,
)
from processors.layers.policy.whatif import ANOMALY_NOTE, PRE_POLICY_LAYERS
from tests.processors.factories import make_intent

ROOT = Path(__file__).resolve().parents[4]
BUNDLE_DIR = ROOT / "policies" / "bundle"
NOW = 1_794_312_000_000  # Tue 2026-11-10 12:00:00 UTC
DAY = 86_400_000

ALLOWED = (
    ("killswitch", "ALLOW"),
    ("freshness", "ALLOW"),
    ("identity", "ALLOW"),
    ("eligibility", "ALLOW"),
    ("integrity", "ALLOW"),
    ("policy", "ALLOW"),
    ("anomaly", "ALLOW"),
)

LIMIT_1K_REASON = "transfers above 1,000.00 need the treasury role"

HOLD_LARGE = """
@id("payments.large-held")
@reason("transfers above 5,000.00 are held for a person")
@response("review")
permit (principal in Role::"payments-agent", action == Action::"payments.transfer", resource)
when { context.parameters.amount.greaterThan(decimal("5000.00")) };
"""

SUPPORT_QUERIES = """
@id("support.warehouse")
@reason("support agents may query the warehouse")
permit (principal in Role::"support", action == Action::"warehouse.query", resource);
"""


def example_document() -> dict[str, Any]:
    return PolicyBundle.load(BUNDLE_DIR).to_document()


def draft_document(*, replace: tuple[str, str] | None = None, add: str = "") -> dict[str, Any]:
    """The example bundle edited as an operator would, with a new manifest version."""
    doc = example_document()
    if replace is not None:
        old, new = replace
        assert old in doc["policies"]
        doc["policies"] = doc["policies"].replace(old, new)
    doc["policies"] += add
    doc["manifest"] = {**doc["manifest"], "version": "draft-1", "created_at_ms": NOW}
    return doc


def tightened_limit() -> dict[str, Any]:
    doc = draft_document(replace=('decimal("10000.00")', 'decimal("1000.00")'))
    doc["policies"] = doc["policies"].replace(
        "transfers above 10,000.00 need the treasury role", LIMIT_1K_REASON
    )
    return doc


def recorded(
    intent_id: str = "i-1",
    *,
    agent_id: str = "pay-1",
    roles: tuple[str, ...] = ("payments-agent",),
    action: str = "payments.transfer",
    resource: str = "acct:ACME-42",
    outcome: str = "approved",
    layers: tuple[tuple[str, str], ...] = ALLOWED,
    policies: tuple[str, ...] = ("payments.payments-agent",),
    risk: Any = None,
    **parameters: Any,
) -> RecordedIntent:
    return RecordedIntent(
        intent_id=intent_id,
        agent_id=agent_id,
        roles=roles,
        action=action,
        resource=resource,
        environment="prod",
        runtime_id="rt-1",
        issued_at_ms=NOW - 3_600_000,
        parameters=parameters,
        risk=risk,
        recorded_outcome=outcome,
        recorded_layers=layers,
        recorded_policies=policies,
    )


def transfer(intent_id: str, amount: float, **kw: Any) -> RecordedIntent:
    return recorded(intent_id, amount=amount, currency="EUR", **kw)


@pytest.fixture(scope="module")
def current() -> PolicyEngine:
    return compile_bundle(PolicyBundle.load(BUNDLE_DIR), NOW, decision_cache=0)


@pytest.fixture(scope="module")
def tightened() -> PolicyEngine:
    return compile_draft(tightened_limit(), NOW)


# -- compiling the draft ------------------------------------------------------------


def test_draft_compiles_from_the_publish_payload_or_its_json_text() -> None:
    doc = tightened_limit()
    from_doc = compile_draft(doc, NOW)
    from_text = compile_draft(json.dumps(doc), NOW)
    assert from_doc.version == "draft-1"
    assert from_doc.digest == from_text.digest == PolicyBundle.from_document(doc).digest
    assert from_doc.decision_keys == "off"


@pytest.mark.parametrize(
    ("draft", "why"),
    [
        (draft_document(add='\n@id("broken")\npermit (principal, action'), "do not parse"),
        (
            draft_document(
                add='\n@id("typo")\npermit (principal, action == Action::"payments.transfr", '
                "resource);"
            ),
            "do not validate against the schema",
        ),
        (draft_document(add="\npermit (principal, action, resource);"), "@id"),
        ("{not json", "not a JSON bundle document"),
        ({"manifest": {}, "policies": ""}, "missing schema"),
    ],
    ids=["parse", "validate", "no-id", "json", "shape"],
)
def test_a_draft_that_does_not_compile_raises_the_compilers_reason(draft: Any, why: str) -> None:
    with pytest.raises(PolicyBundleError, match=why) as raised:
        compile_draft(draft, NOW)
    assert why in raised.value.reason
    assert raised.value.reason in raised.value.diagnostics()


def test_an_expired_draft_is_refused() -> None:
    doc = draft_document()
    doc["manifest"]["expires_at_ms"] = NOW - 1
    doc["manifest"]["created_at_ms"] = NOW - DAY
    with pytest.raises(PolicyBundleError, match="expired"):
        compile_draft(doc, NOW)


def test_a_draft_older_than_the_active_bundle_is_refused_as_the_gate_would(
    current: PolicyEngine,
) -> None:
    doc = draft_document()
    doc["manifest"]["created_at_ms"] = current.created_at_ms - 1
    with pytest.raises(PolicyBundleError, match="older than the active 2026.11.1"):
        compile_draft(doc, NOW, active=current)
    assert compile_draft(doc, NOW).version == "draft-1"  # without `active`: not checked


# -- effects ------------------------------------------------------------------------


def test_a_tightened_limit_would_deny_the_large_transfer_and_not_the_small(
    current: PolicyEngine, tightened: PolicyEngine
) -> None:
    report = replay(current, tightened, [transfer("big", 1100.0), transfer("small", 500)], limit=10)
    big, small = report.rows
    assert big.effect is Effect.WOULD_DENY
    assert (big.now_class, big.draft_class) == (PolicyClass.ALLOW, PolicyClass.DENY)
    assert big.now is not None and big.draft is not None
    assert big.now.policies == (
        ("payments.payments-agent", current.reason_of("payments.payments-agent")),
    )
    assert big.draft.policies == (("payments.limit-10k", LIMIT_1K_REASON),)
    assert big.draft.why == (f"forbidden by payments.limit-10k: {LIMIT_1K_REASON}",)
    assert big.policies_changed
    assert small.effect is Effect.UNCHANGED
    assert (small.now_class, small.draft_class) == (PolicyClass.ALLOW, PolicyClass.ALLOW)
    assert not small.policies_changed
    assert report.draft_version == "draft-1" and report.draft_digest == tightened.digest
    assert report.current_version == "2026.11.1"


def test_an_intent_the_killswitch_denied_is_unaffected(
    current: PolicyEngine, tightened: PolicyEngine
) -> None:
    killed = transfer(
        "killed",
        1100.0,
        outcome="denied",
        layers=(("killswitch", "DENY"),),
        policies=(),
    )
    (row,) = replay(current, tightened, [killed], limit=1).rows
    assert row.effect is Effect.UNAFFECTED
    assert row.stopped_by == "killswitch"
    assert row.now is None and row.draft is None
    assert "killswitch" in row.note


def test_a_denial_after_policy_is_not_unaffected(
    current: PolicyEngine, tightened: PolicyEngine
) -> None:
    """The anomaly layer runs after policy: the draft's policy answer still counts."""
    layers = (*ALLOWED[:-1], ("anomaly", "DENY"))
    (row,) = replay(
        current, tightened, [transfer("odd", 1100.0, outcome="denied", layers=layers)], limit=1
    ).rows
    assert row.effect is Effect.WOULD_DENY
    assert row.intent.recorded_outcome == "denied"


def test_a_draft_that_permits_more_would_allow_with_the_anomaly_note(
    current: PolicyEngine,
) -> None:
    draft = compile_draft(draft_document(add=SUPPORT_QUERIES), NOW)
    query = recorded(
        "q",
        agent_id="sup-1",
        roles=("support",),
        action="warehouse.query",
        resource="db:warehouse",
        outcome="denied",
        layers=(*ALLOWED[:5], ("policy", "DENY")),
        policies=(),
        sql="select 1",
    )
    (row,) = replay(current, draft, [query], limit=1).rows
    assert row.effect is Effect.WOULD_ALLOW
    assert row.note == ANOMALY_NOTE
    assert "anomaly" in row.note and "undetermined" in row.note
    assert row.now is not None and row.draft is not None
    assert row.now.policies == ()
    assert "(default deny)" in row.now.why[0]
    assert row.draft.policies == (("support.warehouse", "support agents may query the warehouse"),)


def test_a_review_permit_in_the_draft_would_hold(current: PolicyEngine) -> None:
    draft = compile_draft(draft_document(add=HOLD_LARGE), NOW)
    report = replay(current, draft, [transfer("large", 6000), transfer("small", 500)], limit=5)
    large, small = report.rows
    assert large.effect is Effect.WOULD_HOLD
    assert (large.now_class, large.draft_class) == (PolicyClass.ALLOW, PolicyClass.REVIEW)
    assert large.draft is not None
    assert large.draft.why == (
        "held for review by payments.large-held: transfers above 5,000.00 are held for a person",
    )
    assert small.effect is Effect.UNCHANGED


def test_removing_a_permit_would_deny_by_default(current: PolicyEngine) -> None:
    doc = draft_document(
        replace=(
            'action in [Action::"payments.transfer", Action::"invoices.read"],\n  resource\n);',
            'action == Action::"invoices.read",\n  resource\n);',
        )
    )
    draft = compile_draft(doc, NOW)
    (row,) = replay(current, draft, [transfer("t", 100)], limit=1).rows
    assert row.effect is Effect.WOULD_DENY
    assert row.draft is not None and row.draft.policies == ()
    assert row.draft.why[0].endswith("(default deny)")


def test_cedar_request_errors_are_a_deny_with_the_reason(
    current: PolicyEngine, tightened: PolicyEngine
) -> None:
    (row,) = replay(current, tightened, [transfer("bad", 10, colour="red")], limit=1).rows
    assert row.effect is Effect.UNCHANGED  # refused by the schema, now and then
    assert row.draft is not None and row.draft.policy_class is PolicyClass.DENY
    assert row.draft.errors and row.draft.why[0].startswith("policy request refused:")


# -- without the current engine: "now" is the record --------------------------------


def test_without_a_current_engine_now_is_the_recorded_policy_verdict(
    tightened: PolicyEngine,
) -> None:
    held = transfer(
        "held",
        1100.0,
        outcome="review",
        layers=(*ALLOWED[:5], ("policy", "REVIEW"), ("anomaly", "ALLOW")),
        policies=("payments.refunds",),
    )
    errored = transfer("err", 50, outcome="denied", layers=(*ALLOWED[:5], ("policy", "ERROR")))
    report = replay(None, tightened, [transfer("big", 1100.0), held, errored], limit=10)
    big, held_row, errored_row = report.rows
    assert big.effect is Effect.WOULD_DENY
    assert big.now is not None and big.now.source == "record"
    assert big.now.policy_ids == ("payments.payments-agent",)
    assert held_row.now_class is PolicyClass.REVIEW and held_row.effect is Effect.WOULD_DENY
    assert errored_row.now_class is PolicyClass.DENY and errored_row.effect is Effect.WOULD_ALLOW
    assert report.current_digest is None and report.to_dict()["current"] is None


def test_without_a_current_engine_a_record_without_a_policy_verdict_is_refused(
    tightened: PolicyEngine,
) -> None:
    bare = transfer("bare", 10, layers=(("killswitch", "ALLOW"),))
    with pytest.raises(WhatIfError, match="bare: its record has no policy verdict"):
        replay(None, tightened, [bare], limit=1)


# -- the report -----------------------------------------------------------------------


def test_the_report_counts_add_up(current: PolicyEngine, tightened: PolicyEngine) -> None:
    intents = [
        transfer("big-1", 1100.0),
        transfer("big-2", 9000),
        transfer("small-1", 500),
        transfer("small-2", 10),
        transfer("killed", 1100.0, outcome="denied", layers=(("killswitch", "DENY"),)),
        transfer(
            "stale",
            20,
            outcome="denied",
            layers=(("killswitch", "ALLOW"), ("freshness", "DENY")),
        ),
        transfer("over-50k", 60000, outcome="denied", layers=(*ALLOWED[:5], ("policy", "DENY"))),
    ]
    report = replay(current, tightened, intents, limit=100)
    counts = report.counts
    assert counts == {
        Effect.UNAFFECTED: 2,
        Effect.UNCHANGED: 3,
        Effect.WOULD_DENY: 2,
        Effect.WOULD_ALLOW: 0,
        Effect.WOULD_HOLD: 0,
    }
    assert sum(counts.values()) == len(report.rows) == len(intents)
    assert [r.intent.intent_id for r in report.changed] == ["big-1", "big-2"]
    assert not report.truncated and report.elapsed_ms >= 0

    data = json.loads(json.dumps(report.to_dict()))
    assert data["total"] == 7
    assert data["counts"] == {
        "unaffected": 2,
        "unchanged": 3,
        "would_deny": 2,
        "would_allow": 0,
        "would_hold": 0,
    }
    assert data["draft"] == {"version": "draft-1", "digest": tightened.digest}
    first = data["rows"][0]
    assert first["effect"] == "would_deny"
    assert (first["now_class"], first["draft_class"]) == ("ALLOW", "DENY")
    assert first["draft"]["policies"] == [{"id": "payments.limit-10k", "reason": LIMIT_1K_REASON}]
    assert first["intent"]["parameters"] == {"amount": 1100.0, "currency": "EUR"}
    assert data["rows"][5]["stopped_by"] == "freshness"


def test_the_limit_is_capped(current: PolicyEngine, tightened: PolicyEngine) -> None:
    with pytest.raises(WhatIfError, match=f"above the what-if cap of {MAX_REPLAY}"):
        replay(current, tightened, [], limit=MAX_REPLAY + 1)
    with pytest.raises(WhatIfError, match="positive"):
        replay(current, tightened, [], limit=0)
    assert replay(current, tightened, [], limit=MAX_REPLAY).rows == ()


def test_more_intents_than_the_limit_are_left_unread(
    current: PolicyEngine, tightened: PolicyEngine
) -> None:
    read: list[str] = []

    def intents() -> Any:
        for n in range(1, 1_000):
            read.append(str(n))
            yield transfer(str(n), 10)

    report = replay(current, tightened, intents(), limit=3)
    assert [r.intent.intent_id for r in report.rows] == ["1", "2", "3"]
    assert report.truncated and len(read) == 4


# -- the recorded intent ------------------------------------------------------------------


def test_the_replayed_request_is_the_one_the_policy_layer_sends() -> None:
    intent = make_intent(
        parameters={"amount": 1100.0, "currency": "EUR", "memo": None},
        context={"risk": 70.0, "channel": "api"},
    )
    roles = ("payments-agent",)
    record = RecordedIntent.from_intent(intent, roles, recorded_outcome="approved")
    assert record.request() == PolicyRequest.from_intent(intent, roles)
    assert record.risk == 70.0 and record.runtime_id == intent.runtime.runtime_id


def test_recorded_intents_are_normalised_and_checked() -> None:
    record = RecordedIntent(
        intent_id="i",
        agent_id="a",
        roles=["r"],  # type: ignore[arg-type]  # a list from a SQL row is accepted
        action="x",
        resource="y",
        environment="prod",
        runtime_id="rt",
        issued_at_ms=NOW,
        recorded_outcome="denied",
        recorded_layers=[["killswitch", "DENY"]],  # type: ignore[list-item]  # likewise
    )
    assert record.roles == ("r",)
    assert record.recorded_layers == (("killswitch", "DENY"),)
    with pytest.raises(WhatIfError, match=r"recorded_layers\[0\].*not a \(layer, status\) pair"):
        recorded(layers=(("killswitch",),))  # type: ignore[arg-type]  # the mistake tested
    with pytest.raises(WhatIfError, match="roles must be a sequence"):
        recorded(roles="payments-agent")  # type: ignore[arg-type]  # the mistake tested


def test_recorded_policy_ids_are_read_from_the_policy_layers_evidence() -> None:
    layers = ["identity", "policy", "anomaly"]
    evidence = [
        {"key_id": "k-1"},
        {"bundle_version": "2026.11.1", "determining_policies": "a.one,b.two"},
        {},
    ]
    assert recorded_policy_ids(layers, evidence) == ("a.one", "b.two")
    assert recorded_policy_ids(["policy"], [{"determining_policies": ""}]) == ()
    assert recorded_policy_ids(["killswitch"], [{}]) == ()


def test_the_layers_before_policy_are_the_gates() -> None:
    assert PRE_POLICY_LAYERS == (KILLSWITCH, FRESHNESS, IDENTITY, ELIGIBILITY, IntegrityCheck.name)
