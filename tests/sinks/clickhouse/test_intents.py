"""The ``intents`` table: an intent record as agents sent it, keyed to the gate's decision.

A row keeps the parameters and context as JSON, the exact record bytes (base64), and
their digest as the gate computes it, so it joins the approval, the decision and the
lineage event of the same record. Records the gate rejects are refused with its codes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processors.approval import ApprovalSigner, KeyringEntry, SigningKeyring
from processors.crypto.keys import generate_signing_key
from processors.pipeline import Pipeline
from processors.records import SourcePosition
from sinks.base import MappingError
from sinks.clickhouse import TABLES, ClickHouseSink, intent_row, map_record
from streams.codec import default_codec
from streams.gate.gate import Gate
from tests.processors.allowlist_layer import AllowList, AllowListAuthorization
from tests.processors.factories import intent_record

CODEC = default_codec()
NOW_MS = 1_700_000_010_000  # ten seconds after the factory intent was issued
PARAMETERS = {"amount": 10.5, "currency": "EUR", "count": 3, "dry_run": False, "note": None}
CONTEXT = {"ticket": "T-42", "user": "zoë"}


def encoded(**overrides: Any) -> tuple[dict[str, Any], bytes]:
    """A decoded Intent record and the exact bytes it was decoded from."""
    value = CODEC.encode(
        "Intent", intent_record(parameters=PARAMETERS, context=CONTEXT, **overrides)
    )
    return CODEC.decode(value, "Intent"), value


def row_of(record: dict[str, Any], value: bytes, key: bytes | None = b"billing-agent") -> Any:
    return intent_row(record, value, key=key, partition=2, offset=17)


def test_an_intent_row_keeps_the_intent_its_parameters_and_its_exact_bytes() -> None:
    record, value = encoded()
    row = row_of(record, value)

    assert set(row) == set(TABLES["intents"].columns)
    assert row["intent_id"] == "intent-1"
    assert row["agent_id"] == "billing-agent"
    assert (row["action"], row["resource"]) == ("payments.transfer", "acct:42")
    assert json.loads(row["parameters_json"]) == PARAMETERS
    assert list(json.loads(row["parameters_json"])) == list(PARAMETERS)  # the agent's order
    assert json.loads(row["context_json"]) == CONTEXT
    assert row["runtime_id"] == "rt-1"
    assert row["environment"] == "prod"
    assert row["code_digest"] == row["config_digest"] == "sha256:" + "ab" * 32
    assert row["host"] == "node-7"
    assert row["sequence"] == 1
    assert (row["issued_at_ms"], row["expires_at_ms"]) == (1_700_000_000_000, 1_700_000_300_000)
    assert (row["nonce"], row["key_id"]) == ("n-1", "k-1")
    assert base64.b64decode(row["record_b64"]) == value
    assert (row["kafka_partition"], row["kafka_offset"]) == (2, 17)


def gate_allowing(agents: dict[str, list[str]]) -> Gate:
    return Gate(
        Pipeline([AllowListAuthorization(AllowList.from_mapping({"agents": agents}))]),
        CODEC,
        worker="w1",
        max_intent_bytes=256 * 1024,
        clock=lambda: NOW_MS,
        signer=ApprovalSigner(SigningKeyring([KeyringEntry(generate_signing_key(), 0, None)])),
    )


@pytest.mark.parametrize(
    ("agents", "topic", "record_name"),
    [
        ({"billing-agent": ["payments.transfer"]}, "approved", "Approval"),
        ({}, "denied", "Decision"),
    ],
)
def test_the_row_digest_is_the_one_the_gate_puts_in_its_decision_and_lineage(
    agents: dict[str, list[str]], topic: str, record_name: str
) -> None:
    record, value = encoded()
    outputs = gate_allowing(agents).process(
        b"billing-agent", value, SourcePosition("intents", 2, 17)
    )
    by_topic = {o.topic: o for o in outputs}
    decided = CODEC.decode(by_topic[topic].value, record_name)
    event = CODEC.decode(by_topic["lineage"].value, "LineageEvent")

    digest = row_of(record, value)["intent_digest"]
    assert digest == decided["intent_digest"]
    assert digest == event["attributes"]["intent_digest"]


@pytest.mark.parametrize(
    ("overrides", "key", "code"),
    [
        ({}, None, "missing_key"),
        ({}, b"someone-else", "key_mismatch"),
        ({"intent_id": " "}, b"billing-agent", "invalid_field"),
        ({"parameters": {"amount": float("nan")}}, b"billing-agent", "invalid_field"),
        ({"expires_at_ms": 1_600_000_000_000}, b"billing-agent", "invalid_field"),
        (
            {"issued_at_ms": 10**16, "expires_at_ms": 10**16 + 1},
            b"billing-agent",
            "invalid_field",
        ),
    ],
    ids=["no key", "key of another agent", "blank id", "NaN", "expires first", "after 2299"],
)
def test_what_the_gate_rejects_is_refused_with_the_gates_code(
    overrides: dict[str, Any], key: bytes | None, code: str
) -> None:
    value = CODEC.encode("Intent", intent_record(**overrides))
    with pytest.raises(MappingError) as refused:
        row_of(CODEC.decode(value, "Intent"), value, key=key)
    assert refused.value.code == code


def test_a_record_not_shaped_like_an_intent_is_refused() -> None:
    with pytest.raises(MappingError, match="malformed") as refused:
        intent_row({"intent_id": "i"}, b"x", key=b"a", partition=0, offset=0)
    assert refused.value.code == "invalid_field"


def test_map_record_points_intents_to_intent_row() -> None:
    record, _ = encoded()
    with pytest.raises(MappingError, match=r"intent_row\(\)"):
        map_record("intents", record)


# -- in the store ----------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseSink]:
    sink = ClickHouseSink(path=tmp_path / "clickhouse")
    sink.setup()
    try:
        yield sink
    finally:
        sink.close()


def test_intents_are_stored_once_per_record_and_queried_through_the_view(
    store: ClickHouseSink,
) -> None:
    record, value = encoded()
    row = row_of(record, value)
    replayed = {**row, "kafka_offset": 18}  # the same intent sent again: a second record
    for batch in ([row], [row, replayed]):  # the first batch is redelivered with the second
        for r in batch:
            store.add("intents", r)
        store.flush()

    # read-only queries pass the SQL guard: the view and its table are the store's own
    stored = store.query(
        "SELECT intent_id, kafka_offset, JSONExtractString(parameters_json, 'currency') AS cur, "
        "JSONExtractFloat(parameters_json, 'amount') AS amount, toString(issued_at) AS at, "
        "intent_digest, record_b64 FROM intents ORDER BY kafka_offset"
    ).dicts()
    assert [(r["intent_id"], r["kafka_offset"]) for r in stored] == [
        ("intent-1", 17),
        ("intent-1", 18),
    ]
    first = stored[0]
    assert (first["cur"], first["amount"]) == ("EUR", 10.5)
    assert first["at"] == "2023-11-14 22:13:20.000"
    assert first["intent_digest"] == row["intent_digest"]
    assert base64.b64decode(first["record_b64"]) == value
    assert store.query("SELECT count() FROM intents_raw").scalar() >= 2
    assert store.query("SELECT count() FROM intents WHERE agent_id = 'billing-agent'").scalar() == 2
