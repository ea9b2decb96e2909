"""Signed approvals on one core: how many the gate signs and an executor verifies per second.

    .venv/bin/python bench/bench_approval.py [--n 20000] [--json]

The approvals are realistic: an Avro-encoded intent with six parameters, five layer
verdicts with evidence (policy bundle digest, determining policies), a lineage position;
the envelope is about 2.3 KB. The process pins itself to one CPU where the OS allows.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cryptography  # noqa: E402

from processors.approval import (  # noqa: E402
    ApprovalSigner,
    InMemorySeenStore,
    KeyringEntry,
    SigningKeyring,
    verify_approval,
)
from processors.crypto.keys import generate_signing_key  # noqa: E402
from processors.enforcement import combine  # noqa: E402
from processors.intent import Intent  # noqa: E402
from processors.records import derived_id, digest  # noqa: E402
from processors.verdict import Verdict  # noqa: E402
from streams.codec import default_codec  # noqa: E402
from streams.sdk.client import new_intent  # noqa: E402

NOW = 1_700_000_000_000
TTL = 300_000


def realistic_intents(n: int) -> list[tuple[Intent, bytes]]:
    codec = default_codec()
    out = []
    for i in range(n):
        record = new_intent(
            "billing-agent",
            "payments.transfer",
            f"acct:{100_000 + i}",
            sequence=i,
            parameters={
                "amount": 1250.75 + i,
                "currency": "EUR",
                "beneficiary": f"DE89 3704 0044 0532 0130 {i:02d}",
                "reference": f"invoice 2024-{i:06d}",
                "urgent": i % 2 == 0,
                "batch": i // 100,
            },
            context={"ticket": f"FIN-{i}", "requested_by": "alice@example.com"},
            now_ms=NOW,
        )
        raw = codec.encode("Intent", record)
        out.append((Intent.from_record(record, key=b"billing-agent"), raw))
    return out


def verdicts() -> list[Verdict]:
    return [
        Verdict.allow("schema"),
        Verdict.allow("freshness", "fresh: expires in 299996 ms"),
        Verdict.allow("identity", "signed by registered key", key_id="agent-key-7"),
        Verdict.allow(
            "policy",
            "action 'payments.transfer' permitted by payments-transfer-limits",
            bundle_digest="sha256:" + "cd" * 32,
            determining_policies="payments-transfer-limits,business-hours",
        ),
        Verdict.allow("integrity", "runtime measurements match", runtime_id="rt-billing-1"),
    ]


def rate(
    label: str,
    fn: Callable[[int], object],
    n: int,
    reset: Callable[[], None] | None = None,
) -> dict[str, Any]:
    for i in range(min(200, n)):  # warm up
        fn(i)
    if reset is not None:
        reset()
    gc.collect()
    gc.disable()
    try:
        samples = []
        start = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter_ns()
            fn(i)
            samples.append(time.perf_counter_ns() - t0)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    samples.sort()
    return {
        "op": label,
        "n": n,
        "per_s": round(n / elapsed),
        "mean_us": round(statistics.fmean(samples) / 1000, 1),
        "p50_us": round(samples[len(samples) // 2] / 1000, 1),
        "p99_us": round(samples[int(len(samples) * 0.99)] / 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="operations per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    ring = SigningKeyring([KeyringEntry(generate_signing_key(), 0, None)])
    signer = ApprovalSigner(ring)
    keyset = ring.public_keyset()
    enforcement = combine(verdicts(), [v.layer for v in verdicts()])
    intents = realistic_intents(min(args.n, 2_000))
    digests = [digest(raw) for _, raw in intents]

    def sign_one(i: int) -> bytes:
        intent, _ = intents[i % len(intents)]
        envelope, _ = signer.sign(
            intent,
            enforcement,
            intent_digest=digests[i % len(intents)],
            approval_id=derived_id("approval", intent.intent_id, i),
            now_ms=NOW,
            ttl_ms=TTL,
            lineage={"eventId": f"event-{i}", "logIndex": i},
        )
        return envelope

    envelopes = [sign_one(i) for i in range(args.n)]
    seen = [InMemorySeenStore(clock=lambda: NOW)]

    def fresh_store() -> None:
        seen[0] = InMemorySeenStore(clock=lambda: NOW)

    results = [
        rate("sign", sign_one, args.n),
        rate("verify", lambda i: verify_approval(envelopes[i], keyset, NOW + 1), args.n),
        rate(
            "verify+intent+single-use",
            lambda i: verify_approval(
                envelopes[i],
                keyset,
                NOW + 1,
                intent=intents[i % len(intents)][1],
                seen=seen[0],
            ),
            args.n,
            fresh_store,
        ),
    ]
    size = len(envelopes[0])
    cpu = platform.processor() or platform.machine()
    header = (
        f"python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"{cpu}, 1 core, envelope {size} bytes"
    )
    if args.json:
        for row in results:
            print(json.dumps({**row, "envelope_bytes": size}))
        return
    print(header)
    print(f"{'op':<26} {'per s':>8} {'mean us':>8} {'p50 us':>8} {'p99 us':>8}")
    for row in results:
        print(
            f"{row['op']:<26} {row['per_s']:>8} {row['mean_us']:>8} "
            f"{row['p50_us']:>8} {row['p99_us']:>8}"
        )


if __name__ == "__main__":
    main()
