"""What a bundle's schema declares about each action's context (for the decision cache).

:func:`context_shapes` reads Cedar's own rendering of a parsed schema (``str(schema)``,
Cedar schema syntax whichever form the bundle used) and returns, per action of the empty
namespace (the ``Action::"..."`` of requests), the declared type of its context as a
:data:`Shape` tree. The decision cache (:mod:`.projection`) leaves a value out of its
key only where this tree says exactly which values are valid, so the reading is strict:

- a name is resolved only when exactly one declaration can be meant (common or entity
  type in the action's namespace, then in the empty one, then Cedar's built-ins);
  anything ambiguous or unknown is :data:`UNKNOWN`;
- a schema that declares a type named like a built-in, or that this module cannot
  read, raises :class:`SchemaShapeError` (the cache then keys on whole requests).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ENTITY",
    "UNKNOWN",
    "Record",
    "SetOf",
    "Shape",
    "SchemaShapeError",
    "context_shapes",
    "entity_free",
]

ENTITY: Final = "entity"
"""An entity type (a context value that names an entity)."""
UNKNOWN: Final = "unknown"
"""Anything not resolved for certain."""
_PRIMITIVES: Final = frozenset({"String", "Long", "Bool"})
_EXTENSIONS: Final = frozenset({"decimal", "ipaddr", "datetime", "duration"})
_RESERVED: Final = _PRIMITIVES | _EXTENSIONS | {"Set", "Record", "Entity", "Extension"}
_MAX_DEPTH: Final = 32


@dataclass(frozen=True, slots=True)
class Record:
    """A record type: its declared attributes (required or not: presence is the
    request's business, and a closed record refuses any other)."""

    attrs: Mapping[str, Shape]


@dataclass(frozen=True, slots=True)
class SetOf:
    element: Shape


Shape = str | Record | SetOf
"""A primitive or extension type's name (``"String"``, ``"Long"``, ``"Bool"``,
``"decimal"``, ...), :data:`ENTITY`, :data:`UNKNOWN`, a :class:`Record` or a :class:`SetOf`."""


class SchemaShapeError(Exception):
    """The schema rendering is not one this module reads with certainty (internal)."""


def context_shapes(rendered: str) -> dict[str, Shape | None]:
    """Action id -> its declared context type; None for an action that applies to no
    request (an action group without ``appliesTo``). Raises :class:`SchemaShapeError`."""
    parser = _Parser(_tokens(rendered))
    parser.declarations(())
    return parser.resolved_contexts()


def entity_free(shape: Shape | None) -> bool:
    """True if no value of this type can name an entity (so the context cannot carry a
    reference to the request's own principal or resource)."""
    if shape is None:
        return False
    if isinstance(shape, Record):
        return all(entity_free(s) for s in shape.attrs.values())
    if isinstance(shape, SetOf):
        return entity_free(shape.element)
    return shape in _PRIMITIVES or shape in _EXTENSIONS


# -- tokens ---------------------------------------------------------------------------

_TOKEN: Final = re.compile(
    r'(?P<skip>\s+|//[^\n]*)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)'
    r"|(?P<punct>::|[{}\[\]<>(),;:?=@])"
)
_ESCAPE: Final = re.compile(r"\\(u\{[0-9a-fA-F]{1,6}\}|.)", re.DOTALL)
_SIMPLE_ESCAPES: Final = {
    "n": "\n", "r": "\r", "t": "\t", "\\": "\\", "0": "\0", "'": "'", '"': '"'
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "str", "ident" or "punct"
    text: str  # the decoded string for "str"


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise SchemaShapeError(f"unexpected character {text[pos]!r} at offset {pos}")
        pos = match.end()
        kind = match.lastgroup
        if kind == "skip" or kind is None:
            continue
        value = match.group()
        out.append(_Token(kind, _unescape(value[1:-1]) if kind == "str" else value))
    return out


def _unescape(body: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("u{"):
            return chr(int(code[2:-1], 16))
        if code in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[code]
        raise SchemaShapeError(f"unknown escape \\{code} in a schema string")

    return _ESCAPE.sub(one, body)


# -- declarations -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ref:
    namespace: tuple[str, ...]  # where the name was written
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _RecordT:
    attrs: tuple[tuple[str, _Type], ...]


@dataclass(frozen=True, slots=True)
class _SetT:
    element: _Type


_Type = _Ref | _RecordT | _SetT
_Name = tuple[tuple[str, ...], str]  # (namespace, basename)


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._pos = 0
        self._commons: dict[_Name, _Type] = {}
        self._entities: set[_Name] = set()
        self._contexts: dict[str, _Type | None] = {}

    # token helpers
    def _peek(self, offset: int = 0) -> _Token | None:
        at = self._pos + offset
        return self._tokens[at] if at < len(self._tokens) else None

    def _next(self) -> _Token:
        token = self._peek()
        if token is None:
            raise SchemaShapeError("the schema ends too early")
        self._pos += 1
        return token

    def _is(self, text: str, offset: int = 0) -> bool:
        token = self._peek(offset)
        return token is not None and token.kind != "str" and token.text == text

    def _expect(self, text: str) -> None:
        token = self._next()
        if token.kind == "str" or token.text != text:
            raise SchemaShapeError(f"expected {text!r}, got {token.text!r}")

    def _ident(self) -> str:
        token = self._next()
        if token.kind != "ident":
            raise SchemaShapeError(f"expected a name, got {token.text!r}")
        return token.text

    def _name(self) -> str:
        token = self._next()
        if token.kind not in ("ident", "str"):
            raise SchemaShapeError(f"expected a name or string, got {token.text!r}")
        return token.text

    def _path(self) -> tuple[str, ...]:
        parts = [self._ident()]
        while self._is("::"):
            self._next()
            parts.append(self._ident())
        return tuple(parts)

    # grammar
    def declarations(self, namespace: tuple[str, ...]) -> None:
        while (token := self._peek()) is not None and not self._is("}"):
            self._annotations()
            keyword = self._ident()
            if keyword == "namespace" and not namespace:
                inner = self._path()
                self._expect("{")
                self.declarations(inner)
                self._expect("}")
            elif keyword == "type":
                name = self._ident()
                self._declare((namespace, name))
                self._expect("=")
                self._commons[(namespace, name)] = self._type(namespace)
                self._expect(";")
            elif keyword == "entity":
                self._entity(namespace)
            elif keyword == "action":
                self._action(namespace)
            else:
                raise SchemaShapeError(f"unexpected {token.text!r}")

    def _annotations(self) -> None:
        while self._is("@"):
            self._next()
            self._ident()
            if self._is("("):
                self._next()
                if self._next().kind != "str":
                    raise SchemaShapeError("an annotation's value must be a string")
                self._expect(")")

    def _declare(self, name: _Name) -> None:
        if name[1] in _RESERVED:
            raise SchemaShapeError(f"the schema declares a type named {name[1]!r}")
        if name in self._commons or name in self._entities:
            raise SchemaShapeError(f"{name[1]!r} is declared twice")

    def _entity(self, namespace: tuple[str, ...]) -> None:
        while True:
            name = self._ident()
            self._declare((namespace, name))
            self._entities.add((namespace, name))
            if not self._is(","):
                break
            self._next()
        self._skip_to_semicolon()

    def _skip_to_semicolon(self) -> None:
        depth = 0
        while True:
            token = self._next()
            if token.kind == "str":
                continue
            if token.text in "{[(<":
                depth += 1
            elif token.text in "}])>":
                depth -= 1
                if depth < 0:
                    raise SchemaShapeError("unbalanced brackets")
            elif token.text == ";" and depth == 0:
                return

    def _action(self, namespace: tuple[str, ...]) -> None:
        names = [self._name()]
        while self._is(","):
            self._next()
            names.append(self._name())
        if self._is("in"):
            self._next()
            self._action_refs()
        context: _Type | None = None
        if self._is("appliesTo"):
            self._next()
            context = self._applies_to(namespace)
        self._expect(";")
        if namespace:
            return  # NS::Action::"..." is never a request's action
        for name in names:
            if name in self._contexts:
                raise SchemaShapeError(f"action {name!r} is declared twice")
            self._contexts[name] = context

    def _action_refs(self) -> None:
        if not self._is("["):
            self._action_ref()
            return
        self._next()
        while not self._is("]"):
            self._action_ref()
            if self._is(","):
                self._next()
        self._next()

    def _action_ref(self) -> None:
        while self._is("::", 1):  # Action::"id", NS::Action::"id"
            self._ident()
            self._next()
        self._name()

    def _applies_to(self, namespace: tuple[str, ...]) -> _Type:
        self._expect("{")
        context: _Type = _RecordT(())
        while not self._is("}"):
            key = self._ident()
            self._expect(":")
            if key == "context":
                context = self._type(namespace)
            elif key in ("principal", "resource"):
                if self._is("["):
                    self._next()
                    while not self._is("]"):
                        self._path()
                        if self._is(","):
                            self._next()
                    self._next()
                else:
                    self._path()
            else:
                raise SchemaShapeError(f"unexpected {key!r} in appliesTo")
            if self._is(","):
                self._next()
        self._next()
        return context

    def _type(self, namespace: tuple[str, ...]) -> _Type:
        if self._is("{"):
            self._next()
            attrs: list[tuple[str, _Type]] = []
            while not self._is("}"):
                self._annotations()
                name = self._name()
                if self._is("?"):
                    self._next()
                self._expect(":")
                attrs.append((name, self._type(namespace)))
                if self._is(","):
                    self._next()
            self._next()
            if len({name for name, _ in attrs}) != len(attrs):
                raise SchemaShapeError("a record declares an attribute twice")
            return _RecordT(tuple(attrs))
        if self._is("Set") and self._is("<", 1):
            self._next()
            self._next()
            element = self._type(namespace)
            self._expect(">")
            return _SetT(element)
        return _Ref(namespace, self._path())

    # resolution
    def resolved_contexts(self) -> dict[str, Shape | None]:
        return {
            action: None if t is None else self._resolve(t, 0)
            for action, t in self._contexts.items()
        }

    def _resolve(self, t: _Type, depth: int) -> Shape:
        if depth > _MAX_DEPTH:
            return UNKNOWN
        if isinstance(t, _RecordT):
            return Record({name: self._resolve(a, depth + 1) for name, a in t.attrs})
        if isinstance(t, _SetT):
            return SetOf(self._resolve(t.element, depth + 1))
        *qualifier, base = t.path
        if qualifier == ["__cedar"]:
            return base if base in _PRIMITIVES | _EXTENSIONS else UNKNOWN
        spaces = [tuple(qualifier)] if qualifier else list(dict.fromkeys([t.namespace, ()]))
        found: list[str | _Type] = []
        for space in spaces:
            if (space, base) in self._commons:
                found.append(self._commons[(space, base)])
            if (space, base) in self._entities:
                found.append(ENTITY)
        if not qualifier and base in _PRIMITIVES | _EXTENSIONS:
            found.append(base)
        if len(found) != 1:
            return UNKNOWN
        only = found[0]
        return only if isinstance(only, str) else self._resolve(only, depth + 1)
