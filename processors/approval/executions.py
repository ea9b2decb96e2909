"""Execution lineage: check every reported execution against the approvals issued.

The gate remembers, per agent, the approvals it issued (in the agent's changelog
state). An executor's Outcome that names no approval the gate issued, names another
intent, comes after the approval expired, or reuses an approval already executed, is
an **unauthorized execution**: it raises an integrity alert in lineage and a metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processors.exceptions import TrustplaneError

__all__ = [
    "LEDGER_STATE_KEY",
    "IssuedApproval",
    "ApprovalLedger",
    "ApprovalLedgerCodec",
    "ExecutionCheck",
    "check_outcome",
]

LEDGER_STATE_KEY = "_approvals"
GRACE_MS = 60 * 60 * 1000
"""How long after its expiry an approval is still remembered (late outcome reports)."""
MAX_REMEMBERED = 10_000


class LedgerStateError(TrustplaneError):
    """Stored approval ledger is unreadable."""


@dataclass(slots=True)
class IssuedApproval:
    approval_id: str
    intent_id: str
    expires_at_ms: int
    executed: int = 0


@dataclass(frozen=True, slots=True)
class ExecutionCheck:
    authorized: bool
    reason: str


class ApprovalLedger:
    """The approvals issued to one agent, oldest first, bounded in time and count."""

    def __init__(self, entries: dict[str, IssuedApproval] | None = None) -> None:
        self.entries: dict[str, IssuedApproval] = entries or {}

    def issue(self, approval_id: str, intent_id: str, expires_at_ms: int, now_ms: int) -> None:
        self.entries[approval_id] = IssuedApproval(approval_id, intent_id, expires_at_ms)
        self.prune(now_ms)

    def prune(self, now_ms: int) -> None:
        while self.entries:
            oldest = next(iter(self.entries.values()))
            if oldest.expires_at_ms + GRACE_MS >= now_ms and len(self.entries) <= MAX_REMEMBERED:
                break
            del self.entries[oldest.approval_id]


def check_outcome(ledger: ApprovalLedger, outcome: Mapping[str, Any]) -> ExecutionCheck:
    """Was this reported execution authorized? Records an EXECUTED one as used."""
    approval_id = str(outcome.get("approval_id", ""))
    issued = ledger.entries.get(approval_id)
    if issued is None:
        return ExecutionCheck(
            False, f"no approval {approval_id!r} was issued to agent {outcome.get('agent_id')!r}"
        )
    if issued.intent_id != outcome.get("intent_id"):
        return ExecutionCheck(
            False,
            f"approval {approval_id} was issued for intent {issued.intent_id}, "
            f"the outcome names intent {outcome.get('intent_id')}",
        )
    if outcome.get("status") == "EXECUTED":
        reported = int(outcome.get("reported_at_ms") or 0)
        if reported > issued.expires_at_ms:
            return ExecutionCheck(
                False,
                f"executed after approval {approval_id} expired "
                f"({reported - issued.expires_at_ms} ms late)",
            )
        issued.executed += 1
        if issued.executed > 1:
            return ExecutionCheck(
                False, f"approval {approval_id} executed {issued.executed} times (single use)"
            )
    return ExecutionCheck(True, f"{outcome.get('status')} under approval {approval_id}")


class ApprovalLedgerCodec:
    """Makes the ledger part of an agent's changelog state (like a stateful layer)."""

    name = "executions"
    state_key = LEDGER_STATE_KEY

    def new_state(self) -> ApprovalLedger:
        return ApprovalLedger()

    def dump_state(self, layer_state: Any) -> dict[str, Any]:
        ledger: ApprovalLedger = layer_state
        return {
            "approvals": [
                [e.approval_id, e.intent_id, e.expires_at_ms, e.executed]
                for e in ledger.entries.values()
            ]
        }

    def load_state(self, data: Mapping[str, Any]) -> ApprovalLedger:
        try:
            entries = {
                str(a): IssuedApproval(str(a), str(i), int(x), int(n))
                for a, i, x, n in data["approvals"]
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerStateError(f"stored approval ledger is unreadable: {exc}") from exc
        return ApprovalLedger(entries)
