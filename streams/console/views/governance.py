"""Governance Console: who may act, under which policy, what is switched off, what
waits for a person, what is being decided now, and what a draft bundle would change."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from processors.exceptions import TrustplaneError
from processors.layers.policy.whatif import (
    RecordedIntent,
    compile_draft,
    recorded_policy_ids,
    replay,
)
from streams.console.data import SearchFilters
from streams.console.replica import ControlReplica
from streams.console.views.common import console_of, json_body, json_error

routes = web.RouteTableDef()

WHATIF_DEFAULT = 500
WHATIF_MAX = 5000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def state_view(replica: ControlReplica) -> dict[str, Any]:
    """A consistent snapshot of the control state, as plain values for the templates."""
    with replica.lock:
        agents = [
            {
                "agent_id": a.agent_id,
                "roles": list(a.roles),
                "runtimes": list(a.runtimes),
                "environments": list(a.environments),
                "status": a.status,
                "status_reason": a.status_reason,
                "status_since_ms": a.status_since_ms,
                "agent_keys": [
                    {
                        "kid": k.kid,
                        "not_before_ms": k.not_before_ms,
                        "not_after_ms": k.not_after_ms,
                        "revoked_at_ms": k.revoked_at_ms,
                    }
                    for k in a.keys.values()
                ],
            }
            for a in sorted(replica.state.agents.values(), key=lambda a: a.agent_id)
        ]
        runtimes = []
        for r in sorted(replica.runtimes, key=lambda r: r.runtime_id):
            quarantine = replica.runtimes.quarantine_of(r.runtime_id)
            runtimes.append(
                {
                    "runtime_id": r.runtime_id,
                    "environment": r.environment,
                    "code_digests": sorted(r.code_digests),
                    "config_digests": sorted(r.config_digests),
                    "hosts": sorted(r.hosts),
                    "quarantine": None
                    if quarantine is None
                    else {"reason": quarantine.reason, "since_ms": quarantine.since_ms},
                }
            )
        switches = replica.killswitches
        engaged = [
            {
                "scope": e.scope,
                "target": e.target,
                "reason": e.reason,
                "by": e.by,
                "since_ms": e.since_ms,
            }
            for e in (
                ([switches.global_] if switches.global_ is not None else [])
                + sorted(switches.agents.values(), key=lambda e: e.target)
                + sorted(switches.actions.values(), key=lambda e: e.target)
            )
        ]
        engine = replica.policies.active
        policy = None
        if engine is not None:
            policy = {
                "version": engine.version,
                "digest": engine.digest,
                "created_at_ms": engine.created_at_ms,
                "expires_at_ms": engine.expires_at_ms,
                "policies": [
                    {
                        "id": p.policy_id,
                        "effect": p.effect,
                        "reason": p.reason,
                        "response": p.response,
                    }
                    for p in sorted(engine.policies.values(), key=lambda p: p.policy_id)
                ],
            }
        now = _now_ms()
        operators = [
            {
                "kid": entry.kid,
                "label": "root key (operators.jwks.json)",
                "status": "root",
                "since_ms": entry.not_before_ms,
                "until_ms": entry.retired_at_ms,
                "by": "",
            }
            for entry in replica.state.operator_keys.values()
        ] + [
            {
                "kid": o.kid,
                "label": o.label,
                "status": o.status(now),
                "since_ms": o.enrolled_at_ms,
                "until_ms": o.until_ms,
                "by": o.enrolled_by,
            }
            for o in sorted(replica.state.operators.values(), key=lambda o: o.enrolled_at_ms)
        ]
        return {
            "operators": operators,
            "agents": agents,
            "runtimes": runtimes,
            "switches": engaged,
            "policy": policy,
            "bundles": list(reversed(replica.bundles)),
            "commands": list(replica.recent)[:30],
            "caught_up": replica.caught_up.is_set(),
        }


def draft_document(replica: ControlReplica) -> str:
    """The bundle in force as an editable draft (a new version, created now)."""
    engine = replica.policies.active
    if engine is None:
        return ""
    document = engine.bundle.to_document()
    manifest = dict(document["manifest"])
    manifest["version"] = f"{manifest['version']}-draft"
    manifest["created_at_ms"] = _now_ms()
    document["manifest"] = manifest
    return json.dumps(document, indent=2, ensure_ascii=False)


@routes.get("/governance")
async def governance(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    held: list[dict[str, Any]] = []
    feed: list[dict[str, Any]] = []
    error = ""
    try:
        feed_filters = SearchFilters.from_query(
            {
                "agent": request.query.get("feed_agent", ""),
                "outcome": request.query.get("feed_outcome", ""),
            }
        )
    except ValueError as exc:
        feed_filters, error = SearchFilters(), str(exc)
    try:
        held = await console.blocking(console.store.held_for_review)
        feed = await console.blocking(console.store.decisions, feed_filters, limit=50)
    except TrustplaneError as exc:
        error = exc.reason
    answers = {row["intent_id"]: console.replica.reviews.get(row["intent_id"]) for row in held}
    return console.render(
        request,
        "governance.html",
        state=state_view(console.replica),
        held=held,
        answers=answers,
        feed=feed,
        store_error=error,
        draft=draft_document(console.replica),
        feed_filters=feed_filters,
        whatif_default=WHATIF_DEFAULT,
    )


@routes.get("/governance/state")
async def governance_state(request: web.Request) -> web.StreamResponse:
    """The state panels alone, re-fetched by the page when a command is applied."""
    console = console_of(request)
    return console.render(request, "state_panels.html", state=state_view(console.replica))


def _recorded(row: dict[str, Any], replica: ControlReplica) -> RecordedIntent:
    layers = list(row.get("verdict_layers") or [])
    statuses = list(row.get("verdict_statuses") or [])
    evidence = [e if isinstance(e, dict) else {} for e in row.get("verdict_evidence") or []]
    agent = replica.state.agent(str(row["agent_id"]))
    context = row.get("context") or {}
    return RecordedIntent(
        intent_id=str(row["intent_id"]),
        agent_id=str(row["agent_id"]),
        roles=tuple(agent.roles) if agent is not None else (),
        action=str(row["action"]),
        resource=str(row["resource"]),
        environment=str(row.get("environment", "")),
        runtime_id=str(row.get("runtime_id", "")),
        issued_at_ms=int(row["issued_at_ms"]),
        parameters=row.get("parameters") or {},
        risk=context.get("risk") if isinstance(context, dict) else None,
        recorded_outcome=str(row.get("status", "")).upper(),
        recorded_layers=tuple(zip(layers, statuses, strict=False)),
        recorded_policies=recorded_policy_ids(layers, evidence),
    )


@routes.post("/api/whatif")
async def whatif(request: web.Request) -> web.StreamResponse:
    """Replay the last N recorded intents against a draft bundle (nothing is published)."""
    console = console_of(request)
    body = await json_body(request)
    document = body.get("document")
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise json_error(400, f"the draft is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise json_error(400, "the draft must be a bundle document (manifest, policies, schema)")
    limit = body.get("limit", WHATIF_DEFAULT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= WHATIF_MAX:
        raise json_error(400, f"replay between 1 and {WHATIF_MAX} intents")
    try:
        draft = await console.blocking(
            compile_draft, document, _now_ms(), active=console.replica.policies.active
        )
    except TrustplaneError as exc:
        raise json_error(400, f"the draft does not compile: {exc.reason}") from None
    try:
        rows = await console.blocking(console.store.replayable, limit)
    except TrustplaneError as exc:
        raise json_error(503, exc.reason) from None
    replica = console.replica
    with replica.lock:
        recorded = [_recorded(row, replica) for row in rows]
        current = replica.policies.active
    report = await console.blocking(replay, current, draft, recorded, limit=limit)
    return web.json_response(report.to_dict())
