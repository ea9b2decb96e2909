"""The Cedar decision cache changes no decision.

Property tests, over seeded random requests drawn mostly from the values each bundle's
policies turn on (agents named and not, roles, actions declared and not, resources,
parameters on and next to thresholds, hour/weekday/risk, wrong types, unrepresentable
numbers, strings Cedar's JSON parser refuses) and over bundles that read different
things (the example estate's; test bundles reading thresholds, strings and shapes, an
entity in the context, whole values and resource literals; a policy that fails to
evaluate; a schema the projection gives up on):

- replayed as streams of near-duplicates, with bundle changes mid-stream, the policy
  layer with its decision cache returns the very verdict (status, reasons, evidence)
  the layer without one returns;
- over every one-field neighbour of a request, the requests that share a key get the
  same decision from Cedar whenever one of them could be cached.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.intent import Intent
from processors.layers.policy import (
    BundleManifest,
    PolicyBundle,
    PolicyCheck,
    PolicyEngine,
    PolicyRequest,
    PolicyStore,
    compile_bundle,
)
from processors.layers.policy.cache import DecisionCache
from processors.layers.policy.encoding import ValueProblem, cedar_record
from processors.layers.policy.schema_shape import (
    ENTITY,
    UNKNOWN,
    Record,
    SchemaShapeError,
    SetOf,
    context_shapes,
)
from processors.verdict import GateState, Verdict
from tests.processors.factories import make_intent

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = PolicyBundle.from_directory(ROOT / "policies" / "bundle")
NOW = 1_794_312_000_000  # Tue 2026-11-10 12:00:00 UTC
HOUR = 3_600_000
DAY = 24 * HOUR

SCHEMA = """
entity Role;
entity Agent in [Role];
entity Resource = { kind: String, name: String, uri: String };
type Meta = { level?: Long, label?: String };
type PayParams = {
  amount?: decimal, limit?: decimal, note?: String, memo?: String, flag?: Bool,
  tags?: Set<String>, meta?: Meta,
};
type WriteParams = { note?: String, memo?: String, owner?: Agent, amount?: decimal };
type ReadParams = { note?: String, amount?: decimal };
type PayCtx = {
  environment: String, runtime_id: String, hour_utc: Long, weekday: Long, risk?: Long,
  parameters: PayParams,
};
type WriteCtx = {
  environment: String, runtime_id: String, hour_utc: Long, weekday: Long, risk?: Long,
  parameters: WriteParams,
};
type ReadCtx = {
  environment: String, runtime_id: String, hour_utc: Long, weekday: Long, risk?: Long,
  parameters: ReadParams,
};
action "group";
action "read" in ["group"] appliesTo {
  principal: [Agent], resource: [Resource], context: ReadCtx };
action "write" in ["group"] appliesTo {
  principal: [Agent], resource: [Resource], context: WriteCtx };
action "pay" appliesTo { principal: [Agent], resource: [Resource], context: PayCtx };
"""

# reads amounts against thresholds, hour and weekday, risk, roles, one named agent
THRESHOLDS = """
@id("writers") @reason("writers read and write")
permit (principal in Role::"writer", action in Action::"group", resource);
@id("payers") @reason("payers pay up to 10,000")
permit (principal in Role::"payer", action == Action::"pay", resource)
when { context.parameters has amount
       && context.parameters.amount.lessThanOrEqual(decimal("10000.00")) };
@id("big-pay-needs-boss") @reason("above 5,000 the boss pays")
forbid (principal, action == Action::"pay", resource)
when { context.parameters has amount && context.parameters.amount.greaterThan(decimal("5000.00")) }
unless { principal in Role::"boss" };
@id("office-hours") @reason("writes happen in office hours")
forbid (principal, action == Action::"write", resource)
unless { context.hour_utc >= 8 && context.hour_utc < 18 && context.weekday <= 5 };
@id("risky") @reason("no risky intents")
forbid (principal, action, resource) when { context has risk && context.risk > 70 };
@id("vip") permit (principal == Agent::"vip", action, resource);
@id("no-secrets") @reason("secrets stay secret")
forbid (principal, action, resource) when { resource.kind == "secret" };
"""

# reads strings with like, a boolean, a nested Long, a set, resource names
STRINGS = """
@id("notes") permit (principal, action == Action::"read", resource)
when { context.parameters has note && context.parameters.note like "ok*" };
@id("ci") permit (principal, action == Action::"pay", resource)
when { (principal in Role::"ci" || principal == Agent::"robot")
       && context.runtime_id like "ci-*" && context.environment == "prod" };
