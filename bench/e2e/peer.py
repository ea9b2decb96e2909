"""CPU cost per governed action of the peer product, measured in this process.

The peer is Microsoft's Agent Governance Toolkit 5.0 (PyPI ``agent-governance-toolkit-core``,
import packages ``agent_os``, ``agentmesh`` and ``hypervisor``). It is a library handed
Python dicts, not a service, so both paths below are in-process calls with no transport.
Everything is built before timing (identities and keys, trust scores, rule sets, ring
descriptors, the actions and their signatures, fresh audit logs); each round times one
loop over ``count`` prepared actions with :func:`time.process_time_ns`, and the loop body
is the governance call only. Rounds of the two paths are interleaved (their order
alternates) after an untimed warm-up; the figure is the median over rounds of CPU µs per
action.

**Full stack** (:func:`peer_paths` ``full_stack_us``). The toolkit has no single entry
point that does policy rules, trust, rings and audit together: ``agentmesh.governance.govern``
(``GovernedCallable``) does policy + ring + audit but no trust, and
``agentmesh.AgentMeshClient.execute_with_governance`` does policy + audit + a trust score
update but no ring. Its own "full-stack governance (policy + trust + ring check + Merkle
audit)" benchmark (docs/benchmarks, issue #720, ``benchmarks/governance_overhead.py``)
composes the public components instead, and so does this driver, per action:

1. trust: the agent's ``agentmesh.reward.scoring.TrustScore`` (0-1000, set up per agent) is
   read and checked by ``agentmesh.governance.policy_evaluator.PolicyEvaluator.evaluate``
   over a ``TrustPolicy`` (deny below 300, deny delegation depth > 2, allow from 700,
   defaults: minimum 500, depth 3, allowed namespaces);
2. ring: ``hypervisor.rings.enforcer.RingEnforcer.compute_ring`` (score / 1000, with the
   agent's consensus flag) then ``RingEnforcer.check`` against the tool's
   ``hypervisor.models.ActionDescriptor`` (reversibility, read-only, admin);
3. policy rules: ``agent_os.policies.evaluator.PolicyEvaluator.evaluate`` over a
   ``PolicyDocument`` of six rules on the tool, the amount and the destination (sanctioned
   destinations, amount limit, destructive tools, shell, an audit-flag on large amounts, a
   tool allowlist; default deny) -- the engine the toolkit's docs call "the core
   enforcement path every agent action passes through";
4. audit: one ``agentmesh.governance.audit.AuditLog.log`` entry per action, allowed or
   not: a pydantic ``AuditEntry`` SHA-256 hash-chained to the previous one and added to
   the log's ``MerkleAuditChain`` (incremental Merkle root), plus its indexes.

With ``short_circuit=True`` (the default, like trustplane's gate and the toolkit's
``govern()``) the first denying stage ends the evaluation and the audit entry records it;
with ``False`` every stage runs for every action, as in the toolkit's own full-stack
benchmark. The agent's trust score is read, not updated per action (AgentMeshClient's
``TrustScore.update`` is left out).

**Signed** (``signed_us``): the same, preceded by the identity check of the request and with
an HMAC-signed audit trail:

0. ``agentmesh.identity.agent_id.IdentityRegistry.get`` (the agent's ``AgentIdentity``),
   ``AgentIdentity.is_active`` and ``AgentIdentity.verify_signature`` -- Ed25519 with the
   ``cryptography`` package (OpenSSL), as the toolkit does it: it decodes the base64
   public key and signature on every call -- over the request's bytes (canonical JSON of
   agent, tool, parameters, request id and issue time, signed by the agent's
   ``AgentIdentity.sign`` when the workload is built; serializing or parsing the request
   is not timed, since the peer has no wire format);
5. the ``AuditLog`` has an ``AuditSink``: each entry also becomes an
   ``agentmesh.governance.audit_backends.SignedAuditEntry`` (``from_entry``: SHA-256 of
   the canonical payload, chained to the previous signed entry, HMAC-SHA256 with a 32-byte
   key). ``signed_audit="memory"`` (default) does exactly what ``FileAuditSink.write``
   does -- sign, chain, serialize the JSON line -- into memory instead of appending to a
   file; ``"file"`` uses the toolkit's ``FileAuditSink`` itself (one open/append/close
   per entry, in a temporary folder). After timing, each round's HMAC chain is checked
   with the toolkit's ``HashChainVerifier.verify_file`` and each Merkle chain with
   ``AuditLog.verify_integrity``.

**What the peer does not do on these paths that trustplane's gate does**: no transport (no
Kafka consume/produce, no transactions, no Avro decode/encode); no freshness (expiry, clock
skew) or replay check of the request (the toolkit has replay protection elsewhere -- nonces
for HMAC-signed MCP envelopes, ``agent_os.MCPMessageSigner``, and timestamp windows in its
relay and trust server -- but none in these components); no sequence or runtime-integrity
(code/config digest) check; no kill switch (``hypervisor.KillSwitch`` exists but is not part
of the path); no anomaly detection or other stateful per-agent layer; no Ed25519 *signing*
of the decision (no signed approval or lineage record: the audit is hash-chained, plus HMAC
with a shared key on the signed path); no persistence of per-agent state. Its policy rules
are single-condition ``field op value`` tests (no Cedar, no entity hierarchy), all sorted by
priority on every call. A ``gc.collect()`` (untimed) precedes each timed round.
"""

