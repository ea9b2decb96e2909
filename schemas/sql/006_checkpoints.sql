-- 006: signed checkpoints of the lineage log (C2SP tlog-checkpoint), one row per
-- checkpoint the notary publishes. A checkpoint of a given origin and tree size is
-- unique (the root hash is determined by the log), so that pair is the key.
CREATE TABLE IF NOT EXISTS checkpoints_raw
(
    origin        String COMMENT 'log origin line of the checkpoint',
    tree_size     UInt64 COMMENT 'number of lineage events covered',
    root_hash     String COMMENT 'RFC 9162 root hash, base64 as in the note',
    note          String COMMENT 'the whole signed note text',
    created_at_ms Int64,
    created_at    DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(created_at_ms, 'UTC'),
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (origin, tree_size)
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'lineage checkpoints; query the checkpoints view';

CREATE VIEW IF NOT EXISTS checkpoints AS
SELECT * FROM checkpoints_raw FINAL;
