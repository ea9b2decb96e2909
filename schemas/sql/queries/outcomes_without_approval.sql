-- title: Outcomes with no approval
-- description: Executions reported for an approval the gate never issued: unauthorized execution, investigate every row.
SELECT
    outcome_id,
    approval_id,
    intent_id,
    agent_id,
    executor_id,
    status,
    detail,
    reported_at
FROM outcomes
WHERE approval_id NOT IN (SELECT approval_id FROM approvals)
ORDER BY reported_at, outcome_id
