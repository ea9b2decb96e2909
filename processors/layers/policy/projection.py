"""Decision-cache keys: a request projected onto what the bundle can tell apart.

Two requests that agree on everything Cedar can observe get the same decision. What
Cedar observes of a request, for a given bundle, is found once per bundle and action:

1. **Which policies.** A policy whose action scope cannot match the action is false
   before its conditions run (the argument :mod:`.slicing` relies on), so only the
   policies whose scope admits the action count. The action is always in the key.
2. **The principal.** ``Agent::"<id>"`` has no attributes and only its roles as
   parents, so a policy can tell agents apart only by comparing them with entity
   literals (scope, ``==``, ``in``, ``is``). The key keeps the agent id if some such
   policy names it, and the roles those policies name; any other use of ``principal``
   keeps the id and every role.
3. **The resource.** ``resource.kind``/``.name``/``.uri`` keep those attributes; any
   other use (scope, ``==``, ``in``, a Resource literal) keeps the whole resource.
4. **The context.** A value a condition reads (``context.a.b`` anywhere but as the
   base of ``has``) is kept whole. Of every other value the key keeps its shape
   (attribute names at every level, so ``has`` is decided) and drops the content only
   where the schema (:mod:`.schema_shape`) declares exactly that JSON type there, so
   Cedar's request validation accepts every such value alike: a string where ``String``
   is declared, a Long where ``Long``, a boolean where ``Bool``, a decimal in our exact
   encoding where ``decimal``. Everything else (sets, escapes like ``__entity``,
   undeclared attributes, values of the wrong type) is kept whole.
5. **Validity of the dropped parts.** A dropped string (agent, role, resource or
   context) must also be one Cedar's JSON parser accepts: a lone surrogate is not
   valid UTF-8, so such a request is not cached at all.

If a context type could hold an entity, the context could name the request's own
principal or resource: such actions keep the whole principal and resource. Only
decisions without errors are cached (an error's text may quote what the key drops).
A bundle whose policies use something this module does not model, or whose schema it
cannot read, is not projected: its cache keys on whole requests, as before.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from cedarpy import pst

from processors.layers.policy.encoding import ValueProblem, decimal_text
from processors.layers.policy.request import resource_attributes
from processors.layers.policy.schema_shape import Record, Shape, entity_free
from processors.layers.policy.slicing import action_ancestors, action_scope, scope_admits

__all__ = ["Projection", "Unanalysable", "exact_key"]

_RESOURCE_ATTRS: Final = ("kind", "name", "uri")

_NO_READS: Final[Mapping[str, ReadTree]] = {}
_SHORT_DECIMAL: Final = re.compile(r"-?(0|[1-9][0-9]*)\.(?:0|[0-9]{0,3}[1-9])")
"""What :func:`.encoding.decimal_text` writes: no leading zeros, 1-4 decimals, no
trailing zero but in ``.0``."""

# markers for content the key leaves out (strings: never equal to a kept value, a tuple)
_ANY_STRING: Final = "s"
_ANY_LONG: Final = "l"
_ANY_BOOL: Final = "b"
_ANY_DECIMAL: Final = "d"

ReadTree = Mapping[str, "ReadTree"] | bool | None
"""Which context values conditions read: None (nothing below), True (the whole value)
or a mapping attribute -> read tree."""


class Unanalysable(Exception):
    """A policy uses something the projection does not model (internal)."""


class _Uncacheable(Exception):
    """A request whose key cannot be made (internal): decided, not cached."""


@dataclass
class _Reads:
    """What a set of policies can observe of a request."""

    context: dict[str, Any] | bool
    agents: set[str]
    roles: set[str]
    principal_whole: bool = False
    resource_attrs: frozenset[str] = frozenset()
    resource_whole: bool = False

    @classmethod
    def nothing(cls) -> _Reads:
        return cls({}, set(), set())

    def read_context(self, path: Sequence[str]) -> None:
        if self.context is True:
            return
        if not path:
            self.context = True
            return
        node: dict[str, Any] = self.context if isinstance(self.context, dict) else {}
        for attr in path[:-1]:
            child = node.setdefault(attr, {})
            if child is True:
                return
            node = child
        node[path[-1]] = True

    def merge(self, other: _Reads) -> None:
        if other.context is True:
            self.context = True
        elif isinstance(other.context, dict):
            for path in _paths(other.context, ()):
                self.read_context(path)
        self.agents |= other.agents
        self.roles |= other.roles
        self.principal_whole |= other.principal_whole
        self.resource_attrs |= other.resource_attrs
        self.resource_whole |= other.resource_whole


def _paths(tree: Mapping[str, Any], prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for attr, child in tree.items():
        if child is True:
            out.append((*prefix, attr))
        else:
            out.extend(_paths(child, (*prefix, attr)))
    return out


@dataclass(frozen=True, slots=True)
class _View:
    """How requests for one action are projected."""

    reads: ReadTree
    shape: Shape | None  # the action's declared context type; None: keep every value
    agents: frozenset[str] | None  # agent ids kept; None: every id
    roles: frozenset[str] | None  # roles kept; None: all of them
    resource: tuple[str, ...] | None  # resource attributes kept; None: the whole resource


class Projection:
    """Cache keys for one compiled bundle (see the module docstring for why they are
    sound). Built once per bundle; :meth:`key` costs a few microseconds."""

    def __init__(
        self,
        digest: str,
        tree: pst.PolicySet,
        action_parents: Mapping[str, Sequence[str]],
        contexts: Mapping[str, Shape | None],
    ) -> None:
        """Raises :class:`Unanalysable` if a policy uses something not modelled."""
        if tree.templates or tree.template_links:
            raise Unanalysable("templates")
        self._digest = digest
        by_scope: dict[tuple[str, frozenset[str]] | None, _Reads] = {}
        for policy in tree.static_policies.values():
            scope = action_scope(policy.action)
            by_scope.setdefault(scope, _Reads.nothing()).merge(_policy_reads(policy))
        ancestors = action_ancestors(action_parents)
        self._views: dict[str, _View] = {}
        for action in contexts:
            lineage = {action, *ancestors.get(action, ())}
            reads = _Reads.nothing()
            for scope, scope_reads in by_scope.items():
                if scope_admits(scope, action, lineage):
                    reads.merge(scope_reads)
            self._views[action] = _view(reads, contexts[action])
        # an action the schema does not declare: Cedar refuses the request (an error,
        # never cached); its key keeps everything
        self._fallback = _View(True, None, None, None, None)

    def key(
        self,
        agent_id: str,
        roles: Sequence[str],
        action: str,
        resource: str,
        context: Mapping[str, Any],
    ) -> Hashable | None:
        """The cache key of a request whose Cedar context (JSON form) is ``context``,
        or None if this request is not to be cached."""
        view = self._views.get(action, self._fallback)
        try:
            if view.agents is None or agent_id in view.agents:
                agent: str | None = agent_id
            else:
                _dropped(agent_id)
                agent = None
            distinct = set(roles)
            if view.roles is None:
                kept = distinct
            else:
                kept = distinct & view.roles
                for role in distinct - kept:
                    _dropped(role)
            if view.resource is None:
                seen: str | tuple[str, ...] = resource
            else:
                _dropped(resource)
                attrs = resource_attributes(resource)
                seen = tuple(attrs[name] for name in view.resource)
            shape = _skeleton(context, view.shape, view.reads)
            return (self._digest, action, agent, tuple(sorted(kept)), seen, shape)
        except (_Uncacheable, TypeError):
            return None

    def describe(self, action: str) -> dict[str, Any]:
        """What the key keeps for ``action`` (for tests and diagnostics)."""
        view = self._views.get(action, self._fallback)
        return {
            "context": view.reads,
            "agents": view.agents,
            "roles": view.roles,
            "resource": view.resource,
            "shape": view.shape,
        }


def exact_key(
    digest: str,
    agent_id: str,
    roles: Sequence[str],
    action: str,
    resource: str,
    context: Mapping[str, Any],
) -> Hashable | None:
    """The key of the whole request (for a bundle that is not projected)."""
    try:
        return (digest, action, agent_id, tuple(roles), resource, _frozen(context))
    except _Uncacheable:
        return None


def _view(reads: _Reads, shape: Shape | None) -> _View:
    if shape is None or not isinstance(shape, Record):
        return _View(True, None, None, None, None)
    whole_entities = not entity_free(shape)
    principal_whole = reads.principal_whole or whole_entities
    resource_whole = reads.resource_whole or whole_entities
    return _View(
        _freeze_tree(reads.context),
        shape,
        None if principal_whole else frozenset(reads.agents),
        None if principal_whole else frozenset(reads.roles),
        None if resource_whole else tuple(a for a in _RESOURCE_ATTRS if a in reads.resource_attrs),
    )


def _freeze_tree(tree: dict[str, Any] | bool) -> ReadTree:
    if tree is True:
        return True
    if not tree:
        return None
    assert isinstance(tree, dict)  # noqa: S101 - narrowing: a tree is a bool or a dict
    return {attr: _freeze_tree(child) for attr, child in tree.items()}


# -- what a policy observes -------------------------------------------------------------


def _policy_reads(policy: pst.Template) -> _Reads:
    reads = _Reads.nothing()
    _principal_scope(policy.principal, reads)
    if not isinstance(policy.resource, (pst.ScopeAny, pst.ScopeIs)):
        if _has_slot(policy.resource):
            raise Unanalysable("a template slot")
        reads.resource_whole = True
    for clause in policy.clauses:
        if not isinstance(clause, (pst.When, pst.Unless)):
            raise Unanalysable(f"a {type(clause).__name__} clause")
        _walk(clause.expr, reads)
    return reads


def _principal_scope(scope: pst.PrincipalOrResourceConstraint, reads: _Reads) -> None:
    # ==, in, is (in): decided by whether the agent is the one named, or has the role
    if not isinstance(scope, (pst.ScopeAny, pst.ScopeIs, pst.ScopeEq, pst.ScopeIn, pst.ScopeIsIn)):
        raise Unanalysable(f"a principal scope {type(scope).__name__}")
    if _has_slot(scope):
        raise Unanalysable("a template slot")
    entity = getattr(scope, "entity", None)
    if isinstance(entity, pst.EntityUid):
        _named(entity, reads)


def _named(uid: pst.EntityUid, reads: _Reads) -> None:
    """An entity a policy names: the key keeps whether the request's is that one."""
    if uid.type.basename == "Agent":
        reads.agents.add(uid.id)
    elif uid.type.basename == "Role":
        reads.roles.add(uid.id)
    elif uid.type.basename == "Resource":
        reads.resource_whole = True