@id("flag") forbid (principal, action == Action::"pay", resource)
when { context.parameters has flag && context.parameters.flag };
@id("meta") forbid (principal, action == Action::"pay", resource)
when { context.parameters has meta && context.parameters.meta has level
       && context.parameters.meta.level > 3 };
@id("pay-test") permit (principal, action == Action::"pay", resource)
when { resource.name like "test-*" };
@id("tags") forbid (principal, action == Action::"pay", resource)
when { context.parameters has tags && context.parameters.tags.contains("frozen") };
"""

# entities in the context, a resource literal, if-then-else, `is ... in`, attribute pairs
ENTITIES = """
@id("owner") permit (principal, action == Action::"write", resource)
when { context.parameters has owner && principal == context.parameters.owner };
@id("exact-doc") permit (principal, action, resource == Resource::"doc:1");
@id("if") forbid (principal, action == Action::"pay", resource)
when { if context has risk then context.risk > 50 else context.environment != "prod" };
@id("same") forbid (principal, action, resource) when { resource.uri == resource.name };
@id("is") permit (principal is Agent in Role::"reader", action == Action::"read", resource);
"""

# the context names an entity that may be the principal itself: whose roles count?
OWNER_POLICIES = """
@id("owner-admin") permit (principal, action == Action::"write", resource)
when { context.parameters has owner && context.parameters.owner in Role::"admin" };
@id("owner-robot") forbid (principal, action == Action::"write", resource)
when { context.parameters has owner && context.parameters.owner == Agent::"robot" };
"""

# a forbid that fails to evaluate (overflow) for some values: errors are never cached
ERRORS = """
@id("all") permit (principal, action, resource);
@id("overflow") forbid (principal, action == Action::"pay", resource)
when { context.parameters has meta && context.parameters.meta has level
       && context.parameters.meta.level * 4611686018427387904 > 0 };