from __future__ import annotations

import argparse
import base64
import gc
import importlib.metadata
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "PEER_PACKAGE",
    "PeerUnavailable",
    "peer_version",
    "peer_paths",
    "main",
]

PEER_PACKAGE = "agent-governance-toolkit-core"
PEER_NAME = "Microsoft Agent Governance Toolkit"
INSTALL_HINT = "pip install -e '.[bench]'"

SignedAudit = Literal["memory", "file"]


class PeerUnavailable(RuntimeError):
    """The peer package is not installed (or cannot be imported) in this environment."""


def peer_version() -> str | None:
    """The installed version of :data:`PEER_PACKAGE`, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(PEER_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------
# The peer's modules (imported lazily: this module must import without the peer)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Peer:
    """The peer's public classes used here (untyped: the peer is an optional dependency)."""

    PolicyEvaluator: Any
    PolicyDocument: Any
    PolicyRule: Any
    PolicyCondition: Any
    PolicyOperator: Any
    PolicyAction: Any
    PolicyDefaults: Any
    TrustPolicyEvaluator: Any
    TrustPolicy: Any
    TrustRule: Any
    TrustCondition: Any
    TrustDefaults: Any
    ConditionOperator: Any
    AuditLog: Any
    SignedAuditEntry: Any
    FileAuditSink: Any
    HashChainVerifier: Any
    AgentIdentity: Any
    IdentityRegistry: Any
    TrustScore: Any
    RingEnforcer: Any
    ActionDescriptor: Any
    ReversibilityLevel: Any


def _load_peer() -> _Peer:
    if peer_version() is None:
        raise PeerUnavailable(
            f"the peer package {PEER_PACKAGE!r} is not installed; install the bench extras: "
            f"{INSTALL_HINT}"
        )
    try:
        with warnings.catch_warnings():
            # Each of the toolkit's import packages warns that its *old* distribution name
            # is deprecated, even when installed from the consolidated package.
            warnings.simplefilter("ignore", DeprecationWarning)
            from agent_os.policies.evaluator import PolicyEvaluator
            from agent_os.policies.schema import (
                PolicyAction,
                PolicyCondition,
                PolicyDefaults,
                PolicyDocument,
                PolicyOperator,
                PolicyRule,
            )
            from agentmesh.governance.audit import AuditLog
            from agentmesh.governance.audit_backends import (
                FileAuditSink,
                HashChainVerifier,
                SignedAuditEntry,
            )
            from agentmesh.governance.policy_evaluator import (
                PolicyEvaluator as TrustPolicyEvaluator,
            )
            from agentmesh.governance.trust_policy import (
                ConditionOperator,
                TrustCondition,
                TrustDefaults,
                TrustPolicy,
                TrustRule,
            )
            from agentmesh.identity.agent_id import AgentIdentity, IdentityRegistry
            from agentmesh.reward.scoring import TrustScore
            from hypervisor.models import ActionDescriptor, ReversibilityLevel
            from hypervisor.rings.enforcer import RingEnforcer
    except ImportError as exc:
        raise PeerUnavailable(
            f"the peer package {PEER_PACKAGE!r} is installed but its API could not be "
            f"imported ({exc}); reinstall the bench extras: {INSTALL_HINT}"
        ) from exc
    return _Peer(
        PolicyEvaluator=PolicyEvaluator,
        PolicyDocument=PolicyDocument,
        PolicyRule=PolicyRule,
        PolicyCondition=PolicyCondition,
        PolicyOperator=PolicyOperator,
        PolicyAction=PolicyAction,
        PolicyDefaults=PolicyDefaults,
        TrustPolicyEvaluator=TrustPolicyEvaluator,
        TrustPolicy=TrustPolicy,
        TrustRule=TrustRule,
        TrustCondition=TrustCondition,
        TrustDefaults=TrustDefaults,
        ConditionOperator=ConditionOperator,
        AuditLog=AuditLog,
        SignedAuditEntry=SignedAuditEntry,
        FileAuditSink=FileAuditSink,
        HashChainVerifier=HashChainVerifier,
        AgentIdentity=AgentIdentity,
        IdentityRegistry=IdentityRegistry,
        TrustScore=TrustScore,
        RingEnforcer=RingEnforcer,
        ActionDescriptor=ActionDescriptor,
        ReversibilityLevel=ReversibilityLevel,
    )


