-- 009: signed lineage, one event per decided intent, rows identified by log index.
--
-- The gate now signs every lineage event (signer, signature) and writes one event per
-- decided intent with every layer's verdict inside (verdict_* arrays, with evidence).
-- A row is identified by its position in the notary's log (log_index), never by a
-- field of the record: an event id that comes back with other content is a second row
-- (see lineage_id_conflicts), not a replacement of the first.
--
-- Signed lineage starts a new log: events stored before 009 (unsigned, one per step, from
-- the previous log) stay in lineage_events_raw for reference and are not copied.

CREATE TABLE IF NOT EXISTS lineage_log
(
    log_index            UInt64 COMMENT 'position in the notary''s log (Merkle leaf index): the row''s identity',
    event_id             String,
    intent_id            String COMMENT 'empty when the input never became an intent',
    agent_id             String COMMENT 'empty when unknown (an undecodable record)',
    stage                LowCardinality(String) COMMENT 'enforcement, review, decode, execution, control',
    event_type           LowCardinality(String),
    status               LowCardinality(String),
    reasons              Array(String),
    attributes           Map(String, String),
    occurred_at_ms       Int64,
    occurred_at          DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(occurred_at_ms, 'UTC'),
    worker               LowCardinality(String),
    verdict_layers       Array(String),
    verdict_statuses     Array(LowCardinality(String)),
    verdict_reasons      Array(Array(String)),
    verdict_durations_us Array(Int64),
    verdict_evidence     Array(Map(String, String)),
    signer               Nullable(String) COMMENT 'key id of the gate key that signed the event',
    signature            Nullable(String) COMMENT 'base64 Ed25519 over DSSE PAE of the event (processors/log/attest.py)',
    prev_hash            Nullable(String),
    event_hash           String,
    kafka_partition      Int32 DEFAULT -1 COMMENT 'where the sink read the event (-1: not from Kafka)',
    kafka_offset         Int64 DEFAULT -1,
    ingested_at          DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_intent intent_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_occurred_at occurred_at TYPE minmax GRANULARITY 4
)
ENGINE = ReplacingMergeTree
ORDER BY log_index
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'verified lineage events, one row per position of the notary''s log; query the lineage_events view';

CREATE OR REPLACE VIEW lineage_events AS
SELECT * FROM lineage_log FINAL;

-- an event id logged more than once: every version stays, this view shows them
CREATE OR REPLACE VIEW lineage_id_conflicts AS
SELECT
    event_id,
    count() AS versions,
    groupArray(log_index) AS log_indexes,
    groupArray(worker) AS workers,
    groupArray(signer) AS signers
FROM lineage_events
GROUP BY event_id
HAVING count() > 1;

-- per decided intent, from its decision event: the time its decision layers took
CREATE OR REPLACE VIEW intent_latency AS
SELECT
    intent_id,
    any(agent_id) AS agent_id,
    min(occurred_at_ms) AS decided_at_ms,
    sum(arraySum(verdict_durations_us)) AS layers_us,
    argMax(status, log_index) AS outcome
FROM lineage_events
WHERE intent_id != '' AND stage IN ('enforcement', 'review') AND length(verdict_layers) > 0
GROUP BY intent_id;
