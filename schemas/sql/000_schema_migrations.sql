-- 000: the migration ledger. Applied (idempotently) on every setup, before any other
-- migration; every later file is applied once and recorded here with its checksum.
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32 COMMENT 'number of the migration file (001_lineage.sql -> 1)',
    name       String COMMENT 'file name of the migration',
    checksum   String COMMENT 'sha256:<hex> of the file as applied; an edited applied file stops the sink',
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
COMMENT 'schema migrations applied to this lineage store';
