import math

import pytest

from processors.exceptions import ValidationError
from processors.intent import Intent
from tests.processors.factories import intent_record


def build(key=b"billing-agent", **overrides):
    return Intent.from_record(intent_record(**overrides), key=key)


def test_a_valid_record_builds_an_intent():
    intent = build()
    assert intent.agent_id == "billing-agent"
    assert intent.runtime.environment == "prod"
    assert intent.parameters["amount"] == 10.5


@pytest.mark.parametrize(
    ("key", "overrides", "code", "match"),
    [
        (None, {}, "missing_key", "no key"),
        (b"", {}, "missing_key", "no key"),
        (b"someone-else", {}, "key_mismatch", "not the intent's agent id"),
        (b"billing-agent", {"intent_id": " "}, "invalid_field", "intent_id"),
        (b"", {"agent_id": ""}, "missing_key", "no key"),
        (b"billing-agent", {"sequence": -1}, "invalid_field", "sequence"),
        (b"billing-agent", {"expires_at_ms": 1_600_000_000_000}, "invalid_field", "expires_at_ms"),
        (b"billing-agent", {"action": "x" * 300}, "invalid_field", "limit is 256"),
        (b"billing-agent", {"parameters": {"amount": math.nan}}, "invalid_field", "finite"),
        (b"billing-agent", {"parameters": {"amount": math.inf}}, "invalid_field", "finite"),
    ],
)
def test_invalid_records_are_refused_with_a_code(key, overrides, code, match):
    with pytest.raises(ValidationError, match=match) as info:
        build(key=key, **overrides)
    assert info.value.code == code


def test_a_malformed_digest_is_refused():
    record = intent_record()
    record["runtime"]["code_digest"] = "md5:abc"
    with pytest.raises(ValidationError, match="sha256:<64 lowercase hex>"):
        Intent.from_record(record, key=b"billing-agent")
