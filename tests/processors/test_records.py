"""One definition per stored record type: the .avsc, the dataclass and the .sql table agree."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processors.approval.keyring import KeyringEntry, SigningKeyring
from processors.approval.signer import ApprovalSigner
from processors.crypto.keys import generate_signing_key
from processors.enforcement import combine
from processors.lineage import LineageRecorder
from processors.records import (
    STORED_RECORDS,
    Approval,
    Decision,
    LayerVerdict,
    LineageEvent,
    LineageVerdict,
    Rejection,
    SourcePosition,
    Store,
    StoredRecord,
    approval_record,
    columns_of_field,
    decision_record,
    rejection_record,
    store_of,
)
from processors.verdict import Verdict
from sinks.clickhouse import TABLES, ClickHouseSink
from sinks.clickhouse.tables import SINK_COLUMNS
from streams.codec import default_codec
from tests.processors.factories import intent_record, make_intent

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

# Avro type -> the dataclass annotation that holds it
_AVRO_TO_PYTHON = {
    "string": "str",
    "long": "int",
    "int": "int",
    "bytes": "bytes",
}


def _python_type(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        others = [t for t in avro_type if t != "null"]
        assert len(others) == 1, avro_type
        inner = _python_type(others[0])
        return f"{inner} | None" if "null" in avro_type else inner
    if isinstance(avro_type, str):
        return _AVRO_TO_PYTHON[avro_type]
    kind = avro_type["type"]
    if kind == "enum":
        return "str"
    if kind == "array":
        items = avro_type["items"]
        # nested records: LineageVerdict in lineage events, LayerVerdict elsewhere
        item = (
            ("LineageVerdict" if items["name"] == "LineageVerdict" else "LayerVerdict")
            if isinstance(items, dict)
            else _python_type(items)
        )
        return f"tuple[{item}, ...]"
    if kind == "map":
        return f"Mapping[str, {_python_type(avro_type['values'])}]"
    raise AssertionError(f"no Python type for {avro_type}")


def _avro_fields(record_type: type[StoredRecord]) -> list[dict[str, Any]]:
    schema = json.loads((SCHEMAS / record_type.SCHEMA_FILE).read_text())
    assert f"{schema['namespace']}.{schema['name']}" == record_type.AVRO_NAME
    return list(schema["fields"])


def _fields(record_type: type) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(record_type)


@pytest.mark.parametrize("record_type", STORED_RECORDS, ids=lambda t: t.__name__)
def test_the_dataclass_has_the_avro_fields_in_order_with_their_types(record_type):
    avro = _avro_fields(record_type)
    fields = _fields(record_type)
    assert [f["name"] for f in avro] == [f.name for f in fields]
    for schema_field, field in zip(avro, fields, strict=True):
        assert str(field.type) == _python_type(schema_field["type"]), field.name


def test_the_layer_verdict_has_the_avro_fields():
    decision = {f["name"]: f for f in _avro_fields(STORED_RECORDS[1])}
    nested = decision["verdicts"]["type"]["items"]["fields"]
    assert [f["name"] for f in nested] == [f.name for f in _fields(LayerVerdict)]


def test_the_lineage_verdict_has_the_avro_fields():
    event = {f["name"]: f for f in _avro_fields(LineageEvent)}
    nested = event["verdicts"]["type"]["items"]["fields"]
    assert [f["name"] for f in nested] == [f.name for f in _fields(LineageVerdict)]


@pytest.fixture(scope="module")
def described(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """Per storage table: column name -> DESCRIBE row, on a store the migrations made."""
    store = ClickHouseSink(path=tmp_path_factory.mktemp("records") / "clickhouse")
    store.setup()
    try:
        yield {
            spec.storage: {r["name"]: r for r in store.query(f"DESCRIBE {spec.storage}").dicts()}
            for spec in TABLES.values()
        }
    finally:
        store.close()


@pytest.mark.parametrize("record_type", STORED_RECORDS, ids=lambda t: t.__name__)
def test_the_sql_table_has_the_dataclass_columns_and_only_computed_extras(record_type, described):
    spec = TABLES[record_type.TABLE]
    columns = described[spec.storage]
    written = set(spec.columns)
    record_columns = [c for f in _fields(record_type) for c in columns_of_field(f)]
    # the sink writes the record's columns, then where it read the record
    assert list(spec.columns) == [*record_columns, *SINK_COLUMNS[record_type.TABLE]]
    assert written <= set(columns), sorted(written - set(columns))
    # every other column is computed by ClickHouse (occurred_at, ingested_at, ...)
    for name, column in columns.items():
        if name not in written:
            assert column["default_type"] == "DEFAULT" and column["default_expression"], name


@pytest.mark.parametrize("record_type", STORED_RECORDS, ids=lambda t: t.__name__)
def test_a_column_is_nullable_exactly_when_its_field_may_be_null(record_type, described):
    columns = described[TABLES[record_type.TABLE].storage]
    for field in _fields(record_type):
        how = store_of(field)
        # '' stands for null: the column is in the sort key, which cannot be Nullable
        may_be_null = str(field.type).endswith("| None") and how is not Store.NULL_AS_EMPTY
        for column in columns_of_field(field):
            nullable = columns[column]["type"].startswith("Nullable(")
            if how in {Store.HASH, Store.LOG_INDEX}:
                # null on the `lineage` topic, required of every row the sink stores
                assert not nullable, column
            else:
                assert nullable == may_be_null, (record_type.__name__, column)


def _assert_builds(record_type: type[StoredRecord], record: dict[str, Any]) -> None:
    """``record`` has exactly the dataclass's fields, in order, and survives the codec."""
    assert list(record) == [f.name for f in _fields(record_type)]
    codec = default_codec()
    name = record_type.AVRO_NAME.rsplit(".", 1)[-1]
    assert codec.decode(codec.encode(name, record), name) == record


def test_the_gate_builds_decisions_approvals_and_rejections_with_the_dataclass_fields():
    intent = make_intent()
    raw = default_codec().encode("Intent", intent_record())
    allowed = combine([Verdict.allow("schema"), Verdict.allow("freshness")], ["schema"])
    denied = combine([Verdict.allow("schema"), Verdict.deny("policy", "no")], ["schema"])
    signer = ApprovalSigner(SigningKeyring([KeyringEntry(generate_signing_key(), 0, None)]))
    _assert_builds(
        Decision,
        decision_record(intent, denied, intent_digest="sha256:" + "a" * 64, now_ms=1, worker="w"),
    )
    _assert_builds(
        Approval,
        approval_record(
            intent,
            allowed,
            intent_digest="sha256:" + "a" * 64,
            intent_bytes=raw,
            now_ms=intent.issued_at_ms,
            worker="w",
            signer=signer,
        ),
    )
    position = SourcePosition("intents", 0, 7)
    _assert_builds(
        Rejection,
        rejection_record(position, b"k", b"x", code="not_avro", reason="r", now_ms=1, worker="w"),
    )


def test_the_gate_builds_lineage_events_with_exactly_the_dataclass_fields():
    event = LineageRecorder("w").event(
        subject="s", stage="decode", event_type="intent.received", status="ok", now_ms=1
    )
    assert list(event) == [f.name for f in _fields(LineageEvent)]
    codec = default_codec()
    assert codec.decode(codec.encode("LineageEvent", event), "LineageEvent") == event