# --------------------------------------------------------------------------------------
# The workload: agents, tools, actions
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AgentSpec:
    name: str
    namespace: str
    trust: int  # 0-1000, the peer's TrustScore scale
    consensus: bool  # the peer's ring 1 needs consensus on top of a score above 0.95
    delegation_depth: int
    weight: int


# Several agents of different standing: which stage denies them is the point.
AGENTS: tuple[_AgentSpec, ...] = (
    _AgentSpec("treasury-ops", "finance", 975, True, 0, 14),  # ring 1, trusted
    _AgentSpec("payments-bot", "finance", 880, False, 0, 24),  # ring 2, trusted
    _AgentSpec("billing-agent", "finance", 760, False, 1, 16),  # ring 2, trusted
    _AgentSpec("support-agent", "support", 690, False, 0, 20),  # ring 2, trust defaults
    _AgentSpec("research-agent", "research", 560, False, 0, 12),  # ring 3 (sandbox)
    _AgentSpec("delegated-helper", "finance", 820, False, 3, 7),  # delegation too deep
    _AgentSpec("legacy-bot", "finance", 240, False, 0, 5),  # untrusted
    _AgentSpec("contractor-bot", "vendor", 610, False, 0, 2),  # namespace not allowed
)


@dataclass(frozen=True)
class _ToolSpec:
    name: str
    reversibility: str  # the peer's ReversibilityLevel value: full, partial, none
    read_only: bool
    admin: bool
    weight: int


TOOLS: tuple[_ToolSpec, ...] = (
    _ToolSpec("payments.transfer", "partial", False, False, 30),  # ring 2
    _ToolSpec("payments.refund", "full", False, False, 10),  # ring 2
    _ToolSpec("wire.international", "none", False, False, 7),  # ring 1
    _ToolSpec("crm.read_customer", "full", True, False, 24),  # ring 3
    _ToolSpec("email.send", "partial", False, False, 14),  # ring 2
    _ToolSpec("files.upload", "full", False, False, 7),  # ring 2, not allowlisted
    _ToolSpec("db.drop_table", "none", False, True, 3),  # ring 0: never for agents
    _ToolSpec("shell.exec", "none", False, False, 5),  # ring 1
)

ALLOWED_TOOLS = (
    "payments.transfer",
    "payments.refund",
    "wire.international",
    "crm.read_customer",
    "email.send",
)
SANCTIONED = ("IR-BANK-MELLI-001", "KP-FTB-0042", "SY-CBS-7781", "RU-VTB-3310")
IBANS = (
    "DE89370400440532013000",
    "FR1420041010050500013M02606",
    "GB29NWBK60161331926819",
    "NL91ABNA0417164300",
    "ES9121000418450200051332",
    "IT60X0542811101000000123456",
    "CH9300762011623852957",
    "US-ACH-021000021-0012345678",
)
EMAILS = (
    "customer-4411@example.com",
    "ap@supplier.example",
    "legal@partner.example",
    "team@corp.example",
)
AMOUNT_LIMIT = 10_000
AUDIT_ABOVE = 5_000


