"""Cedar policy for the authorization layer: bundles, the compiled engine, the layer.

A **policy bundle** is Cedar policies + a Cedar schema + a manifest (version,
created_at_ms, expires_at_ms, description). It comes as a directory
(``policies.cedar``, ``schema.cedarschema`` or ``schema.cedarschema.json``,
``manifest.json``) or as one JSON document (the form published on the control topic)::

    {"manifest": {...}, "policies": "<cedar text>", "schema": "<cedar schema>" | {json schema}}

Its digest is ``sha256:`` + the SHA-256 of the document's RFC 8785 canonical JSON.

:func:`compile_bundle` checks a bundle once (policies parse, every policy has a unique
``@id``, the policies validate against the schema, the schema declares trustplane's
entity model, the manifest is typed and not expired) and returns a
:class:`PolicyEngine` holding Cedar's parsed handles, reused for every request.

**Entity model** (what policies are written against):

- principal ``Agent::"<agent_id>"``, a member of ``Role::"<role>"`` for each role the
  agent registry gives it (``principal in Role::"treasury"``);
- action ``Action::"<intent action>"`` (``Action::"payments.transfer"``); the schema
  may put actions in groups (``action "tickets.reply" in ["tickets"]``);
- resource ``Resource::"<intent resource>"`` with ``kind`` (text before the first
  ``:``, "" if none), ``name`` (the rest, without a leading ``//``) and ``uri`` (the
  whole string): ``acct:ACME-42`` is kind ``acct``, name ``ACME-42``;
  ``s3://acme-exports/q3.csv`` is kind ``s3``, name ``acme-exports/q3.csv``;
- context ``{environment, runtime_id, hour_utc, weekday, risk?, parameters}``:
  the runtime's claimed environment and id, the UTC hour (0-23) and ISO weekday
  (1 = Monday ... 7 = Sunday) of ``issued_at_ms``, ``risk`` (a Long, only if the
  intent's context carries ``risk``; no other key of the intent's context is used),
  and the intent's parameters as a record: strings stay strings, booleans booleans,
  **every number (integer or not) becomes a Cedar ``decimal``** (at most 4 decimal
  places, |x| <= 922337203685477.5807; anything else is denied with the reason),
  and null parameters are left out (test them with ``has``). A string sent where the
  schema declares a decimal is read as one by Cedar (``"1250.00"``), so exact amounts
  may also travel as strings.

Requests are validated against the schema: an undeclared action, a parameter the
action's context does not declare, or a value of the wrong type is a deny with
Cedar's reason, never an exception. Cedar's semantics hold: default deny, any
matching ``forbid`` overrides every ``permit``. One stricter rule: when any policy
fails to evaluate, an allow is not trusted (Cedar skips erroring policies, so a
failing ``forbid`` would otherwise let the request through) and the decision is deny.

Speed: an engine decides each request on the subset of policies whose scope (principal,
action) can match it - the same decision, since a policy with a false scope neither
applies nor errors - and remembers the Cedar entities per (agent, roles, resource) and
the decisions of the last few thousand distinct requests. ``bench/bench_policy.py``
measures it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, Protocol

import cedarpy
from cedarpy import pst

from processors.crypto.dsse import canonical_json
from processors.exceptions import TrustplaneError
from processors.intent import Intent
from processors.verdict import GateState, Verdict

__all__ = [
    "LAYER",
    "CONTROL_SUBJECT",
    "MAX_POLICIES",
    "MAX_BUNDLE_BYTES",
    "DECISION_CACHE",
    "PolicyError",
    "PolicyBundleError",
    "PolicyEvaluationError",
    "BundleManifest",
    "PolicyBundle",
    "PolicyInfo",
    "PolicyRequest",
    "PolicyDecision",
    "PolicyEngine",
    "PolicyStore",
    "PolicyCheck",
    "compile_bundle",
    "resource_attributes",
    "iso_ms",
    "PolicyCaseError",
    "PolicyCase",
    "CaseResult",
    "load_cases",
    "cases_from_document",
    "run_cases",
]

LAYER: Final = "policy"
CONTROL_SUBJECT: Final = "policy"
"""The control-topic subject of ``policy.publish`` commands: one key, so compaction keeps
only the latest bundle."""
MAX_POLICIES: Final = 20_000
"""A bundle with more policies is refused. Compiling costs ~0.25 s per 1,000 policies, and
Cedar evaluates (~1 us each) every policy whose scope can match a request."""
MAX_BUNDLE_BYTES: Final = 16 * 1024 * 1024
"""Policies plus schema text larger than this are refused before parsing."""
DECISION_CACHE: Final = 8192
"""Distinct requests whose decisions an engine remembers (0 turns the cache off)."""

POLICIES_FILE: Final = "policies.cedar"
SCHEMA_FILE: Final = "schema.cedarschema"
SCHEMA_JSON_FILE: Final = "schema.cedarschema.json"
MANIFEST_FILE: Final = "manifest.json"

_MAX_SAFE_INT: Final = 2**53 - 1
_MAX_ERROR_CHARS: Final = 600
_DECIMAL_MAX: Final = Decimal("922337203685477.5807")
_DECIMAL_MIN: Final = Decimal("-922337203685477.5808")
_DECIMAL_STEP: Final = Decimal("0.0001")
_LONG_MAX: Final = 2**63 - 1
_ENTITY_CACHE: Final = 4096
_CACHEABLE_CONTEXT: Final = 2048
_MS_PER_HOUR: Final = 3_600_000
_MS_PER_DAY: Final = 86_400_000


# -- errors -----------------------------------------------------------------


class PolicyError(TrustplaneError):
    """Root of the policy errors."""


class PolicyBundleError(PolicyError):
    """A policy bundle is malformed, does not parse or validate, or has expired."""


class PolicyEvaluationError(PolicyError):
    """Cedar failed while deciding a request (not a deny: a failure)."""


class _ValueProblem(Exception):
    """A context value Cedar cannot represent (internal: becomes a decision error)."""


# -- the bundle -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundleManifest:
    version: str
    created_at_ms: int
    expires_at_ms: int
    description: str

    @classmethod
    def from_mapping(cls, data: object) -> BundleManifest:
        if not isinstance(data, Mapping):
            raise PolicyBundleError(
                f"the manifest must be a JSON object, got {type(data).__name__}",
                hint='{"version": "2026.11.1", "created_at_ms": ..., "expires_at_ms": ..., '
                '"description": "..."}',
            )
        fields = {"version", "created_at_ms", "expires_at_ms", "description"}
        missing = sorted(fields - set(data))
        unknown = sorted(set(data) - fields)
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown {', '.join(map(str, unknown))}")
            raise PolicyBundleError(
                f"the manifest has {'; '.join(parts)}",
                hint="a manifest has exactly version, created_at_ms, expires_at_ms, description",
            )
        version, description = data["version"], data["description"]
        if not isinstance(version, str) or not version.strip():
            raise PolicyBundleError("manifest.version must be a non-empty string")
        if not isinstance(description, str):
            raise PolicyBundleError("manifest.description must be a string")
        created = _manifest_time(data, "created_at_ms")
        expires = _manifest_time(data, "expires_at_ms")
        if expires <= created:
            raise PolicyBundleError(
                f"manifest.expires_at_ms ({expires}) must be after created_at_ms ({created})"
            )
        return cls(version, created, expires, description)

    def to_mapping(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created_at_ms": self.created_at_ms,
            "expires_at_ms": self.expires_at_ms,
            "description": self.description,
        }


def _manifest_time(data: Mapping[str, Any], name: str) -> int:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyBundleError(
            f"manifest.{name} must be an integer (Unix epoch milliseconds), got {value!r}"
        )
    if not 0 <= value <= _MAX_SAFE_INT:
        raise PolicyBundleError(f"manifest.{name} ({value}) is out of range (0 .. 2^53-1)")
    return value


@dataclass(frozen=True, slots=True)
class PolicyBundle:
    """Cedar policies, their schema and a manifest; ``digest`` names exactly this content.

    ``schema`` is Cedar schema text, or the Cedar JSON schema as a mapping.
    """

    manifest: BundleManifest
    policies: str
    schema: str | Mapping[str, Any]
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        try:
            body = canonical_json(self.to_document())
        except TrustplaneError as exc:
            raise PolicyBundleError(f"the bundle has no canonical JSON form: {exc.reason}") from exc
        object.__setattr__(self, "digest", "sha256:" + hashlib.sha256(body).hexdigest())

    @property
    def version(self) -> str:
        return self.manifest.version

    def to_document(self) -> dict[str, Any]:
        schema = self.schema if isinstance(self.schema, str) else dict(self.schema)
        return {"manifest": self.manifest.to_mapping(), "policies": self.policies, "schema": schema}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> PolicyBundle:
        """The single-document form: ``{"manifest", "policies", "schema"}``."""
        if not isinstance(doc, Mapping):
            raise PolicyBundleError(
                f"a policy bundle document must be a JSON object, got {type(doc).__name__}"
            )
        expected = {"manifest", "policies", "schema"}
        missing = sorted(expected - set(doc))
        unknown = sorted(map(str, set(doc) - expected))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown keys {', '.join(unknown)}")
            raise PolicyBundleError(
                f"the bundle document has {'; '.join(parts)}",
                hint='a bundle document is {"manifest": {...}, "policies": "<cedar>", '
                '"schema": "<cedar schema>" or {json schema}}',
            )
        policies, schema = doc["policies"], doc["schema"]
        if not isinstance(policies, str):
            raise PolicyBundleError("the bundle's 'policies' must be Cedar policy text (a string)")
        if not isinstance(schema, (str, Mapping)):
            raise PolicyBundleError(
                "the bundle's 'schema' must be Cedar schema text or a JSON schema object"
            )
        return cls(BundleManifest.from_mapping(doc["manifest"]), policies, schema)

    @classmethod
    def from_directory(cls, path: Path | str) -> PolicyBundle:
        """Read ``policies.cedar``, ``schema.cedarschema`` (or ``schema.cedarschema.json``)
        and ``manifest.json``."""
        root = Path(path)
        if not root.is_dir():
            raise PolicyBundleError(f"{root} is not a directory")
        policies = _read_text(root / POLICIES_FILE)
        text_schema, json_schema = root / SCHEMA_FILE, root / SCHEMA_JSON_FILE
        if text_schema.exists() and json_schema.exists():
            raise PolicyBundleError(
                f"{root} has both {SCHEMA_FILE} and {SCHEMA_JSON_FILE}; keep exactly one"
            )
        schema: str | Mapping[str, Any]
        if json_schema.exists():
            schema = _read_json(json_schema)
            if not isinstance(schema, Mapping):
                raise PolicyBundleError(f"{json_schema} must hold a JSON object")
        elif text_schema.exists():
            schema = _read_text(text_schema)
        else:
            raise PolicyBundleError(
                f"{root} has no schema", hint=f"add {SCHEMA_FILE} (Cedar schema syntax)"
            )
        manifest = BundleManifest.from_mapping(_read_json(root / MANIFEST_FILE))
        return cls(manifest, policies, schema)

    @classmethod
    def load(cls, path: Path | str) -> PolicyBundle:
        """A bundle directory, or a file holding the single JSON document."""
        target = Path(path)
        if target.is_dir():
            return cls.from_directory(target)
        doc = _read_json(target)
        if not isinstance(doc, Mapping):
            raise PolicyBundleError(f"{target} does not hold a JSON object")
        return cls.from_document(doc)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PolicyBundleError(f"{path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyBundleError(f"cannot read {path}: {exc}") from exc


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise PolicyBundleError(f"{path} is not valid JSON: {exc}") from exc


# -- requests and decisions ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One Cedar question: may ``agent_id`` (with ``roles``) take ``action`` on ``resource``?

    ``context`` is the Cedar context as Python values: str, bool, int (Long),
    :class:`~decimal.Decimal` or float (Cedar ``decimal``), mappings (records),
    lists/tuples (sets); ``None`` values are left out. Build it from an intent with
    :meth:`from_intent`, or from parts with :meth:`build`.
    """

    agent_id: str
    roles: Sequence[str]
    action: str
    resource: str
    context: Mapping[str, Any]

    @classmethod
    def build(
        cls,
        *,
        agent_id: str,
        roles: Sequence[str],
        action: str,
        resource: str,
        environment: str,
        runtime_id: str,
        issued_at_ms: int,
        parameters: Mapping[str, Any] | None = None,
        risk: Any = None,
    ) -> PolicyRequest:
        """The request the policy layer sends for an intent with these fields."""
        context: dict[str, Any] = {
            "environment": environment,
            "runtime_id": runtime_id,
            "hour_utc": (issued_at_ms // _MS_PER_HOUR) % 24,
            # 1970-01-01 was a Thursday (ISO weekday 4)
            "weekday": (issued_at_ms // _MS_PER_DAY + 3) % 7 + 1,
            "parameters": {
                name: _parameter(value)
                for name, value in (parameters or {}).items()
                if value is not None
            },
        }
        if risk is not None:
            context["risk"] = _risk(risk)
        return cls(agent_id, tuple(roles), action, resource, context)

    @classmethod
    def from_intent(cls, intent: Intent, roles: Sequence[str]) -> PolicyRequest:
        return cls.build(
            agent_id=intent.agent_id,
            roles=roles,
            action=intent.action,
            resource=intent.resource,
            environment=intent.runtime.environment,
            runtime_id=intent.runtime.runtime_id,
            issued_at_ms=intent.issued_at_ms,
            parameters=intent.parameters,
            risk=intent.context.get("risk"),
        )


def _parameter(value: Any) -> Any:
    """Parameters: every number is a decimal (Decimal keeps the exact digits sent)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else value
    return Decimal(value)


def _risk(value: Any) -> Any:
    """Risk is a Long; an integral float (70.0) is accepted as one, anything else is
    left as is and fails request validation with Cedar's reason."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """Cedar's answer. ``determining_policies`` are ``@id`` values: the permits that
    allowed, or the forbids that denied (empty for a default deny). ``errors`` holds
    request-validation and policy-evaluation errors, in Cedar's words."""

    allowed: bool
    determining_policies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """One policy of a compiled bundle: Cedar's id, its ``@id``, effect and ``@reason``."""

    cedar_id: str
    policy_id: str
    effect: str
    reason: str


def resource_attributes(resource: str) -> dict[str, str]:
    """``kind`` (before the first ':'), ``name`` (after it, minus a leading '//'), ``uri``."""
    kind, sep, rest = resource.partition(":")
    if not sep:
        return {"kind": "", "name": resource, "uri": resource}
    return {"kind": kind, "name": rest[2:] if rest.startswith("//") else rest, "uri": resource}


# -- the engine ---------------------------------------------------------------


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
        slicer: _Slicer | None = None,
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
        self._named_agents = (
            frozenset(key[1] for key in slicer._buckets if key[0] == "agent")
            if slicer is not None
            else frozenset()
        )
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
            context = json.dumps(_cedar_record(request.context, "context"))
        except _ValueProblem as exc:
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
        delta = json.dumps([_agent_entity(agent_id, roles), _resource_entity(resource)])
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


def _agent_entity(agent_id: str, roles: Sequence[str]) -> dict[str, Any]:
    return {
        "uid": {"type": "Agent", "id": agent_id},
        "attrs": {},
        "parents": [{"type": "Role", "id": role} for role in dict.fromkeys(roles)],
    }


def _resource_entity(resource: str) -> dict[str, Any]:
    return {
        "uid": {"type": "Resource", "id": resource},
        "attrs": resource_attributes(resource),
        "parents": [],
    }


def _cedar_record(values: Mapping[str, Any], path: str) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if not isinstance(name, str):
            raise _ValueProblem(f"{path}: attribute names must be strings, got {name!r}")
        record[name] = _cedar_value(value, f"{path}.{name}")
    return record


def _cedar_value(value: Any, path: str) -> Any:
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not -_LONG_MAX - 1 <= value <= _LONG_MAX:
            raise _ValueProblem(f"{path} = {value} does not fit a Cedar Long (64-bit)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _ValueProblem(f"{path} = {value}: Cedar numbers must be finite")
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        return {"__extn": {"fn": "decimal", "arg": _decimal_text(value, path)}}
    if isinstance(value, Mapping):
        return _cedar_record(value, path)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_cedar_value(v, f"{path}[]") for v in value if v is not None]
    raise _ValueProblem(f"{path} is a {type(value).__name__}, which Cedar has no type for")


def _decimal_text(value: Decimal, path: str) -> str:
    if not value.is_finite():
        raise _ValueProblem(f"{path} = {value}: Cedar numbers must be finite")
    if not _DECIMAL_MIN <= value <= _DECIMAL_MAX:
        raise _ValueProblem(
            f"{path} = {value} is outside Cedar's decimal range "
            "(-922337203685477.5808 .. 922337203685477.5807)"
        )
    try:
        exact = value.quantize(_DECIMAL_STEP)
    except InvalidOperation as exc:  # pragma: no cover - range is checked above
        raise _ValueProblem(f"{path} = {value} is not a Cedar decimal") from exc
    if exact != value:
        raise _ValueProblem(
            f"{path} = {value} has more than 4 decimal places; Cedar decimals have at "
            "most 4 (send e.g. amounts rounded to cents)"
        )
    text = f"{exact:f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _explain(error: str) -> str:
    if "failed to build request" in error and "is not valid for" in error:
        error += (
            " (the context must match the action's context type in the bundle's schema: "
            "every parameter declared, numbers in parameters are decimals, risk is a Long)"
        )
    return _clip(error)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


# -- policy slicing -----------------------------------------------------------
#
# Cedar evaluates every policy of a set for every request (about 1 us each). A policy
# whose scope cannot match the request - another agent, a role the agent lacks, another
# action - is false without evaluating its conditions (scope and conditions are one
# short-circuit conjunction), so it can neither determine the decision nor produce an
# error. Deciding on the subset whose scope can match is therefore the same decision;
# the subset is built once per (agent, roles, action) and cached. Anything the slicer
# does not understand is kept (keeping a policy is always safe).

_ANY_PRINCIPAL: Final = ("any", "")


class _Slicer:
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
            self._actions[cedar_id] = _action_key(policy.action)
        self._ancestors = _closure(action_parents)

    def policy_ids(self, agent_id: str, roles: Sequence[str], action: str) -> list[str]:
        lineage = {action, *self._ancestors.get(action, ())}
        keys = [_ANY_PRINCIPAL, ("agent", agent_id), *(("role", role) for role in roles)]
        chosen: set[str] = set()
        for key in keys:
            for cedar_id in self._buckets.get(key, ()):
                scope = self._actions[cedar_id]
                if (
                    scope is None
                    or (scope[0] == "eq" and action in scope[1])
                    or (scope[0] == "in" and not lineage.isdisjoint(scope[1]))
                ):
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


def _action_key(scope: pst.ActionConstraint) -> tuple[str, frozenset[str]] | None:
    """("eq", ids) or ("in", ids) for Action uids; None (any action) otherwise."""
    if isinstance(scope, pst.ActionEq) and _is_type(scope.entity.type, "Action"):
        return ("eq", frozenset((scope.entity.id,)))
    if isinstance(scope, pst.ActionIn) and all(_is_type(u.type, "Action") for u in scope.entities):
        return ("in", frozenset(u.id for u in scope.entities))
    return None


def _action_parents(base: cedarpy.Entities) -> dict[str, list[str]]:
    """Action id -> parent action ids, from the action entities the schema declares."""
    parents: dict[str, list[str]] = {}
    for entity in json.loads(str(base)):
        uid = entity.get("uid", {})
        if uid.get("type") == "Action":
            parents[str(uid.get("id"))] = [
                str(p.get("id")) for p in entity.get("parents", []) if p.get("type") == "Action"
            ]
    return parents


def _closure(parents: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
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


# -- compiling a bundle -------------------------------------------------------

_ENTITY_PROBE: Final = json.dumps(
    [
        {
            "uid": {"type": "Agent", "id": "probe-agent"},
            "attrs": {},
            "parents": [{"type": "Role", "id": "probe-role"}],
        },
        {
            "uid": {"type": "Resource", "id": "kind:probe"},
            "attrs": {"kind": "kind", "name": "probe", "uri": "kind:probe"},
            "parents": [],
        },
    ]
)


def compile_bundle(
    bundle: PolicyBundle,
    now_ms: int,
    *,
    max_policies: int = MAX_POLICIES,
    max_bytes: int = MAX_BUNDLE_BYTES,
    decision_cache: int = DECISION_CACHE,
    slicing: bool = True,
) -> PolicyEngine:
    """Check a bundle and parse it once into a :class:`PolicyEngine`.

    Raises :class:`PolicyBundleError` with the reason (Cedar's own words where Cedar
    refused) if the bundle is expired, too large, does not parse, has a policy without
    a unique ``@id`` or a template, does not validate against its schema, or its schema
    does not declare trustplane's entity model.
    """
    started = time.perf_counter()
    manifest = bundle.manifest
    if manifest.expires_at_ms <= now_ms:
        raise PolicyBundleError(
            f"policy bundle {manifest.version} expired at {iso_ms(manifest.expires_at_ms)}",
            hint="publish a bundle with a later manifest.expires_at_ms",
        )
    schema_text = (
        bundle.schema if isinstance(bundle.schema, str) else json.dumps(dict(bundle.schema))
    )
    size = len(bundle.policies.encode()) + len(schema_text.encode())
    if size > max_bytes:
        raise PolicyBundleError(
            f"policy bundle {manifest.version} is {size} bytes of policies and schema; "
            f"the limit is {max_bytes}",
            hint="split the estate, or raise the limit deliberately",
        )
    schema = _parse_schema(bundle.schema, schema_text)
    try:
        base = cedarpy.Entities.from_json_str("[]", schema)
        cedarpy.Entities.from_json_str(_ENTITY_PROBE, schema)
    except ValueError as exc:
        raise PolicyBundleError(
            f"the schema does not declare trustplane's entity model (Cedar: {exc})",
            hint="declare, outside any namespace: entity Role; entity Agent in [Role]; "
            "entity Resource = { kind: String, name: String, uri: String };",
        ) from exc
    try:
        policy_set = cedarpy.PolicySet.from_str(bundle.policies, release_gil=True)
    except ValueError as exc:
        raise PolicyBundleError(
            f"the policies do not parse: {_locate_parse_error(bundle.policies, exc)}"
        ) from exc
    count = len(policy_set)
    if count > max_policies:
        raise PolicyBundleError(
            f"policy bundle {manifest.version} has {count} policies; the limit is "
            f"{max_policies} (compile time grows with it, and Cedar evaluates every policy "
            "whose scope can match a request)",
            hint="merge policies that differ only in an entity into one with a set "
            "(principal in [...]) or an attribute test",
        )
    policies, tree = _policy_infos(policy_set, bundle.policies)
    result = cedarpy.validate_policies(bundle.policies, schema, release_gil=True)
    if not result.validation_passed:
        names = result.id_annotations_by_policy_id
        per_policy: dict[str, list[str]] = {}
        for e in result.errors:
            name = names.get(e.policy_id, e.policy_id) or "policies"
            text = e.error.replace(f"for policy `{e.policy_id}`, ", "", 1)
            if text not in per_policy.setdefault(name, []):
                per_policy[name].append(text)
        problems = []
        for name, texts in per_policy.items():
            extra = f" (and {len(texts) - 2} similar)" if len(texts) > 2 else ""
            problems.append(f"[{name}] {'; '.join(texts[:2])}{extra}")
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more policies)" if len(problems) > 10 else ""
        raise PolicyBundleError(
            f"the policies do not validate against the schema: {shown}{more}",
            hint="fix the policy or declare what it uses in the schema",
        )
    slicer = _Slicer(tree, _action_parents(base)) if tree is not None and slicing else None
    took = (time.perf_counter() - started) * 1000
    return PolicyEngine(
        bundle,
        policy_set,
        schema,
        base,
        policies,
        slicer=slicer,
        compile_ms=took,
        decision_cache=decision_cache,
    )


def _parse_schema(schema: str | Mapping[str, Any], text: str) -> cedarpy.Schema:
    try:
        if isinstance(schema, Mapping) or text.lstrip().startswith("{"):
            return cedarpy.Schema.from_json_str(text, release_gil=True)
        return cedarpy.Schema.from_str(text, release_gil=True)
    except ValueError as exc:
        raise PolicyBundleError(f"the schema does not parse: {exc}") from exc


def _policy_infos(
    policy_set: cedarpy.PolicySet, text: str
) -> tuple[dict[str, PolicyInfo], pst.PolicySet | None]:
    templates, static, tree = _annotations(policy_set, text)
    if templates:
        raise PolicyBundleError(
            f"the bundle has {len(templates)} template(s) ({', '.join(templates[:5])}); "
            "templates (?principal/?resource) are not supported in bundles",
            hint="write concrete policies",
        )
    infos: dict[str, PolicyInfo] = {}
    seen: dict[str, str] = {}
    missing: list[str] = []
    duplicates: list[str] = []
    for cedar_id, (effect, notes) in static.items():
        policy_id = notes.get("id", "")
        if not policy_id.strip():
            missing.append(f"{cedar_id} (the {_ordinal(cedar_id)} policy, a {effect})")
            continue
        if policy_id in seen:
            duplicates.append(policy_id)
        seen[policy_id] = cedar_id
        infos[cedar_id] = PolicyInfo(cedar_id, policy_id, effect, notes.get("reason", ""))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise PolicyBundleError(
            f"{len(missing)} {'policy has' if len(missing) == 1 else 'policies have'} no @id "
            f"annotation: {', '.join(missing[:5])}{more}",
            hint='start every policy with @id("a.readable.name"): decisions report these ids',
        )
    if duplicates:
        raise PolicyBundleError(
            f"@id values must be unique; repeated: {', '.join(sorted(set(duplicates))[:10])}"
        )
    return infos, tree


def _annotations(
    policy_set: cedarpy.PolicySet, text: str
) -> tuple[list[str], dict[str, tuple[str, dict[str, str]]], pst.PolicySet | None]:
    """(template ids, {cedar id: (effect, annotations)}, the typed tree if cedarpy has
    one for this syntax), from Cedar's own parse."""
    try:
        tree = policy_set.to_pst()
    except ValueError:
        # syntax newer than cedarpy's typed nodes: read the JSON (EST) form instead
        est = json.loads(cedarpy.policies_to_json_str(text))
        static = {
            pid: (
                str(p.get("effect", "")),
                {k: str(v) for k, v in p.get("annotations", {}).items()},
            )
            for pid, p in est.get("staticPolicies", {}).items()
        }
        return list(est.get("templates", {})), static, None
    static = {pid: (str(p.effect), dict(p.annotations)) for pid, p in tree.static_policies.items()}
    return list(tree.templates), static, tree


def _ordinal(cedar_id: str) -> str:
    digits = cedar_id.removeprefix("policy")
    if not digits.isdigit():
        return cedar_id
    n = int(digits) + 1
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _locate_parse_error(text: str, exc: Exception) -> str:
    """Cedar's parse error, with the line of the first policy that does not parse."""
    message = str(exc)
    for line, statement in _statements(text):
        try:
            cedarpy.PolicySet.from_str(statement)
        except ValueError as inner:
            return f"{inner} (in the policy starting at line {line})"
    return message


def _statements(text: str) -> list[tuple[int, str]]:
    """Split Cedar text at top-level ';' (outside strings and comments), with the line
    each statement's first token is on."""
    out: list[tuple[int, str]] = []
    start, line, first_line = 0, 1, 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif ch == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
            if not first_line:
                first_line = line
        elif ch == ";":
            out.append((first_line or line, text[start : i + 1]))
            start, first_line = i + 1, 0
        elif not ch.isspace() and not first_line:
            first_line = line
        i += 1
    if first_line:
        out.append((first_line, text[start:]))
    return out


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time (``2030-01-01T00:00:00Z``)."""
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


# -- the store ----------------------------------------------------------------


class _Clocked(Protocol):
    @property
    def now_ms(self) -> int: ...


class PolicyStore:
    """The active compiled bundle. ``offer`` swaps it in atomically, or refuses and keeps
    the one in force. Publisher trust (the control command's signature) is checked by
    whoever calls ``offer``, not here."""

    def __init__(
        self,
        *,
        max_policies: int = MAX_POLICIES,
        max_bytes: int = MAX_BUNDLE_BYTES,
        decision_cache: int = DECISION_CACHE,
    ) -> None:
        self._limits = {"max_policies": max_policies, "max_bytes": max_bytes}
        self._decision_cache = decision_cache
        self._active: PolicyEngine | None = None
        self._lock = threading.Lock()
        self.last_refusal: str | None = None

    @property
    def active(self) -> PolicyEngine | None:
        return self._active

    def offer(self, document: Mapping[str, Any] | PolicyBundle, now_ms: int) -> str | None:
        """Compile and activate a bundle. Returns None when it is active (also when it
        already was), else the reason it was refused; a refusal keeps the previous one."""
        with self._lock:
            refusal = self._offer(document, now_ms)
            self.last_refusal = refusal
            return refusal

    def control_sink(self, payload: Mapping[str, Any], ctx: _Clocked) -> str | None:
        """``ControlState(policy_sink=store.control_sink)``: a verified ``policy.publish``
        command's payload is the bundle document."""
        return self.offer(payload, ctx.now_ms)

    def _offer(self, document: Mapping[str, Any] | PolicyBundle, now_ms: int) -> str | None:
        try:
            bundle = (
                document
                if isinstance(document, PolicyBundle)
                else PolicyBundle.from_document(document)
            )
            current = self._active
            if current is not None and bundle.digest == current.digest:
                return None
            if current is not None and bundle.manifest.created_at_ms < current.created_at_ms:
                created = iso_ms(bundle.manifest.created_at_ms)
                return (
                    f"policy bundle {bundle.version} (created {created}) "
                    f"is older than the active {current.version} (created "
                    f"{iso_ms(current.created_at_ms)}); to roll back, republish it with a "
                    "newer created_at_ms"
                )
            engine = compile_bundle(
                bundle,
                now_ms,
                max_policies=self._limits["max_policies"],
                max_bytes=self._limits["max_bytes"],
                decision_cache=self._decision_cache,
            )
        except PolicyBundleError as exc:
            return exc.reason
        except Exception as exc:  # noqa: BLE001 - a bad bundle must never take the store down
            return f"the bundle could not be loaded: {type(exc).__name__}: {exc}"
        self._active = engine
        return None


# -- the layer ----------------------------------------------------------------


class PolicyCheck:
    """The Cedar policy layer (``evaluate(intent, state) -> Verdict``), fail closed.

    No valid bundle, an expired bundle, a request the schema refuses or a Cedar
    failure all deny (ERROR for failures); only a Cedar allow without errors allows.
    """

    name = LAYER

    def __init__(self, store: PolicyStore, roles_for: Callable[[str], Sequence[str]]) -> None:
        self._store = store
        self._roles_for = roles_for

    def evaluate(self, intent: Intent, state: GateState) -> Verdict:
        engine = self._store.active
        if engine is None:
            why = "no valid policy bundle loaded"
            if self._store.last_refusal:
                why += f" (the last one offered was refused: {self._store.last_refusal})"
            return Verdict.deny(LAYER, why)
        evidence = {"bundle_digest": engine.digest, "bundle_version": engine.version}
        if engine.expired(state.now_ms):
            return Verdict.deny(
                LAYER,
                f"policy bundle {engine.version} expired at {iso_ms(engine.expires_at_ms)}",
                **evidence,
            )
        try:
            roles = tuple(self._roles_for(intent.agent_id))
        except Exception as exc:  # noqa: BLE001 - a registry failure is an error verdict
            return Verdict.error(
                LAYER,
                f"could not look up the roles of agent {intent.agent_id!r}: "
                f"{type(exc).__name__}: {exc}",
                **evidence,
            )
        try:
            decision = engine.authorize(PolicyRequest.from_intent(intent, roles))
        except Exception as exc:  # noqa: BLE001 - Cedar failing is an error verdict
            reason = (
                exc.reason if isinstance(exc, TrustplaneError) else f"{type(exc).__name__}: {exc}"
            )
            return Verdict.error(LAYER, reason, **evidence)
        evidence["determining_policies"] = ",".join(decision.determining_policies)
        if decision.allowed:
            return Verdict.allow(
                LAYER,
                f"allowed by {', '.join(decision.determining_policies)} "
                f"(policy bundle {engine.version})",
                **evidence,
            )
        if decision.determining_policies:
            reasons = [
                f"forbidden by {pid}" + (f": {why}" if (why := engine.reason_of(pid)) else "")
                for pid in decision.determining_policies
            ]
            return Verdict.deny(LAYER, *reasons, *decision.errors, **evidence)
        if decision.errors:
            return Verdict.deny(
                LAYER, *(f"policy request refused: {e}" for e in decision.errors), **evidence
            )
        roles_text = ", ".join(roles) if roles else "none"
        return Verdict.deny(
            LAYER,
            f"no policy permits agent {intent.agent_id!r} (roles: {roles_text}) to take "
            f"{intent.action!r} on {intent.resource!r} (default deny)",
            **evidence,
        )


# -- test tables --------------------------------------------------------------


class PolicyCaseError(PolicyError):
    """A test table (``*.cases.json``) is malformed."""


_CASE_FIELDS: Final = frozenset(
    {
        "name",
        "agent",
        "roles",
        "action",
        "resource",
        "environment",
        "runtime_id",
        "at",
        "issued_at_ms",
        "parameters",
        "risk",
        "expect",
        "determining",
        "error",
    }
)


@dataclass(frozen=True, slots=True)
class PolicyCase:
    """One row of a test table: a request and the decision it must get.

    ``determining`` (if given) must equal the decision's ``@id`` list exactly (order
    does not matter; empty means a default deny or a request error); ``error`` (if
    given) must appear in one of the decision's errors.
    """

    name: str
    request: PolicyRequest
    expect_allow: bool
    determining: tuple[str, ...] | None = None
    error: str | None = None

    @classmethod
    def from_mapping(
        cls, data: object, defaults: Mapping[str, Any], where: str = "case"
    ) -> PolicyCase:
        if not isinstance(data, Mapping):
            raise PolicyCaseError(f"{where} must be a JSON object")
        unknown = sorted(map(str, set(data) - _CASE_FIELDS))
        if unknown:
            raise PolicyCaseError(
                f"{where} has unknown fields: {', '.join(unknown)}",
                hint=f"case fields: {', '.join(sorted(_CASE_FIELDS))}",
            )
        row = {**defaults, **data}
        name = row.get("name") or where
        where = f"{where} ({name})"
        for required in ("agent", "action", "resource", "expect"):
            if not isinstance(row.get(required), str) or not row[required]:
                raise PolicyCaseError(f"{where}: {required!r} must be a non-empty string")
        if row["expect"] not in ("allow", "deny"):
            raise PolicyCaseError(f"{where}: expect must be 'allow' or 'deny'")
        roles = row.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise PolicyCaseError(f"{where}: roles must be a list of strings")
        parameters = row.get("parameters", {})
        if not isinstance(parameters, Mapping):
            raise PolicyCaseError(f"{where}: parameters must be an object")
        determining = row.get("determining")
        if determining is not None and (
            not isinstance(determining, list) or not all(isinstance(d, str) for d in determining)
        ):
            raise PolicyCaseError(f"{where}: determining must be a list of policy @ids")
        error = row.get("error")
        if error is not None and not isinstance(error, str):
            raise PolicyCaseError(f"{where}: error must be a string")
        request = PolicyRequest.build(
            agent_id=row["agent"],
            roles=roles,
            action=row["action"],
            resource=row["resource"],
            environment=str(row.get("environment", "prod")),
            runtime_id=str(row.get("runtime_id", "rt-1")),
            issued_at_ms=_case_time(data, defaults, where),
            parameters=parameters,
            risk=row.get("risk"),
        )
        return cls(
            str(name),
            request,
            row["expect"] == "allow",
            tuple(sorted(determining)) if determining is not None else None,
            error,
        )


def _case_time(data: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> int:
    """The case's own 'at' / 'issued_at_ms' win over the defaults'."""
    for source in (data, defaults):
        if "issued_at_ms" in source:
            ms = source["issued_at_ms"]
            if isinstance(ms, bool) or not isinstance(ms, int):
                raise PolicyCaseError(f"{where}: issued_at_ms must be epoch milliseconds")
            return ms
        if "at" in source:
            return _iso_time(source["at"], where)
    raise PolicyCaseError(f"{where}: give 'at' (ISO 8601 UTC time) or 'issued_at_ms'")


def _iso_time(value: object, where: str) -> int:
    if not isinstance(value, str):
        raise PolicyCaseError(f"{where}: 'at' must be an ISO 8601 time like 2026-11-10T12:00:00Z")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise PolicyCaseError(f"{where}: 'at' is not an ISO 8601 time: {value!r}") from exc
    if moment.tzinfo is None:
        raise PolicyCaseError(f"{where}: 'at' needs a time zone (end it with Z for UTC)")
    return int(moment.timestamp() * 1000)


def cases_from_document(doc: object, *, source: str = "cases") -> list[PolicyCase]:
    """``{"defaults": {...}, "cases": [{...}, ...]}`` (or just the list of cases)."""
    if isinstance(doc, list):
        doc = {"cases": doc}
    if not isinstance(doc, Mapping) or not isinstance(doc.get("cases"), list):
        raise PolicyCaseError(
            f'{source}: expected {{"defaults": {{...}}, "cases": [...]}}',
            hint="see policies/bundle.cases.json",
        )
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise PolicyCaseError(f"{source}: defaults must be an object")
    return [
        PolicyCase.from_mapping(row, defaults, f"{source} case #{n}")
        for n, row in enumerate(doc["cases"], start=1)
    ]


def load_cases(path: Path | str) -> list[PolicyCase]:
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyCaseError(f"cannot read {target}: {exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise PolicyCaseError(f"{target} is not valid JSON: {exc}") from exc
    return cases_from_document(doc, source=target.name)


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: PolicyCase
    decision: PolicyDecision
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


def run_cases(engine: PolicyEngine, cases: Sequence[PolicyCase]) -> list[CaseResult]:
    """Decide every case; a case fails with the differences from what it expected."""
    results: list[CaseResult] = []
    for case in cases:
        try:
            decision = engine.authorize(case.request)
        except PolicyEvaluationError as exc:
            decision = PolicyDecision(False, (), (exc.reason,))
        problems: list[str] = []
        if decision.allowed != case.expect_allow:
            got = "allow" if decision.allowed else "deny"
            problems.append(f"expected {'allow' if case.expect_allow else 'deny'}, got {got}")
        if case.determining is not None:
            got_ids = tuple(sorted(decision.determining_policies))
            if got_ids != case.determining:
                problems.append(
                    f"expected determining [{', '.join(case.determining)}], "
                    f"got [{', '.join(got_ids)}]"
                )
        if case.error is not None and not any(case.error in e for e in decision.errors):
            problems.append(f"expected an error containing {case.error!r}")
        if not case.expect_allow and decision.errors and case.error is None:
            problems.append(f"unexpected error: {decision.errors[0]}")
        results.append(CaseResult(case, decision, tuple(problems)))
    return results
