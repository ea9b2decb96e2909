"""Benchmark the lineage sink's write path into chDB, without Kafka.

    .venv/bin/python bench/bench_sink.py [--events 200000] [--batch 20000] [--rounds 3] [--keep DIR]

Measures, in one process on a fresh chDB folder (target: >= 50,000 lineage rows/s):

- map + insert: decoded LineageEvent records -> ``map_record`` -> ``add`` -> ``flush``
  every ``--batch`` rows (what the sink does after decoding);
- decode + verify + map + insert: the same from the Avro single-object bytes a Kafka
  record carries, checking each event's gate signature and event_hash
  (``streams/sink/verify.py``): what the sink does per record, minus the consumer;
- redelivery: a set written again (different batch boundaries) and the deduplicated
  count checked.

Events are those of the gate (one per decided intent, its verdicts inside, signed by a
bench gate key), linked into one notary log: every set has log positions of its own,
since the store identifies a lineage row by its log index.
- the named analytics queries over the result.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from processors.crypto.keys import KeyEntry, Keyset, SigningKey, generate_signing_key
from processors.log.attest import sign_event
from processors.log.chain import link
from sinks.clickhouse import ClickHouseSink, map_record, named_queries, run_named_query
from streams.codec import default_codec
from streams.gatekeys import GateKeys
from streams.sink.verify import RecordVerifier

GATE_KEY: SigningKey = generate_signing_key()
GATE_KEYS = GateKeys.of(Keyset([KeyEntry(GATE_KEY.kid, GATE_KEY.public_key)]))


def lineage_event(n: int, run: str) -> dict[str, Any]:
    """A LineageEvent as the gate writes it (schemas/lineage_event.avsc): one per decided
    intent, its verdicts inside, signed by the gate."""
    event: dict[str, Any] = {
        "event_id": f"event-{run}-{n:012d}",
        "intent_id": f"01J{n:023d}",
        "agent_id": f"agent-{n % 64}",
        "stage": "enforcement",
        "event_type": "intent.approved",
        "status": "approved",
        "reasons": [],
        "attributes": {
            "intent_digest": "sha256:" + "ab" * 32,
            "action": "payments.transfer",
            "resource": f"invoice:{n}",
            "sequence": str(n),
            "topic": "approved",
        },
        "occurred_at_ms": 1_735_725_600_000 + n,
        "worker": "gate-1",
        "verdicts": [
            {
                "layer": layer,
                "status": "ALLOW",
                "reasons": ["action 'payments.transfer' allowed by 'payments.transfer'"]
                if layer == "allowlist"
                else [],
                "evidence": {"determining_policies": "payments.transfer"}
                if layer == "allowlist"
                else {},
                "duration_us": 40 + (n + i) % 17,
            }
            for i, layer in enumerate(("freshness", "identity", "allowlist", "integrity"))
        ],
        "signer": None,
        "signature": None,
        "prev_hash": None,
        "event_hash": None,
        "log_index": None,
    }
    sign_event(event, GATE_KEY)
    return event


class Log:
    """The notary's log the bench's sets are appended to: position and head."""

    def __init__(self, size: int = 0, head: str | None = None) -> None:
        self.size = size
        self.head = head

    def linked_events(self, count: int, run: str) -> list[dict[str, Any]]:
        """``count`` events linked as the notary writes them to ``lineage-log``, next in
        this log."""
        events: list[dict[str, Any]] = []
        for n in range(count):
            event = lineage_event(n, run)
            event["log_index"] = self.size
            event = link(event, self.head)
            self.size += 1
            self.head = event["event_hash"]
            events.append(event)
        return events


Timing = tuple[float, float]
"""(wall seconds, CPU seconds of this process: the caller's thread and chDB's)."""


def _clock() -> Timing:
    return time.perf_counter(), time.process_time()


def _since(start: Timing) -> Timing:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def write(
    store: ClickHouseSink, records: list[dict[str, Any]], batch: int, offset: int = 0
) -> Timing:
    """Time to map, add and flush ``records`` in batches of ``batch``."""
    started = _clock()
    for n, record in enumerate(records, start=1):
        table, row = map_record("lineage-log", record, partition=n % 4, offset=offset + n)
        store.add(table, row)
        if n % batch == 0:
            store.flush()
    store.flush()
    return _since(started)


def write_encoded(store: ClickHouseSink, values: list[bytes], batch: int) -> Timing:
    """The same from the bytes of Kafka record values (decode and verification included)."""
    codec = default_codec()
    verifier = RecordVerifier(GATE_KEYS)
    started = _clock()
    for n, value in enumerate(values, start=1):
        record = codec.decode(value, "LineageEvent")
        verifier.check("lineage-log", record)
        table, row = map_record("lineage-log", record, partition=n % 4, offset=n)
        store.add(table, row)
        if n % batch == 0:
            store.flush()
    store.flush()
    return _since(started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="rows per round")
    parser.add_argument(
        "--batch", type=int, default=20_000, help="rows per flush (sink_batch_rows)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per path; median reported")
    parser.add_argument("--keep", type=Path, help="use (and keep) this chDB folder")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-sink-"))
    store = ClickHouseSink(path=folder / "clickhouse")
    store.setup()
    codec = default_codec()
    log = Log()
    written = 0
    decoded = "decode + verify + map + insert"
    try:
        rates: dict[str, list[float]] = {"map + insert": [], decoded: []}
        cpu: dict[str, list[float]] = {"map + insert": [], decoded: []}
        for round_ in range(args.rounds):
            records = log.linked_events(args.events, f"m{round_}")
            wall, used = write(store, records, args.batch)
            rates["map + insert"].append(args.events / wall)
            cpu["map + insert"].append(args.events / used)
            values = [
                codec.encode("LineageEvent", event)
                for event in log.linked_events(args.events, f"d{round_}")
            ]
            wall, used = write_encoded(store, values, args.batch)
            rates[decoded].append(args.events / wall)
            cpu[decoded].append(args.events / used)
            written += 2 * args.events
        print(f"{args.rounds} rounds x {args.events:,} lineage rows, flush every {args.batch:,}")
        for path, samples in rates.items():
            print(
                f"{path:<31} median {statistics.median(samples):>8,.0f} rows/s wall "
                f"(best {max(samples):,.0f}, worst {min(samples):,.0f}); "
                f"{statistics.median(cpu[path]):,.0f} rows per CPU-second"
            )

        # the first set again: the same signed events at the same log positions
        records = Log().linked_events(args.events, "m0")
        seconds, _ = write(store, records, args.batch + 1234, offset=10**9)
        total = store.count("lineage_events")
        print(
            f"redelivery of {args.events:,} rows in {seconds:.2f} s: "
            f"lineage_events = {total:,} (expected {written:,})"
        )
        if total != written:
            raise SystemExit(f"duplicates counted: {total} != {written}")

        for name in named_queries():
            started = time.perf_counter()
            result = run_named_query(store, name)
            elapsed = (time.perf_counter() - started) * 1000
            print(
                f"query {name:<28} {elapsed:8.1f} ms  {len(result):>6} rows over {total:,} events"
            )
        target = statistics.median(rates["map + insert"])
        verdict = "meets" if target >= 50_000 else "MISSES"
        print(f"map + insert {verdict} the 50,000 rows/s target")
    finally:
        store.close()
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