@dataclass(frozen=True)
class _Action:
    agent: int  # index into the estate's agents
    tool: str
    context: dict[str, Any]  # what the policy rules see
    params: dict[str, Any]
    resource: str
    payload: bytes  # the signed request: canonical JSON
    signature: str  # base64 Ed25519, as AgentIdentity.sign returns it


def _params(rng: random.Random, tool: str) -> tuple[dict[str, Any], str]:
    """Realistic parameters for one call of ``tool`` and the resource it touches."""
    if tool in ("payments.transfer", "wire.international"):
        destination = rng.choice(SANCTIONED) if rng.random() < 0.06 else rng.choice(IBANS)
        # Mostly small, a long tail above the audit flag and the limit.
        amount = round(min(60_000.0, rng.lognormvariate(6.3, 1.5)), 2)
        currency = rng.choice(("EUR", "EUR", "USD", "GBP", "CHF"))
        reference = f"INV-{rng.randrange(10**6):06d}"
        return (
            {
                "amount": amount,
                "currency": currency,
                "destination": destination,
                "reference": reference,
            },
            destination,
        )
    if tool == "payments.refund":
        amount = round(rng.uniform(5, 800), 2)
        order = f"ORD-{rng.randrange(10**7):07d}"
        return {"amount": amount, "currency": "EUR", "order_id": order}, order
    if tool == "crm.read_customer":
        customer = f"CUST-{rng.randrange(10**6):06d}"
        fields = rng.sample(["name", "email", "tier", "balance", "address"], 3)
        return {"customer_id": customer, "fields": fields}, customer
    if tool == "email.send":
        to = rng.choice(EMAILS)
        return (
            {"destination": to, "subject": f"Your case #{rng.randrange(10**5)}", "attachments": 0},
            to,
        )
    if tool == "files.upload":
        path = f"/exports/report-{rng.randrange(1000)}.csv"
        return {"path": path, "bytes": rng.randrange(1_000, 5_000_000)}, path
    if tool == "db.drop_table":
        table = rng.choice(("customers", "ledger", "sessions"))
        return {"table": table}, table
    command = rng.choice(("ls -la /srv", "curl https://example.com", "python3 job.py"))
    return {"command": command}, "shell"


@dataclass
class _Estate:
    """The peer set up once: identities, trust scores, rules, rings."""

    peer: _Peer
    identities: list[Any]  # AgentIdentity, with private keys
    dids: list[str]
    registry: Any  # IdentityRegistry
    trust_scores: dict[str, Any]  # did -> TrustScore
    specs: dict[str, _AgentSpec]  # did -> spec
    policy: Any  # agent_os PolicyEvaluator
    trust_policy: Any  # agentmesh trust PolicyEvaluator
    enforcer: Any  # RingEnforcer
    descriptors: dict[str, Any]  # tool -> ActionDescriptor


