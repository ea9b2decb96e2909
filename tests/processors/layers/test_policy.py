"""Cedar policy: bundles, the compiled engine, the store and the ``policy`` layer."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from processors.crypto.jcs import canonical_json
from processors.layers.policy import (
    LAYER,
    BundleManifest,
    PolicyBundle,
    PolicyBundleError,
    PolicyCase,
    PolicyCaseError,
    PolicyCheck,
    PolicyDecision,
    PolicyEngine,
    PolicyRequest,
    PolicyStore,
    cases_from_document,
    compile_bundle,
    iso_ms,
    load_cases,
    resource_attributes,
    run_cases,
)
from processors.verdict import GateState, Status
from tests.processors.factories import make_intent

ROOT = Path(__file__).resolve().parents[3]
BUNDLE_DIR = ROOT / "policies" / "bundle"
CASES = ROOT / "policies" / "bundle.cases.json"
NOW = 1_794_312_000_000  # Tue 2026-11-10 12:00:00 UTC
DAY = 86_400_000
ROLES = {
    "billing-agent": ["payments-agent"],
    "treasury-agent": ["treasury"],
    "audit-bot": ["readonly"],
}

# a small bundle of our own, to test the engine without the example estate
MINI_SCHEMA = """
entity Role;
entity Agent in [Role];
entity Resource = { kind: String, name: String, uri: String };
type Ctx = {
  environment: String, runtime_id: String, hour_utc: Long, weekday: Long, risk?: Long,
  parameters: { amount?: decimal, note?: String },
};
action "read" appliesTo { principal: [Agent], resource: [Resource], context: Ctx };
action "write" appliesTo { principal: [Agent], resource: [Resource], context: Ctx };
"""
MINI_POLICIES = """
@id("writers.write")
@reason("writers write")
permit (principal in Role::"writer", action, resource);

