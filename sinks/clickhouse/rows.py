"""Decoded records to table rows, derived from the record types in ``processors/records.py``.

Records come from the codec, so Avro has already checked every field's type; what is
left to refuse is what the schema cannot say, as each field's :class:`Store` tells: an
empty id (it would merge unrelated rows), a time ClickHouse cannot store, an empty
string where ``''`` stands for null, and a lineage event the notary has not linked (no
``event_hash`` or ``log_index``: it was read from ``lineage``, not ``lineage-log``).
Hand-made dicts not shaped like the record fail with a :class:`MappingError` too.
Intents are refused as the gate refuses them (:func:`intent_row`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from processors.exceptions import ValidationError
from processors.intent import Intent
from processors.log.checkpoint import Checkpoint, CheckpointError
from processors.records import (
    LINEAGE_VERDICT_COLUMNS,
    VERDICT_COLUMNS,
    LineageEvent,
    Store,
    StoredRecord,
    columns_of_field,
    digest,
    store_of,
)
from sinks.base import MappingError
from sinks.clickhouse.tables import RECORD_TYPES, TOPIC_RECORDS

__all__ = ["map_record", "intent_row", "checkpoint_row", "checkpoint_from_note"]

# DateTime64(3) covers 1900-01-01 .. 2299-12-31; refuse times outside instead of storing junk
_MIN_MS = -2_208_988_800_000
_MAX_MS = 10_413_792_000_000 - 1
_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
_UNLINKED_HINT = "the sink stores linked events only: it reads lineage-log (the notary's)"


def _id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MappingError("invalid_field", f"{name} is empty; a record without an id is not kept")
    return value


def _ms(value: Any, name: str) -> int:
    if type(value) is not int or not _MIN_MS <= value <= _MAX_MS:
        raise MappingError(
            "invalid_field",
            f"{name} = {value!r} is not a time between 1900 and 2299 in milliseconds since epoch",
        )
    return value


def _null_as_empty(value: Any, name: str) -> str:
    if value is None:
        return ""
    if value == "":
        raise MappingError(
            "invalid_field",
            f"{name} is an empty string; the store keeps null as '' so '' cannot be kept",
        )
    return str(value)


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    return str(value)


def _hex(value: Any, name: str) -> str:
    return bytes(value).hex()


def _hash(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
        raise MappingError(
            "invalid_field",
            f"{name} is {value!r}, not a notary hash (sha256: and 64 hex digits); "
            + _UNLINKED_HINT,
        )
    return value


def _hash_or_null(value: Any, name: str) -> str | None:
    return None if value is None else _hash(value, name)


def _log_index(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise MappingError(
            "invalid_field", f"{name} is {value!r}, not a log position; " + _UNLINKED_HINT
        )
    return value


def _value(value: Any, name: str) -> Any:
    return value


_CHECKS: dict[Store, Callable[[Any, str], Any]] = {
    Store.VALUE: _value,
    Store.ID: _id,
    Store.TIME_MS: _ms,
    Store.NULL_AS_EMPTY: _null_as_empty,
    Store.TEXT: _text,
    Store.HEX: _hex,
    Store.HASH: _hash,
    Store.HASH_OR_NULL: _hash_or_null,
    Store.LOG_INDEX: _log_index,
}


def _verdicts(verdicts: Any) -> dict[str, Any]:
    try:
        return dict(
            zip(
                VERDICT_COLUMNS,
                (
                    [v["layer"] for v in verdicts],
                    [v["status"] for v in verdicts],
                    [list(v["reasons"]) for v in verdicts],
                    [int(v["duration_us"]) for v in verdicts],
                ),
                strict=True,
            )
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MappingError("invalid_field", f"a verdict is malformed: {exc!r}") from exc


def _lineage_verdicts(verdicts: Any) -> dict[str, Any]:
    try:
        return dict(
            zip(
                LINEAGE_VERDICT_COLUMNS,
                (
                    [v["layer"] for v in verdicts],
                    [v["status"] for v in verdicts],
                    [list(v["reasons"]) for v in verdicts],
                    [int(v["duration_us"]) for v in verdicts],
                    [dict(v["evidence"]) for v in verdicts],
                ),
                strict=True,
            )
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MappingError("invalid_field", f"a verdict is malformed: {exc!r}") from exc


RowBuilder = Callable[[Mapping[str, Any]], dict[str, Any]]


def row_builder(record_type: type[StoredRecord]) -> RowBuilder:
    """The function from a decoded record to its row, from the record type's fields."""
    plain: list[str] = []
    checked: list[tuple[str, str, Callable[[Any, str], Any]]] = []
    verdicts: list[tuple[str, Callable[[Any], dict[str, Any]]]] = []
    for f in dataclasses.fields(record_type):  # type: ignore[arg-type]  # a dataclass type
        how = store_of(f)
        if how is Store.SKIP:
            continue
        if how is Store.VERDICTS:
            verdicts.append((f.name, _verdicts))
        elif how is Store.LINEAGE_VERDICTS:
            verdicts.append((f.name, _lineage_verdicts))
        elif how is Store.VALUE:
            plain.append(f.name)
        else:
            checked.append((f.name, columns_of_field(f)[0], _CHECKS[how]))

    def build(record: Mapping[str, Any]) -> dict[str, Any]:
        row = {name: record[name] for name in plain}
        for name, column, check in checked:
            row[column] = check(record[name], name)
        for name, columns in verdicts:
            row.update(columns(record[name]))
        return row

    return build


_linked_row = row_builder(LineageEvent)