def _build_estate(peer: _Peer) -> _Estate:
    identities = [
        peer.AgentIdentity.create(
            name=a.name,
            sponsor=f"owner-{a.name}@corp.example",
            capabilities=[f"{a.namespace}:*"],
            organization="corp",
        )
        for a in AGENTS
    ]
    dids = [str(i.did) for i in identities]
    registry = peer.IdentityRegistry()
    for identity in identities:
        registry.register(identity)
    trust_scores = {
        did: peer.TrustScore(agent_did=did, total_score=a.trust)
        for did, a in zip(dids, AGENTS, strict=True)
    }

    op, act = peer.PolicyOperator, peer.PolicyAction
    rules = [
        (100, "sanctioned-destination", "destination", op.IN, list(SANCTIONED), act.DENY),
        (90, "amount-over-limit", "amount", op.GT, AMOUNT_LIMIT, act.DENY),
        (80, "no-destructive-db", "tool_name", op.EQ, "db.drop_table", act.DENY),
        (70, "no-shell", "tool_name", op.MATCHES, r"^shell\.", act.DENY),
        (60, "flag-large-amount", "amount", op.GT, AUDIT_ABOVE, act.AUDIT),
        (10, "allowlisted-tools", "tool_name", op.IN, list(ALLOWED_TOOLS), act.ALLOW),
    ]
    document = peer.PolicyDocument(
        version="1.0",
        name="payments-and-tools",
        rules=[
            peer.PolicyRule(
                name=name,
                condition=peer.PolicyCondition(field=fld, operator=oper, value=value),
                action=action,
                priority=priority,
                message=name,
            )
            for priority, name, fld, oper, value, action in rules
        ],
        defaults=peer.PolicyDefaults(action=act.DENY),
    )
    cop = peer.ConditionOperator
    trust_document = peer.TrustPolicy(
        name="agent-trust",
        rules=[
            peer.TrustRule(
                name="untrusted",
                condition=peer.TrustCondition(field="trust_score", operator=cop.lt, value=300),
                action="deny",
                priority=10,
            ),
            peer.TrustRule(
                name="delegation-too-deep",
                condition=peer.TrustCondition(field="delegation_depth", operator=cop.gt, value=2),
                action="deny",
                priority=20,
            ),
            peer.TrustRule(
                name="trusted",
                condition=peer.TrustCondition(field="trust_score", operator=cop.gte, value=700),
                action="allow",
                priority=30,
            ),
        ],
        defaults=peer.TrustDefaults(
            min_trust_score=500,
            max_delegation_depth=3,
            allowed_namespaces=["finance", "support", "research"],
        ),
    )
    descriptors = {
        t.name: peer.ActionDescriptor(
            action_id=t.name.replace(".", "-"),
            name=t.name,
            execute_api="/tools/" + t.name.replace(".", "/"),
            reversibility=peer.ReversibilityLevel(t.reversibility),
            is_read_only=t.read_only,
            is_admin=t.admin,
        )
        for t in TOOLS
    }
    return _Estate(
        peer=peer,
        identities=identities,
        dids=dids,
        registry=registry,
        trust_scores=trust_scores,
        specs=dict(zip(dids, AGENTS, strict=True)),
        policy=peer.PolicyEvaluator(policies=[document]),
        trust_policy=peer.TrustPolicyEvaluator(policies=[trust_document]),
        enforcer=peer.RingEnforcer(),
        descriptors=descriptors,
    )


def _build_actions(estate: _Estate, count: int, seed: int) -> list[_Action]:
    rng = random.Random(seed)
    agent_weights = [a.weight for a in AGENTS]
    tool_weights = [t.weight for t in TOOLS]
    issued = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
    actions: list[_Action] = []
    for n in range(count):
        agent = rng.choices(range(len(AGENTS)), agent_weights)[0]
        tool = rng.choices(TOOLS, tool_weights)[0].name
        params, resource = _params(rng, tool)
        did = estate.dids[agent]
        request = {
            "agent": did,
            "tool": tool,
            "params": params,
            "request_id": f"req-{seed}-{n:07d}",
            "issued_at": issued.isoformat(),
        }
        payload = json.dumps(request, sort_keys=True, separators=(",", ":")).encode()
        actions.append(
            _Action(
                agent=agent,
                tool=tool,
                context={"agent_id": did, "tool_name": tool, **params},
                params=params,
                resource=resource,
                payload=payload,
                signature=estate.identities[agent].sign(payload),
            )
        )
    return actions


# --------------------------------------------------------------------------------------
# The governed call
# --------------------------------------------------------------------------------------


class _MemoryHmacSink:
    """The peer's ``AuditSink`` protocol with ``FileAuditSink.write``'s work -- a
    ``SignedAuditEntry`` (content hash, chain link, HMAC-SHA256) serialized as a JSON
    line -- kept in memory instead of appended to a file."""

    def __init__(self, peer: _Peer, secret_key: bytes) -> None:
        self._signed_entry = peer.SignedAuditEntry
        self._verifier = peer.HashChainVerifier
        self._key = secret_key
        self._lock = threading.Lock()
        self._previous_hash = ""
        self.lines: list[str] = []

    def write(self, entry: Any) -> None:
        with self._lock:
            signed = self._signed_entry.from_entry(
                entry, previous_hash=self._previous_hash, secret_key=self._key
            )
            self.lines.append(json.dumps(signed.to_dict(), sort_keys=True, default=str))
            self._previous_hash = signed.content_hash

    def write_batch(self, entries: list[Any]) -> None:
        for entry in entries:
            self.write(entry)

    def verify_integrity(self) -> tuple[bool, str | None]:
        """Check the chain and every HMAC with the peer's ``HashChainVerifier``."""
        with tempfile.TemporaryDirectory(prefix="peer-audit-") as tmp:
            path = Path(tmp) / "audit.jsonl"
            path.write_text("".join(line + "\n" for line in self.lines), encoding="utf-8")
            ok, errors = self._verifier().verify_file(path, self._key)
        return bool(ok), "; ".join(errors) or None

    def close(self) -> None:
        pass


