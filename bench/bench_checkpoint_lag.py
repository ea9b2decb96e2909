"""Checkpoint lag: from producing a lineage event to the first committed checkpoint
that covers it, at a steady rate, on a real broker.

    .venv/bin/python bench/bench_checkpoint_lag.py [--rate 2000] [--seconds 10]
        [--bootstrap HOST:PORT] [--every-events 1000] [--every-ms 500]

Without --bootstrap it uses the local broker of `trustplane kafka up` (starting it if
needed, and stopping it again if it started it). It creates fresh topics, runs a
NotaryService in a thread, produces LineageEvents to ``lineage`` at ``--rate`` per
second (keyed by agent id, so over every partition; each signed with a bench gate key,
as a gate does, and the notary verifies each) and watches ``checkpoints`` with a
``read_committed`` consumer. An event's lag is the time from just before it was
produced to the moment the watcher received the first checkpoint whose size exceeds
the event's log index: what an auditor polling the log would see. Producer, notary
and watcher share one process (and its GIL).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from processors.crypto.keys import KeyEntry, Keyset, SigningKey, generate_signing_key
from processors.log.attest import sign_event
from processors.log.checkpoint import Checkpoint
from streams.codec import Codec, SchemaRegistry, default_codec
from streams.config import PROJECT_ROOT, Settings
from streams.dev.localkafka import LocalKafka
from streams.gatekeys import GateKeys
from streams.notary import NotaryService
from streams.topics import ensure_topics

SCHEMAS = PROJECT_ROOT / "schemas"


def codec_with_log_index(tmp: Path) -> Codec:
    """The project's codec, with the LineageEvent of schemas/lineage_event.avsc.next if
    that is not installed yet."""
    following = SCHEMAS / "lineage_event.avsc.next"
    if not following.exists():
        return default_codec()
    target = tmp / "schemas"
    (target / "history").mkdir(parents=True)
    for path in [*SCHEMAS.glob("*.avsc"), *(SCHEMAS / "history").glob("*.avsc")]:
        shutil.copy(path, target / path.relative_to(SCHEMAS))
    shutil.copy(SCHEMAS / "lineage_event.avsc", target / "history" / "lineage_event.v0.avsc")
    shutil.copy(following, target / "lineage_event.avsc")
    return Codec(SchemaRegistry.from_directory(target))


LAYERS = ("schema", "freshness", "identity", "authorization", "integrity", "anomaly")


def lineage_event(n: int, tag: str, key: SigningKey) -> dict[str, Any]:
    """A decided intent's LineageEvent as the gate writes it: its verdicts inside, signed."""
    event: dict[str, Any] = {
        "event_id": f"{tag}-{n:09d}",
        "intent_id": f"intent-{tag}-{n}",
        "agent_id": f"agent-{n % 64}",
        "stage": "enforcement",
        "event_type": "intent.approved",
        "status": "approved",
        "reasons": [],
        "attributes": {"intent_digest": "sha256:" + f"{n:064x}", "topic": "approved"},
        "occurred_at_ms": time.time_ns() // 1_000_000,
        "worker": "gate-bench",
        "verdicts": [
            {
                "layer": layer,
                "status": "ALLOW",
                "reasons": ["policy permit-read matched"] if layer == "authorization" else [],
                "evidence": {"policy": "permit-read"} if layer == "authorization" else {},
                "duration_us": 40 + (n + i) % 17,
            }
            for i, layer in enumerate(LAYERS)
        ],
        "signer": None,
        "signature": None,
        "prev_hash": None,
        "event_hash": None,
        "log_index": None,
    }
    sign_event(event, key)
    return event