def _lineage_row(record: Mapping[str, Any]) -> dict[str, Any]:
    row = _linked_row(record)
    if (row["prev_hash"] is None) != (row["log_index"] == 0):
        raise MappingError(
            "invalid_field",
            f"log index {row['log_index']} with prev_hash {row['prev_hash']!r}: only the first "
            "event of the log (index 0) has no prev_hash",
        )
    return row


_ROW_BUILDERS: dict[str, RowBuilder] = {
    table: row_builder(record_type) for table, record_type in RECORD_TYPES.items()
}
_ROW_BUILDERS[LineageEvent.TABLE] = _lineage_row


def map_record(
    topic: str,
    record: Mapping[str, Any],
    *,
    record_name: str | None = None,
    partition: int = -1,
    offset: int = -1,
) -> tuple[str, dict[str, Any]]:
    """The logical table and row of a decoded record read from logical ``topic``.

    ``record_name`` is the record's full Avro name when known (the codec tells it from
    the header); a record of another type than the topic carries is refused.
    ``partition``/``offset`` say where it was read. Raises :class:`MappingError` with a
    Rejection ``reason_code``.
    """
    if topic == "intents":
        raise MappingError(
            "wrong_record_type",
            "an intent's row is built from its exact bytes and key: use intent_row()",
        )
    expected = TOPIC_RECORDS.get(topic)
    if expected is None:
        hint = " (lineage is stored from lineage-log)" if topic == "lineage" else ""
        raise MappingError(
            "wrong_record_type", f"the sink does not read topic {topic!r}; it has no table{hint}"
        )
    name, table = expected
    if record_name is not None and record_name != name:
        raise MappingError(
            "wrong_record_type",
            f"topic {topic} carries {name} records, this is a {record_name} record",
        )
    try:
        row = _ROW_BUILDERS[table](record)
    except MappingError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        short = name.rpartition(".")[2]
        raise MappingError("invalid_field", f"the {short} record is malformed: {exc!r}") from exc
    row["kafka_partition"] = partition
    row["kafka_offset"] = offset
    if table == "decisions":
        row["kafka_topic"] = topic
    return table, row


# -- intents (the exact bytes the gate decides on) ------------------------------------


def intent_row(
    record: Mapping[str, Any],
    value: bytes,
    *,
    key: bytes | None,
    partition: int,
    offset: int,
) -> dict[str, Any]:
    """The ``intents`` row of a decoded Intent ``record`` read at ``partition``/``offset``.

    ``value`` is the exact Kafka value the record was decoded from: the row keeps it
    (base64) and its digest, computed as the gate computes the ``intent_digest`` of its
    approvals, decisions and lineage. The record is validated as the gate validates it
    (:meth:`processors.intent.Intent.from_record`, with the Kafka ``key``): what the
    gate rejects raises :class:`MappingError` with the gate's reason code.
    """
    try:
        intent = Intent.from_record(record, key=key)
    except ValidationError as exc:
        raise MappingError(exc.code, exc.reason) from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MappingError("invalid_field", f"the Intent record is malformed: {exc!r}") from exc
    runtime = intent.runtime
    return {
        "intent_id": intent.intent_id,
        "agent_id": intent.agent_id,
        "action": intent.action,
        "resource": intent.resource,
        "parameters_json": _json_object(intent.parameters, "parameters"),
        "context_json": _json_object(intent.context, "context"),
        "runtime_id": runtime.runtime_id,
        "environment": runtime.environment,
        "code_digest": runtime.code_digest,
        "config_digest": runtime.config_digest,
        "host": runtime.host,
        "sequence": intent.sequence,
        "issued_at_ms": _ms(intent.issued_at_ms, "issued_at_ms"),
        "expires_at_ms": _ms(intent.expires_at_ms, "expires_at_ms"),
        "nonce": intent.nonce,
        "key_id": intent.key_id,
        "intent_digest": digest(value),
        "record_b64": base64.b64encode(value).decode("ascii"),
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


def _json_object(values: Mapping[str, Any], name: str) -> str:
    try:
        return json.dumps(dict(values), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MappingError("invalid_field", f"{name} cannot be written as JSON: {exc}") from exc


# -- checkpoints (signed notes, not Avro) -------------------------------------------


def checkpoint_from_note(note: str | bytes, created_at_ms: int) -> dict[str, Any]:
    """A ``checkpoints`` row from a C2SP signed note (the notary's ``checkpoints`` record).

    The note is parsed, not verified: the store keeps what the log published, and
    ``trustplane verify``/proofs check signatures against the notary's key. Raises
    :class:`MappingError` (``invalid_field``) when the text is not a checkpoint.
    """
    text = note.decode("utf-8", errors="replace") if isinstance(note, bytes) else note
    body, _, _ = text.partition("\n\n")
    try:
        checkpoint = Checkpoint.parse(body + "\n")
    except CheckpointError as exc:
        raise MappingError("invalid_field", f"not a checkpoint note: {exc.reason}") from exc
    return checkpoint_row(
        checkpoint.origin, checkpoint.size, checkpoint.root_hash, text, _ms(created_at_ms, "time")
    )


def checkpoint_row(
    origin: str, tree_size: int, root_hash: bytes | str, note: str, created_at_ms: int
) -> dict[str, Any]:
    """A ``checkpoints`` row (for the notary): the root hash is stored as base64 text."""
    root = root_hash if isinstance(root_hash, str) else base64.b64encode(root_hash).decode()
    return {
        "origin": origin,
        "tree_size": tree_size,
        "root_hash": root,
        "note": note,
        "created_at_ms": created_at_ms,
    }
