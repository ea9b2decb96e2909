"""What the relay refuses to send to ``control``: anything that is not a well-formed
command record, whatever the browser (or someone posing as one) posts."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from processors.crypto.jcs import canonical_json
from streams.console.relay import RelayError, check_record


def _record(**changes: Any) -> dict[str, Any]:
    payload = {"scope": "agent", "target": "billing-agent", "reason": "drill"}
    record: dict[str, Any] = {
        "command_id": str(uuid.uuid4()),
        "kind": "killswitch.engage",
        "subject": "killswitch/agent/billing-agent",
        "payload": canonical_json(payload).decode(),
        "issued_by": "ada",
        "issued_at_ms": 1_764_500_000_000,
        "key_id": "kid-1",
        "sequence": 0,
        "previous": None,
        "signature": base64.b64encode(bytes(64)).decode(),
    }
    record.update(changes)
    return record


def test_a_well_formed_record_passes_with_its_signature_as_bytes() -> None:
    checked = check_record(_record())
    assert checked["signature"] == bytes(64)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"extra": 1}, "exactly the ControlCommand fields"),
        ({"issued_at_ms": True}, "issued_at_ms must be an integer"),
        ({"issued_at_ms": 1.5}, "issued_at_ms must be an integer"),
        ({"sequence": -1}, "sequence"),
        ({"sequence": None}, "sequence"),
        ({"previous": 7}, "previous"),
        ({"command_id": "not-a-uuid"}, "UUID"),
        ({"kind": ""}, "kind must be a non-empty string"),
        ({"payload": '{"target":"billing-agent","scope":"agent","reason":"drill"}'}, "canonical"),
        ({"payload": "[1]"}, "JSON object"),
        ({"payload": '{"a":NaN}'}, "canonical form"),
        ({"subject": "killswitch/global/*"}, "has subject 'killswitch/agent/billing-agent'"),
        ({"kind": "agent.register"}, "does not send 'agent.register'"),
        ({"signature": base64.b64encode(bytes(63)).decode()}, "64-byte"),
        ({"signature": "not base64!"}, "64-byte"),
        ({"signature": None}, "64-byte"),
    ],
)
def test_a_malformed_record_is_refused_with_its_reason(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(RelayError) as refused:
        check_record(_record(**changes))
    assert reason in refused.value.reason


def test_a_record_that_is_not_an_object_is_refused() -> None:
    for posted in (None, [], "record", json.dumps(_record())):
        with pytest.raises(RelayError):
            check_record(posted)
