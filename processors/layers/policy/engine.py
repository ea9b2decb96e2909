"""A compiled bundle: :class:`PolicyEngine` decides requests with Cedar.

It decides each request on the subset of policies whose scope can match it
(:mod:`.slicing`), remembers the Cedar entities per (agent, roles, resource), and caches
decisions (:mod:`.cache`) under keys that keep only what the bundle can tell apart
(:mod:`.projection`), so that requests differing only in what no policy reads share one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import cedarpy

from processors.layers.policy.bundle import PolicyBundle
from processors.layers.policy.cache import CacheStats, DecisionCache
from processors.layers.policy.encoding import (
    ValueProblem,
    agent_entity,
    cedar_record,
    resource_entity,
)
from processors.layers.policy.exceptions import PolicyEvaluationError
from processors.layers.policy.projection import Projection, exact_key
from processors.layers.policy.request import PolicyDecision, PolicyRequest
from processors.layers.policy.slicing import Slicer

__all__ = ["DECISION_CACHE", "PolicyEngine", "PolicyInfo"]

DECISION_CACHE: Final = 10_000
"""Decisions an engine remembers (0 turns the decision cache off)."""
_MAX_ERROR_CHARS: Final = 600
_ENTITY_CACHE: Final = 4096
_CACHEABLE_REQUEST: Final = 4096
"""Requests with more characters of context, agent id and resource are decided, not
cached: big ones would make the cache a memory sink."""


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """One policy of a compiled bundle: Cedar's id, its ``@id``, effect, ``@reason`` and
    ``@response`` (a permit's: ``allow``, or ``review`` to hold what it allows for a
    person)."""

    cedar_id: str
    policy_id: str
    effect: str
    reason: str
    response: str = "allow"


class PolicyEngine:
    """A compiled bundle: Cedar's parsed policy set, schema and base entities.

    Made by :func:`compile_bundle`; immutable; safe to share between threads.
    """

    def __init__(
        self,
        bundle: PolicyBundle,
        policy_set: cedarpy.PolicySet,
        schema: cedarpy.Schema,
        base_entities: cedarpy.Entities,
        policies: Mapping[str, PolicyInfo],
        *,
        slicer: Slicer | None = None,
        projection: Projection | None = None,
        compile_ms: float = 0.0,
        decision_cache: int = DECISION_CACHE,
    ) -> None:
        self.bundle = bundle
        self.digest = bundle.digest
        self.version = bundle.manifest.version
        self.created_at_ms = bundle.manifest.created_at_ms
        self.expires_at_ms = bundle.manifest.expires_at_ms
        self.compile_ms = compile_ms
        self._policy_set = policy_set
        self._schema = schema
        self._base = base_entities
        self._by_cedar_id = dict(policies)
        self.policies: Mapping[str, PolicyInfo] = {p.policy_id: p for p in policies.values()}
        self._slicer = slicer
        self._entities = functools.lru_cache(maxsize=_ENTITY_CACHE)(self._build_entities)
        self._slices = functools.lru_cache(maxsize=_ENTITY_CACHE)(self._build_slice)
        # a policy subset depends on the agent id only if some policy names that agent:
        # every other agent shares one cache entry per (roles, action)
        self._named_agents = slicer.named_agents() if slicer is not None else frozenset()
        self._projection = projection
        self._cache: DecisionCache[PolicyDecision] | None = (
            DecisionCache(decision_cache) if decision_cache > 0 else None
        )

    @property
    def policy_count(self) -> int:
        return len(self._by_cedar_id)

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_at_ms

    def reason_of(self, policy_id: str) -> str:
        """The ``@reason`` annotation of a policy (by ``@id``), or ""."""
        info = self.policies.get(policy_id)
        return info.reason if info else ""

    def holds_for_review(self, policy_ids: Sequence[str]) -> bool:
        """True when one of these (determining permit) policies says
        ``@response("review")``: the allowed intent is held for a person."""
        return any(
            (info := self.policies.get(pid)) is not None and info.response == "review"
            for pid in policy_ids
        )

    @property
    def decision_keys(self) -> str:
        """How decisions are cached: ``projected`` (on what the policies read, see
        :mod:`.projection`), ``exact`` (whole requests: the bundle could not be
        analysed) or ``off``."""
        if self._cache is None:
            return "off"
        return "exact" if self._projection is None else "projected"

    def authorize(self, request: PolicyRequest) -> PolicyDecision:
        """Decide one request. A request Cedar (or the schema) cannot accept is a deny
        with the reason in ``errors``; only a failure of Cedar itself raises
        :class:`PolicyEvaluationError`.

        Decisions without errors are cached per engine (:attr:`decision_keys`): the
        cached decision is the very one Cedar gave for an earlier request that agrees
        with this one on everything the bundle can observe.
        """
        try:
            record = cedar_record(request.context, "context")
        except ValueProblem as exc:
            return PolicyDecision(False, (), (str(exc),))
        roles = tuple(request.roles)
        cache = self._cache
        key = None if cache is None else self._key(request, roles, record)
        if cache is not None and key is not None:
            cached = cache.get(key)
            if cached is not None:
                return cached
        context = json.dumps(record)
        decision = self._decide(request.agent_id, roles, request.action, request.resource, context)
        if (
            cache is not None
            and key is not None
            and not decision.errors
            and len(context) + len(request.resource) + len(request.agent_id) <= _CACHEABLE_REQUEST
        ):
            cache.put(key, decision)
        return decision

    def decision_stats(self) -> CacheStats | None:
        """Hits, misses and size of the decision cache (None when it is off)."""
        return None if self._cache is None else self._cache.stats()

    def cache_info(self) -> str:
        """Hit/miss counts of the decision and entity caches (for benchmarks, metrics)."""
        return (
            f"decisions ({self.decision_keys}) {self.decision_stats()}; "
            f"entities {self._entities.cache_info()}; policy slices {self._slices.cache_info()}"
        )

    # -- internals -------------------------------------------------------------

    def _key(
        self, request: PolicyRequest, roles: tuple[str, ...], record: Mapping[str, Any]
    ) -> Hashable | None:
        if self._projection is None:
            return exact_key(
                self.digest, request.agent_id, roles, request.action, request.resource, record
            )
        return self._projection.key(
            request.agent_id, roles, request.action, request.resource, record
        )

    def _decide(
        self, agent_id: str, roles: tuple[str, ...], action: str, resource: str, context: str
    ) -> PolicyDecision:
        try:
            entities = self._entities(agent_id, roles, resource)
        except ValueError as exc:
            return PolicyDecision(
                False, (), (_clip(f"the request's entities are not valid: {exc}"),)
            )
        cedar_request = {
            "principal": {"type": "Agent", "id": agent_id},
            "action": {"type": "Action", "id": action},
            "resource": {"type": "Resource", "id": resource},
            "context": context,
        }
        policy_set = self._slices(agent_id if agent_id in self._named_agents else "", roles, action)
        try:
            result = cedarpy.is_authorized(cedar_request, policy_set, entities, self._schema)
        except Exception as exc:  # noqa: BLE001 - Cedar failing is an error verdict, with why
            raise PolicyEvaluationError(f"Cedar failed: {type(exc).__name__}: {exc}") from exc
        return self._decision(result)

    def _build_entities(
        self, agent_id: str, roles: tuple[str, ...], resource: str
    ) -> cedarpy.Entities:
        delta = json.dumps([agent_entity(agent_id, roles), resource_entity(resource)])
        return self._base.with_added_json_str(delta)

    def _build_slice(self, agent_id: str, roles: tuple[str, ...], action: str) -> cedarpy.PolicySet:
        if self._slicer is None:
            return self._policy_set
        try:
            return self._slicer.slice(agent_id, roles, action)
        except ValueError:  # cedarpy could not rebuild the subset: decide on the whole set
            return self._policy_set

    def _decision(self, result: cedarpy.AuthzResult) -> PolicyDecision:
        diagnostics = result.diagnostics
        errors = tuple(_explain(e) for e in diagnostics.errors)
        annotations = diagnostics.id_annotations_by_reason
        determining = tuple(sorted(annotations.get(r, r) for r in diagnostics.reasons))
        if result.decision is cedarpy.Decision.Allow:
            if errors:
                return PolicyDecision(
                    False,
                    (),
                    (
                        *errors,
                        "not allowed: a policy failed to evaluate, and Cedar skips failing "
                        "policies (a skipped forbid must not let a request through)",
                    ),
                )
            return PolicyDecision(True, determining, ())
        return PolicyDecision(False, determining, errors)


def _explain(error: str) -> str:
    if "failed to build request" in error and "is not valid for" in error:
        error += (
            " (the context must match the action's context type in the bundle's schema: "
            "every parameter declared, numbers in parameters are decimals, risk is a Long)"
        )
    return _clip(error)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"
