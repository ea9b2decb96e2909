import json

import pytest

from processors.approval.executions import (
    GRACE_MS,
    ApprovalLedger,
    ApprovalLedgerCodec,
    LedgerStateError,
    check_outcome,
)

NOW = 1_700_000_000_000


def outcome(approval_id="a-1", intent_id="i-1", status="EXECUTED", at=NOW + 10):
    return {
        "outcome_id": "o-1",
        "approval_id": approval_id,
        "intent_id": intent_id,
        "agent_id": "billing-agent",
        "executor_id": "exec-1",
        "status": status,
        "detail": "",
        "reported_at_ms": at,
    }


@pytest.fixture
def ledger():
    ledger = ApprovalLedger()
    ledger.issue("a-1", "i-1", NOW + 300_000, NOW)
    return ledger


def test_an_execution_under_an_issued_approval_is_authorized(ledger):
    check = check_outcome(ledger, outcome())
    assert check.authorized
    assert "EXECUTED under approval a-1" in check.reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"approval_id": "a-forged"}, "no approval 'a-forged' was issued"),
        ({"intent_id": "i-other"}, "was issued for intent i-1"),
        ({"at": NOW + 300_001}, "executed after approval a-1 expired (1 ms late)"),
    ],
)
def test_unauthorized_executions_are_flagged(ledger, changes, reason):
    check = check_outcome(ledger, outcome(**changes))
    assert not check.authorized
    assert reason in check.reason


def test_an_approval_executes_once(ledger):
    assert check_outcome(ledger, outcome()).authorized
    second = check_outcome(ledger, outcome())
    assert not second.authorized
    assert "executed 2 times (single use)" in second.reason


def test_a_failed_execution_does_not_use_up_the_approval(ledger):
    assert check_outcome(ledger, outcome(status="FAILED")).authorized
    assert check_outcome(ledger, outcome()).authorized


def test_the_ledger_forgets_long_expired_approvals(ledger):
    ledger.issue("a-2", "i-2", NOW + GRACE_MS + 700_000, NOW + GRACE_MS + 400_000)
    assert "a-1" not in ledger.entries
    assert "a-2" in ledger.entries


def test_the_ledger_survives_a_json_round_trip(ledger):
    codec = ApprovalLedgerCodec()
    check_outcome(ledger, outcome())
    restored = codec.load_state(json.loads(json.dumps(codec.dump_state(ledger))))
    assert not check_outcome(restored, outcome()).authorized, "used stays used after a restart"


def test_a_corrupt_ledger_is_a_typed_error():
    with pytest.raises(LedgerStateError, match="unreadable"):
        ApprovalLedgerCodec().load_state({"approvals": [["only-one-field"]]})
