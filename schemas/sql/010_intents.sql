-- 010: intents, one row per Intent record (schemas/intent.avsc) read from `intents`.
--
-- A row is identified by where the sink read the record (kafka_partition, kafka_offset),
-- never by a field of the record: a replayed intent id is a second row, as it is a second
-- record the gate decided on. agent_id and intent_id are functions of the position, so
-- putting them first in the key (for per-agent and per-intent lookups) does not split
-- a redelivered record's duplicates. Only records the gate can decide on are kept (they
-- decode and validate as processors/intent.py validates them); the others are the gate's
-- rejections (see the rejections view).
--
-- intent_digest is the gate's digest of the exact record value ("sha256:" + hex, as
-- processors.records.digest computes it), so it joins approvals.intent_digest,
-- decisions.intent_digest and lineage_events.attributes['intent_digest']; record_b64
-- holds those exact bytes, so the digest an approval signs can be checked again.
CREATE TABLE IF NOT EXISTS intents_raw
(
    intent_id       String,
    agent_id        String,
    action          String,
    resource        String,
    parameters_json String COMMENT 'the parameters map as a JSON object, in record order',
    context_json    String COMMENT 'the context map as a JSON object, in record order',
    runtime_id      String,
    environment     LowCardinality(String),
    code_digest     String,
    config_digest   String,
    host            String,
    sequence        Int64,
    issued_at_ms    Int64,
    issued_at       DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(issued_at_ms, 'UTC'),
    expires_at_ms   Int64,
    expires_at      DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(expires_at_ms, 'UTC'),
    nonce           String,
    key_id          String COMMENT 'the agent key the intent claims to be signed with',
    intent_digest   String COMMENT 'sha256:<hex> of the exact record value, as the gate digests it',
    record_b64      String COMMENT 'the exact record value (Avro single-object encoding), base64',
    kafka_partition Int32 COMMENT 'where the sink read the record: the row''s identity',
    kafka_offset    Int64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_intent intent_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_intent_digest intent_digest TYPE bloom_filter GRANULARITY 4,
    INDEX idx_issued_at issued_at TYPE minmax GRANULARITY 4
)
ENGINE = ReplacingMergeTree
ORDER BY (agent_id, intent_id, kafka_partition, kafka_offset)
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'intents as written by the sink, one row per record of the intents topic; query the intents view';

CREATE VIEW IF NOT EXISTS intents AS
SELECT * FROM intents_raw FINAL;