"""

# a common type shadows an extension type's name: the schema reader gives up (keys are
# whole requests), though Cedar accepts it
SHADOW_SCHEMA = """
type decimal = String;
entity Role;
entity Agent in [Role];
entity Resource = { kind: String, name: String, uri: String };
action "pay" appliesTo {
  principal: [Agent], resource: [Resource],
  context: {
    environment: String, runtime_id: String, hour_utc: Long, weekday: Long, risk?: Long,
    parameters: {
      amount?: decimal, limit?: decimal, note?: String, memo?: String, flag?: Bool,
      tags?: Set<String>, meta?: { level?: Long, label?: String },
    },
  },
};
"""
SHADOW = """
@id("pay") permit (principal in Role::"payer", action == Action::"pay", resource)
when { context.parameters has amount && context.parameters.amount like "1*" };
@id("noted") forbid (principal, action, resource) when { context.parameters has note };
"""

BUNDLES: dict[str, tuple[str, str | Mapping[str, Any]]] = {
    "example": (EXAMPLE.policies, EXAMPLE.schema),
    "thresholds": (THRESHOLDS, SCHEMA),
    "strings": (STRINGS, SCHEMA),
    "entities": (ENTITIES, SCHEMA),
    "owners": (OWNER_POLICIES, SCHEMA),
    "errors": (ERRORS, SCHEMA),
    "shadow": (SHADOW, SHADOW_SCHEMA),
}


def bundle(name: str, n: int = 0) -> PolicyBundle:
    policies, schema = BUNDLES[name]
    manifest = BundleManifest(f"{name}.{n}", NOW - DAY + n, NOW + 30 * DAY, name)
    return PolicyBundle(manifest, policies, schema)


ENGINES = {name: compile_bundle(bundle(name), NOW) for name in BUNDLES}
PLAIN = {name: compile_bundle(bundle(name), NOW, decision_cache=0) for name in BUNDLES}


# -- generated requests ----------------------------------------------------------------
#
# A request is drawn field by field: mostly from the values its bundle's policies turn
# on (FOCUS) and their neighbours, else from usual values, sometimes from odd ones (wrong
# types, unrepresentable numbers, strings Cedar's JSON parser refuses). A stream is a
# few base requests and many variations of them, each changing one to three fields:
# most variations differ only in what no policy reads (and share a key), the others in
# what one does. Hypothesis draws the seed of a random source, so the weights are ours
# (and a failing example is replayed from its seed).

A1, A2, ROBOT = ({"type": "Agent", "id": a} for a in ("a-1", "a-2", "robot"))
NUMBERS = [0, 0.0001, 12.5, 99.99, 100, 4999.99, 5000, 5000.01, 9999.99, 10000, 10000.0,
           10000.01, 49999.99, 50000, 50000.01, "1250.00", "7.25"]  # fmt: skip
ODD_NUMBERS = [1e15, 0.12345, "abc", True, -1, {"__extn": {"fn": "decimal", "arg": "7.5"}},
               {"fn": "decimal", "arg": "7.5"}]  # fmt: skip
TEXTS = ["ok", "ok then", "nope", "", "x", "m-1", "m-2"]
ODD_TEXTS: list[Any] = ["ok\ud800", "\x00", 42, True, ["ok"]]

POOLS: dict[str, tuple[list[Any], list[Any]]] = {
    # field: (usual values, odd values)
    "agent_id": (["vip", "robot", "a-1", "a-2", "billing-agent", "support-bot"],
                 ["deploy-bot", "x\ud800", 'q"\n']),
    "roles": ([(), ("admin",), ("payer",), ("payer", "boss"), ("writer",), ("ci",),
               ("reader",), ("payments-agent",), ("treasury",), ("support",), ("deployer",),
               ("analyst",), ("readonly",), ("payments-agent", "readonly")],
              [("nobody",), ("bad\udfff",), ("admin", "admin")]),
    "action": (["read", "write", "pay", "payments.transfer", "invoices.read", "email.send",
                "tickets.reply", "tickets.read", "deploy.production", "deploy.staging",
                "warehouse.export", "warehouse.query", "db.drop", "db.query"],
               ["group", "nope", "reports"]),
    "resource": (["doc:1", "doc:2", "secret:x", "acct:test-1", "acct:sandbox-9", "acct:ACME-1",
                  "acct:prod-1", "s3://acme-exports/q.csv", "s3://elsewhere/x",
                  "service:checkout", "db:prod-main", "mailto:a@b.c", "x:x"],
                 ["plain", "acct:\ud800", "test-1:test-1"]),
    "environment": (["prod", "staging"], []),
    "runtime_id": (["ci-1", "ci-2", "laptop", "rt-1"], []),
    "hours": ([0, 7, 8, 12, 17, 18, 24 + 9, 4 * 24 + 9, 5 * 24 + 9, 6 * 24 + 12], []),
    "minutes": ([0, 1, 30, 59], []),
    "risk": ([None, None, 0, 10, 50, 51, 70, 71, 79, 80], [100, 70.0, 80.5, "high"]),
    "trace_id": (["t1", "t2"], []),
    # parameters: an action sends those its schema declares (PARAMETERS_OF), and
    # `surprise` one it does not
    "amount": ([None, *NUMBERS], ODD_NUMBERS),
    "limit": ([None, None, *NUMBERS], ODD_NUMBERS),
    "max_rows": ([None, 100, 500, 5000, "100"], ["abc", 0.12345]),
    "rows": ([None, 5, "5"], ["x"]),
    "currency": ([None, "EUR", "EUR", "USD"], [978]),
    "note": ([None, *TEXTS], ODD_TEXTS),
    "memo": ([None, *TEXTS], ODD_TEXTS),
    "flag": ([None, True, False], ["yes"]),
    "meta": ([None, {}, {"level": 0}, {"level": 1}, {"level": 2}, {"level": 3}, {"level": 4},
              {"level": 4, "label": "x"}, {"label": "z"}, {"level": 2**62}],
             [{"level": "4"}, {"label": 5}, {"other": 1}]),
    "tags": ([None, [], ["a"], ["frozen"], ["frozen", "a"]], [[1]]),
    "owner": ([None, A1, A2, ROBOT, {"__entity": {"type": "Agent", "id": "a-1"}}],
              [{"type": "Role", "id": "admin"}, "vip"]),
    "body": ([None, "hi", "there"], [5]),
    "status": ([None, "open", "closed"], [1]),
    "sql": ([None, "s", ""], []),
    "period": ([None, "2026-W01"], [3]),
    "version": ([None, "1.0", "1.1"], []),
    "surprise": ([None], ["x"]),
}  # fmt: skip
PARAMETERS_OF = {
    "payments.transfer": ("amount", "currency", "memo"),
    "email.send": ("body",),
    "tickets.reply": ("body", "status"),
    "tickets.read": ("body", "status"),
    "deploy.production": ("version",),
    "deploy.staging": ("version",),
    "warehouse.query": ("sql", "max_rows"),
    "db.query": ("sql", "max_rows"),
    "warehouse.export": ("rows",),
    "pay": ("amount", "limit", "note", "memo", "flag", "tags", "meta"),
    "write": ("note", "memo", "owner", "amount"),
    "read": ("note", "amount"),
}
FOCUS: dict[str, dict[str, list[Any]]] = {
    # the values each bundle's policies turn on, and values next to them
    "example": {
        "action": ["payments.transfer", "tickets.reply", "deploy.production",
                   "warehouse.export", "warehouse.query", "invoices.read", "email.send",
                   "db.drop"],
        "agent_id": ["billing-agent", "support-bot", "a-1", "a-2"],
        "roles": [("payments-agent",), ("treasury",), ("support",), ("deployer",),
                  ("analyst",), ("readonly",), ("payments-agent", "readonly")],
        "resource": ["acct:test-1", "acct:ACME-1", "acct:sandbox-2", "s3://acme-exports/q",
                     "s3://elsewhere/x", "service:checkout", "mailto:a@b.c", "db:prod"],
        "amount": [120.5, 9999.99, 10000, 10000.01, 50000.01, 0, "1250.00"],
        "currency": ["EUR", "EUR", "USD", None],
        "runtime_id": ["ci-1", "laptop"],
        "risk": [None, 10, 79, 80],
    },
    "thresholds": {
        "action": ["pay", "write", "read"],
        "agent_id": ["vip", "a-1", "a-2"],
        "roles": [("payer",), ("payer", "boss"), ("writer",), ()],
        "resource": ["doc:1", "secret:x"],
        "amount": [4999.99, 5000, 5000.01, 10000, 10000.01, 12.5, None],
        "limit": [None, 7.25, "7.25", "abc"],
        "risk": [None, 70, 71],
    },
    "strings": {
        "action": ["pay", "pay", "write", "read"],
        "agent_id": ["robot", "a-1", "a-2"],
        "roles": [("ci",), ()],
        "resource": ["acct:test-1", "acct:prod-1"],
        "environment": ["prod"],
        "runtime_id": ["ci-1", "laptop"],
        "note": ["ok", "ok then", "nope", None],
        "limit": [None, 7.25, "7.25", "abc"],
        "flag": [True, False, None, None],
        "meta": [{"level": 3}, {"level": 4}, {"label": "x"}, None, None],
        "tags": [["frozen"], ["a"], None, None],
    },
    "entities": {
        "action": ["pay", "write", "read"],
        "agent_id": ["a-1", "a-2"],
        "roles": [("reader",), ()],
        "resource": ["doc:1", "doc:2", "x:x"],
        "owner": [A1, A2, None],
        "risk": [None, 50, 51],
    },
    "owners": {
        "action": ["write"],
        "agent_id": ["a-1", "a-2", "robot"],
        "roles": [("admin",), ()],
        "owner": [A1, A2, ROBOT, None],
    },
    "errors": {
        "action": ["pay"],
        "meta": [{"level": 0}, {"level": 1}, {"level": 2}, None],
    },
    "shadow": {
        "action": ["pay"],
        "roles": [("payer",), ()],
        "amount": ["1250.00", "2", "abc", None],
        "limit": [None, "7.25"],
        **{name: [None] for name in ("note", "memo", "flag", "meta", "tags")},
    },
}  # fmt: skip

Flat = dict[str, Any]
"""One request, field by field (see ``POOLS``)."""
SEEDS = st.integers(min_value=0, max_value=2**64 - 1)


def draw_field(rng: random.Random, bundle_name: str, name: str) -> Any:
    focus = FOCUS[bundle_name].get(name)
    if focus and rng.random() < 0.75:
        return rng.choice(focus)
    usual, odd = POOLS[name]
    if odd and rng.random() < 0.15:
        return rng.choice(odd)
    if name in ("amount", "limit") and rng.random() < 0.2:
        return round(rng.uniform(0, 60_000), rng.choice((0, 2)))
    return rng.choice(usual)


def draw_request(rng: random.Random, bundle_name: str) -> Flat:
    return {name: draw_field(rng, bundle_name, name) for name in POOLS}


def draw_variation(rng: random.Random, bundle_name: str, base: Flat) -> Flat:
    """``base`` with one to three fields drawn anew (focus fields more often)."""
    names = [*FOCUS[bundle_name], *FOCUS[bundle_name], *POOLS]
    changed = {rng.choice(names) for _ in range(rng.randint(1, 3))}
    return base | {name: draw_field(rng, bundle_name, name) for name in changed}


@st.composite
def streams(draw: st.DrawFn, bundle_name: str, *, switches: bool = True) -> list[Flat | str]:
    """Requests (and, if ``switches``, the names of bundles to switch to) in order."""
    rng = random.Random(draw(SEEDS))
    bases = [draw_request(rng, bundle_name) for _ in range(rng.randint(1, 3))]
    out: list[Flat | str] = []
    for _ in range(rng.randint(1, 40)):
        if switches and rng.random() < 1 / 16:
            out.append(rng.choice(list(BUNDLES)))
        else:
            out.append(draw_variation(rng, bundle_name, rng.choice(bases)))
    return out


@st.composite
def bases(draw: st.DrawFn, bundle_name: str) -> Flat:
    return draw_request(random.Random(draw(SEEDS)), bundle_name)


def intent_fields(flat: Flat) -> dict[str, Any]:
    """``make_intent``'s fields for a generated request."""
    issued = NOW + flat["hours"] * HOUR + flat["minutes"] * 60_000
    return {
        "agent_id": flat["agent_id"],
        "action": flat["action"],
        "resource": flat["resource"],
        "parameters": {
            name: flat[name]
            for name in (*PARAMETERS_OF.get(flat["action"], ()), "surprise")
            if flat[name] is not None
        },
        "context": {
            k: v
            for k, v in (("risk", flat["risk"]), ("trace_id", flat["trace_id"]))
            if v is not None
        },
        "issued_at_ms": issued,
        "expires_at_ms": issued + 300_000,
        "runtime": {
            "runtime_id": flat["runtime_id"],
            "code_digest": "sha256:" + "ab" * 32,
            "config_digest": "sha256:" + "ab" * 32,
            "environment": flat["environment"],
            "host": "node-1",
        },
    }


