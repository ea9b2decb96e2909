-- title: Checkpoint lag
-- description: Per log origin, the latest checkpoint against the lineage stored: lag_events is how many lineage events it does not cover yet, lag_ms how much older it is than the newest event. Before the first checkpoint: one row with an empty origin, every event lagging and no time.
WITH
    (SELECT count() FROM lineage_events) AS logged,
    (SELECT max(occurred_at_ms) FROM lineage_events) AS newest_event_ms
SELECT
    origin,
    checkpointed_size,
    logged AS lineage_events,
    toInt64(logged) - toInt64(checkpointed_size) AS lag_events,
    latest_checkpoint_at,
    if(logged = 0, toNullable(toInt64(0)), newest_event_ms - latest_checkpoint_ms) AS lag_ms
FROM
(
    SELECT
        origin,
        max(tree_size) AS checkpointed_size,
        CAST(argMax(created_at, tree_size) AS Nullable(DateTime64(3, 'UTC'))) AS latest_checkpoint_at,
        CAST(argMax(created_at_ms, tree_size) AS Nullable(Int64)) AS latest_checkpoint_ms
    FROM checkpoints
    GROUP BY origin
    UNION ALL
    SELECT
        '' AS origin,
        toUInt64(0) AS checkpointed_size,
        CAST(NULL AS Nullable(DateTime64(3, 'UTC'))) AS latest_checkpoint_at,
        CAST(NULL AS Nullable(Int64)) AS latest_checkpoint_ms
    WHERE (SELECT count() FROM checkpoints) = 0
)
ORDER BY origin
