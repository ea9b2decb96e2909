"""Benchmark the notary core: link+append throughput, checkpoint signing, proofs.

    .venv/bin/python bench/bench_notary.py [--events 100000] [--leaves 1000000]

Measures, on one core:
- verifying the gate's signature on a lineage event (what the notary does to every
  event before it logs it: RFC 8785 canonical JSON, DSSE PAE, Ed25519 verify);
- link + append of lineage events (RFC 8785 canonical JSON, SHA-256 chain hash, leaf);
- signing a C2SP checkpoint (root of the whole tree + Ed25519 signed note), and opening it;
- inclusion and consistency proof generation + verification at 100k and 1M leaves.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

from processors.crypto.keys import KeyEntry, Keyset, SigningKey, generate_signing_key
from processors.log.attest import sign_event, verify_event_signature
from processors.log.checkpoint import Checkpoint, NoteSigner, sign_checkpoint, verify_checkpoint
from processors.log.merkle import MerkleLog, verify_consistency, verify_inclusion
from processors.log.notary import Notary

LAYERS = ("schema", "freshness", "identity", "authorization", "integrity", "anomaly")


def lineage_event(n: int, key: SigningKey) -> dict[str, Any]:
    """A LineageEvent as the gate writes it (schemas/lineage_event.avsc): one per decided
    intent, every layer's verdict inside, signed with the gate's key."""
    event = unsigned_lineage_event(n)
    sign_event(event, key)
    return event


def unsigned_lineage_event(n: int) -> dict[str, Any]:
    """:func:`lineage_event` before the gate signs it."""
    return {
        "event_id": f"evt-{n:012d}",
        "intent_id": f"01J{n:023d}",
        "agent_id": f"agent-{n % 64}",
        "stage": "enforcement",
        "event_type": "intent.approved",
        "status": "approved",
        "reasons": [],
        "attributes": {
            "intent_digest": "sha256:" + f"{n:064x}",
            "action": "payments.transfer",
            "resource": f"invoice:{n}",
            "sequence": str(n),
            "topic": "approved",
        },
        "occurred_at_ms": 1_700_000_000_000 + n,
        "worker": "gate-1",
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


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def us(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1e6
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6
    return f"p50 {p50:8.1f} us   p99 {p99:8.1f} us"


def bench_append(count: int) -> Notary:
    signer = NoteSigner("bench.trustplane.example/lineage", generate_signing_key())
    notary = Notary(signer.name, signer)
    gate_key = generate_signing_key()
    events = [lineage_event(n, gate_key) for n in range(count)]
    keyset = Keyset([KeyEntry(gate_key.kid, gate_key.public_key)])
    start, cpu = time.perf_counter(), time.process_time()
    for event in events:
        verify_event_signature(event, keyset)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(
        f"gate sig verify  {count:>9,} events  {elapsed:6.2f} s   {count / elapsed:10,.0f} events/s"
        f"   ({elapsed / count * 1e6:.1f} us/event wall, {cpu / count * 1e6:.1f} us CPU)"
    )
    start, cpu = time.perf_counter(), time.process_time()
    for n, event in enumerate(events):
        event["log_index"] = n  # as NotaryLog does before linking
        notary.append(event)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(
        f"link+append      {count:>9,} events  {elapsed:6.2f} s   {count / elapsed:10,.0f} events/s"
        f"   ({elapsed / count * 1e6:.1f} us/event wall, {cpu / count * 1e6:.1f} us CPU)"
    )
    samples = timed(lambda: notary.checkpoint(now_ms=0), 200)
    print(f"checkpoint sign  {notary.size:>9,} leaves  {us(samples)}")
    note = notary.checkpoint(now_ms=0)
    samples = timed(lambda: verify_checkpoint(note, signer.verifier), 200)
    print(f"checkpoint open  {notary.size:>9,} leaves  {us(samples)}")
    return notary


def bench_proofs(log: MerkleLog, repeat: int = 2000) -> None:
    rng = random.Random(7)  # noqa: S311 - benchmark sampling, not cryptography
    size = log.size
    root = log.root()
    indices = [rng.randrange(size) for _ in range(repeat)]
    proofs: list[list[bytes]] = []

    def gen() -> None:
        proofs.append(log.inclusion_proof(indices[len(proofs)], size))

    gen_samples = timed(gen, repeat)
    it = iter(range(repeat))

    def ver() -> None:
        i = next(it)
        verify_inclusion(log.leaf_hash(indices[i]), indices[i], size, proofs[i], root)

    ver_samples = timed(ver, repeat)
    print(f"inclusion gen    {size:>9,} leaves  {us(gen_samples)}   ({len(proofs[0])} hashes)")
    print(f"inclusion verify {size:>9,} leaves  {us(ver_samples)}")

    olds = [rng.randrange(1, size) for _ in range(repeat)]
    cproofs: list[list[bytes]] = []
    gen_samples = timed(lambda: cproofs.append(log.consistency_proof(olds[len(cproofs)])), repeat)
    old_roots = [log.root(o) for o in olds]
    it2 = iter(range(repeat))

    def cver() -> None:
        i = next(it2)
        verify_consistency(olds[i], size, old_roots[i], root, cproofs[i])

    ver_samples = timed(cver, repeat)
    print(f"consistency gen  {size:>9,} leaves  {us(gen_samples)}")
    print(f"consistency ver  {size:>9,} leaves  {us(ver_samples)}")
    samples = timed(lambda: log.root(rng.randrange(1, size)), repeat)
    print(f"root(past size)  {size:>9,} leaves  {us(samples)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    args = parser.parse_args()

    notary = bench_append(args.events)
    bench_proofs(notary.log)

    big = MerkleLog()
    start = time.perf_counter()
    for n in range(args.leaves):
        big.append(n.to_bytes(8, "big"))
    elapsed = time.perf_counter() - start
    print(
        f"raw leaf append  {args.leaves:>9,} leaves  {elapsed:6.2f} s   "
        f"{args.leaves / elapsed:10,.0f} leaves/s"
    )
    signer = NoteSigner("bench.trustplane.example/lineage", generate_signing_key())
    samples = timed(
        lambda: sign_checkpoint(Checkpoint(signer.name, big.size, big.root()), signer), 200
    )
    print(f"checkpoint sign  {big.size:>9,} leaves  {us(samples)}")
    bench_proofs(big)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS         {rss_mb:,.0f} MB")


if __name__ == "__main__":
    main()
