"""Benchmark of the authorization layer alone: signature + eligibility + Cedar, one core.

    .venv/bin/python bench/bench_authorization.py [--intents 5000] [--agents 200]

Builds a registry of ``--agents`` agents (Ed25519 keys, roles, runtimes) through signed
control commands, loads the example Cedar bundle (``policies/bundle``) with its decision
cache OFF (every request is evaluated), signs realistic intents (reads, ticket replies,
payments with varying amounts, exports), and times, as CPU time of this process (best
of 3 runs):

- identity alone (RFC 8785 body + DSSE PAE + Ed25519 verify),
- eligibility alone,
- Cedar alone (``PolicyCheck.evaluate``: request building + Cedar),
- the three in a chain (``Pipeline``), which is what the gate runs for authorization.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processors.control import ControlState, sign_command  # noqa: E402
from processors.crypto.keys import Keyset, b64url, generate_signing_key, raw_public_key  # noqa: E402
from processors.intent import Intent  # noqa: E402
from processors.layers.eligibility import EligibilityCheck  # noqa: E402
from processors.layers.identity import IdentityCheck  # noqa: E402
from processors.layers.policy import PolicyBundle, PolicyCheck, PolicyStore  # noqa: E402
from processors.pipeline import Pipeline  # noqa: E402
from processors.verdict import GateState, Layer, Status  # noqa: E402
from streams.dev.estate import measurement  # noqa: E402
from streams.sdk.client import new_intent  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
Shape = Callable[[int, random.Random], tuple[str, dict[str, Any]]]
"""(intent number, random) -> (resource, parameters) of one kind of intent."""

KINDS: list[tuple[str, str, Shape]] = [
    ("support", "tickets.reply", lambda n, r: (f"ticket:{n}", {})),
    ("readonly", "reports.read", lambda n, r: (f"report:{n % 97}", {})),
    (
        "payments-agent",
        "payments.transfer",
        lambda n, r: (
            f"acct:ACME-{n % 50}",
            {"amount": round(r.uniform(5, 9000), 2), "currency": "EUR"},
        ),
    ),
    ("analyst", "warehouse.query", lambda n, r: (f"table:t{n % 31}", {})),
]


def build(agents: int, intents: int) -> tuple[ControlState, PolicyStore, list[Intent]]:
    operator = generate_signing_key()
    control = ControlState(Keyset.from_jwks({"keys": [operator.public_jwk()]}))
    policies = PolicyStore(decision_cache=0)
    now = time.time_ns() // 1_000_000
    refusal = policies.offer(PolicyBundle.from_directory(ROOT / "policies" / "bundle"), now)
    assert refusal is None, refusal
    keys = {}
    for i in range(agents):
        agent_id = f"bench-{i:04d}"
        role = KINDS[i % len(KINDS)][0]
        key = keys[agent_id] = generate_signing_key()
        payload = {
            "agent_id": agent_id,
            "keys": [{"kid": key.kid, "x": b64url(raw_public_key(key.public_key))}],
            "roles": [role],
            "runtimes": [f"{agent_id}-rt"],
            "environments": ["prod"],
        }
        result = control.apply(sign_command("agent.register", None, payload, operator, "op"), now)
        assert result.applied, result.reason
    rng = random.Random(7)
    made = []
    for n in range(intents):
        i = n % agents
        agent_id = f"bench-{i:04d}"
        _, action, shape = KINDS[i % len(KINDS)]
        resource, params = shape(n, rng)
        runtime = {
            "runtime_id": f"{agent_id}-rt",
            "code_digest": measurement("code"),
            "config_digest": measurement("config"),
            "environment": "prod",
            "host": "h",
        }
        record = new_intent(
            agent_id,
            action,
            resource,
            sequence=n + 1,
            parameters=params,
            runtime=runtime,
            key_id=keys[agent_id].kid,
            sign_with=keys[agent_id],
            now_ms=now,
        )
        made.append(Intent.from_record(record, key=agent_id.encode()))
    return control, policies, made


def best_cpu_us(fn: Callable[[], int], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        count = fn()
        best = min(best, (time.process_time() - started) / count * 1e6)
    return best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intents", type=int, default=5000)
    parser.add_argument("--agents", type=int, default=200)
    args = parser.parse_args(argv)
    print(f"signing {args.intents} intents for {args.agents} agents ...", flush=True)
    control, policies, intents = build(args.agents, args.intents)

    def roles_for(agent_id: str) -> tuple[str, ...]:
        record = control.agent(agent_id)
        return record.roles if record else ()

    identity, eligibility = IdentityCheck(control), EligibilityCheck(control)
    policy = PolicyCheck(policies, roles_for)
    state = GateState(now_ms=time.time_ns() // 1_000_000)
    statuses: dict[str, int] = {}

    def run(layer: Layer) -> Callable[[], int]:
        def loop() -> int:
            for intent in intents:
                verdict = layer.evaluate(intent, state)
                statuses[f"{layer.name}:{verdict.status}"] = (
                    statuses.get(f"{layer.name}:{verdict.status}", 0) + 1
                )
            return len(intents)

        return loop

    chain = Pipeline([identity, eligibility, policy])

    def run_chain() -> int:
        for intent in intents:
            chain.decide(intent, GateState(now_ms=state.now_ms))
        return len(intents)

    rows = [
        ("identity (Ed25519 + RFC 8785 + PAE)", best_cpu_us(run(identity))),
        ("eligibility", best_cpu_us(run(eligibility))),
        ("policy (Cedar, decision cache off)", best_cpu_us(run(policy))),
        ("authorization chain (all three)", best_cpu_us(run_chain)),
    ]
    print("\n| step | µs/decision (CPU) | decisions/s on one core |\n|---|---:|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.1f} | {1e6 / us:,.0f} |")
    allowed = statuses.get(f"policy:{Status.ALLOW}", 0)
    decided = allowed + statuses.get(f"policy:{Status.DENY}", 0)
    print(f"\npolicy verdicts: {allowed} allow of {decided} (the mix is meant to be allowed)")


if __name__ == "__main__":
    main()