def intent_of(fields: dict[str, Any]) -> Intent:
    """An intent with these fields; an agent id that is no valid UTF-8 (no Kafka key
    could carry it) is set after validation, to reach the layer anyway."""
    agent = fields.get("agent_id", "billing-agent")
    if agent.encode("utf-8", "surrogatepass") == agent.encode("utf-8", "replace"):
        return make_intent(**fields)
    return dataclasses.replace(make_intent(**(fields | {"agent_id": "x"})), agent_id=agent)


def request_of(flat: Flat) -> PolicyRequest:
    return PolicyRequest.from_intent(intent_of(intent_fields(flat)), flat["roles"])


class Layers:
    """The policy layer with and without its decision cache, fed the same bundles."""

    def __init__(self, first: PolicyBundle, *, cache: int = 10_000) -> None:
        self.roles: tuple[str, ...] = ()
        self.cached_store = PolicyStore(decision_cache=cache)
        self.plain_store = PolicyStore(decision_cache=0)
        self.offer(first)
        self.cached = PolicyCheck(self.cached_store, lambda agent: self.roles)
        self.plain = PolicyCheck(self.plain_store, lambda agent: self.roles)

    def offer(self, new: PolicyBundle) -> None:
        assert self.cached_store.offer(new, NOW) == self.plain_store.offer(new, NOW)

    def both(self, fields: dict[str, Any], roles: tuple[str, ...]) -> tuple[Verdict, Verdict]:
        self.roles = roles
        intent = intent_of(fields)
        state = GateState(now_ms=fields["issued_at_ms"])
        return self.cached.evaluate(intent, state), self.plain.evaluate(intent, state)

    @property
    def engine(self) -> PolicyEngine:
        assert self.cached_store.active is not None
        return self.cached_store.active


