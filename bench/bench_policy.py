"""Benchmark of the Cedar policy layer (plain Python, no Kafka), on one core.

    .venv/bin/python bench/bench_policy.py [--number N] [--big 10000]

Prints µs per decision and decisions per second (CPU time of this process, best of 5
runs) for ``PolicyEngine.authorize`` with the example bundle (``policies/bundle``) on
a realistic mix of requests, in three regimes:

- cold: the decision cache off (the entity and policy-slice caches hit as often as
  agents, roles and resources repeat) - Cedar's real cost;
- Cedar only: ``cedarpy.is_authorized`` on pre-built handles and context JSON (the
  floor that cedarpy 4.12 allows from Python);
- warm: requests repeat (the decision cache answers);

then ``PolicyCheck.evaluate`` on intents, and the compile time and decision cost of a
bundle with ``--big`` policies (10,000 by default).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cedarpy  # noqa: E402

from processors.intent import Intent  # noqa: E402
from processors.layers.policy import (  # noqa: E402
    BundleManifest,
    PolicyBundle,
    PolicyCheck,
    PolicyEngine,
    PolicyRequest,
    PolicyStore,
    compile_bundle,
)
from processors.verdict import GateState  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "policies" / "bundle"
NOW = 1_794_312_000_000  # Tue 2026-11-10 12:00 UTC
ROLES = {
    "billing-agent": ("payments-agent",),
    "treasury-agent": ("treasury",),
    "support-bot": ("support",),
    "deploy-bot": ("deployer",),
    "analytics-agent": ("analyst",),
    "audit-bot": ("readonly",),
}


def request_mix(n: int, *, unique: bool) -> list[PolicyRequest]:
    """A realistic estate's traffic: payments, reads, tickets, email, deploys, exports."""
    out: list[PolicyRequest] = []
    for i in range(n):
        k = i if unique else i % 97
        amount = f"{100 + (k * 37) % 15000}.{k % 100:02d}"
        templates: list[tuple[str, str, str, dict[str, Any], str]] = [
            (
                "billing-agent",
                "payments.transfer",
                f"acct:ACME-{k % 50}",
                {"amount": float(amount), "currency": "EUR", "memo": f"invoice {k}"},
                "billing-rt-1",
            ),
            (
                "billing-agent",
                "invoices.read",
                f"invoice:2026-{k % 12 + 1:02d}",
                {},
                "billing-rt-1",
            ),
            (
                "treasury-agent",
                "payments.transfer",
                f"acct:SUPPLIER-{k % 20}",
                {"amount": round(float(amount) * 3, 2), "currency": "EUR"},
                "treasury-rt-1",
            ),
            ("support-bot", "tickets.reply", f"ticket:{8000 + k % 300}", {"body": "hi"}, "sup-1"),
            (
                "support-bot",
                "email.send",
                f"mailto:customer{k % 40}@example.com",
                {"subject": "re"},
                "sup-1",
            ),
            ("deploy-bot", "deploy.production", "service:checkout", {"version": "1.4.2"}, "ci-77"),
            ("analytics-agent", "warehouse.query", "table:orders", {"max_rows": k % 1000}, "an-1"),
            (
                "analytics-agent",
                "warehouse.export",
                f"s3://acme-exports/q{k % 4 + 1}.csv",
                {"format": "csv"},
                "an-1",
            ),
            ("audit-bot", "db.query", "db:ledger", {"sql": "select 1"}, "audit-1"),
        ]
        agent, action, resource, params, runtime = templates[i % len(templates)]
        out.append(
            PolicyRequest.build(
                agent_id=agent,
                roles=ROLES[agent],
                action=action,
                resource=resource,
                environment="prod",
                runtime_id=runtime,
                issued_at_ms=NOW + (i if unique else 0),
                parameters=params,
                risk=(k % 70) if unique else None,
            )
        )
    return out


