"""Micro-benchmark of the identity and eligibility layers (plain Python, no Kafka).

    .venv/bin/python bench/bench_identity.py [--number N]

Prints µs per operation and operations per second (best of 5 runs) for: RFC 8785
canonicalization of a realistic intent (rfc8785 and the fast path), Ed25519 verify,
the full signing message, IdentityCheck.evaluate and EligibilityCheck.evaluate.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processors.control import ControlState, sign_command  # noqa: E402
from processors.crypto.jcs import canonical_json  # noqa: E402
from processors.crypto.keys import (  # noqa: E402
    KeyEntry,
    Keyset,
    b64url,
    generate_signing_key,
    raw_public_key,
)
from processors.intent import Intent  # noqa: E402
from processors.layers.eligibility import EligibilityCheck  # noqa: E402
from processors.layers.identity import (  # noqa: E402
    IdentityCheck,
    canonical_intent_body,
    intent_signing_body,
    sign_intent,
    signing_message_for,
)
from processors.verdict import GateState, Status  # noqa: E402

NOW = 1_700_000_100_000


def realistic_record(**parameters: Any) -> dict[str, Any]:
    return {
        "intent_id": "6f1c2b9e-3c1d-4e0a-9d55-2f7f0e2b8a11",
        "agent_id": "billing-agent",
        "runtime": {
            "runtime_id": "billing-agent-7f9c",
            "code_digest": "sha256:" + "ab" * 32,
            "config_digest": "sha256:" + "cd" * 32,
            "environment": "prod",
            "host": "node-7.eu-west-1",
        },
        "action": "payments.transfer",
        "resource": "accounts/4711/invoices/INV-2024-0042",
        "parameters": parameters
        or {
            "amount": 1250.75,
            "currency": "EUR",
            "invoice": "INV-2024-0042",
            "dry_run": False,
            "priority": 3,
        },
        "context": {"ticket": "FIN-8812", "user": "alice@example.com", "conversation_id": "c-91f2"},
        "sequence": 1042,
        "issued_at_ms": 1_700_000_000_000,
        "expires_at_ms": 1_700_000_300_000,
        "nonce": "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c",
        "key_id": "unsigned",
        "signature": None,
    }


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"benchmark setup failed: {what}")


def measure(label: str, fn: Callable[[], object], number: int, rows: list[str]) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=5)) / number
    rows.append(f"{label:<52} {best * 1e6:9.2f} µs/op {1 / best:12,.0f} ops/s")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=5000, help="calls per run")
    n = parser.parse_args().number

    operator = generate_signing_key("ops-1")
    agent_key = generate_signing_key("billing-2024")
    state = ControlState(Keyset([KeyEntry(operator.kid, operator.public_key)]))
    register = {
        "agent_id": "billing-agent",
        "keys": [{"kid": agent_key.kid, "x": b64url(raw_public_key(agent_key.public_key))}],
        "roles": ["payments"],
        "runtimes": ["billing-agent-7f9c"],
        "environments": ["prod"],
    }
    result = state.apply(
        sign_command("agent.register", None, register, operator, "bench", now_ms=NOW), NOW
    )
    _check(result.applied, result.reason)

    record = sign_intent(realistic_record(), agent_key)
    intent = Intent.from_record(record, key=b"billing-agent")
    fallback_record = sign_intent(realistic_record(amount=1250.0, **{"währung": "EUR"}), agent_key)
    fallback_intent = Intent.from_record(fallback_record, key=b"billing-agent")
    whole = Intent.from_record(
        sign_intent(realistic_record(amount=1250.0, currency="EUR"), agent_key),
        key=b"billing-agent",
    )
    message = signing_message_for(intent)
    body = {k: v for k, v in record.items() if k != "signature"}
    identity = IdentityCheck(state)
    eligibility = EligibilityCheck(state)
    gate = GateState(now_ms=NOW)
    _check(identity.evaluate(intent, gate).status is Status.ALLOW, "identity")
    _check(identity.evaluate(fallback_intent, gate).status is Status.ALLOW, "identity")
    _check(eligibility.evaluate(intent, gate).status is Status.ALLOW, "eligibility")
    unknown = Intent.from_record({**record, "agent_id": "shadow-agent"}, key=b"shadow-agent")
    public = agent_key.public_key
    signature = record["signature"]

    rows: list[str] = []
    print(f"intent body: {len(intent_signing_body(record))} bytes canonical; {n} calls x best of 5")
    measure(
        "canonicalize: rfc8785 (processors.crypto.dsse.canonical_json)",
        lambda: canonical_json(body),
        n,
        rows,
    )
    measure(
        "canonicalize: fast path (canonical_intent_body)",
        lambda: canonical_intent_body(body),
        n,
        rows,
    )
    measure(
        "signing message from Intent (body + PAE)", lambda: signing_message_for(intent), n, rows
    )
    measure(
        "signing message, integral double 1250.0 (fast path)",
        lambda: signing_message_for(whole),
        n,
        rows,
    )
    measure(
        "signing message, non-ASCII key (rfc8785 fallback)",
        lambda: signing_message_for(fallback_intent),
        n,
        rows,
    )
    measure(
        "Ed25519 verify (cryptography/OpenSSL)", lambda: public.verify(signature, message), n, rows
    )
    measure(
        "IdentityCheck.evaluate (allow: full verify)",
        lambda: identity.evaluate(intent, gate),
        n,
        rows,
    )
    measure(
        "IdentityCheck.evaluate (allow, rfc8785 fallback)",
        lambda: identity.evaluate(fallback_intent, gate),
        n,
        rows,
    )
    measure(
        "IdentityCheck.evaluate (deny: unknown agent)",
        lambda: identity.evaluate(unknown, gate),
        n,
        rows,
    )
    measure(
        "EligibilityCheck.evaluate (allow)", lambda: eligibility.evaluate(intent, gate), n, rows
    )
    measure(
        "identity + eligibility (allow)",
        lambda: (identity.evaluate(intent, gate), eligibility.evaluate(intent, gate)),
        n,
        rows,
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