def _has_slot(scope: pst.PrincipalOrResourceConstraint) -> bool:
    entity = getattr(scope, "entity", None)
    return isinstance(entity, pst.Slot)


def _chain(expr: pst.Expr) -> tuple[str, tuple[str, ...]] | None:
    """``var.a.b`` -> (var, (a, b)); None if ``expr`` is not such a chain."""
    path: list[str] = []
    while isinstance(expr, pst.GetAttr):
        path.append(expr.attr)
        expr = expr.base
    if isinstance(expr, pst.Var):
        return expr.name, tuple(reversed(path))
    return None


def _literals(expr: pst.Expr | None) -> bool:
    """An entity literal or a set of them."""
    if isinstance(expr, pst.EntityLit):
        return True
    return isinstance(expr, pst.Set) and all(isinstance(e, pst.EntityLit) for e in expr.elements)


def _is_principal(expr: pst.Expr) -> bool:
    return isinstance(expr, pst.Var) and expr.name == "principal"


def _walk(expr: pst.Expr, reads: _Reads) -> None:  # noqa: C901 - one arm per node type
    if isinstance(expr, pst.Var):
        if expr.name == "context":
            reads.read_context(())
        elif expr.name == "principal":
            reads.principal_whole = True  # a use not listed below: it may see the id
        elif expr.name == "resource":
            reads.resource_whole = True
    elif isinstance(expr, pst.GetAttr):
        chain = _chain(expr)
        if chain is None:
            _walk(expr.base, reads)
            return
        var, path = chain
        if var == "context":
            reads.read_context(path)
        elif var == "resource":
            if path[0] in _RESOURCE_ATTRS:
                reads.resource_attrs |= {path[0]}
            else:
                reads.resource_whole = True
        elif var == "principal":
            reads.principal_whole = True
    elif isinstance(expr, pst.HasAttr):
        chain = _chain(expr.base)
        if chain is None:
            _walk(expr.base, reads)
            return
        # has: decided by attribute names, which the key always keeps for the context;
        # the resource always has its three, the principal none
        var, path = chain
        if var == "resource" and path:
            reads.resource_whole = True
        elif var == "principal" and path:
            reads.principal_whole = True
    elif isinstance(expr, pst.BinaryOp):
        # principal ==/in entity literals: decided by the names, which the walk collects
        if expr.op in ("eq", "not_eq", "in") and _is_principal(expr.left) and _literals(expr.right):
            _walk(expr.right, reads)
        elif expr.op in ("eq", "not_eq") and _is_principal(expr.right) and _literals(expr.left):
            _walk(expr.left, reads)
        else:
            _walk(expr.left, reads)
            _walk(expr.right, reads)
    elif isinstance(expr, pst.Is):
        if not (_is_principal(expr.base) and (expr.in_expr is None or _literals(expr.in_expr))):
            _walk(expr.base, reads)
        if expr.in_expr is not None:
            _walk(expr.in_expr, reads)
    elif isinstance(expr, pst.Like):
        _walk(expr.base, reads)
    elif isinstance(expr, pst.UnaryOp):
        _walk(expr.arg, reads)
    elif isinstance(expr, pst.IfThenElse):
        _walk(expr.cond, reads)
        _walk(expr.then_expr, reads)
        _walk(expr.else_expr, reads)
    elif isinstance(expr, pst.Set):
        for element in expr.elements:
            _walk(element, reads)
    elif isinstance(expr, pst.Record):
        for value in expr.fields.values():
            _walk(value, reads)
    elif isinstance(expr, pst.EntityLit):
        _named(expr.value, reads)
    elif not isinstance(expr, (pst.BoolLit, pst.LongLit, pst.StringLit)):
        raise Unanalysable(f"a {type(expr).__name__} expression")


