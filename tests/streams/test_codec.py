"""The wire format of streams/codec.py against the Avro specification, and its errors."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from processors.exceptions import ConfigError, TrustplaneError
from streams.codec import (
    DECODE_ERROR_CODES,
    HEADER_SIZE,
    MAGIC,
    SCHEMA_DIR,
    Codec,
    DecodeError,
    EncodeError,
    SchemaRegistry,
    default_codec,
)

NOW_MS = 1_764_000_000_000
SHA = "sha256:" + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
NAMESPACE = "dev.trustplane"

# --- Reference CRC-64-AVRO, transcribed from the Avro specification ("Schema Fingerprints").

_EMPTY64 = 0xC15D213AA4D7A795


def _fp_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_FP_TABLE = _fp_table()


def reference_fingerprint64(data: bytes) -> int:
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


def wire_fingerprint(schema: Any) -> bytes:
    """The 8 header bytes for a schema, computed without the codec."""
    canonical = to_parsing_canonical_form(schema).encode("utf-8")
    return reference_fingerprint64(canonical).to_bytes(8, "little")


# --- Realistic records, one per schema.


def intent() -> dict[str, Any]:
    return {
        "intent_id": "0b8e7a52-4f0e-4d3b-9a51-0a1f2c3d4e5f",
        "agent_id": "billing-agent-7",
        "runtime": {
            "runtime_id": "pod/billing-agent-7-5d9f8c7b6-x2kqp",
            "code_digest": SHA,
            "config_digest": "sha256:" + "ab" * 32,
            "environment": "prod",
            "host": "node-eu-west-1a-17",
        },
        "action": "payments.refund",
        "resource": "orders/8812",
        "parameters": {
            "amount": 129.95,
            "currency": "EUR",
            "items": 3,
            "notify_customer": True,
            "note": None,
        },
        "context": {"ticket": "SUP-4411", "user": "u-1207", "confidence": 0.93},
        "sequence": 1_042,
        "issued_at_ms": NOW_MS,
        "expires_at_ms": NOW_MS + 30_000,
        "nonce": "c2b6a1f0e6d94e1d8b7a4c3e2f1a0b9c",
        "key_id": "agent-key-2025-11",
        "signature": bytes(range(64)),
    }


def verdicts(status: str = "ALLOW") -> list[dict[str, Any]]:
    return [
        {"layer": "schema", "status": "ALLOW", "reasons": [], "duration_us": 41},
        {"layer": "freshness", "status": "ALLOW", "reasons": [], "duration_us": 3},
        {
            "layer": "allowlist",
            "status": status,
            "reasons": [] if status == "ALLOW" else ["payments.refund is not allowed"],
            "duration_us": 17,
        },
    ]


SAMPLES: dict[str, dict[str, Any]] = {
    "Intent": intent(),
    "Decision": {
        "decision_id": "d-5f2e",
        "intent_id": "0b8e7a52-4f0e-4d3b-9a51-0a1f2c3d4e5f",
        "agent_id": "billing-agent-7",
        "outcome": "DENIED",
        "reasons": ["billing-agent-7 may not take the action payments.refund"],
        "verdicts": verdicts("DENY"),
        "intent_digest": SHA,
        "decided_at_ms": NOW_MS + 4,
        "worker": "gate-0",
    },
    "Approval": {
        "approval_id": "a-77c1",
        "intent_id": "0b8e7a52-4f0e-4d3b-9a51-0a1f2c3d4e5f",
        "agent_id": "billing-agent-7",
        "action": "payments.refund",
        "resource": "orders/8812",
        "intent_digest": SHA,
        "verdicts": verdicts(),
        "envelope": json.dumps(
            {
                "payloadType": "application/vnd.in-toto+json",
                "payload": "eyJfdHlwZSI6ICJodHRwczovL2luLXRvdG8uaW8vU3RhdGVtZW50L3YxIn0=",
                "signatures": [],
            }
        ).encode(),
        "issued_at_ms": NOW_MS + 4,
        "expires_at_ms": NOW_MS + 60_004,
        "worker": "gate-0",
        "intent": b"\xc3\x01intent-bytes",
    },
    "Rejection": {
        "rejection_id": "r-19",
        "source_topic": "intents",
        "source_partition": 3,
        "source_offset": 120_455,
        "key": b"billing-agent-7",
        "value_sha256": SHA,
        "value_prefix": b'{"intent_id": "0b8e7a52"}',
        "value_size": 25,
        "reason_code": "not_avro",
        "reason": "the record value does not start with the Avro single-object marker c3 01",
        "rejected_at_ms": NOW_MS + 1,
        "worker": "gate-1",
    },
    "LineageEvent": {
        "event_id": "e-3",
        "intent_id": "0b8e7a52-4f0e-4d3b-9a51-0a1f2c3d4e5f",
        "agent_id": None,
        "stage": "authorization",
        "event_type": "layer_verdict",
        "status": "denied",
        "reasons": ["payments.refund is not allowed"],
        "attributes": {"topic": "intents", "partition": "3", "offset": "120455"},
        "occurred_at_ms": NOW_MS + 3,
        "worker": "gate-0",
        "verdicts": [
            {
                "layer": "policy",
                "status": "DENY",
                "reasons": ["forbid"],
                "evidence": {"policy": "p-1"},
                "duration_us": 41,
            }
        ],
        "signer": "gate-key-1",
        "signature": "c2lnbmF0dXJl",
        "prev_hash": None,
        "event_hash": None,
        "log_index": 41,
    },
    "Outcome": {
        "outcome_id": "o-1",
        "approval_id": "a-77c1",
        "intent_id": "0b8e7a52-4f0e-4d3b-9a51-0a1f2c3d4e5f",
        "agent_id": "billing-agent-7",
        "executor_id": "payments-executor-2",
        "status": "FAILED",
        "detail": "payment provider returned 503",
        "reported_at_ms": NOW_MS + 900,
    },
    "ControlCommand": {
        "command_id": "c-8",
        "kind": "suspend_agent",
        "subject": "billing-agent-7",
        "payload": '{"reason":"incident INC-2201","until_ms":1764003600000}',
        "issued_by": "operator:ana",
        "issued_at_ms": NOW_MS,
        "key_id": "ops-key-1",
        "signature": b"\x01" * 64,
        "sequence": 4,
        "previous": "sha256:" + "ab" * 32,
    },
}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return default_codec()


def raw_schemas() -> list[Path]:
    return sorted(SCHEMA_DIR.glob("*.avsc")) + sorted((SCHEMA_DIR / "history").glob("*.avsc"))


# --- Fingerprints and header.


def test_reference_fingerprint_matches_known_values() -> None:
    # From the Avro test suite (share/test/data/schema-tests.txt): "null" -> 7195948357588979594.
    assert reference_fingerprint64(b'"null"') == 7195948357588979594 == 0x63DD24E7CC258F8A
    # From goavro's documented single-object encoding of "int": c3 01 8f 5c 39 3f 1a d5 75 72 06.
    assert wire_fingerprint("int") == bytes.fromhex("8f5c393f1ad57572")


@pytest.mark.parametrize("schema", ["null", "int", "string", {"type": "array", "items": "long"}])
def test_fastavro_fingerprint_is_little_endian_reference(schema: Any) -> None:
    hex_fp = fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    assert bytes.fromhex(hex_fp) == wire_fingerprint(schema)


@pytest.mark.parametrize("path", raw_schemas(), ids=lambda p: p.name)
def test_registry_fingerprints_match_reference(codec: Codec, path: Path) -> None:
    raw = json.loads(path.read_text())
    expected = wire_fingerprint(raw)
    entry_name = codec.registry.full_name(raw["name"])
    if path.parent == SCHEMA_DIR:
        assert codec.registry.fingerprint(raw["name"]) == expected
    assert codec.record_name(MAGIC + expected) == entry_name


def test_canonical_form_ignores_docs_and_defaults(codec: Codec) -> None:
    canonical = to_parsing_canonical_form(json.loads((SCHEMA_DIR / "intent.avsc").read_text()))
    assert canonical.startswith('{"name":"dev.trustplane.Intent","type":"record","fields":[')
    assert '"doc"' not in canonical and '"default"' not in canonical


def test_header_is_single_object_encoding(codec: Codec) -> None:
    record = SAMPLES["Intent"]
    data = codec.encode("Intent", record)
    schema = json.loads((SCHEMA_DIR / "intent.avsc").read_text())
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    assert data[:2] == b"\xc3\x01" == MAGIC
    assert data[2:HEADER_SIZE] == wire_fingerprint(schema)
    assert data[HEADER_SIZE:] == body.getvalue()


# --- Schemas.


def test_every_schema_has_a_sample(codec: Codec) -> None:
    assert sorted(codec.registry.names) == sorted(f"{NAMESPACE}.{name}" for name in SAMPLES)


def _fields(schema: Any) -> list[dict[str, Any]]:
    """Every field of every record in a raw schema."""
    found: list[dict[str, Any]] = []
    if isinstance(schema, list):
        for branch in schema:
            found += _fields(branch)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            for field in schema["fields"]:
                found.append(field)
                found += _fields(field["type"])
        for key in ("items", "values"):
            if key in schema:
                found += _fields(schema[key])
    return found


@pytest.mark.parametrize("path", raw_schemas(), ids=lambda p: p.name)
def test_schema_conventions(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert raw["type"] == "record" and raw["namespace"] == NAMESPACE and raw["doc"]
    for field in _fields(raw):
        assert field.get("doc"), f"{path.name}: field {field['name']} has no doc"
        if field["name"].endswith("_ms"):
            assert field["type"] == "long", field["name"]


def test_schema_lookup_by_short_and_full_name(codec: Codec) -> None:
    registry = codec.registry
    assert registry.schema("Intent") is registry.schema("dev.trustplane.Intent")
    assert registry.fingerprint("Intent") == registry.fingerprint("dev.trustplane.Intent")
    assert len(registry.fingerprint("Decision")) == 8
    with pytest.raises(KeyError, match="no schema named 'Nope'"):
        registry.schema("Nope")


def test_default_codec_is_cached() -> None:
    assert default_codec() is default_codec()


# --- Round trips and evolution.


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(codec: Codec, name: str) -> None:
    data = codec.encode(name, SAMPLES[name])
    assert codec.decode(data, name) == SAMPLES[name]
    assert codec.decode(data, f"{NAMESPACE}.{name}") == SAMPLES[name]
    assert codec.decode(data) == SAMPLES[name]
    assert codec.record_name(data) == f"{NAMESPACE}.{name}"


def test_scalar_union_values_keep_their_type(codec: Codec) -> None:
    params = codec.decode(codec.encode("Intent", intent()))["parameters"]
    assert type(params["notify_customer"]) is bool
    assert type(params["items"]) is int
    assert type(params["amount"]) is float
    assert params["note"] is None


def test_defaults_fill_omitted_fields(codec: Codec) -> None:
    record = intent()
    del record["context"], record["signature"]
    decoded = codec.decode(codec.encode("Intent", record))
    assert decoded["context"] == {} and decoded["signature"] is None


def test_old_intent_reads_as_current(codec: Codec) -> None:
    old_schema = json.loads((SCHEMA_DIR / "history" / "intent.v0.avsc").read_text())
    old = intent()
    del old["context"], old["signature"]
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old_schema), old)
    data = MAGIC + wire_fingerprint(old_schema) + body.getvalue()
    assert data[2:HEADER_SIZE] != codec.registry.fingerprint("Intent")
    assert codec.record_name(data) == "dev.trustplane.Intent"

    decoded = codec.decode(data, "Intent")

    assert decoded["context"] == {}
    assert decoded["signature"] is None
    assert decoded == {**old, "context": {}, "signature": None}


# --- Decode errors.


def test_decode_error_is_a_trustplane_error() -> None:
    error = DecodeError("empty", "the record value is empty")
    assert isinstance(error, TrustplaneError) and error.code == "empty"
    assert "empty" in error.diagnostics()


def test_decode_empty(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="empty") as caught:
        codec.decode(b"")
    assert caught.value.code == "empty"


def test_decode_random_bytes_is_not_avro(codec: Codec) -> None:
    data = b"\x17" + os.urandom(63)
    with pytest.raises(DecodeError, match="single-object marker c3 01") as caught:
        codec.decode(data)
    assert caught.value.code == "not_avro"
    with pytest.raises(DecodeError, match="marker") as caught:
        codec.decode(b'{"intent_id": "x"}')
    assert caught.value.code == "not_avro"


def test_decode_confluent_framing_is_not_avro(codec: Codec) -> None:
    data = b"\x00\x00\x00\x00\x07" + codec.encode("Intent", intent())[HEADER_SIZE:]
    with pytest.raises(DecodeError) as caught:
        codec.decode(data)
    assert caught.value.code == "not_avro"


def test_decode_short_header_is_truncated(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="shorter than the 10-byte") as caught:
        codec.decode(MAGIC + b"\x01\x02\x03")
    assert caught.value.code == "truncated"


def test_decode_truncated_body(codec: Codec) -> None:
    data = codec.encode("Intent", intent())
    for cut in (1, 10, len(data) - HEADER_SIZE):
        with pytest.raises(DecodeError, match="ends early or is not valid Avro") as caught:
            codec.decode(data[:-cut])
        assert caught.value.code == "truncated"


def test_decode_trailing_garbage(codec: Codec) -> None:
    data = codec.encode("Outcome", SAMPLES["Outcome"]) + b"\x00\x01\x02"
    with pytest.raises(DecodeError, match="3 unexpected bytes follow") as caught:
        codec.decode(data)
    assert caught.value.code == "truncated"


def test_decode_unknown_fingerprint(codec: Codec) -> None:
    body = codec.encode("Intent", intent())[HEADER_SIZE:]
    data = MAGIC + bytes.fromhex("0123456789abcdef") + body
    with pytest.raises(DecodeError, match="fingerprint 0123456789abcdef") as caught:
        codec.decode(data)
    assert caught.value.code == "unknown_schema"
    assert codec.record_name(data) is None


def test_decode_wrong_record_type(codec: Codec) -> None:
    data = codec.encode("Rejection", SAMPLES["Rejection"])
    with pytest.raises(
        DecodeError,
        match="expected a dev.trustplane.Intent record but found a dev.trustplane.Rejection",
    ) as caught:
        codec.decode(data, expected="Intent")
    assert caught.value.code == "wrong_record_type"


def test_decode_too_large_is_checked_before_parsing(codec: Codec) -> None:
    data = codec.encode("Intent", intent())
    assert codec.decode(data, max_bytes=len(data)) == intent()
    with pytest.raises(DecodeError, match=f"{len(data)} bytes, more than the 64 allowed") as caught:
        codec.decode(data, max_bytes=64)
    assert caught.value.code == "too_large"
    with pytest.raises(DecodeError) as caught:
        codec.decode(b"not even avro" * 10, max_bytes=64)
    assert caught.value.code == "too_large"


def test_record_name_of_bad_headers(codec: Codec) -> None:
    assert codec.record_name(b"") is None
    assert codec.record_name(b"\xc3\x01\x00") is None
    assert codec.record_name(b"x" * 40) is None


# --- Encode errors.


def test_encode_missing_required_field(codec: Codec) -> None:
    record = intent()
    del record["nonce"]
    with pytest.raises(EncodeError, match=r"Intent\.nonce: required field is missing") as caught:
        codec.encode("Intent", record)
    assert caught.value.field == "nonce" and caught.value.record == "dev.trustplane.Intent"


def test_encode_wrong_type(codec: Codec) -> None:
    with pytest.raises(EncodeError, match=r"Intent\.sequence: expected long, got str") as caught:
        codec.encode("Intent", {**intent(), "sequence": "1042"})
    assert caught.value.field == "sequence"


def test_encode_wrong_nested_type(codec: Codec) -> None:
    record = intent()
    record["runtime"]["host"] = 17
    with pytest.raises(EncodeError, match=r"runtime\.host: expected string, got int") as caught:
        codec.encode("Intent", record)
    assert caught.value.field == "runtime.host"

    record = intent()
    record["parameters"]["items"] = [1, 2]
    with pytest.raises(EncodeError, match=r"parameters\['items'\]") as caught:
        codec.encode("Intent", record)
    assert caught.value.field == "parameters['items']"

    decision = {**SAMPLES["Decision"], "verdicts": verdicts("MAYBE")}
    with pytest.raises(EncodeError, match=r"verdicts\[2\]\.status: expected one of ALLOW"):
        codec.encode("Decision", decision)


def test_encode_unknown_field(codec: Codec) -> None:
    with pytest.raises(EncodeError, match="not a field of dev.trustplane.Outcome") as caught:
        codec.encode("Outcome", {**SAMPLES["Outcome"], "executor": "x"})
    assert caught.value.field == "executor"


def test_encode_long_out_of_range(codec: Codec) -> None:
    with pytest.raises(EncodeError, match="issued_at_ms"):
        codec.encode("Intent", {**intent(), "issued_at_ms": 2**63})


def test_encode_unknown_record_name(codec: Codec) -> None:
    with pytest.raises(KeyError, match="no schema named 'Nope'"):
        codec.encode("Nope", {})


# --- The schema table.


def write(path: Path, schema: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema))


def small(fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "record", "name": "Ping", "namespace": NAMESPACE, "fields": fields}


def test_registry_from_other_directory(tmp_path: Path) -> None:
    write(tmp_path / "ping.avsc", small([{"name": "a", "type": "long"}]))
    codec = Codec(SchemaRegistry.from_directory(tmp_path))
    assert codec.decode(codec.encode("Ping", {"a": 5}), "Ping") == {"a": 5}


def test_registry_refuses_bad_schema_files(tmp_path: Path) -> None:
    write(tmp_path / "ping.avsc", {"type": "record", "name": "Ping", "fields": [{"name": "a"}]})
    with pytest.raises(ConfigError, match="ping.avsc"):
        SchemaRegistry.from_directory(tmp_path)
    (tmp_path / "ping.avsc").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read Avro schema"):
        SchemaRegistry.from_directory(tmp_path)
    with pytest.raises(ConfigError, match="no Avro schemas"):
        SchemaRegistry.from_directory(tmp_path / "empty")


def test_registry_refuses_history_without_current(tmp_path: Path) -> None:
    write(tmp_path / "ping.avsc", small([{"name": "a", "type": "long"}]))
    write(tmp_path / "history" / "pong.v0.avsc", {**small([]), "name": "Pong"})
    with pytest.raises(ConfigError, match="no current schema"):
        SchemaRegistry.from_directory(tmp_path)


def test_registry_refuses_two_current_versions(tmp_path: Path) -> None:
    write(tmp_path / "a.avsc", small([{"name": "a", "type": "long"}]))
    write(tmp_path / "b.avsc", small([{"name": "b", "type": "long"}]))
    with pytest.raises(ConfigError, match="two current schemas"):
        SchemaRegistry.from_directory(tmp_path)


def test_incompatible_history_is_a_decode_error(tmp_path: Path) -> None:
    old = small([{"name": "a", "type": "long"}])
    write(tmp_path / "history" / "ping.v0.avsc", old)
    write(tmp_path / "ping.avsc", small([{"name": "b", "type": "string"}]))  # no default
    codec = Codec(SchemaRegistry.from_directory(tmp_path))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old), {"a": 1})
    with pytest.raises(DecodeError, match="cannot be read as the current version") as caught:
        codec.decode(MAGIC + wire_fingerprint(old) + body.getvalue())
    assert caught.value.code == "unknown_schema"


# --- Any input either decodes or raises DecodeError.


def _known_fingerprints() -> list[bytes]:
    return [wire_fingerprint(json.loads(path.read_text())) for path in raw_schemas()]


def _mutated(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for where, kind, value in edits:
        pos = HEADER_SIZE + where % max(1, len(out) - HEADER_SIZE)
        if kind == 0 and pos < len(out):
            out[pos] = value
        elif kind == 1:
            del out[pos : pos + 1 + value % 8]
        else:
            out[pos:pos] = bytes([value]) * (1 + value % 11)
    return bytes(out)


_VALID = [default_codec().encode(name, record) for name, record in SAMPLES.items()]

any_input = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda fp, body: MAGIC + fp + body,
        st.sampled_from(_known_fingerprints()),
        st.binary(max_size=300),
    ),
    st.builds(
        _mutated,
        st.sampled_from(_VALID),
        st.lists(
            st.tuples(st.integers(0, 10_000), st.integers(0, 2), st.integers(0, 255)),
            min_size=1,
            max_size=4,
        ),
    ),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=any_input, expected=st.sampled_from([None, "Intent", "Decision"]))
def test_any_bytes_decode_or_raise_decode_error(
    data: bytes, expected: str | None, codec: Codec
) -> None:
    try:
        record = codec.decode(data, expected, max_bytes=1024)
    except DecodeError as error:
        event(f"DecodeError {error.code}")
        assert error.code in DECODE_ERROR_CODES
        assert error.reason
    else:
        event("decoded")
        assert isinstance(record, dict)
        name = codec.record_name(data)
        assert name is not None
        encoded = codec.encode(name, record)  # what was read can be written again
        assert codec.encode(name, codec.decode(encoded)) == encoded
