-- 005: execution outcomes, one row per Outcome (schemas/outcome.avsc) read from
-- `outcomes`. Executors choose outcome_id, so it alone is the key: nothing else in an
-- executor's report is trusted to be a function of it.
CREATE TABLE IF NOT EXISTS outcomes_raw
(
    outcome_id      String,
    approval_id     String,
    intent_id       String,
    agent_id        String,
    executor_id     String,
    status          LowCardinality(String) COMMENT 'EXECUTED or FAILED',
    detail          String,
    reported_at_ms  Int64,
    reported_at     DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(reported_at_ms, 'UTC'),
    kafka_partition Int32 DEFAULT -1,
    kafka_offset    Int64 DEFAULT -1,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_reported_at reported_at TYPE minmax GRANULARITY 4,
    INDEX idx_approval approval_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree(reported_at)
ORDER BY outcome_id
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'execution outcomes as written by the sink; query the outcomes view';

CREATE VIEW IF NOT EXISTS outcomes AS
SELECT * FROM outcomes_raw FINAL;
