-- 003: approvals, one row per Approval (schemas/approval.avsc) read from `approved`.
-- approval_id is derived from the intent id and digest, so agent_id is a function of it.
CREATE TABLE IF NOT EXISTS approvals_raw
(
    approval_id          String,
    intent_id            String,
    agent_id             String,
    action               String,
    resource             String,
    intent_digest        String,
    verdict_layers       Array(String),
    verdict_statuses     Array(LowCardinality(String)),
    verdict_reasons      Array(Array(String)),
    verdict_durations_us Array(Int64),
    envelope             String COMMENT 'DSSE envelope (JSON text)',
    issued_at_ms         Int64,
    issued_at            DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(issued_at_ms, 'UTC'),
    expires_at_ms        Int64,
    expires_at           DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(expires_at_ms, 'UTC'),
    worker               LowCardinality(String),
    kafka_partition      Int32 DEFAULT -1,
    kafka_offset         Int64 DEFAULT -1,
    ingested_at          DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_issued_at issued_at TYPE minmax GRANULARITY 4,
    INDEX idx_intent intent_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree(issued_at)
ORDER BY (agent_id, approval_id)
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'approvals as written by the sink; query the approvals view';

CREATE VIEW IF NOT EXISTS approvals AS
SELECT * FROM approvals_raw FINAL;
