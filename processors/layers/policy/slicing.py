"""Policy slicing: the subset of a bundle's policies whose scope can match a request.

Cedar evaluates every policy of a set for every request (about 1 us each). A policy
whose scope cannot match the request - another agent, a role the agent lacks, another
action - is false without evaluating its conditions (scope and conditions are one
short-circuit conjunction), so it can neither determine the decision nor produce an
error. Deciding on the subset whose scope can match is therefore the same decision;
the subset is built once per (agent, roles, action) and cached. Anything the slicer
does not understand is kept (keeping a policy is always safe).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Final

import cedarpy
from cedarpy import pst

__all__ = ["Slicer", "action_ancestors", "action_parents_of", "action_scope", "scope_admits"]

_ANY_PRINCIPAL: Final = ("any", "")


class Slicer:
    """A parsed policy set, its policies bucketed by principal scope (any agent, one
    agent, one role), and the subset whose scope can match a request."""

    def __init__(self, tree: pst.PolicySet, action_parents: Mapping[str, Sequence[str]]) -> None:
        self._tree = tree
        self._order = {cedar_id: n for n, cedar_id in enumerate(tree.static_policies)}
        self._buckets: dict[tuple[str, str], list[str]] = {}
        self._actions: dict[str, tuple[str, frozenset[str]] | None] = {}
        for cedar_id, policy in tree.static_policies.items():
            key = _principal_key(policy.principal)
            if key is None:
                continue  # its principal can never be an Agent
            self._buckets.setdefault(key, []).append(cedar_id)
            self._actions[cedar_id] = action_scope(policy.action)
        self._ancestors = action_ancestors(action_parents)

    def named_agents(self) -> frozenset[str]:
        """The agents some policy names in its principal scope."""
        return frozenset(key[1] for key in self._buckets if key[0] == "agent")

    def policy_ids(self, agent_id: str, roles: Sequence[str], action: str) -> list[str]:
        lineage = {action, *self._ancestors.get(action, ())}
        keys = [_ANY_PRINCIPAL, ("agent", agent_id), *(("role", role) for role in roles)]
        chosen: set[str] = set()
        for key in keys:
            for cedar_id in self._buckets.get(key, ()):
                if scope_admits(self._actions[cedar_id], action, lineage):
                    chosen.add(cedar_id)
        return sorted(chosen, key=self._order.__getitem__)

    def slice(self, agent_id: str, roles: Sequence[str], action: str) -> cedarpy.PolicySet:
        ids = self.policy_ids(agent_id, roles, action)
        static = self._tree.static_policies
        subset = pst.PolicySet(
            templates=pst.FrozenMap(),
            static_policies=pst.FrozenMap({cedar_id: static[cedar_id] for cedar_id in ids}),
            template_links=(),
        )
        return cedarpy.PolicySet.from_pst(subset)


def _is_type(entity_type: pst.EntityType, name: str) -> bool:
    return entity_type.basename == name and not entity_type.namespace


def _principal_key(scope: pst.PrincipalOrResourceConstraint) -> tuple[str, str] | None:
    """Which requests' principals can satisfy a principal scope: any, one agent, the
    members of one role, or none (None). Unknown shapes count as any."""
    if isinstance(scope, pst.ScopeIs):
        return _ANY_PRINCIPAL if _is_type(scope.entity_type, "Agent") else None
    if isinstance(scope, pst.ScopeIsIn):
        if not _is_type(scope.entity_type, "Agent"):
            return None
        scope = pst.ScopeIn(scope.entity)
    if isinstance(scope, (pst.ScopeEq, pst.ScopeIn)) and isinstance(scope.entity, pst.EntityUid):
        uid = scope.entity
        if _is_type(uid.type, "Agent"):
            return ("agent", uid.id)
        if isinstance(scope, pst.ScopeIn) and _is_type(uid.type, "Role"):
            return ("role", uid.id)
        return None  # == a non-agent, or in an entity no Agent descends from
    return _ANY_PRINCIPAL


def action_scope(scope: pst.ActionConstraint) -> tuple[str, frozenset[str]] | None:
    """("eq", ids) or ("in", ids) for Action uids; None (any action) otherwise."""
    if isinstance(scope, pst.ActionEq) and _is_type(scope.entity.type, "Action"):
        return ("eq", frozenset((scope.entity.id,)))
    if isinstance(scope, pst.ActionIn) and all(_is_type(u.type, "Action") for u in scope.entities):
        return ("in", frozenset(u.id for u in scope.entities))
    return None


def scope_admits(
    scope: tuple[str, frozenset[str]] | None, action: str, lineage: frozenset[str] | set[str]
) -> bool:
    """Whether an action scope (:func:`action_scope`) can match ``action``, whose
    ``lineage`` is itself and its ancestor groups."""
    return (
        scope is None
        or (scope[0] == "eq" and action in scope[1])
        or (scope[0] == "in" and not lineage.isdisjoint(scope[1]))
    )


def action_parents_of(base: cedarpy.Entities) -> dict[str, list[str]]:
    """Action id -> parent action ids, from the action entities the schema declares."""
    parents: dict[str, list[str]] = {}
    for entity in json.loads(str(base)):
        uid = entity.get("uid", {})
        if uid.get("type") == "Action":
            parents[str(uid.get("id"))] = [
                str(p.get("id")) for p in entity.get("parents", []) if p.get("type") == "Action"
            ]
    return parents


def action_ancestors(parents: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    ancestors: dict[str, frozenset[str]] = {}
    for start in parents:
        seen: set[str] = set()
        todo = list(parents[start])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(parents.get(node, ()))
        ancestors[start] = frozenset(seen)
    return ancestors