# -- the context's part of a key ----------------------------------------------------------


def _skeleton(value: Any, shape: Shape | None, reads: ReadTree) -> Hashable:
    """``value`` (Cedar JSON) with the content dropped where no policy reads it and the
    schema declares exactly its type (see the module docstring)."""
    if reads is True:
        return _frozen(value)
    kind = type(value)
    if kind is dict:
        if type(shape) is Record:
            attrs = shape.attrs
            below = reads if isinstance(reads, Mapping) else _NO_READS
            parts: list[tuple[str, Hashable]] = []
            for name in sorted(value):
                if name.startswith("__"):  # a JSON escape (__entity, __extn): keep it all
                    return _frozen(value)
                child, declared, sub = value[name], attrs.get(name), below.get(name)
                # the two commonest cases inline (the same rule as below, for speed)
                if sub is None and type(child) is str and declared == "String" and child.isascii():
                    parts.append((name, _ANY_STRING))
                elif sub is None and type(child) is int and declared == "Long":
                    parts.append((name, _ANY_LONG))
                else:
                    parts.append((name, _skeleton(child, declared, sub)))
            return ("r", tuple(parts))
        if reads is None and shape == "decimal" and _is_our_decimal(value):
            return _ANY_DECIMAL
        return _frozen(value)
    if reads is not None:  # something below a value that has nothing below: keep it
        return _frozen(value)
    if kind is str:
        if shape == "String" and (value.isascii() or _valid_utf8(value)):
            return _ANY_STRING
        return ("S", value)
    if kind is int:
        return _ANY_LONG if shape == "Long" else ("L", value)
    if kind is bool:
        return _ANY_BOOL if shape == "Bool" else ("B", value)
    return _frozen(value)


