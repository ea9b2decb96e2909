-- title: Decisions per agent per hour
-- description: How many intents each agent had approved, denied and held for review, per hour (UTC) of the decision.
SELECT
    toStartOfHour(decided_at) AS hour,
    agent_id,
    countIf(outcome = 'APPROVED') AS approved,
    countIf(outcome = 'DENIED') AS denied,
    countIf(outcome = 'REVIEW') AS review,
    count() AS decisions
FROM intent_decisions
GROUP BY hour, agent_id
ORDER BY hour, agent_id