def replay(first: str, stream: list[Flat | str], *, cache: int = 10_000) -> Layers:
    """Feed both layers every request of the stream (twice: the second pass hits more)
    and switch both to the named bundle where the stream says so."""
    layers = Layers(bundle(first), cache=cache)
    switches = 0
    for event in stream + stream:
        if isinstance(event, str):
            switches += 1
            layers.offer(bundle(event, switches))
            continue
        cached, plain = layers.both(intent_fields(event), event["roles"])
        assert cached == plain, (event, layers.engine.version)
    return layers


PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("first", list(BUNDLES))
def test_cached_verdicts_equal_uncached_verdicts(first: str) -> None:
    @PROPERTY
    @given(stream=streams(first))
    def check(stream: list[Flat | str]) -> None:
        replay(first, stream)

    check()


@PROPERTY
@given(stream=streams("thresholds", switches=False))
def test_a_tiny_cache_evicts_without_changing_verdicts(stream: list[Flat | str]) -> None:
    replay("thresholds", stream, cache=3)


def neighbours(bundle_name: str) -> dict[str, list[Any]]:
    """Every value the generators draw for each field (to sweep a request's one-field
    neighbours), without repeats."""
    out: dict[str, list[Any]] = {}
    for name, (usual, odd) in POOLS.items():
        values = [*FOCUS[bundle_name].get(name, ()), *usual, *odd]
        out[name] = list({repr(v): v for v in values}.values())
    return out