class CheckpointWatcher(threading.Thread):
    """Records (receive time in ns, tree size) of every committed checkpoint."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="checkpoint-watcher", daemon=True)
        self.seen: list[tuple[int, int]] = []
        self.stop_event = threading.Event()
        self.consumer = Consumer(
            {
                **settings.kafka_config(),
                "group.id": f"bench-watch-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
            }
        )
        self.consumer.assign([TopicPartition(settings.topic("checkpoints"), 0, 0)])

    def run(self) -> None:
        while not self.stop_event.is_set():
            message = self.consumer.poll(0.05)
            if message is None or message.error():
                continue
            received = time.time_ns()
            note = (message.value() or b"").decode()
            # the body of the signed note (its signature is the integration tests' business)
            self.seen.append((received, Checkpoint.parse(note[: note.rindex("\n\n") + 1]).size))
        self.consumer.close()


def read_log_indexes(settings: Settings, codec: Codec, total: int) -> dict[str, int]:
    consumer = Consumer(
        {
            **settings.kafka_config(),
            "group.id": f"bench-read-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(settings.topic("lineage-log"), 0, 0)])
    indexes: dict[str, int] = {}
    try:
        while len(indexes) < total:
            for message in consumer.consume(5000, timeout=1.0):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(error.str())
                event = codec.decode(message.value() or b"", "LineageEvent")
                indexes[event["event_id"]] = event["log_index"]
    finally:
        consumer.close()
    return indexes


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: local broker)")
    parser.add_argument("--every-events", type=int, default=1000)
    parser.add_argument("--every-ms", type=int, default=500)
    args = parser.parse_args()

    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        broker = LocalKafka(Settings.local().kafka_state_dir, progress=print)
        already = broker.status()
        bootstrap = (already or broker.up(timeout=120)).bootstrap
        if already is not None:
            broker = None  # not ours to stop
    tmp = Path(tempfile.mkdtemp(prefix="bench-lag-"))
    tag = uuid.uuid4().hex[:8]
    # the local broker's admin (a super user: this measures the notary, not the ACLs);
    # on another broker, give TRUSTPLANE_KAFKA_PRINCIPAL and its password file
    auth: dict[str, Any] = {}
    if not args.bootstrap:
        auth = {
            "kafka_principal": "admin",
            "kafka_credentials_dir": Settings.local().kafka_state_dir / "credentials",
        }
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"bench{tag}.",
        group_id=f"bench-{tag}",
        state_dir=tmp / "state",
        keys_dir=tmp / "keys",
        **auth,
    )
    try:
        run(settings, codec_with_log_index(tmp), args, tag)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if broker is not None:
            broker.down()


def run(settings: Settings, codec: Codec, args: argparse.Namespace, tag: str) -> None:
    ensure_topics(settings)
    gate_key = generate_signing_key()
    service = NotaryService(
        settings,
        codec=codec,
        port=-1,
        create_key=True,
        checkpoint_every_events=args.every_events,
        checkpoint_every_ms=args.every_ms,
        gate_keys=GateKeys.of(Keyset([KeyEntry(gate_key.kid, gate_key.public_key)])),
    )
    notary = threading.Thread(target=service.run, name="notary", daemon=True)
    notary.start()
    deadline = time.monotonic() + 60
    while not service.ready.wait(0.1):
        if not notary.is_alive() or time.monotonic() > deadline:
            raise SystemExit("the notary did not start (see the error above)")
    watcher = CheckpointWatcher(settings)
    watcher.start()

    total = int(args.rate * args.seconds)
    producer = Producer({**settings.kafka_config(), "enable.idempotence": True, "linger.ms": 2})
    produced_ns: dict[str, int] = {}
    cpu = time.process_time()
    started = time.monotonic()
    for n in range(total):
        delay = started + n / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        event = lineage_event(n, tag, gate_key)
        value = codec.encode("LineageEvent", event)
        produced_ns[event["event_id"]] = time.time_ns()
        producer.produce(settings.topic("lineage"), key=event["agent_id"].encode(), value=value)
        producer.poll(0)
    producer.flush(30)
    produce_s = time.monotonic() - started

    deadline = time.monotonic() + 60
    while (not watcher.seen or watcher.seen[-1][1] < total) and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu = time.process_time() - cpu
    watcher.stop_event.set()
    service.stop()
    notary.join(30)
    watcher.join(5)
    if not watcher.seen or watcher.seen[-1][1] < total:
        raise SystemExit(
            f"only {watcher.seen[-1][1] if watcher.seen else 0} of {total} checkpointed"
            f" ({service.log.status() if service.log else 'no log'})"
        )

    indexes = read_log_indexes(settings, codec, total)
    lags: list[float] = []
    cursor = 0
    seen = watcher.seen
    for event_id, index in sorted(indexes.items(), key=lambda item: item[1]):
        while seen[cursor][1] <= index:
            cursor += 1
        lags.append((seen[cursor][0] - produced_ns[event_id]) / 1e6)
    ordered = sorted(lags)
    within = sum(1 for lag in ordered if lag <= 1000) / len(ordered)
    sizes = [size for _, size in seen]
    print(
        f"{total:,} events at {total / produce_s:,.0f}/s for {produce_s:.1f} s over "
        f"{settings.partitions} partitions; {len(seen)} checkpoints "
        f"(every {args.every_events} events or {args.every_ms} ms), mean "
        f"{total / max(len(seen), 1):,.0f} events each; largest step "
        f"{max(b - a for a, b in zip([0, *sizes], sizes, strict=False)):,}"
    )
    print(
        f"checkpoint lag ms: p50 {percentile(ordered, 0.5):.0f}  p90 {percentile(ordered, 0.9):.0f}"
        f"  p99 {percentile(ordered, 0.99):.0f}  max {ordered[-1]:.0f}  mean "
        f"{sum(ordered) / len(ordered):.0f};  within 1 s: {within:.1%}"
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"process CPU {cpu:.1f} s for {produce_s:.1f} s wall (producer + notary + watcher), "
        f"peak RSS {rss_mb:,.0f} MB; notary committed {service.committed_transactions} "
        "transactions"
    )


if __name__ == "__main__":
    main()
