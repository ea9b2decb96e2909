"""Builders of valid intents for the processor tests."""

from __future__ import annotations

from typing import Any

from processors.intent import Intent

DIGEST = "sha256:" + "ab" * 32


def intent_record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "intent_id": "intent-1",
        "agent_id": "billing-agent",
        "runtime": {
            "runtime_id": "rt-1",
            "code_digest": DIGEST,
            "config_digest": DIGEST,
            "environment": "prod",
            "host": "node-7",
        },
        "action": "payments.transfer",
        "resource": "acct:42",
        "parameters": {"amount": 10.5, "currency": "EUR"},
        "context": {},
        "sequence": 1,
        "issued_at_ms": 1_700_000_000_000,
        "expires_at_ms": 1_700_000_300_000,
        "nonce": "n-1",
        "key_id": "k-1",
        "signature": None,
    }
    record.update(overrides)
    return record


def make_intent(**overrides: Any) -> Intent:
    record = intent_record(**overrides)
    return Intent.from_record(record, key=record["agent_id"].encode())
