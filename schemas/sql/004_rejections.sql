-- 004: rejected input, one row per Rejection (schemas/rejection.avsc) read from
-- `rejected`: bad intents from the gate, poison records from the sink itself.
-- rejection_id is derived from the source position, so source_topic is a function of it.
CREATE TABLE IF NOT EXISTS rejections_raw
(
    rejection_id     String,
    source_topic     LowCardinality(String),
    source_partition Int32,
    source_offset    Int64,
    key              Nullable(String) COMMENT 'record key as text (invalid UTF-8 shown as \\x escapes)',
    value_sha256     String,
    value_prefix_hex String COMMENT 'first 64 bytes of the value, hex',
    value_size       Int64,
    reason_code      LowCardinality(String),
    reason           String,
    rejected_at_ms   Int64,
    rejected_at      DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(rejected_at_ms, 'UTC'),
    worker           LowCardinality(String),
    kafka_partition  Int32 DEFAULT -1,
    kafka_offset     Int64 DEFAULT -1,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_rejected_at rejected_at TYPE minmax GRANULARITY 4
)
ENGINE = ReplacingMergeTree(rejected_at)
ORDER BY (source_topic, rejection_id)
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'rejected records as written by the sink; query the rejections view';

CREATE VIEW IF NOT EXISTS rejections AS
SELECT * FROM rejections_raw FINAL;