@dataclass
class _Tally:
    """What one round decided (filled by the governed call, read after timing)."""

    outcomes: dict[str, int] = field(default_factory=dict)
    verified: int = 0
    rejected_signatures: int = 0

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def _governor(
    estate: _Estate,
    audit: Any,
    tally: _Tally,
    *,
    signed: bool,
    short_circuit: bool,
) -> Callable[[_Action], bool]:
    """The governed call of one path: ``govern(action) -> allowed``."""
    dids = estate.dids
    specs = estate.specs
    scores = estate.trust_scores
    registry = estate.registry
    trust_policy = estate.trust_policy
    enforcer = estate.enforcer
    descriptors = estate.descriptors
    policy = estate.policy
    log = audit.log
    count = tally.count

    def govern(action: _Action) -> bool:
        did = dids[action.agent]
        denied = ""
        rule = ""
        if signed:
            identity = registry.get(did)
            if (
                identity is None
                or not identity.is_active()
                or not identity.verify_signature(action.payload, action.signature)
            ):
                denied = "signature"
                tally.rejected_signatures += 1
            else:
                tally.verified += 1
        ring_value = -1
        decision = "deny"
        if not (denied and short_circuit):
            spec = specs[did]
            score = scores[did].total_score
            trust = trust_policy.evaluate(
                {
                    "trust_score": score,
                    "delegation_depth": spec.delegation_depth,
                    "agent_namespace": spec.namespace,
                }
            )
            if not trust.allowed:
                denied = denied or "trust"
                rule = rule or (trust.rule_name or "trust-defaults")
            if not (denied and short_circuit):
                eff_score = score / 1000
                ring = enforcer.compute_ring(eff_score, has_consensus=spec.consensus)
                ring_value = ring.value
                check = enforcer.check(
                    ring, descriptors[action.tool], eff_score, has_consensus=spec.consensus
                )
                if not check.allowed:
                    denied = denied or "ring"
                    rule = rule or f"ring-{check.required_ring.value}"
                if not (denied and short_circuit):
                    verdict = policy.evaluate(action.context)
                    decision = verdict.action
                    if not verdict.allowed:
                        denied = denied or "policy"
                        rule = rule or (verdict.matched_rule or "policy-default")
                    elif not denied:
                        rule = verdict.matched_rule or "policy-default"
        log(
            "tool_blocked" if denied else "tool_invocation",
            did,
            action.tool,
            resource=action.resource,
            data={
                "params": action.params,
                "denied_by": denied,
                "rule": rule,
                "ring": ring_value,
            },
            outcome="denied" if denied else "success",
            policy_decision="deny" if denied else decision,
        )
        count(denied or "allowed")
        return not denied

    return govern


# --------------------------------------------------------------------------------------
# Rounds
# --------------------------------------------------------------------------------------


@dataclass
class _Round:
    cpu_us_per_action: float
    tally: _Tally
    entries: int
    chain_ok: bool
    chain_error: str | None
    hmac_entries: int | None = None
    hmac_ok: bool | None = None
    hmac_error: str | None = None


@contextmanager
def _audit_log(
    peer: _Peer, *, signed: bool, signed_audit: SignedAudit, key: bytes
) -> Iterator[tuple[Any, Any]]:
    """A fresh ``AuditLog`` (with the HMAC sink on the signed path) and its sink."""
    if not signed:
        yield peer.AuditLog(), None
        return
    if signed_audit == "memory":
        sink: Any = _MemoryHmacSink(peer, key)
        yield peer.AuditLog(sink=sink), sink
        return
    with tempfile.TemporaryDirectory(prefix="peer-audit-") as tmp:
        sink = peer.FileAuditSink(Path(tmp) / "audit.jsonl", key)
        try:
            yield peer.AuditLog(sink=sink), sink
        finally:
            sink.close()


