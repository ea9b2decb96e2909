-- 008: provable lineage. The sink now stores the notary's linked events (topic
-- lineage-log) instead of the unlinked `lineage`: every new row carries event_hash,
-- prev_hash (null only for log index 0) and log_index, the event's position in the
-- notary's RFC 9162 Merkle log. The row is the whole linked event (intent_id and
-- agent_id '' stand for null), so its Merkle leaf is recomputed from the row and proven
-- with the notary's inclusion proof for log_index against a signed checkpoint.
--
-- Rows stored before this migration came from `lineage` and have no hashes. A sink
-- upgraded to this version reads lineage-log from its first record: each linked event
-- has the same sort key and version as its unlinked row and is inserted later, so it
-- replaces that row (ReplacingMergeTree keeps the last inserted of equal versions).
-- What is left with log_index NULL never reached the notary's log.
ALTER TABLE lineage_events_raw
    ADD COLUMN IF NOT EXISTS log_index Nullable(UInt64)
        COMMENT 'position in the notary''s log (Merkle leaf index); NULL: stored unlinked before 008'
        AFTER event_hash;

ALTER TABLE lineage_events_raw
    ADD INDEX IF NOT EXISTS idx_log_index log_index TYPE minmax GRANULARITY 1;

-- the view was created with the columns of 001: recreate it so it shows log_index
CREATE OR REPLACE VIEW lineage_events AS
SELECT * FROM lineage_events_raw FINAL;
