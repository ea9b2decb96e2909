-- 001: lineage events, one row per LineageEvent (schemas/lineage_event.avsc).
--
-- Idempotent on redelivery: event ids are derived from the event's subject, stage and
-- type (processors/lineage.py), so a redelivered or re-decided event has the same id,
-- and ReplacingMergeTree keeps one row per sort key. stage, agent_id and intent_id are
-- functions of event_id, so putting them first in the key (for the per-stage and
-- per-intent analytics) does not split duplicates. There is no partition key on
-- purpose: duplicates are only merged within a partition, and the event time of a
-- re-decided event may differ. Read through the `lineage_events` view (FINAL), never
-- count the _raw table.
CREATE TABLE IF NOT EXISTS lineage_events_raw
(
    event_id        String,
    intent_id       String COMMENT 'empty when the input never became an intent',
    agent_id        String COMMENT 'empty when unknown (an undecodable record)',
    stage           LowCardinality(String) COMMENT 'decode, a layer name, enforcement, anomaly, ...',
    event_type      LowCardinality(String),
    status          LowCardinality(String),
    reasons         Array(String),
    attributes      Map(String, String),
    occurred_at_ms  Int64,
    occurred_at     DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(occurred_at_ms, 'UTC'),
    worker          LowCardinality(String),
    prev_hash       Nullable(String),
    event_hash      Nullable(String),
    kafka_partition Int32 DEFAULT -1 COMMENT 'where the sink read the event (-1: not from Kafka)',
    kafka_offset    Int64 DEFAULT -1,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_occurred_at occurred_at TYPE minmax GRANULARITY 4,
    INDEX idx_event_type event_type TYPE set(256) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(occurred_at)
ORDER BY (stage, agent_id, intent_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'lineage events as written by the sink; query the lineage_events view';

CREATE VIEW IF NOT EXISTS lineage_events AS
SELECT * FROM lineage_events_raw FINAL;