def _run_round(
    estate: _Estate,
    actions: Sequence[_Action],
    *,
    signed: bool,
    short_circuit: bool,
    signed_audit: SignedAudit,
    key: bytes,
) -> _Round:
    peer = estate.peer
    with _audit_log(peer, signed=signed, signed_audit=signed_audit, key=key) as (audit, sink):
        tally = _Tally()
        govern = _governor(estate, audit, tally, signed=signed, short_circuit=short_circuit)
        gc.collect()  # every round starts from the same heap (the previous log is garbage)
        started = time.process_time_ns()
        for action in actions:
            govern(action)
        spent = time.process_time_ns() - started
        # Untimed: the chains the round left behind.
        entries = len(audit.query(limit=len(actions) + 1))
        chain_ok, chain_error = audit.verify_integrity()
        result = _Round(
            cpu_us_per_action=spent / 1000 / len(actions),
            tally=tally,
            entries=entries,
            chain_ok=bool(chain_ok),
            chain_error=chain_error,
        )
        if sink is not None:
            hmac_ok, hmac_error = sink.verify_integrity()
            result.hmac_ok = bool(hmac_ok)
            result.hmac_error = hmac_error
            if isinstance(sink, _MemoryHmacSink):
                result.hmac_entries = len(sink.lines)
            else:
                result.hmac_entries = len(sink.read_entries())
        return result


def _self_check(estate: _Estate, actions: Sequence[_Action]) -> dict[str, bool]:
    """Before timing: the peer's verify accepts the workload's signatures and rejects a
    tampered signature, a tampered request and another agent's key."""
    first = actions[0]
    identity = estate.registry.get(estate.dids[first.agent])
    raw = bytearray(base64.b64decode(first.signature))
    raw[7] ^= 0x01
    tampered_signature = base64.b64encode(bytes(raw)).decode()
    tampered_payload = first.payload.replace(b'"tool":"', b'"tool":"x', 1)
    other = estate.identities[(first.agent + 1) % len(estate.identities)]
    checks = {
        "genuine_accepted": all(
            estate.registry.get(estate.dids[a.agent]).verify_signature(a.payload, a.signature)
            for a in actions[:16]
        ),
        "tampered_signature_rejected": not identity.verify_signature(
            first.payload, tampered_signature
        ),
        "tampered_request_rejected": not identity.verify_signature(
            tampered_payload, first.signature
        ),
        "wrong_key_rejected": not other.verify_signature(first.payload, first.signature),
    }
    if not all(checks.values()):
        failed = ", ".join(k for k, ok in checks.items() if not ok)
        raise RuntimeError(f"the peer's Ed25519 verification failed its self-check: {failed}")
    return checks