@id("no-secrets")
@reason("secrets are never written")
forbid (principal, action == Action::"write", resource)
when { resource.kind == "secret" };
"""


def mini_bundle(
    policies: str = MINI_POLICIES,
    schema: str | dict[str, Any] = MINI_SCHEMA,
    *,
    version: str = "1",
    created: int = NOW - DAY,
    expires: int = NOW + 30 * DAY,
) -> PolicyBundle:
    return PolicyBundle(BundleManifest(version, created, expires, "test"), policies, schema)


def req(
    agent: str = "a-1",
    roles: tuple[str, ...] = (),
    action: str = "write",
    resource: str = "doc:1",
    *,
    at: int = NOW,
    environment: str = "prod",
    runtime_id: str = "rt-1",
    risk: Any = None,
    **parameters: Any,
) -> PolicyRequest:
    return PolicyRequest.build(
        agent_id=agent,
        roles=roles,
        action=action,
        resource=resource,
        environment=environment,
        runtime_id=runtime_id,
        issued_at_ms=at,
        parameters=parameters,
        risk=risk,
    )


@pytest.fixture(scope="module")
def example() -> PolicyEngine:
    return compile_bundle(PolicyBundle.from_directory(BUNDLE_DIR), NOW)


@pytest.fixture(scope="module")
def mini() -> PolicyEngine:
    return compile_bundle(mini_bundle(), NOW)


def intent(**overrides: Any) -> Any:
    fields: dict[str, Any] = {"issued_at_ms": NOW, "expires_at_ms": NOW + 300_000}
    fields.update(overrides)
    return make_intent(**fields)


def check_with(store: PolicyStore) -> PolicyCheck:
    return PolicyCheck(store, lambda agent: ROLES.get(agent, []))


# -- the example bundle's test table ------------------------------------------------

CASE_LIST = load_cases(CASES)


@pytest.mark.parametrize("case", CASE_LIST, ids=[c.name for c in CASE_LIST])
def test_example_bundle_case(example: PolicyEngine, case: PolicyCase) -> None:
    [result] = run_cases(example, [case])
    assert result.passed, f"{case.name}: {result.problems} (decision {result.decision})"


def test_cases_cover_every_policy_and_both_outcomes(example: PolicyEngine) -> None:
    results = run_cases(example, CASE_LIST)
    assert len(results) >= 20
    decided = {p for r in results for p in r.decision.determining_policies}
    assert decided == set(example.policies), set(example.policies) - decided
    assert any(r.decision.allowed for r in results)
    assert any(not r.decision.allowed and not r.decision.determining_policies for r in results)


def test_example_bundle_manifest(example: PolicyEngine) -> None:
    assert example.version == "2026.11.1"
    assert example.expires_at_ms > NOW + 3 * 365 * DAY
    assert all(p.reason for p in example.policies.values()), "every policy has a @reason"


# -- Cedar semantics ---------------------------------------------------------------


def test_forbid_overrides_permit(mini: PolicyEngine) -> None:
    allowed = mini.authorize(req(roles=("writer",), resource="doc:1"))
    assert allowed == PolicyDecision(True, ("writers.write",), ())
    denied = mini.authorize(req(roles=("writer",), resource="secret:db-password"))
    assert denied == PolicyDecision(False, ("no-secrets",), ())


def test_default_deny(mini: PolicyEngine) -> None:
    assert mini.authorize(req(roles=("reader",))) == PolicyDecision(False, (), ())
    assert mini.authorize(req(roles=())) == PolicyDecision(False, (), ())


def test_example_forbid_overrides_permit(example: PolicyEngine) -> None:
    small = req("billing-agent", ("payments-agent",), "payments.transfer", "acct:ACME-42",
                amount=9_999.99, currency="EUR")  # fmt: skip
    big = dataclasses.replace(
        small, context={**small.context, "parameters": {"amount": Decimal("12500.00"),
                                                        "currency": "EUR"}}
    )  # fmt: skip
    assert example.authorize(small).allowed
    decision = example.authorize(big)
    assert not decision.allowed
    assert decision.determining_policies == ("payments.limit-10k",)


def test_evaluation_error_never_allows() -> None:
    # the forbid overflows (an evaluation error), Cedar skips it and the permit allows:
    # trustplane does not trust that allow
    policies = """
    @id("all") permit (principal, action, resource);
    @id("overflow") forbid (principal, action, resource)
    when { context has risk && context.risk * 4611686018427387904 > 0 };
    """
    engine = compile_bundle(mini_bundle(policies), NOW)
    assert engine.authorize(req(risk=0)).allowed
    decision = engine.authorize(req(risk=3))
    assert not decision.allowed
    assert any("overflow" in e for e in decision.errors)
    assert any("failed to evaluate" in e for e in decision.errors)


# -- the request: entity and context model -------------------------------------------


@pytest.mark.parametrize(
    ("resource", "kind", "name"),
    [
        ("acct:ACME-42", "acct", "ACME-42"),
        ("s3://acme-exports/q3.csv", "s3", "acme-exports/q3.csv"),
        ("mailto:customer@example.com", "mailto", "customer@example.com"),
        ("db:production", "db", "production"),
        ("service:checkout:v2", "service", "checkout:v2"),
        ("plain-name", "", "plain-name"),
    ],
)
def test_resource_attributes(resource: str, kind: str, name: str) -> None:
    assert resource_attributes(resource) == {"kind": kind, "name": name, "uri": resource}


def test_context_from_intent() -> None:
    saturday_1830 = 1_794_681_000_000  # 2026-11-14T18:30:00Z
    source = intent(
        issued_at_ms=saturday_1830,
        expires_at_ms=saturday_1830 + 1000,
        parameters={"amount": 10.5, "count": 3, "flag": True, "note": "x", "gone": None},
        context={"risk": 40.0, "other": "ignored"},
    )
    request = PolicyRequest.from_intent(source, ["payments-agent"])
    assert request.agent_id == "billing-agent"
    assert tuple(request.roles) == ("payments-agent",)
    assert request.context == {
        "environment": "prod",
        "runtime_id": "rt-1",
        "hour_utc": 18,
        "weekday": 6,
        "risk": 40,
        "parameters": {
            "amount": Decimal("10.5"),
            "count": Decimal(3),
            "flag": True,
            "note": "x",
        },
    }


@pytest.mark.parametrize(
    ("ms", "weekday", "hour"),
    [(0, 4, 0), (NOW, 2, 12), (NOW + 5 * DAY + 3_600_000 * 11, 7, 23), (-1, 3, 23)],
)
def test_weekday_and_hour(ms: int, weekday: int, hour: int) -> None:
    context = req(at=ms).context
    assert (context["weekday"], context["hour_utc"]) == (weekday, hour)


def test_numbers_become_decimals(mini: PolicyEngine) -> None:
    for amount in (10, 10.5, 1e3, 0.0001, -7, 922_337_203_685_477):
        decision = mini.authorize(req(roles=("writer",), amount=amount))
        assert decision.allowed, (amount, decision)


@pytest.mark.parametrize(
    ("amount", "why"),
    [
        (0.12345, "more than 4 decimal places"),
        (0.1 + 0.2, "more than 4 decimal places"),
        (10**16, "outside Cedar's decimal range"),
        (float("inf"), "finite"),
    ],
)
def test_unrepresentable_numbers_deny_with_reason(
    mini: PolicyEngine, amount: Any, why: str
) -> None:
    decision = mini.authorize(req(roles=("writer",), amount=amount))
    assert not decision.allowed
    assert any(why in e for e in decision.errors), decision.errors


def test_wrong_context_type_denies_with_reason(mini: PolicyEngine) -> None:
    wrong = mini.authorize(req(roles=("writer",), note=42))  # a number where String is declared
    assert not wrong.allowed
    assert any("is not valid for" in e and "schema" in e for e in wrong.errors), wrong.errors
    risky = mini.authorize(req(roles=("writer",), risk="high"))
    assert not risky.allowed and risky.errors
    undeclared = mini.authorize(req(roles=("writer",), surprise="x"))
    assert any("`surprise` should not exist" in e for e in undeclared.errors)
    unknown_action = mini.authorize(req(roles=("writer",), action="delete"))
    assert any("does not exist in the supplied schema" in e for e in unknown_action.errors)


def test_odd_identifiers_are_data_not_syntax(mini: PolicyEngine) -> None:
    decision = mini.authorize(req('agent"\n::x', ('writer", "admin',), "write", 'doc:"1"\n'))
    assert decision == PolicyDecision(False, (), ())


# -- bundles -----------------------------------------------------------------------------


def test_directory_and_document_forms_agree() -> None:
    from_dir = PolicyBundle.from_directory(BUNDLE_DIR)
    doc = from_dir.to_document()
    assert set(doc) == {"manifest", "policies", "schema"}
    again = PolicyBundle.from_document(json.loads(json.dumps(doc)))
    assert again == from_dir and again.digest == from_dir.digest
    expected = "sha256:" + hashlib.sha256(canonical_json(doc)).hexdigest()
    assert from_dir.digest == expected


def test_json_schema_bundle(tmp_path: Path) -> None:
    schema = {
        "": {
            "entityTypes": {
                "Role": {},
                "Agent": {"memberOfTypes": ["Role"]},
                "Resource": {
                    "shape": {
                        "type": "Record",
                        "attributes": {
                            n: {"type": "EntityOrCommon", "name": "String"}
                            for n in ("kind", "name", "uri")
                        },
                    }
                },
            },
            "actions": {
                "read": {
                    "appliesTo": {
                        "principalTypes": ["Agent"],
                        "resourceTypes": ["Resource"],
                        "context": {
                            "type": "Record",
                            "attributes": {
                                "environment": {"type": "EntityOrCommon", "name": "String"},
                                "runtime_id": {"type": "EntityOrCommon", "name": "String"},
                                "hour_utc": {"type": "EntityOrCommon", "name": "Long"},
                                "weekday": {"type": "EntityOrCommon", "name": "Long"},
                                "risk": {"type": "Long", "required": False},
                                "parameters": {"type": "Record", "attributes": {}},
                            },
                        },
                    }
                }
            },
        }
    }
    (tmp_path / "policies.cedar").write_text(
        '@id("prod-reads")\npermit (principal, action == Action::"read", resource)\n'
        'when { context.environment == "prod" };\n'
    )
    (tmp_path / "schema.cedarschema.json").write_text(json.dumps(schema))
    (tmp_path / "manifest.json").write_text(
        json.dumps(mini_bundle().manifest.to_mapping() | {"version": "json-1"})
    )
    bundle = PolicyBundle.from_directory(tmp_path)
    assert isinstance(bundle.schema, dict)
    engine = compile_bundle(bundle, NOW)
    assert engine.authorize(req(action="read")).determining_policies == ("prod-reads",)
    assert not engine.authorize(req(action="read", environment="dev")).allowed
    as_text = PolicyBundle.from_document({**bundle.to_document(), "schema": json.dumps(schema)})
    assert compile_bundle(as_text, NOW).policy_count == 1


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda d: d.pop("schema"), "missing schema"),
        (lambda d: d.update(extra=1), "unknown keys extra"),
        (lambda d: d.update(policies=["permit"]), "must be Cedar policy text"),
        (lambda d: d.update(schema=3), "Cedar schema text or a JSON schema object"),
        (lambda d: d.update(manifest="v1"), "manifest must be a JSON object"),
        (lambda d: d["manifest"].pop("description"), "missing description"),
        (lambda d: d["manifest"].update(version=""), "version must be a non-empty string"),
        (lambda d: d["manifest"].update(created_at_ms=True), "created_at_ms must be an integer"),
        (lambda d: d["manifest"].update(expires_at_ms="2030"), "expires_at_ms must be an integer"),
        (lambda d: d["manifest"].update(expires_at_ms=NOW - 2 * DAY), "must be after"),
        (lambda d: d["manifest"].update(expires_at_ms=2**60), "out of range"),
    ],
)
def test_malformed_documents_are_refused(mutate: Any, why: str) -> None:
    doc = json.loads(json.dumps(mini_bundle().to_document()))
    mutate(doc)
    with pytest.raises(PolicyBundleError, match=why):
        PolicyBundle.from_document(doc)


def test_directory_problems(tmp_path: Path) -> None:
    with pytest.raises(PolicyBundleError, match="is not a directory"):
        PolicyBundle.from_directory(tmp_path / "nope")
    shutil.copytree(BUNDLE_DIR, tmp_path / "b")
    (tmp_path / "b" / "schema.cedarschema.json").write_text("{}")
    with pytest.raises(PolicyBundleError, match="keep exactly one"):
        PolicyBundle.from_directory(tmp_path / "b")
    (tmp_path / "b" / "schema.cedarschema.json").unlink()
    (tmp_path / "b" / "manifest.json").write_text("{not json")
    with pytest.raises(PolicyBundleError, match="not valid JSON"):
        PolicyBundle.from_directory(tmp_path / "b")
    (tmp_path / "b" / "manifest.json").unlink()
    with pytest.raises(PolicyBundleError, match="manifest.json does not exist"):
        PolicyBundle.from_directory(tmp_path / "b")


@pytest.mark.parametrize(
    ("bundle", "why"),
    [
        (mini_bundle(expires=NOW), "policy bundle 1 expired at"),
        (mini_bundle("permit (principal, action resource);"), "unexpected token `resource`"),
        (mini_bundle(MINI_POLICIES + "permit (principal, action, resource);"), "no @id"),
        (
            mini_bundle(MINI_POLICIES + '@id("no-secrets") permit (principal, action, resource);'),
            "repeated: no-secrets",
        ),
        (
            mini_bundle('@id("t") permit (principal == ?principal, action, resource);'),
            "templates",
        ),
        (
            mini_bundle('@id("x") permit (principal, action, resource) when { context.nope };'),
            r"\[x\] attribute `nope` in context",
        ),
        (
            mini_bundle(
                '@id("x") permit (principal, action, resource) when { resource.size > 1 };'
            ),
            "do not validate against the schema",
        ),
        (mini_bundle(schema="entity Agent; entity Oops = {"), "the schema does not parse"),
        (mini_bundle(schema=MINI_SCHEMA.replace(" in [Role]", "")), "entity model"),
        (mini_bundle(schema=MINI_SCHEMA.replace("uri: String", "url: String")), "entity model"),
    ],
)
def test_invalid_bundles_are_refused(bundle: PolicyBundle, why: str) -> None:
    with pytest.raises(PolicyBundleError, match=why):
        compile_bundle(bundle, NOW)


def test_parse_error_names_the_line() -> None:
    text = (
        MINI_POLICIES
        + '\n// a comment; with a semicolon\n@id("b")\npermit (principal, action resource);\n'
    )
    with pytest.raises(PolicyBundleError) as caught:
        compile_bundle(mini_bundle(text), NOW)
    line = text.splitlines().index('@id("b")') + 1
    assert f"starting at line {line}" in caught.value.reason


def test_size_limits_are_refused_with_reason() -> None:
    many = "\n".join(
        f'@id("p{i}") permit (principal == Agent::"a{i}", action, resource);' for i in range(50)
    )
    with pytest.raises(PolicyBundleError, match="has 50 policies; the limit is 20"):
        compile_bundle(mini_bundle(many), NOW, max_policies=20)
    with pytest.raises(PolicyBundleError, match="the limit is 1000"):
        compile_bundle(mini_bundle(many), NOW, max_bytes=1000)


def test_ten_thousand_policies_load_and_decide_quickly() -> None:
    grants = "\n".join(
        f'@id("grant.{i}")\npermit (principal == Agent::"agent-{i}", action == Action::"write", '
        f'resource) when {{ resource.name like "T{i}-*" }};'
        for i in range(10_000)
    )
    started = time.perf_counter()
    engine = compile_bundle(mini_bundle(MINI_POLICIES + grants), NOW)
    took = time.perf_counter() - started
    assert engine.policy_count == 10_002
    assert took < 20, f"compiling 10,000 policies took {took:.1f} s"
    assert engine.authorize(req("agent-9876", (), "write", "doc:T9876-a")).determining_policies == (
        "grant.9876",
    )
    assert not engine.authorize(req("agent-9876", (), "write", "doc:T1-a")).allowed
    assert engine.authorize(req("agent-5", (), "write", "secret:T5-x")).determining_policies == (
        "no-secrets",
    )
    started = time.perf_counter()
    for i in range(200):
        engine.authorize(req(f"agent-{i}", (), "write", f"doc:T{i}-{i}"))
    per_decision_ms = (time.perf_counter() - started) / 200 * 1000
    assert per_decision_ms < 5, f"{per_decision_ms:.2f} ms per decision with 10,000 policies"


# -- slicing is the same decision -----------------------------------------------------


def test_sliced_decisions_equal_whole_set_decisions(example: PolicyEngine) -> None:
    whole = compile_bundle(example.bundle, NOW, slicing=False, decision_cache=0)
    rnd = random.Random(20261110)
    agents = ["billing-agent", "support-bot", "deploy-bot", "analytics-agent", "x-1"]
    roles = ["payments-agent", "treasury", "support", "deployer", "analyst", "readonly", "dba"]
    actions = [
        "payments.transfer", "invoices.read", "email.send", "tickets.read", "tickets.reply",
        "deploy.staging", "deploy.production", "warehouse.query", "warehouse.export",
        "reports.generate", "db.query", "db.drop", "unknown.action",
    ]  # fmt: skip
    resources = [
        "acct:ACME-1", "acct:test-1", "service:checkout", "s3://acme-exports/a",
        "s3://elsewhere/a", "mailto:a@example.com", "db:production", "table:t", "ticket:1",
    ]  # fmt: skip
    for _ in range(1500):
        action = rnd.choice(actions)
        parameters: dict[str, Any] = {}
        if action == "payments.transfer":
            parameters = {
                "amount": rnd.choice([5, 9_999.99, 10_000.01, 40_000, 60_000, -1]),
                "currency": rnd.choice(["EUR", "USD", None]),
            }
        request = req(
            rnd.choice(agents),
            tuple(rnd.sample(roles, rnd.randint(0, 2))),
            action,
            rnd.choice(resources),
            at=NOW + rnd.randint(0, 7 * DAY),
            environment=rnd.choice(["prod", "staging"]),
            runtime_id=rnd.choice(["ci-1", "laptop"]),
            risk=rnd.choice([None, 10, 90]),
            **parameters,
        )
        assert example.authorize(request) == whole.authorize(request), request


def test_decisions_are_cached_per_engine(mini: PolicyEngine) -> None:
    request = req("cache-1", ("writer",))
    first = mini.authorize(request)
    assert mini.authorize(request) is first
    assert "hits=" in mini.cache_info()


# -- the store ---------------------------------------------------------------------------


def test_store_refuses_bad_bundles_and_keeps_the_previous_one() -> None:
    store = PolicyStore()
    assert store.active is None
    good = mini_bundle()
    assert store.offer(good.to_document(), NOW) is None
    assert store.active is not None and store.active.digest == good.digest

    expired = mini_bundle(version="2", created=NOW - DAY // 2, expires=NOW - 1000)
    refusal = store.offer(expired.to_document(), NOW)
    assert refusal is not None and "policy bundle 2 expired at" in refusal
    broken = mini_bundle("permit (principal, action resource);", version="3")
    refusal = store.offer(broken.to_document(), NOW)
    assert refusal is not None and "unexpected token" in refusal
    invalid = mini_bundle('@id("x") permit (principal, action, resource) when { context.x };')
    assert "do not validate" in (store.offer(invalid.to_document(), NOW) or "")
    assert "must be a JSON object" in (store.offer([1, 2], NOW) or "")  # type: ignore[arg-type]
    assert store.last_refusal is not None
    assert store.active.digest == good.digest


def test_store_is_a_control_policy_sink() -> None:
    from processors.control import ControlContext

    store = PolicyStore()
    ctx = ControlContext("c-1", "policy.publish", "policy", "ops", NOW, "k-1", NOW)
    assert store.control_sink(mini_bundle().to_document(), ctx) is None
    assert store.active is not None and store.active.version == "1"
    assert "unexpected end of input" in (
        store.control_sink(mini_bundle("permit (").to_document(), ctx) or ""
    )


def test_store_applies_its_limits() -> None:
    store = PolicyStore(max_policies=1, decision_cache=0)
    refusal = store.offer(mini_bundle(), NOW)
    assert refusal is not None and "has 2 policies; the limit is 1" in refusal
    assert store.active is None


def test_store_same_bundle_is_a_no_op_and_older_is_refused() -> None:
    store = PolicyStore()
    assert store.offer(mini_bundle(version="5", created=NOW - DAY), NOW) is None
    engine = store.active
    assert store.offer(mini_bundle(version="5", created=NOW - DAY).to_document(), NOW) is None
    assert store.active is engine
    refusal = store.offer(mini_bundle(version="4", created=NOW - 2 * DAY), NOW)
    assert refusal is not None and "older than the active 5" in refusal
    assert store.active is engine


# -- the layer ---------------------------------------------------------------------------


def test_no_bundle_denies() -> None:
    verdict = check_with(PolicyStore()).evaluate(intent(), GateState(now_ms=NOW))
    assert verdict.layer == LAYER == "policy"
    assert verdict.status is Status.DENY
    assert verdict.reasons == ("no valid policy bundle loaded",)
    store = PolicyStore()
    store.offer(mini_bundle("nonsense"), NOW)
    verdict = check_with(store).evaluate(intent(), GateState(now_ms=NOW))
    assert verdict.status is Status.DENY and "last one offered was refused" in verdict.reasons[0]


def test_allow_with_evidence(example: PolicyEngine) -> None:
    store = PolicyStore()
    assert store.offer(example.bundle, NOW) is None
    verdict = check_with(store).evaluate(
        intent(parameters={"amount": 1250.0, "currency": "EUR"}), GateState(now_ms=NOW)
    )
    assert verdict.status is Status.ALLOW, verdict
    assert verdict.evidence == {
        "bundle_digest": example.digest,
        "bundle_version": "2026.11.1",
        "determining_policies": "estate.billing-agent,payments.payments-agent",
    }
    assert "allowed by estate.billing-agent, payments.payments-agent" in verdict.reasons[0]


def test_forbid_names_the_policy_and_its_reason(example: PolicyEngine) -> None:
    store = PolicyStore()
    store.offer(example.bundle, NOW)
    verdict = check_with(store).evaluate(
        intent(parameters={"amount": 60_000.0, "currency": "EUR"}), GateState(now_ms=NOW)
    )
    assert verdict.status is Status.DENY
    assert verdict.reasons == (
        "forbidden by payments.limit-10k: transfers above 10,000.00 need the treasury role",
        "forbidden by payments.limit-50k: transfers above 50,000.00 are never automated",
    )
    assert verdict.evidence["bundle_digest"] == example.digest
    assert verdict.evidence["determining_policies"] == "payments.limit-10k,payments.limit-50k"


def test_default_deny_and_request_errors_explain(example: PolicyEngine) -> None:
    store = PolicyStore()
    store.offer(example.bundle, NOW)
    check = check_with(store)
    verdict = check.evaluate(
        intent(agent_id="audit-bot", action="email.send", resource="mailto:x@y.z", parameters={}),
        GateState(now_ms=NOW),
    )
    assert verdict.status is Status.DENY
    assert verdict.reasons == (
        "forbidden by readonly.nothing-else: read-only agents may not take actions that "
        "change anything",
    )
    verdict = check.evaluate(
        intent(agent_id="shadow", action="tickets.read", resource="ticket:1", parameters={}),
        GateState(now_ms=NOW),
    )
    assert verdict.reasons == (
        "no policy permits agent 'shadow' (roles: none) to take 'tickets.read' on 'ticket:1' "
        "(default deny)",
    )
    verdict = check.evaluate(
        intent(parameters={"amount": "lots", "currency": 978.0}), GateState(now_ms=NOW)
    )
    assert verdict.status is Status.DENY
    assert verdict.reasons[0].startswith("policy request refused: ")
    assert verdict.evidence["determining_policies"] == ""


def test_expired_active_bundle_denies() -> None:
    store = PolicyStore()
    store.offer(mini_bundle(version="short", expires=NOW + 1000), NOW)
    verdict = check_with(store).evaluate(intent(), GateState(now_ms=NOW + 1000))
    assert verdict.status is Status.DENY
    assert verdict.reasons == (f"policy bundle short expired at {iso_ms(NOW + 1000)}",)


def test_hot_reload_uses_the_new_bundle(example: PolicyEngine) -> None:
    store = PolicyStore()
    store.offer(example.bundle, NOW)
    check = check_with(store)
    payment = intent(parameters={"amount": 1250.0, "currency": "EUR"})
    before = check.evaluate(payment, GateState(now_ms=NOW))
    assert before.status is Status.ALLOW
    assert before.evidence["bundle_digest"] == example.digest

    stricter_text = example.bundle.policies + (
        '\n@id("payments.freeze")\n@reason("payments are frozen for the audit")\n'
        'forbid (principal, action == Action::"payments.transfer", resource);\n'
    )
    stricter = PolicyBundle(
        dataclasses.replace(example.bundle.manifest, version="2026.11.2", created_at_ms=NOW),
        stricter_text,
        example.bundle.schema,
    )
    assert store.offer(stricter.to_document(), NOW) is None
    after = check.evaluate(payment, GateState(now_ms=NOW))
    assert after.status is Status.DENY
    assert after.reasons == ("forbidden by payments.freeze: payments are frozen for the audit",)
    assert after.evidence["bundle_digest"] == stricter.digest != example.digest
    assert after.evidence["bundle_version"] == "2026.11.2"


def test_failures_become_error_verdicts(
    example: PolicyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PolicyStore()
    store.offer(example.bundle, NOW)

    def no_registry(agent: str) -> list[str]:
        raise LookupError("registry unavailable")

    verdict = PolicyCheck(store, no_registry).evaluate(intent(), GateState(now_ms=NOW))
    assert verdict.status is Status.ERROR
    assert "could not look up the roles of agent 'billing-agent'" in verdict.reasons[0]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cedar exploded")

    monkeypatch.setattr(cedarpy, "is_authorized", broken)
    verdict = check_with(store).evaluate(
        intent(parameters={"amount": 3.0, "currency": "EUR"}), GateState(now_ms=NOW)
    )
    assert verdict.status is Status.ERROR
    assert verdict.reasons == ("Cedar failed: RuntimeError: cedar exploded",)
    assert verdict.evidence["bundle_digest"] == example.digest


# -- test tables ---------------------------------------------------------------------------


def test_case_tables_are_checked() -> None:
    defaults = {"at": "2026-11-10T12:00:00Z"}
    with pytest.raises(PolicyCaseError, match="unknown fields: expected"):
        cases_from_document({"cases": [{"agent": "a", "expected": "allow"}]})
    with pytest.raises(PolicyCaseError, match="expect must be 'allow' or 'deny'"):
        cases_from_document(
            {"defaults": defaults, "cases": [{"agent": "a", "action": "b", "resource": "c",
                                              "expect": "yes"}]}
        )  # fmt: skip
    with pytest.raises(PolicyCaseError, match="needs a time zone"):
        cases_from_document(
            [{"agent": "a", "action": "b", "resource": "c", "expect": "deny",
              "at": "2026-11-10T12:00:00"}]
        )  # fmt: skip
    with pytest.raises(PolicyCaseError, match="expected"):
        cases_from_document({"tests": []})
    [case] = cases_from_document(
        {"defaults": defaults, "cases": [{"agent": "a", "action": "b", "resource": "c",
                                          "expect": "deny", "issued_at_ms": 5}]}
    )  # fmt: skip
    assert case.request.context["hour_utc"] == 0


def test_failing_cases_say_why(mini: PolicyEngine) -> None:
    cases = cases_from_document(
        [
            {"name": "wrong outcome", "agent": "a", "roles": ["writer"], "action": "write",
             "resource": "doc:1", "at": "2026-11-10T12:00:00Z", "expect": "deny"},
            {"name": "wrong policy", "agent": "a", "roles": ["writer"], "action": "write",
             "resource": "secret:1", "at": "2026-11-10T12:00:00Z", "expect": "deny",
             "determining": ["writers.write"]},
            {"name": "missing error", "agent": "a", "action": "write", "resource": "doc:1",
             "at": "2026-11-10T12:00:00Z", "expect": "deny", "error": "boom"},
        ]
    )  # fmt: skip
    problems = [r.problems for r in run_cases(mini, cases)]
    assert problems == [
        ("expected deny, got allow",),
        ("expected determining [writers.write], got [no-secrets]",),
        ("expected an error containing 'boom'",),
    ]


# -- @response("review"): a permit whose allows are held for a person -----------------

REVIEW_POLICIES = """
@id("writers.write")
@reason("writers write")
permit (principal in Role::"writer", action, resource);

