-- title: Approvals with no outcome
-- description: Approvals no executor has reported an outcome for (yet); expired ones will never legitimately get one.
SELECT
    approval_id,
    intent_id,
    agent_id,
    action,
    resource,
    issued_at,
    expires_at,
    expires_at < now64(3) AS expired
FROM approvals
WHERE approval_id NOT IN (SELECT approval_id FROM outcomes)
ORDER BY issued_at, approval_id