def measure(label: str, fn: Callable[[], None], count: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    us = best / count * 1e6
    print(f"  {label:<58} {us:8.1f} µs/op {count / best:>10,.0f} /s")
    return us


def bench_engine(engine: PolicyEngine, number: int) -> None:
    cold = request_mix(number, unique=True)
    warm = request_mix(number, unique=False)

    def run(requests: list[PolicyRequest]) -> Callable[[], None]:
        def go() -> None:
            for request in requests:
                engine.authorize(request)

        return go

    uncached = compile_bundle(engine.bundle, NOW, decision_cache=0)

    def cold_run() -> None:
        for request in cold:
            uncached.authorize(request)

    allowed = sum(engine.authorize(r).allowed for r in cold)
    print(
        f"example bundle {engine.version}: {engine.policy_count} policies, {allowed}/{number} "
        "of the cold mix allowed"
    )
    measure("authorize, cold (decision cache off)", cold_run, number)

    # the floor: cedarpy alone, handles and context JSON prepared beforehand
    prepared = []
    for r in cold[:number]:
        context = json.dumps(_cedar_context(r))
        entities = engine._entities(r.agent_id, tuple(r.roles), r.resource)  # noqa: SLF001
        prepared.append(
            (
                {
                    "principal": {"type": "Agent", "id": r.agent_id},
                    "action": {"type": "Action", "id": r.action},
                    "resource": {"type": "Resource", "id": r.resource},
                    "context": context,
                },
                entities,
            )
        )
    policy_set, schema = engine._policy_set, engine._schema  # noqa: SLF001

    def cedar_only() -> None:
        for request, entities in prepared:
            cedarpy.is_authorized(request, policy_set, entities, schema)

    measure("cedarpy.is_authorized alone (whole set, prepared JSON)", cedar_only, number)

    # the batch API: one call for 100 requests sharing one entity set
    merged = engine._base.with_added_json_str(  # noqa: SLF001
        json.dumps(_batch_entities(cold[:number]))
    )
    batches = [[req for req, _ in prepared[i : i + 100]] for i in range(0, len(prepared), 100)]

    def cedar_batch() -> None:
        for batch in batches:
            cedarpy.is_authorized_batch(batch, policy_set, merged, schema)

    measure("cedarpy.is_authorized_batch, 100 per call (prepared)", cedar_batch, number)
    measure("authorize, warm (97 distinct requests repeating)", run(warm), number)

    store = PolicyStore(decision_cache=0)
    store.offer(engine.bundle, NOW)
    check = PolicyCheck(store, lambda agent: ROLES.get(agent, ()))
    intents = [_intent(r, i) for i, r in enumerate(cold)]
    state = GateState(now_ms=NOW)

    def layer() -> None:
        for intent in intents:
            check.evaluate(intent, state)

    measure("PolicyCheck.evaluate, cold (intent -> Verdict, cache off)", layer, number)


def _batch_entities(requests: list[PolicyRequest]) -> list[dict[str, Any]]:
    from processors.layers.policy.encoding import agent_entity, resource_entity  # noqa: PLC0415

    entities: dict[str, dict[str, Any]] = {}
    for r in requests:
        entities["a:" + r.agent_id] = agent_entity(r.agent_id, r.roles)
        entities["r:" + r.resource] = resource_entity(r.resource)
    return list(entities.values())


def _cedar_context(request: PolicyRequest) -> Any:
    from processors.layers.policy.encoding import cedar_record  # noqa: PLC0415

    return cedar_record(request.context, "context")


def _intent(request: PolicyRequest, n: int) -> Intent:
    ctx = request.context
    params = {
        k: (float(v) if not isinstance(v, (str, bool)) else v) for k, v in ctx["parameters"].items()
    }
    record = {
        "intent_id": f"bench-{n}",
        "agent_id": request.agent_id,
        "runtime": {
            "runtime_id": ctx["runtime_id"],
            "code_digest": "sha256:" + "ab" * 32,
            "config_digest": "sha256:" + "cd" * 32,
            "environment": ctx["environment"],
            "host": "node-1",
        },
        "action": request.action,
        "resource": request.resource,
        "parameters": params,
        "context": {"risk": ctx["risk"]} if "risk" in ctx else {},
        "sequence": n,
        "issued_at_ms": NOW + n,
        "expires_at_ms": NOW + n + 300_000,
        "nonce": f"n-{n}",
        "key_id": "k-1",
        "signature": None,
    }
    return Intent.from_record(record, key=request.agent_id.encode())


def big_bundle(count: int) -> PolicyBundle:
    """``count`` realistic per-agent grants (one agent, action and account set each)."""
    base = BUNDLE
    schema = (base / "schema.cedarschema").read_text()
    actions = ["payments.transfer", "invoices.read", "tickets.reply", "warehouse.query"]
    policies = [(base / "policies.cedar").read_text()]
    for i in range(count - policies[0].count("@id(")):
        action = actions[i % len(actions)]
        policies.append(
            f'@id("grant.{i}")\n'
            f'permit (principal == Agent::"agent-{i}", action == Action::"{action}", '
            f'resource)\nwhen {{ resource.kind == "acct" && resource.name like "T{i}-*" }};\n'
        )
    manifest = BundleManifest("big", NOW - 1000, NOW + 86_400_000, f"{count} policies")
    return PolicyBundle(manifest, "\n".join(policies), schema)


def bench_big(count: int, number: int) -> None:
    bundle = big_bundle(count)
    started = time.perf_counter()
    engine = compile_bundle(bundle, NOW, decision_cache=0)
    took = time.perf_counter() - started
    size = len(bundle.policies) / 1e6
    print(
        f"{engine.policy_count:,}-policy bundle ({size:.1f} MB of Cedar): compiled in "
        f"{took:.2f} s (parse, @id check, schema validation)"
    )
    requests = request_mix(max(number // 20, 50), unique=True)

    def go() -> None:
        for request in requests:
            engine.authorize(request)

    measure(f"authorize with {engine.policy_count:,} policies, cold", go, len(requests), repeat=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=3000, help="requests per run")
    parser.add_argument("--big", type=int, default=10_000, help="policies in the big bundle")
    args = parser.parse_args()
    print(f"cedarpy {cedarpy.__dict__.get('__version__', '4.12')}, one thread, CPU time, best of 5")
    started = time.perf_counter()
    engine = compile_bundle(PolicyBundle.from_directory(BUNDLE), NOW)
    print(f"example bundle compiled in {(time.perf_counter() - started) * 1000:.1f} ms")
    bench_engine(engine, args.number)
    if args.big:
        bench_big(args.big, args.number)


if __name__ == "__main__":
    main()
