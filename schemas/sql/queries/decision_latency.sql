-- title: Decision latency p50/p99
-- description: Per decided intent, from its lineage: layers_us is the time its decision layers took (sum of the duration_us of its layer.verdict events), lineage_span_ms the time from its decode event to its enforcement event. p50 and p99 (exact) over all intents.
SELECT
    count() AS intents,
    quantileExact(0.5)(layers_us) AS p50_layers_us,
    quantileExact(0.99)(layers_us) AS p99_layers_us,
    max(layers_us) AS max_layers_us,
    quantileExact(0.5)(lineage_span_ms) AS p50_span_ms,
    quantileExact(0.99)(lineage_span_ms) AS p99_span_ms,
    max(lineage_span_ms) AS max_span_ms
FROM intent_latency
