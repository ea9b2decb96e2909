"""The tables the sink writes, and which topic's records go to which table.

The columns of a record's table come from its dataclass in ``processors/records.py``
(:func:`processors.records.record_columns`), plus the columns the sink adds about where
it read the record (:data:`SINK_COLUMNS`). Columns the sink never writes (``ingested_at``,
``occurred_at`` and the like) are computed by ClickHouse from their ``DEFAULT``.
``tests/processors/test_records.py`` checks this against the ``.avsc`` and the ``.sql``.
Two tables are not record tables: ``checkpoints`` (signed notes) and ``intents`` (the
intents as agents sent them, with their exact bytes: :data:`INTENT_COLUMNS`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processors.records import (
    Approval,
    Decision,
    LineageEvent,
    OutcomeReport,
    Rejection,
    StoredRecord,
    record_columns,
)
from sinks.base import SinkError

__all__ = [
    "TableSpec",
    "TABLES",
    "TOPIC_RECORDS",
    "SINK_COLUMNS",
    "RECORD_TYPES",
    "INTENT_COLUMNS",
]


@dataclass(frozen=True)
class TableSpec:
    """A logical table: where its rows are stored and which columns a row carries."""

    name: str
    """Logical name, used with :meth:`ClickHouseSink.add` (also the deduplicating view)."""
    storage: str
    """The ReplacingMergeTree table the rows go to."""
    columns: tuple[str, ...]
    """Every column a row may give, in insert order."""
    defaults: Mapping[str, Any]
    """Columns a row may leave out, with the value used then."""

    @property
    def required(self) -> frozenset[str]:
        return frozenset(self.columns) - frozenset(self.defaults)

    @functools.cached_property
    def column_set(self) -> frozenset[str]:
        return frozenset(self.columns)

    def complete(self, table: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """``row`` with the defaults filled in; :class:`SinkError` if it does not fit."""
        keys = row.keys()
        missing = sorted(self.required - keys)
        unknown = sorted(keys - self.column_set)
        if missing or unknown:
            raise SinkError(
                f"a {table} row must have the columns {', '.join(self.columns)}; "
                f"missing {missing or 'none'}, unknown {unknown or 'none'}",
                hint="map_record() builds rows from records",
            )
        return {**self.defaults, **row}


_KAFKA = {"kafka_partition": -1, "kafka_offset": -1}

SINK_COLUMNS: dict[str, Mapping[str, Any]] = {
    "lineage_events": _KAFKA,
    "decisions": {"kafka_topic": "", **_KAFKA},
    "approvals": _KAFKA,
    "rejections": _KAFKA,
    "outcomes": _KAFKA,
}
"""Per record table, the columns the sink adds (where it read the record), with their
value when a row does not come from Kafka."""

RECORD_TYPES: dict[str, type[StoredRecord]] = {
    t.TABLE: t for t in (LineageEvent, Decision, Approval, Rejection, OutcomeReport)
}
"""The record type of each record table."""


STORAGE: dict[str, str] = {"lineage_events": "lineage_log"}
"""Record tables not stored in ``<name>_raw``: lineage rows are identified by their log
index since migration 009 (``schemas/sql/009_signed_lineage.sql``)."""


def _record_table(record_type: type[StoredRecord]) -> TableSpec:
    extra = SINK_COLUMNS[record_type.TABLE]
    return TableSpec(
        record_type.TABLE,
        STORAGE.get(record_type.TABLE, f"{record_type.TABLE}_raw"),
        (*record_columns(record_type), *extra),
        dict(extra),
    )


INTENT_COLUMNS = (
    "intent_id",
    "agent_id",
    "action",
    "resource",
    "parameters_json",
    "context_json",
    "runtime_id",
    "environment",
    "code_digest",
    "config_digest",
    "host",
    "sequence",
    "issued_at_ms",
    "expires_at_ms",
    "nonce",
    "key_id",
    "intent_digest",
    "record_b64",
    "kafka_partition",
    "kafka_offset",
)
"""The columns of an ``intents`` row (``schemas/sql/010_intents.sql``). Intents are not a
stored record type: a row is built from the validated Intent and the exact record bytes
(:func:`sinks.clickhouse.rows.intent_row`), always where the sink read it."""

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        *(_record_table(t) for t in RECORD_TYPES.values()),
        TableSpec(
            "checkpoints",
            "checkpoints_raw",
            ("origin", "tree_size", "root_hash", "note", "created_at_ms"),
            {},
        ),
        TableSpec("intents", "intents_raw", INTENT_COLUMNS, {}),
    )
}
"""Every table the sink writes, by logical name."""

TOPIC_RECORDS: dict[str, tuple[str, str]] = {
    "lineage-log": (LineageEvent.AVRO_NAME, LineageEvent.TABLE),
    "approved": (Approval.AVRO_NAME, Approval.TABLE),
    "denied": (Decision.AVRO_NAME, Decision.TABLE),
    "review": (Decision.AVRO_NAME, Decision.TABLE),
    "rejected": (Rejection.AVRO_NAME, Rejection.TABLE),
    "outcomes": (OutcomeReport.AVRO_NAME, OutcomeReport.TABLE),
    "intents": ("dev.trustplane.Intent", "intents"),
}
"""Logical topic -> (the record type it carries, the table its rows go to). Lineage is
read from ``lineage-log``, the notary's linked events, never from the unlinked
``lineage``: every row of ``lineage_events`` carries its ``event_hash``, ``prev_hash``
and ``log_index`` and can be proven against a signed checkpoint. An intent's row needs
the record's bytes and key: :func:`~sinks.clickhouse.rows.intent_row` builds it, not
:func:`~sinks.clickhouse.rows.map_record`."""
