"""What the sink checks before it stores a record: it keeps only what it can verify.

- A lineage event (``lineage-log``) must carry a valid gate signature
  (``processors/log/attest.py``) and an ``event_hash`` that matches its content
  (``processors/log/chain.py``); its row is then identified by its log index.
- An approval (``approved``) must carry a DSSE envelope that verifies against the gate's
  keys as of its issue time, and the envelope must say what the record says (approval,
  intent, agent, action, resource, intent digest, times), so a forged approval of a
  denied intent can never show as ``APPROVED`` in SQL.

Anything else is refused with a :class:`~sinks.base.MappingError` and goes to
``rejected`` with the reason, like any record the sink cannot store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.approval.exceptions import ApprovalVerificationError
from processors.approval.verify import verify_approval
from processors.log.attest import LineageSignatureError
from processors.log.chain import ChainError, verify_event_hash
from sinks.base import MappingError
from streams.gatekeys import GateKeys

__all__ = ["RecordVerifier"]

_APPROVAL_FIELDS = (
    ("approval_id", "approval_id"),
    ("intent_id", "intent_id"),
    ("agent_id", "agent_id"),
    ("action", "action"),
    ("resource", "resource"),
    ("intent_digest", "intent_digest"),
    ("issued_at_ms", "issued_at_ms"),
    ("expires_at_ms", "expires_at_ms"),
)


class RecordVerifier:
    """Verifies decoded records by their logical topic; raises MappingError."""

    def __init__(self, gate_keys: GateKeys) -> None:
        self.gate_keys = gate_keys

    def check(self, topic: str, record: Mapping[str, Any]) -> None:
        if topic == "lineage-log":
            self._lineage(record)
        elif topic == "approved":
            self._approval(record)

    def _lineage(self, event: Mapping[str, Any]) -> None:
        try:
            self.gate_keys.verify_event(event)
        except LineageSignatureError as exc:
            raise MappingError("unsigned_lineage", exc.reason) from exc
        try:
            verify_event_hash(event)
        except ChainError as exc:
            raise MappingError("bad_event_hash", exc.reason) from exc

    def _approval(self, record: Mapping[str, Any]) -> None:
        issued = record.get("issued_at_ms")
        if not isinstance(issued, int):
            raise MappingError("bad_approval", "the approval record has no issued_at_ms")
        self.gate_keys.refresh_for_envelope(record.get("envelope"))
        try:
            verified = verify_approval(
                record.get("envelope") or b"", self.gate_keys.keyset, issued, record.get("intent")
            )
        except ApprovalVerificationError as exc:
            raise MappingError(
                "bad_approval", f"the approval does not verify: {exc.reason}"
            ) from exc
        signed = [(v.get("layer"), v.get("status")) for v in verified.predicate["verdicts"]]
        stored = [(v.get("layer"), v.get("status")) for v in record.get("verdicts") or ()]
        if stored != signed:
            raise MappingError(
                "bad_approval", f"the record's verdicts {stored} are not the signed ones {signed}"
            )
        for field, attribute in _APPROVAL_FIELDS:
            if record.get(field) != getattr(verified, attribute):
                raise MappingError(
                    "bad_approval",
                    f"the record's {field} ({record.get(field)!r}) is not the signed one "
                    f"({getattr(verified, attribute)!r})",
                )