@id("no-secrets")
@reason("secrets are never written")
forbid (principal, action == Action::"write", resource)
when { resource.kind == "secret" };

@id("large-writes")
@reason("large writes are held for a person")
@response("review")
permit (principal in Role::"writer", action == Action::"write", resource)
when { context.parameters has amount && context.parameters.amount.greaterThan(decimal("100.0")) };
"""


def _review_check(roles: tuple[str, ...] = ("writer",)) -> PolicyCheck:
    store = PolicyStore()
    assert store.offer(mini_bundle(REVIEW_POLICIES), NOW) is None
    return PolicyCheck(store, lambda agent: list(roles))


def test_a_review_permit_holds_what_it_allows_for_a_person() -> None:
    verdict = _review_check().evaluate(
        intent(action="write", resource="doc:1", parameters={"amount": 500.0}),
        GateState(now_ms=NOW),
    )
    assert verdict.status is Status.REVIEW, verdict
    assert verdict.reasons == (
        "held for review by large-writes: large writes are held for a person",
    )


def test_a_review_permit_never_loosens_a_forbid_or_a_default_deny() -> None:
    forbidden = _review_check().evaluate(
        intent(action="write", resource="secret:1", parameters={"amount": 500.0}),
        GateState(now_ms=NOW),
    )
    assert forbidden.status is Status.DENY
    assert any("forbidden by no-secrets" in r for r in forbidden.reasons)
    nobody = _review_check(roles=()).evaluate(
        intent(action="write", resource="doc:1", parameters={"amount": 500.0}),
        GateState(now_ms=NOW),
    )
    assert nobody.status is Status.DENY


def test_below_the_review_condition_the_plain_permit_allows() -> None:
    verdict = _review_check().evaluate(
        intent(action="write", resource="doc:1", parameters={"amount": 50.0}),
        GateState(now_ms=NOW),
    )
    assert verdict.status is Status.ALLOW


@pytest.mark.parametrize(
    "policy",
    [
        '@id("f")\n@response("review")\nforbid (principal, action, resource);',
        '@id("p")\n@response("maybe")\npermit (principal, action, resource);',
    ],
)
def test_response_must_be_review_on_a_permit(policy: str) -> None:
    with pytest.raises(PolicyBundleError, match="@response"):
        compile_bundle(mini_bundle(MINI_POLICIES + policy), NOW)


def test_the_example_bundle_holds_refunds_for_review(example: PolicyEngine) -> None:
    store = PolicyStore()
    assert store.offer(example.bundle, NOW) is None
    verdict = check_with(store).evaluate(
        intent(action="refunds.issue", resource="acct:ACME-42", parameters={"amount": 12.0}),
        GateState(now_ms=NOW),
    )
    assert verdict.status is Status.REVIEW
    assert "payments.refunds" in verdict.reasons[0]