@pytest.mark.parametrize("name", list(BUNDLES))
def test_requests_sharing_a_key_get_the_same_decision(name: str) -> None:
    """Directly on the key, over every one-field neighbour of generated requests: the
    requests that share a key get the same decision from Cedar whenever one of them
    could be cached (has no errors)."""

    sweep = neighbours(name)

    @settings(max_examples=40, deadline=None)
    @given(base=bases(name))
    def check(base: Flat) -> None:
        groups: dict[Any, list[Flat]] = {}
        for field, values in sweep.items():
            for value in values:
                flat = base | {field: value}
                key = engine_key(ENGINES[name], request_of(flat))
                if key is not None:
                    groups.setdefault(key, []).append(flat)
        for group in groups.values():
            if len(group) < 2:
                continue
            decisions = [PLAIN[name].authorize(request_of(flat)) for flat in group]
            if any(not d.errors for d in decisions):
                pairs = list(zip(group, decisions, strict=True))
                assert all(d == decisions[0] for d in decisions), pairs

    check()


def engine_key(engine: PolicyEngine, request: PolicyRequest) -> Any:
    try:
        record = cedar_record(request.context, "context")
    except ValueProblem:
        return None
    return engine._key(request, tuple(request.roles), record)  # noqa: SLF001


# -- the cache hits where it should, and only there --------------------------------------


def req(**overrides: Any) -> PolicyRequest:
    fields: dict[str, Any] = {
        "agent_id": "billing-agent",
        "roles": ("payments-agent",),
        "action": "payments.transfer",
        "resource": "acct:test-1",
        "environment": "prod",
        "runtime_id": "billing-rt-1",
        "issued_at_ms": NOW,
        "parameters": {"amount": 120.5, "currency": "EUR", "memo": "invoice 1"},
        "risk": 10,
    }
    fields.update(overrides)
    return PolicyRequest.build(**fields)


@pytest.fixture
def example() -> PolicyEngine:
    return compile_bundle(EXAMPLE, NOW)


def hits(engine: PolicyEngine) -> int:
    stats = engine.decision_stats()
    assert stats is not None
    return stats.hits


def test_what_no_policy_reads_shares_a_decision(example: PolicyEngine) -> None:
    first = example.authorize(req())
    assert first.allowed
    same = [
        req(parameters={"amount": 120.5, "currency": "EUR", "memo": "another memo"}),
        req(runtime_id="billing-rt-2"),  # runtime_id is read for production deploys only
        req(issued_at_ms=NOW + 5 * HOUR),  # hour and weekday: idem
        req(parameters={"amount": 120.50, "currency": "EUR", "memo": "x"}),  # same decimal
    ]
    for request in same:
        assert example.authorize(request) is first
    assert hits(example) == len(same)


def test_what_a_policy_reads_is_in_the_key(example: PolicyEngine) -> None:
    example.authorize(req())
    different = [
        req(parameters={"amount": 120.51, "currency": "EUR"}),  # amount is read
        req(risk=11),  # risk.high reads risk
        req(environment="staging"),  # payments.non-prod-real-accounts reads it
        req(resource="acct:test-2"),  # resource.name is read
        req(agent_id="treasury-agent", roles=("treasury",)),  # roles named
        req(agent_id="other-agent"),  # billing-agent is named, so it differs from others
        req(parameters={"amount": 120.5, "memo": "no currency"}),  # presence of currency
        req(parameters={"amount": 120.5, "currency": "EUR", "invoice_id": "x"}),  # names
    ]
    for request in different:
        example.authorize(request)
    assert hits(example) == 0


