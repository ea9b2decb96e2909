-- title: Decision latency p50/p99
-- description: Per decided intent, from its signed decision event: layers_us is the time its decision layers took (the sum of its verdicts' duration_us). p50 and p99 (exact) over all intents.
SELECT
    count() AS intents,
    quantileExact(0.5)(layers_us) AS p50_layers_us,
    quantileExact(0.99)(layers_us) AS p99_layers_us,
    max(layers_us) AS max_layers_us
FROM intent_latency
