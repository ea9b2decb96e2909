-- title: Anomalies per scenario
-- description: Lineage events of the anomaly stage, per scenario (the event's scenario attribute, else its event type): how many, for how many agents, first and last seen. Empty until the anomaly layer reports.
SELECT
    if(attributes['scenario'] != '', attributes['scenario'], event_type) AS scenario,
    count() AS anomalies,
    uniqExact(agent_id) AS agents,
    uniqExact(intent_id) AS intents,
    min(occurred_at) AS first_seen,
    max(occurred_at) AS last_seen
FROM lineage_events
WHERE stage = 'anomaly'
GROUP BY scenario
ORDER BY anomalies DESC, scenario
