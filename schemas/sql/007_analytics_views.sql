-- 007: views for the common analytics. All read the deduplicating views, so nothing
-- is counted twice.

-- Every decision the gate made, approved or not: one row per decision record (an intent
-- held for review has its REVIEW row and, later, its APPROVED or DENIED row).
CREATE VIEW IF NOT EXISTS intent_decisions AS
SELECT
    approval_id AS record_id,
    intent_id,
    agent_id,
    'APPROVED' AS outcome,
    CAST([] AS Array(String)) AS reasons,
    verdict_layers,
    verdict_durations_us,
    issued_at AS decided_at,
    worker
FROM approvals
UNION ALL
SELECT
    decision_id AS record_id,
    intent_id,
    agent_id,
    toString(outcome) AS outcome,
    reasons,
    verdict_layers,
    verdict_durations_us,
    decided_at,
    worker
FROM decisions;

-- Per intent, from its lineage: when it was decoded, when enforcement decided, and the
-- time its decision layers took (the duration_us attribute of each layer.verdict event).
CREATE VIEW IF NOT EXISTS intent_latency AS
SELECT
    intent_id,
    any(agent_id) AS agent_id,
    minIf(occurred_at_ms, stage = 'decode') AS decoded_at_ms,
    maxIf(occurred_at_ms, stage = 'enforcement') AS enforced_at_ms,
    enforced_at_ms - decoded_at_ms AS lineage_span_ms,
    sumIf(toInt64OrZero(attributes['duration_us']), event_type = 'layer.verdict') AS layers_us,
    anyIf(status, stage = 'enforcement') AS outcome
FROM lineage_events
WHERE intent_id != ''
GROUP BY intent_id
HAVING countIf(stage = 'decode') > 0 AND countIf(stage = 'enforcement') > 0;

-- Per intent: where it ended (its latest decision), when, and whether it was held.
CREATE VIEW IF NOT EXISTS intent_outcomes AS
SELECT
    intent_id,
    any(agent_id) AS agent_id,
    argMax(outcome, (decided_at, outcome != 'REVIEW')) AS final_outcome,
    min(decided_at) AS first_decided_at,
    max(decided_at) AS last_decided_at,
    countIf(outcome = 'REVIEW') > 0 AS held_for_review
FROM intent_decisions
GROUP BY intent_id;
