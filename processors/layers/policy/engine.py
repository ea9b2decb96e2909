"""A compiled bundle: :class:`PolicyEngine` decides requests with Cedar.

It decides each request on the subset of policies whose scope can match it
(:mod:`.slicing`), and remembers the Cedar entities per (agent, roles, resource) and the
decisions of the last few thousand distinct requests.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import cedarpy

from processors.layers.policy.bundle import PolicyBundle
from processors.layers.policy.encoding import (
    ValueProblem,
    agent_entity,
    cedar_record,
    resource_entity,
)
from processors.layers.policy.exceptions import PolicyEvaluationError
from processors.layers.policy.request import PolicyDecision, PolicyRequest
from processors.layers.policy.slicing import Slicer

__all__ = ["DECISION_CACHE", "PolicyEngine", "PolicyInfo"]

DECISION_CACHE: Final = 8192
"""Distinct requests whose decisions an engine remembers (0 turns the cache off)."""
_MAX_ERROR_CHARS: Final = 600
_ENTITY_CACHE: Final = 4096
_CACHEABLE_CONTEXT: Final = 2048


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """One policy of a compiled bundle: Cedar's id, its ``@id``, effect and ``@reason``."""

    cedar_id: str
    policy_id: str
    effect: str
    reason: str


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
        self._decide = functools.lru_cache(maxsize=decision_cache)(self._decide_uncached)

    @property
    def policy_count(self) -> int:
        return len(self._by_cedar_id)

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_at_ms

    def reason_of(self, policy_id: str) -> str:
        """The ``@reason`` annotation of a policy (by ``@id``), or ""."""
        info = self.policies.get(policy_id)
        return info.reason if info else ""

    def authorize(self, request: PolicyRequest) -> PolicyDecision:
        """Decide one request. A request Cedar (or the schema) cannot accept is a deny
        with the reason in ``errors``; only a failure of Cedar itself raises
        :class:`PolicyEvaluationError`.

        Decisions are memoised per engine (an LRU of the last few thousand distinct
        requests): Cedar's answer depends only on the bundle and the request.
        """
        try:
            context = json.dumps(cedar_record(request.context, "context"))
        except ValueProblem as exc:
            return PolicyDecision(False, (), (str(exc),))
        key = (request.agent_id, tuple(request.roles), request.action, request.resource, context)
        if len(context) > _CACHEABLE_CONTEXT:  # big requests would make the cache a memory sink
            return self._decide_uncached(*key)
        return self._decide(*key)

    def cache_info(self) -> str:
        """Hit/miss counts of the decision and entity caches (for benchmarks, metrics)."""
        return (
            f"decisions {self._decide.cache_info()}; entities {self._entities.cache_info()}; "
            f"policy slices {self._slices.cache_info()}"
        )

    # -- internals -------------------------------------------------------------

    def _decide_uncached(
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
