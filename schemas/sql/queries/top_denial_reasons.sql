-- title: Top denial reasons
-- description: The 20 most frequent reasons given for denied intents, with how many agents hit each.
SELECT
    reason,
    count() AS denials,
    uniqExact(agent_id) AS agents,
    min(decided_at) AS first_seen,
    max(decided_at) AS last_seen
FROM decisions
ARRAY JOIN reasons AS reason
WHERE outcome = 'DENIED'
GROUP BY reason
ORDER BY denials DESC, reason
LIMIT 20
