-- 002: denied and review decisions, one row per Decision (schemas/decision.avsc) read
-- from the `denied` and `review` topics. decision_id is derived from the intent id and
-- digest (processors/records.py), so agent_id is a function of it. An intent held for
-- review and later denied gets a second Decision with the same id and outcome DENIED:
-- outcome is part of the key so both stay (each decision the gate made is one row),
-- while a redelivered copy of either is merged away.
CREATE TABLE IF NOT EXISTS decisions_raw
(
    decision_id          String,
    intent_id            String,
    agent_id             String,
    outcome              LowCardinality(String) COMMENT 'DENIED or REVIEW',
    reasons              Array(String),
    verdict_layers       Array(String),
    verdict_statuses     Array(LowCardinality(String)),
    verdict_reasons      Array(Array(String)),
    verdict_durations_us Array(Int64),
    intent_digest        String,
    decided_at_ms        Int64,
    decided_at           DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(decided_at_ms, 'UTC'),
    worker               LowCardinality(String),
    kafka_topic          LowCardinality(String) DEFAULT '',
    kafka_partition      Int32 DEFAULT -1,
    kafka_offset         Int64 DEFAULT -1,
    ingested_at          DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_decided_at decided_at TYPE minmax GRANULARITY 4,
    INDEX idx_intent intent_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (agent_id, decision_id, outcome)
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'denied and review decisions as written by the sink; query the decisions view';

CREATE VIEW IF NOT EXISTS decisions AS
SELECT * FROM decisions_raw FINAL;