def _frozen(value: Any) -> Hashable:
    """A hashable form of a JSON value, equal only for equal values (True is not 1)."""
    kind = type(value)
    if kind is str:
        return ("S", value)
    if kind is int:
        return ("L", value)
    if kind is bool:
        return ("B", value)
    if kind is dict:
        return ("R", tuple([(name, _frozen(value[name])) for name in sorted(value)]))
    if kind is list:
        return ("A", tuple([_frozen(child) for child in value]))
    if isinstance(value, str):
        return ("S", str(value))
    raise _Uncacheable(kind.__name__)


def _is_our_decimal(value: Mapping[str, Any]) -> bool:
    """``{"__extn": {"fn": "decimal", "arg": "<text>"}}`` with the text exactly as
    :func:`.encoding.decimal_text` writes it: a decimal Cedar accepts whatever its digits."""
    if len(value) != 1:
        return False
    inner = value.get("__extn")
    if not isinstance(inner, dict) or inner.keys() != {"fn", "arg"} or inner["fn"] != "decimal":
        return False
    text = inner["arg"]
    if type(text) is not str:
        return False
    if (match := _SHORT_DECIMAL.fullmatch(text)) is not None and len(match.group(1)) < 15:
        return True  # the canonical form, and too short to be out of range
    try:
        return decimal_text(Decimal(text), "") == text
    except (InvalidOperation, ValueProblem):
        return False


def _valid_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: Cedar's JSON parser refuses it
        return False
    return True


def _dropped(text: str) -> None:
    """A string the key leaves out must be one Cedar accepts like any other."""
    if not isinstance(text, str) or not _valid_utf8(text):
        raise _Uncacheable("not a valid string")
