"""Lineage analytics in ClickHouse: tables, migrations, the sink, the named queries.

Two backends, one schema and one set of queries:

- **chDB** (default): the ClickHouse engine embedded in this process, on a local data
  folder (``<state_dir>/clickhouse``). A folder can be open in one process only (chDB
  locks it), so the sink process also serves read-only SQL over HTTP
  (``streams/sink/``) and everyone else queries through it.
- **ClickHouse server** through clickhouse-connect, when a URL such as
  ``http://user:pass@host:8123/db`` is configured.

The DDL is in ``schemas/sql/NNN_*.sql`` (applied once each, recorded in
``schema_migrations`` with a checksum); the analytics queries are in
``schemas/sql/queries/*.sql``. Both work on chDB and on ClickHouse 24.x.

Writes are idempotent: every table is a ReplacingMergeTree keyed on the record id (lineage
on its log index, intents on where they were read), and each block is inserted with an
``insert_deduplication_token`` (the SHA-256 of its content), so a retried flush is dropped
at once and a redelivered record is merged away; the views read ``FINAL``, so queries
never count a record twice.

Query results are read as ``JSONCompact`` from both backends and converted the same way,
so the same query returns the same rows from chDB and from a server.

Lineage comes from ``lineage-log``, the notary's linked events: every row of
``lineage_events`` has ``event_hash``, ``prev_hash`` (null only at log index 0) and
``log_index``, so it can be proven with the notary's inclusion proof and a signed
checkpoint (:meth:`processors.records.LineageEvent.from_row` gives back the event).

Modules: ``tables`` (what is stored where), ``rows`` (records to rows), ``backends``
(chDB, clickhouse-connect), ``results`` (answers and errors), ``migrations``,
``queries`` (named analytics queries), ``sink`` (:class:`ClickHouseSink`).
"""

from sinks.clickhouse.migrations import SQL_DIR, Migration, load_migrations
from sinks.clickhouse.queries import (
    QUERIES_DIR,
    NamedQuery,
    get_named_query,
    named_queries,
    run_named_query,
)
from sinks.clickhouse.results import parse_json_compact
from sinks.clickhouse.rows import checkpoint_from_note, checkpoint_row, intent_row, map_record
from sinks.clickhouse.sink import ClickHouseSink
from sinks.clickhouse.tables import TABLES, TOPIC_RECORDS, TableSpec

__all__ = [
    "SQL_DIR",
    "QUERIES_DIR",
    "TABLES",
    "TOPIC_RECORDS",
    "TableSpec",
    "Migration",
    "NamedQuery",
    "ClickHouseSink",
    "load_migrations",
    "named_queries",
    "get_named_query",
    "run_named_query",
    "map_record",
    "intent_row",
    "parse_json_compact",
    "checkpoint_row",
    "checkpoint_from_note",
]
