"""The Kafka -> ClickHouse lineage sink, and the read-only SQL endpoint beside it.

``trustplane sink`` reads ``lineage-log``, ``approved``, ``denied``, ``review``,
``rejected``, ``outcomes``, ``checkpoints`` and ``intents`` (consumer group
``<group_id>.sink``, ``read_committed``, no auto-commit), decodes each record with the
codec, maps it to a row (:func:`sinks.clickhouse.map_record`,
:func:`~sinks.clickhouse.intent_row`) and buffers it. Every ``sink_batch_rows`` records
or ``sink_batch_ms`` milliseconds it writes the rows to ClickHouse and only then commits
the consumed offsets. A crash between the two redelivers the batch, and the tables absorb
the duplicates (ReplacingMergeTree on the record id, insert deduplication tokens, FINAL
views): at-least-once into an idempotent store, so every record is counted exactly once.

A record that does not decode, or decodes to something that cannot be a row, is a
poison record: it goes to ``rejected`` as a Rejection with the reason (which the sink
then stores like any rejection), and the sink goes on. A bad record on ``intents`` is
counted and skipped instead: the gate rejects it already. Rejections and offsets are
committed in one Kafka transaction (``transactional.id`` ``<group_id>.sink.<worker_id>``)
after the ClickHouse write, so a ``read_committed`` reader sees each poison record
rejected once, and a restarted sink fences its predecessor.

The embedded chDB folder can be open in one process only, so the sink serves SQL on
``127.0.0.1:<sink_http_port>`` (``POST /sql``, read-only: the SQL guard, then a
``readonly=1`` connection), plus ``/healthz``, ``/metrics`` and ``/queries``.
``trustplane sql`` and the console query through it; with a ClickHouse URL they query
the server directly.

Modules: ``config`` (SINK_TOPICS, GATE_REJECTS, SinkConfig, build_sink), ``metrics``,
``runner`` (the Kafka loop), ``sql_server`` (QueryServer), ``sql_client``
(SinkQueryClient, open_query_target), ``service`` (run_sink), ``exceptions``.
"""

from streams.sink.config import SINK_TOPICS, SinkConfig, build_sink
from streams.sink.exceptions import SinkRunError
from streams.sink.metrics import SinkMetrics
from streams.sink.runner import SinkRunner
from streams.sink.service import RunningSink, run_sink
from streams.sink.sql_client import QueryTarget, SinkQueryClient, open_query_target
from streams.sink.sql_server import QueryServer

__all__ = [
    "SINK_TOPICS",
    "SinkConfig",
    "SinkMetrics",
    "SinkRunner",
    "SinkRunError",
    "QueryServer",
    "SinkQueryClient",
    "QueryTarget",
    "RunningSink",
    "build_sink",
    "open_query_target",
    "run_sink",
]