def test_agents_no_policy_names_share_decisions(example: PolicyEngine) -> None:
    tickets = dict(action="tickets.reply", resource="ticket:1", parameters={"body": "hi"})
    first = example.authorize(req(agent_id="bench-0001", roles=("support",), **tickets))
    assert first.allowed
    again = example.authorize(req(agent_id="bench-0002", roles=("support",), **tickets))
    assert again is first
    # the resource is not read for replies: another ticket shares the decision too
    other = dict(tickets, resource="ticket:99")
    assert example.authorize(req(agent_id="bench-0003", roles=("support",), **other)) is first


def test_errors_and_strings_cedar_refuses_are_never_cached(example: PolicyEngine) -> None:
    refused = req(parameters={"amount": 5, "currency": "EUR", "memo": "bad \ud800"})
    decision = example.authorize(refused)
    assert decision.errors and not decision.allowed
    # the same request without the lone surrogate is fine, and must not be answered by
    # (or answer for) the refused one
    fine = example.authorize(req(parameters={"amount": 5, "currency": "EUR", "memo": "ok"}))
    assert fine.allowed
    assert example.authorize(refused).errors
    assert example.authorize(req(agent_id="x\ud800", roles=("payments-agent",))).errors
    undeclared = req(parameters={"amount": 5, "currency": "EUR", "surprise": "x"})
    assert example.authorize(undeclared).errors
    stats = example.decision_stats()
    assert stats is not None and stats.size == 1


def test_a_new_bundle_is_a_new_cache() -> None:
    layers = Layers(EXAMPLE)
    fields = {
        "parameters": {"amount": 1250.0, "currency": "EUR"},
        "resource": "acct:test-1",
        "issued_at_ms": NOW,
        "expires_at_ms": NOW + 300_000,
    }
    before, _ = layers.both(fields, ("payments-agent",))
    assert before.evidence["bundle_digest"] == EXAMPLE.digest
    frozen = PolicyBundle(
        BundleManifest("frozen", NOW, NOW + DAY, "payments frozen"),
        EXAMPLE.policies
        + '\n@id("freeze") @reason("frozen")\n'
        + 'forbid (principal, action == Action::"payments.transfer", resource);\n',
        EXAMPLE.schema,
    )
    layers.offer(frozen)
    after, plain = layers.both(fields, ("payments-agent",))
    assert after == plain
    assert after.reasons == ("forbidden by freeze: frozen",)
    assert after.evidence["bundle_digest"] == frozen.digest


def test_the_cache_can_be_turned_off() -> None:
    engine = compile_bundle(EXAMPLE, NOW, decision_cache=0)
    assert engine.decision_keys == "off" and engine.decision_stats() is None
    first = engine.authorize(req())
    assert engine.authorize(req()) == first and engine.authorize(req()) is not first
    store = PolicyStore(decision_cache=0)
    store.offer(EXAMPLE, NOW)
    assert store.active is not None and store.active.decision_keys == "off"


def test_keys_are_whole_requests_when_the_schema_cannot_be_read() -> None:
    engine = compile_bundle(bundle("shadow"), NOW)
    assert engine.decision_keys == "exact"
    fields = {"action": "pay", "roles": ("payer",), "resource": "doc:1", "risk": None}
    request = req(parameters={"amount": "1250.00"}, **fields)
    first = engine.authorize(request)
    assert first.allowed
    assert engine.authorize(req(parameters={"amount": "1250.00"}, **fields)) is first
    assert engine.authorize(req(parameters={"amount": "1250.00"}, runtime_id="x", **fields))
    assert hits(engine) == 1  # another runtime id is another key


def test_an_entity_in_the_context_keeps_the_whole_principal() -> None:
    engine = ENGINES["entities"]
    described = engine._projection.describe("write")  # type: ignore[union-attr]  # noqa: SLF001
    assert described["agents"] is None and described["roles"] is None
    assert described["resource"] is None
    mine = req(
        agent_id="a-1",
        roles=(),
        action="write",
        resource="doc:2",
        parameters={"owner": {"type": "Agent", "id": "a-1"}},
        risk=None,
    )
    theirs = req(
        agent_id="a-2",
        roles=(),
        action="write",
        resource="doc:2",
        parameters={"owner": {"type": "Agent", "id": "a-1"}},
        risk=None,
    )
    assert engine.authorize(mine).allowed
    assert not engine.authorize(theirs).allowed


