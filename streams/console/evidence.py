"""An intent's evidence bundle: one JSON file an auditor verifies offline.

It holds the exact intent bytes (what the approval's subject digest covers), the DSSE
approval, the executor's outcomes, each lineage event of the intent with its RFC 9162
inclusion proof and the C2SP signed checkpoint the proof is against, and the public keys
to check them with (the gate's JWKS, the notary's verifier key). Keys in a bundle are a
convenience: an auditor pins the ones they trust (`trustplane verify --keys`,
`trustplane proof --vkey`) rather than the ones the bundle carries.
"""

from __future__ import annotations

import json
import time
from typing import Any

from processors.timefmt import iso_ms
from streams.cli.proof import NotaryClient, ProofClientError
from streams.config import Settings
from streams.console.data import LineageStore
from streams.gatekeys import gate_jwks_path

__all__ = ["EVIDENCE_FORMAT", "EvidenceError", "build_event_evidence", "build_evidence"]

EVIDENCE_FORMAT = "https://trustplane.dev/evidence/v1"


class EvidenceError(Exception):
    """The bundle cannot be assembled (the reason says which part is missing)."""


def _read_text(path: Any) -> str | None:
    try:
        return str(path.read_text()).strip()
    except OSError:
        return None


def _keys(settings: Settings) -> dict[str, Any]:
    from streams.notary import notary_vkey_path

    jwks_text = _read_text(gate_jwks_path(settings))
    return {
        "gate_jwks": json.loads(jwks_text) if jwks_text else None,
        "notary_vkey": _read_text(notary_vkey_path(settings)),
    }


def build_event_evidence(settings: Settings, notary: NotaryClient, event_id: str) -> dict[str, Any]:
    """The bundle of one lineage event that names no intent (a control command, a
    rejected input): the event, its inclusion proof and checkpoint, the keys."""
    try:
        answer = notary.inclusion(event_id=event_id)
    except ProofClientError as exc:
        raise EvidenceError(f"the notary has no proof for {event_id}: {exc.reason}") from exc
    return {
        "format": EVIDENCE_FORMAT,
        "created_at": iso_ms(time.time_ns() // 1_000_000),
        "intent_id": None,
        "intent": None,
        "approvals": [],
        "outcomes": [],
        "events": [answer],
        "unproven_events": [],
        "checkpoints": [answer["checkpoint"]],
        "keys": _keys(settings),
    }


def build_evidence(
    settings: Settings, store: LineageStore, notary: NotaryClient, intent_id: str
) -> dict[str, Any]:
    """The bundle for ``intent_id`` (blocking: call from a thread)."""
    timeline = store.timeline(intent_id)
    if not timeline["events"]:
        raise EvidenceError(f"no lineage event names intent {intent_id!r}")
    events: list[dict[str, Any]] = []
    missing: list[str] = []
    for event in timeline["events"]:
        try:
            events.append(notary.inclusion(event_id=str(event["event_id"])))
        except ProofClientError as exc:
            missing.append(f"{event['event_id']}: {exc.reason}")
    intent = timeline["intent"]
    checkpoints = sorted({answer["checkpoint"] for answer in events}, key=len)
    return {
        "format": EVIDENCE_FORMAT,
        "created_at": iso_ms(time.time_ns() // 1_000_000),
        "intent_id": intent_id,
        "intent": None
        if intent is None
        else {
            "record_b64": intent.get("record_b64", ""),
            "intent_digest": intent.get("intent_digest", ""),
            "agent_id": intent.get("agent_id", ""),
            "action": intent.get("action", ""),
            "resource": intent.get("resource", ""),
            "parameters": intent.get("parameters", {}),
            "context": intent.get("context", {}),
        },
        "approvals": [
            {"approval_id": a["approval_id"], "envelope": a["envelope_json"]}
            for a in timeline["approvals"]
        ],
        "outcomes": timeline["outcomes"],
        "events": events,
        "unproven_events": missing,
        "checkpoints": checkpoints,
        "keys": _keys(settings),
    }