def peer_paths(
    count: int = 2000,
    rounds: int = 5,
    *,
    short_circuit: bool = True,
    signed_audit: SignedAudit = "memory",
    seed: int = 7,
) -> dict[str, Any]:
    """CPU µs per governed action of the peer's full stack and signed paths.

    Each figure is the median over ``rounds`` of (CPU time of ``count`` governed actions)
    / ``count``; rounds of the two paths are interleaved, their order alternating. See
    the module docstring for what each path runs. Raises :class:`PeerUnavailable` when
    the peer is not installed.
    """
    if count < 1 or rounds < 1:
        raise ValueError("count and rounds must be >= 1")
    if signed_audit not in ("memory", "file"):
        raise ValueError(f"signed_audit must be 'memory' or 'file', not {signed_audit!r}")
    peer = _load_peer()
    estate = _build_estate(peer)
    actions = _build_actions(estate, count, seed)
    checks = _self_check(estate, actions)
    key = secrets.token_bytes(32)

    def run(signed: bool, batch: Sequence[_Action]) -> _Round:
        return _run_round(
            estate,
            batch,
            signed=signed,
            short_circuit=short_circuit,
            signed_audit=signed_audit,
            key=key,
        )

    # Untimed warm-up of both paths (first calls, caches, lazy imports in the peer).
    warm = actions[: min(len(actions), 200)]
    run(False, warm)
    run(True, warm)

    full: list[_Round] = []
    signed: list[_Round] = []
    for r in range(rounds):
        for is_signed in (False, True) if r % 2 == 0 else (True, False):
            (signed if is_signed else full).append(run(is_signed, actions))

    def audit_summary(results: list[_Round]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "entries_per_round": [x.entries for x in results],
            "chain_verified": all(x.chain_ok for x in results),
            "chain_errors": [x.chain_error for x in results if x.chain_error],
        }
        if results and results[0].hmac_entries is not None:
            out["hmac_entries_per_round"] = [x.hmac_entries for x in results]
            out["hmac_chain_verified"] = all(x.hmac_ok for x in results)
            out["hmac_errors"] = [x.hmac_error for x in results if x.hmac_error]
        return out

    return {
        "package": PEER_PACKAGE,
        "name": PEER_NAME,
        "version": peer_version(),
        "count": count,
        "full_stack_us": statistics.median(x.cpu_us_per_action for x in full),
        "signed_us": statistics.median(x.cpu_us_per_action for x in signed),
        "rounds": {
            "full_stack_us": [x.cpu_us_per_action for x in full],
            "signed_us": [x.cpu_us_per_action for x in signed],
        },
        "outcomes": {
            "full_stack": full[-1].tally.outcomes,
            "signed": signed[-1].tally.outcomes,
        },
        "signatures": {
            "verified_per_round": [x.tally.verified for x in signed],
            "rejected_per_round": [x.tally.rejected_signatures for x in signed],
            **checks,
        },
        "audit": {"full_stack": audit_summary(full), "signed": audit_summary(signed)},
        "settings": {
            "short_circuit": short_circuit,
            "signed_audit": signed_audit,
            "seed": seed,
            "agents": len(AGENTS),
            "tools": len(TOOLS),
            "timer": "time.process_time_ns",
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        "description": {
            "full_stack": (
                "per action: TrustScore read + agentmesh TrustPolicy PolicyEvaluator.evaluate; "
                "RingEnforcer.compute_ring + RingEnforcer.check(ActionDescriptor); agent_os "
                "PolicyEvaluator.evaluate (6 rules, default deny); AuditLog.log (SHA-256 "
                "hash-chained AuditEntry, incremental Merkle root)"
                + ("; first denying stage ends evaluation" if short_circuit else "")
            ),
            "signed": (
                "IdentityRegistry.get + AgentIdentity.is_active + AgentIdentity."
                "verify_signature (Ed25519, cryptography/OpenSSL) over the request bytes, then "
                "the full stack with an AuditSink: SignedAuditEntry.from_entry (SHA-256 "
                "content hash, chain link, HMAC-SHA256) per entry, "
                + (
                    "serialized to memory as FileAuditSink would to its file"
                    if signed_audit == "memory"
                    else "written by FileAuditSink (open/append/close per entry)"
                )
            ),
            "not_done_by_peer": (
                "no transport (Kafka, transactions, Avro); no freshness or replay check of "
                "the request; no runtime-integrity, kill-switch, anomaly or other stateful "
                "layer on the path; no Ed25519 signing of the decision (HMAC or hash-only "
                "audit); no per-agent state persisted; trust score read, not updated"
            ),
        },
    }


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.e2e.peer",
        description=f"CPU µs per governed action of the peer ({PEER_NAME}, {PEER_PACKAGE}), "
        "in process: its full stack and its signed path.",
    )
    p.add_argument("--count", type=int, default=2000, help="actions per round (default 2000)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per path (default 5)")
    p.add_argument(
        "--no-short-circuit",
        action="store_true",
        help="run every stage for every action (the peer's own full-stack benchmark)",
    )
    p.add_argument(
        "--signed-audit",
        choices=("memory", "file"),
        default="memory",
        help="HMAC audit sink of the signed path (default memory; file: FileAuditSink)",
    )
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = p.parse_args(argv)
    try:
        result = peer_paths(
            args.count,
            args.rounds,
            short_circuit=not args.no_short_circuit,
            signed_audit=args.signed_audit,
        )
    except PeerUnavailable as exc:
        print(f"peer unavailable: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{PEER_NAME} {result['version']} ({PEER_PACKAGE}), CPU µs per action, median of "
        f"{args.rounds} rounds x {args.count} actions:"
    )
    print(f"  full stack  {result['full_stack_us']:8.1f} µs")
    print(f"  signed      {result['signed_us']:8.1f} µs")
    outcomes = result["outcomes"]["full_stack"]
    mix = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]))
    print(f"  outcomes: {mix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