def test_keys_drop_only_values_the_schema_types_exactly() -> None:
    engine = ENGINES["thresholds"]
    base = {"action": "pay", "roles": ("payer",), "resource": "doc:1", "risk": None}
    one = req(parameters={"amount": 10, "note": "a", "flag": True, "meta": {"level": 1}}, **base)
    two = req(parameters={"amount": 10, "note": "b", "flag": False, "meta": {"level": 2}}, **base)
    three = req(parameters={"amount": 10, "note": 3, "flag": False, "meta": {"level": 2}}, **base)
    assert engine_key(engine, one) == engine_key(engine, two)
    assert engine_key(engine, one) != engine_key(engine, three)  # a number where a String is
    limit_a = req(parameters={"amount": 10, "limit": 5}, **base)
    limit_b = req(parameters={"amount": 10, "limit": 7.25}, **base)
    limit_c = req(parameters={"amount": 10, "limit": "7.25"}, **base)  # Cedar parses strings
    assert engine_key(engine, limit_a) == engine_key(engine, limit_b)
    assert engine_key(engine, limit_a) != engine_key(engine, limit_c)


def test_cache_is_bounded_lru() -> None:
    cache: DecisionCache[str] = DecisionCache(2)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C")
    assert cache.get("b") is None and cache.get("a") == "A" and cache.get("c") == "C"
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size, stats.maxsize) == (3, 1, 2, 2)
    with pytest.raises(ValueError, match="at least 1"):
        DecisionCache(0)


def test_many_requests_hit() -> None:
    """A realistic stream repeats what policies read: most decisions come from the cache."""
    layers = Layers(EXAMPLE)
    agents = [(f"bench-{i:03d}", role) for i, role in enumerate(["support", "readonly"] * 50)]
    for n in range(600):
        agent, role = agents[n % len(agents)]
        action = "tickets.reply" if role == "support" else "invoices.read"
        fields = {
            "agent_id": agent,
            "action": action,
            "resource": f"ticket:{n % 37}" if role == "support" else f"invoice:{n % 41}",
            "parameters": {"body": f"reply {n}"} if role == "support" else {},
            "context": {"risk": n % 40},
            "issued_at_ms": NOW + n * 60_000,
            "expires_at_ms": NOW + n * 60_000 + 300_000,
        }
        cached, plain = layers.both(fields, (role,))
        assert cached == plain
    stats = layers.engine.decision_stats()
    assert stats is not None and stats.hit_rate > 0.85, stats


# -- reading the schema ----------------------------------------------------------------


def test_schema_shapes_of_the_example() -> None:
    import cedarpy

    shapes = context_shapes(str(cedarpy.Schema.from_str(str(EXAMPLE.schema))))
    payment = shapes["payments.transfer"]
    assert isinstance(payment, Record)
    assert payment.attrs["runtime_id"] == "String" and payment.attrs["hour_utc"] == "Long"
    assert payment.attrs["parameters"] == Record(
        {"amount": "decimal", "currency": "String", "invoice_id": "String", "memo": "String"}
    )
    assert shapes["read"] is None  # an action group: no request has it


def test_schema_names_resolve_only_when_certain() -> None:
    import cedarpy

    text = """
    namespace NS { type T = { a: String, n: { x: __cedar::String } }; entity F; }
    entity Role; entity Agent in [Role];
    entity Resource = { kind: String, name: String, uri: String };
    entity Color enum ["red"];
    type Alias = String;
    type Twice = Long;
    action "x" appliesTo { principal: Agent, resource: Resource, context: NS::T };
    action "y\\"q" appliesTo { principal: Agent, resource: Resource,
      context: { s: Alias, c: Color, f: NS::F, t: Set<String>, w: Twice } };
    """
    shapes = context_shapes(str(cedarpy.Schema.from_str(text)))
    assert shapes["x"] == Record({"a": "String", "n": Record({"x": "String"})})
    assert shapes['y"q'] == Record(
        {"s": "String", "c": ENTITY, "f": ENTITY, "t": SetOf("String"), "w": "Long"}
    )
    with pytest.raises(SchemaShapeError, match="named 'String'"):
        context_shapes("type String = Long;")
    with pytest.raises(SchemaShapeError):
        context_shapes('action "x" appliesTo { principal: Agent, surprise: X };')
    assert context_shapes('action "z" appliesTo { context: Nowhere };') == {"z": UNKNOWN}


def test_bundles_compile_as_expected() -> None:
    assert {name: engine.decision_keys for name, engine in ENGINES.items()} == {
        "example": "projected",
        "thresholds": "projected",
        "strings": "projected",
        "entities": "projected",
        "owners": "projected",
        "errors": "projected",
        "shadow": "exact",
    }
